"""Does a figure show its numbers? Rendered-pixel checks of heatmap cells and bars.

A heatmap panel is *blank* when cells whose values are non-zero render in (nearly) the colour
of zero, e.g. when one linear colour scale is shared by values that span orders of magnitude;
a bar is invisible when its rendered height is under a pixel or two. :func:`panel_legibility`
renders a figure with Agg and, for every heatmap (a ``QuadMesh``) and every bar chart on it,
samples the rendered pixels at each non-zero cell's centre (compared with the colour of zero
under that panel's colour map and norm) and measures each non-zero bar's height in pixels.
The studies in ``analyses/`` and the tests use it to assert that no panel hides its values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.patches import Rectangle

from geffect.reporting.style import MIN_CONTRAST

# A rendered cell is visible when some RGB channel differs from the zero colour by MIN_CONTRAST.
MIN_BAR_PIXELS = 2.0
# Values this far (relative) under the panel's largest magnitude count as zero.
ZERO_RELATIVE = 1e-6


@dataclass(frozen=True)
class PanelCheck:
    """One panel's legibility: how many non-zero items it has and how many render visibly."""

    panel: str
    kind: str  # "heatmap" or "bars"
    nonzero: int
    visible: int

    @property
    def fraction(self) -> float:
        """Share of the non-zero items that render visibly (1.0 when there is none)."""
        return self.visible / self.nonzero if self.nonzero else 1.0


def _render(fig: Figure) -> np.ndarray:
    """RGB pixels (rows top → bottom, floats in [0, 1]) of ``fig`` drawn by Agg at its own dpi."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba(), dtype=float)[..., :3] / 255.0


def _panel_name(ax, index: int) -> str:
    title = ax.get_title() or ax.get_title(loc="left")
    return title or f"axes {index}"


def _mesh_check(ax, mesh: QuadMesh, pixels: np.ndarray, name: str) -> PanelCheck:
    values = np.ma.filled(np.ma.asarray(mesh.get_array(), dtype=float), np.nan).ravel()
    coords = mesh.get_coordinates()  # (rows + 1, cols + 1, 2) corners in data coordinates
    centres = 0.25 * (coords[:-1, :-1] + coords[1:, :-1] + coords[:-1, 1:] + coords[1:, 1:])
    centres = centres.reshape(-1, 2)
    finite = np.isfinite(values)
    limit = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    nonzero = finite & (np.abs(np.nan_to_num(values)) > limit * ZERO_RELATIVE) if limit > 0 else finite & False
    if not nonzero.any():
        return PanelCheck(name, "heatmap", 0, 0)
    zero = np.asarray(mesh.cmap(float(mesh.norm(0.0)))[:3])
    display = mesh.get_transform().transform(centres[nonzero])
    height, width = pixels.shape[:2]
    cols = np.clip(np.round(display[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(height - display[:, 1]).astype(int), 0, height - 1)
    contrast = np.abs(pixels[rows, cols] - zero).max(axis=1)
    return PanelCheck(name, "heatmap", int(nonzero.sum()), int((contrast >= MIN_CONTRAST).sum()))


def _bars_check(ax, bars: list[Rectangle], name: str) -> PanelCheck:
    heights = np.array([abs(b.get_height()) for b in bars])
    limit = float(heights.max()) if heights.size else 0.0
    nonzero = [b for b, h in zip(bars, heights) if limit > 0 and h > limit * ZERO_RELATIVE]
    if not nonzero:
        return PanelCheck(name, "bars", 0, 0)
    visible = sum(b.get_window_extent().height >= MIN_BAR_PIXELS for b in nonzero)
    return PanelCheck(name, "bars", len(nonzero), int(visible))


def save_checked(fig: Figure, path: str | Path, dpi: float) -> list[PanelCheck]:
    """Render ``fig`` once at ``dpi``, write that rendering as a PNG at ``path`` and return the
    checks of :func:`panel_legibility` on exactly those pixels."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    imsave(path, rgba, dpi=dpi)
    return panel_legibility(fig, rgba[..., :3] / 255.0)


def panel_legibility(fig: Figure, pixels: np.ndarray | None = None) -> list[PanelCheck]:
    """Render ``fig`` (unless its current rendering's RGB ``pixels`` are given) and check every
    heatmap and bar panel (colour-bar axes are skipped)."""
    pixels = _render(fig) if pixels is None else pixels
    checks = []
    for index, ax in enumerate(fig.axes):
        if hasattr(ax, "_colorbar"):
            continue  # a colour bar: its gradient is the key, not data
        name = _panel_name(ax, index)
        meshes = [c for c in ax.collections if isinstance(c, QuadMesh)]
        if meshes:
            checks.append(_mesh_check(ax, meshes[0], pixels, name))
            continue
        bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_width() > 0]
        if bars:
            checks.append(_bars_check(ax, bars, name))
    return checks


def blank_panels(fig: Figure, min_fraction: float = 0.9) -> list[PanelCheck]:
    """Panels where fewer than ``min_fraction`` of the non-zero cells or bars render visibly."""
    return [check for check in panel_legibility(fig) if check.nonzero and check.fraction < min_fraction]
