"""Shared look of every geffect figure: colours, colour scales, sign keys, layer order, labels.

One place decides how an effect is coloured, how layers are ordered (embeddings to head,
``geffect.schema.layer_sort_key``), which colour an objective gets (the same in every figure)
and how axes are labelled (with units and the sign's meaning in words), so that figures from
different functions and runs can be read side by side.

Two views of one step, with opposite sign conventions (Wang et al., ICLR 2025, Sec. 3):

* the **G-effect** ``∇R·∇L_u`` (direction ``"gradient"``, the paper's quantity): a descent
  step moves the risk by about ``-η·e``, so a **negative** G-effect means the risk rises;
* the **update effect** ``∇R·Δθ`` (direction ``"update"``), shown as the *predicted risk
  change* in nats: the first-order change of the risk from the step actually taken (under
  AdamW, not a multiple of the G-effect), so a **positive** value means the risk rises.

Both are drawn so that **red always means "the risk rises"** (forgetting on forget data,
damage on retain data) and blue "the risk falls": :func:`effect_cmap` flips the diverging map
for the update view, and every colour bar and axis label says so in words
(:func:`effect_label`, :func:`sign_key`). When values span orders of magnitude (a memorised
target: tiny effects for most steps, large ones at the end) :func:`effect_norm` switches to a
symmetric-log scale so that no non-zero cell renders as blank.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import seaborn as sns
from matplotlib.colors import Colormap, Normalize, SymLogNorm, to_hex
from matplotlib.figure import Figure

from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE, layer_sort_key

# Diverging map of the G-effect: negative (the risk rises: forgetting on forget data, damage on
# retain data) is red, positive (the risk falls) is blue, zero is white. The update view, whose
# positive values mean "the risk rises", uses the reversed map so that red keeps its meaning.
EFFECT_CMAP = "RdBu"
RISK_RISES_CMAP = {DIRECTION_GRADIENT: "RdBu", DIRECTION_UPDATE: "RdBu_r"}
# The sign of a value that means "the risk rises", per direction.
RISING_SIGN = {DIRECTION_GRADIENT: -1, DIRECTION_UPDATE: +1}
OBSERVED_LABEL = "observed risk change (nats)\npositive = risk rises"
# Scale choice: on a linear scale a cell whose magnitude is under this share of the colour limit
# renders within a few grey levels of the zero colour; when more than LINEAR_MAX_FAINT of the
# non-zero cells would, the scale becomes symmetric-log.
FAINT_SHARE = 0.1
LINEAR_MAX_FAINT = 0.1
SYMLOG_MAX_DECADES = 6  # values more than this many decades under the largest count as zero
SYMLOG_FLOOR_POSITION = 0.15  # colour position of the smallest logged magnitude (visibly tinted)
# A colour is told apart from the zero colour when some RGB channel differs by at least this much
# (0.05 ≈ 13 grey levels of 255); the rendered-pixel checks of geffect.reporting.legibility use it too.
MIN_CONTRAST = 0.05

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


def _magnitudes(values: Any) -> tuple[np.ndarray, float]:
    """Non-zero finite magnitudes (those within SYMLOG_MAX_DECADES of the largest) and the limit."""
    array = np.abs(np.asarray(values, dtype=float).ravel())
    array = array[np.isfinite(array)]
    limit = float(array.max()) if array.size else 0.0
    if limit <= 0:
        return np.zeros(0), 1.0
    return array[array > limit * 10.0 ** -SYMLOG_MAX_DECADES], limit


def choose_scale(values: Any) -> str:
    """``"symlog"`` when a linear scale would leave more than :data:`LINEAR_MAX_FAINT` of the
    non-zero values faint (under :data:`FAINT_SHARE` of the largest magnitude), else ``"linear"``."""
    magnitudes, limit = _magnitudes(values)
    if magnitudes.size == 0:
        return "linear"
    faint = float(np.mean(magnitudes < FAINT_SHARE * limit))
    return "symlog" if faint > LINEAR_MAX_FAINT else "linear"


def effect_norm(values: Any, scale: str = "auto") -> Normalize:
    """Colour normalisation symmetric about zero covering ``values``.

    ``scale``: ``"linear"``, ``"symlog"`` or ``"auto"`` (:func:`choose_scale`). The symmetric-log
    norm is linear below the smallest non-zero magnitude (at most SYMLOG_MAX_DECADES under the
    largest) and logarithmic above, with its linear band sized so that the smallest magnitude sits
    :data:`SYMLOG_FLOOR_POSITION` of the way from the zero colour to the end colour (visibly
    tinted), and the largest at the end.
    """
    if scale not in ("auto", "linear", "symlog"):
        raise ValueError(f"scale must be 'auto', 'linear' or 'symlog', got {scale!r}")
    limit = symmetric_limit(values)
    if scale == "auto":
        scale = choose_scale(values)
    magnitudes, _ = _magnitudes(values)
    if scale == "linear" or magnitudes.size == 0:
        return Normalize(vmin=-limit, vmax=limit)
    threshold = min(float(magnitudes.min()), limit / 10.0)
    return SymLogNorm(linthresh=threshold, linscale=_linscale(limit, threshold), vmin=-limit, vmax=limit, base=10)


def _linscale(limit: float, threshold: float) -> float:
    """matplotlib's ``linscale`` that puts ``threshold`` at SYMLOG_FLOOR_POSITION of the way from
    zero to ``limit`` (its symlog transform widens the linear band by 1 / (1 - 1/base))."""
    decades = np.log10(limit / threshold)
    return SYMLOG_FLOOR_POSITION * decades / (1.0 - SYMLOG_FLOOR_POSITION) * (1.0 - 0.1)


def scale_axis(ax: Any, values: Any, axis: str = "y", scale: str = "auto") -> str:
    """Put a value axis of bars or curves on a symmetric-log scale when ``values`` span orders of
    magnitude (the rule of :func:`choose_scale`; linear band below the smallest non-zero
    magnitude, so every non-zero bar stands out of it). Returns the scale used."""
    if scale == "auto":
        scale = choose_scale(values)
    magnitudes, limit = _magnitudes(values)
    if scale != "symlog" or magnitudes.size == 0:
        return "linear"
    threshold = min(float(magnitudes.min()), limit / 10.0)
    setter = ax.set_yscale if axis == "y" else ax.set_xscale
    setter("symlog", linthresh=threshold, linscale=_linscale(limit, threshold))
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    ticks = [t for t in symlog_ticks(threshold, limit) if low <= t <= high]
    (ax.set_yticks if axis == "y" else ax.set_xticks)(ticks)
    return "symlog"


def symlog_ticks(threshold: float, limit: float, per_side: int = 3) -> list[float]:
    """At most ``per_side`` powers of ten on each side of zero (and zero) for a symmetric-log
    scale with linear band ``threshold`` up to ``limit``; the threshold's own decade is left
    unlabelled when there are others (it sits too close to zero for its label to fit)."""
    low = int(np.ceil(np.log10(threshold)))
    high = int(np.floor(np.log10(limit)))
    low += 1 if high > low + 1 else 0
    if high < low:
        return [-limit, 0.0, limit]
    exponents = np.unique(np.round(np.linspace(high, low, min(per_side, high - low + 1))).astype(int))
    positive = [10.0 ** int(e) for e in sorted(exponents)]
    return [-v for v in reversed(positive)] + [0.0] + positive


def is_symlog(norm: Normalize) -> bool:
    """Whether a colour normalisation is the symmetric-log one of :func:`effect_norm`."""
    return isinstance(norm, SymLogNorm)


def effect_cmap(direction: str = DIRECTION_GRADIENT) -> str:
    """The diverging colour map of ``direction``, oriented so that red means "the risk rises"."""
    _check_direction(direction)
    return RISK_RISES_CMAP[direction]


def zero_color(cmap: str | Colormap, norm: Normalize) -> np.ndarray:
    """RGB of the value zero under ``cmap`` and ``norm`` (the colour of "no effect")."""
    import matplotlib

    colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return np.asarray(colormap(float(norm(0.0)))[:3])


def faint_share(values: Any, norm: Normalize, cmap: str | Colormap) -> float:
    """Share of the non-zero values (within SYMLOG_MAX_DECADES of their largest magnitude) whose
    colour under ``norm`` and ``cmap`` is within :data:`MIN_CONTRAST` of the zero colour."""
    import matplotlib

    magnitudes, _ = _magnitudes(values)
    array = np.asarray(values, dtype=float).ravel()
    array = array[np.isfinite(array) & (np.abs(array) >= (magnitudes.min() if magnitudes.size else np.inf))]
    if array.size == 0:
        return 0.0
    colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    colours = colormap(np.asarray(norm(array), dtype=float))[:, :3]
    contrast = np.abs(colours - zero_color(colormap, norm)).max(axis=1)
    return float(np.mean(contrast < MIN_CONTRAST))


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


def _check_direction(direction: str) -> None:
    if direction not in RISING_SIGN:
        raise ValueError(f"unknown effect direction {direction!r}: use 'gradient' or 'update'")


def effect_name(direction: str) -> str:
    """Short name of an effect direction for titles: "G-effect" or "predicted risk change"."""
    return {DIRECTION_GRADIENT: "G-effect", DIRECTION_UPDATE: "predicted risk change"}.get(
        direction, f"{direction} effect")


def sign_key(direction: str, *, colour: bool = False) -> str:
    """The sign's meaning in words: "negative = risk rises" (G-effect) or "positive = risk rises"
    (predicted risk change); with ``colour``, "red (negative) = risk rises" for colour bars."""
    _check_direction(direction)
    sign = "negative" if RISING_SIGN[direction] < 0 else "positive"
    return f"red ({sign}) = risk rises" if colour else f"{sign} = risk rises"


def effect_label(direction: str = DIRECTION_GRADIENT, *, cumulative: bool = False,
                 colour: bool = False, short: bool = False, scale: str = "linear") -> str:
    """Axis or colour-bar label of an effect of ``direction``: the quantity, its units and its sign
    key in words. ``colour``: the colour-bar form ("red (negative) = risk rises"); ``short``: the
    quantity without its formula; ``scale="symlog"`` notes a symmetric-log scale."""
    _check_direction(direction)
    if direction == DIRECTION_UPDATE:
        base = "predicted risk change (nats)" if short or colour else "predicted risk change ∇R·Δθ (nats)"
    elif colour:
        base = "G-effect ∇R·∇L_u"
    else:
        base = "G-effect (nats per unit step)" if short else "G-effect ∇R·∇L_u (nats per unit step)"
    note = ", symlog" if scale == "symlog" else ""
    return f"{'cumulative ' if cumulative else ''}{base}\n{sign_key(direction, colour=colour)}{note}"


def g_convention(values: Any, direction: str) -> Any:
    """``values`` in the G-effect's sign convention (negative = the risk rises) whichever their
    direction (the update effect is negated), so one rule reads both views."""
    _check_direction(direction)
    return values if RISING_SIGN[direction] < 0 else -values


def shorten(text: str, width: int = 60) -> str:
    """One-line text of at most ``width`` characters (an ellipsis marks a cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def zero_line(ax: Any, *, vertical: bool = False) -> None:
    """A thin reference line at zero."""
    (ax.axvline if vertical else ax.axhline)(0.0, color="0.4", linewidth=0.8, zorder=0)
