"""Shared look of every geffect figure: colours, colour scales, layer order, labels.

One place decides how an effect is coloured (a diverging map centred on zero: red where a
step raises the risk, blue where it lowers it), how layers are ordered (embeddings to head,
``geffect.schema.layer_sort_key``), which colour an objective gets (the same in every figure)
and how axes are labelled (with units), so that figures from different functions and runs
can be read side by side.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import seaborn as sns
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure

from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE, layer_sort_key

# Diverging map: negative effect (the risk rises: forgetting on forget data, damage on retain
# data) is red, positive (the risk falls) is blue, zero is white.
EFFECT_CMAP = "RdBu"

# Fixed colours of the built-in objectives (registry names of geffect.objectives).
_KNOWN_OBJECTIVES = (
    "ga", "gd", "ga_kl", "wga", "npo", "npo_gd", "npo_kl", "simnpo",
    "tnpo", "wtnpo", "idk", "dpo", "rmu", "yao",
)
_PALETTE = [to_hex(c) for c in sns.color_palette("tab20", 20)]
_OBJECTIVE_COLORS = {
    name: _PALETTE[(2 * i) % 20 + (2 * i) // 20] for i, name in enumerate(_KNOWN_OBJECTIVES)
}

PROBE_LINESTYLES = {"forget": "-", "retain": "--"}

F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Draw inside geffect's seaborn style without touching the caller's global rcParams."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with sns.axes_style("ticks"), sns.plotting_context("notebook", font_scale=0.9):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 5.0, height: float = 3.6,
               squeeze: bool = False, **kwargs: Any) -> tuple[Figure, np.ndarray]:
    """A figure (not managed by pyplot, so notebooks show it once) with a grid of axes."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **kwargs)
    return fig, axes


def ordered_layers(names: Iterable[str]) -> list[str]:
    """Unique layer-group names from the embeddings to the head."""
    return sorted(set(names), key=layer_sort_key)


def symmetric_limit(values: Any) -> float:
    """Largest absolute finite value (1.0 when there is none), for colour limits ±limit."""
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    limit = float(np.abs(array).max()) if array.size else 0.0
    return limit if limit > 0 else 1.0


def effect_norm(values: Any) -> Normalize:
    """Colour normalisation symmetric about zero covering ``values``."""
    limit = symmetric_limit(values)
    return Normalize(vmin=-limit, vmax=limit)


def color_for(objective: str) -> str:
    """The colour of an objective: fixed for built-ins, a stable hash of the name otherwise."""
    key = objective.lower()
    if key in _OBJECTIVE_COLORS:
        return _OBJECTIVE_COLORS[key]
    return _PALETTE[zlib.crc32(key.encode()) % len(_PALETTE)]


def run_colors(names: Sequence[str], objectives: Sequence[str]) -> dict[str, str]:
    """Colour per run name: by objective when each run has its own objective, else by name."""
    keys = objectives if len(set(objectives)) == len(objectives) else names
    return {name: color_for(key) for name, key in zip(names, keys)}


def effect_name(direction: str) -> str:
    """Short name of an effect direction for titles: "G-effect" or "update effect"."""
    return {DIRECTION_GRADIENT: "G-effect", DIRECTION_UPDATE: "update effect"}.get(direction, f"{direction} effect")


def effect_label(direction: str = DIRECTION_GRADIENT, *, cumulative: bool = False) -> str:
    """Axis label with units for an effect of ``direction`` ("gradient" or "update")."""
    if direction == DIRECTION_UPDATE:
        base = "update effect ∇R·Δθ\n(nats)"
        return f"cumulative {base}" if cumulative else base
    if direction == DIRECTION_GRADIENT:
        base = "G-effect ∇R·∇L_u\n(nats per unit step size)"
        return f"cumulative {base}" if cumulative else base
    raise ValueError(f"unknown effect direction {direction!r}: use 'gradient' or 'update'")


def shorten(text: str, width: int = 60) -> str:
    """One-line text of at most ``width`` characters (an ellipsis marks a cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def zero_line(ax: Any, *, vertical: bool = False) -> None:
    """A thin reference line at zero."""
    (ax.axvline if vertical else ax.axhline)(0.0, color="0.4", linewidth=0.8, zorder=0)
