"""geffect's plotting vocabulary (``geffect.plot``): where and when an objective forgets and
where it does damage, one function per view, each returning a matplotlib ``Figure``.

Every function takes the record tables of a run (a run directory, a ``geffect.Run``, a
:class:`~geffect.reporting.runs.RunData` or the bare long DataFrame) or several runs (a list
or a ``{name: run}`` mapping) for comparisons.

**Both views.** The trainer records two effects per step, probe, instance and layer group: the
paper's G-effect ``∇R·∇L_u`` (direction ``"gradient"``; negative = the risk rises) and the
update effect ``∇R·Δθ`` of the step actually taken, shown as the *predicted risk change* (nats;
positive = the risk rises). Under Adam the two can differ in size and even in sign, and only
the second is a prediction of what happens to the risk, so the effect views take
``direction=None`` (the default) to draw every recorded direction beside each other, with the
observed change of the mean risk where it was measured; a direction name draws that one only.

**Reading the colours.** Red always means "this raises the probe's risk" (forgetting on forget
data, damage on retain data), blue "this lowers it"; every colour bar and axis says which sign
that is (``geffect.reporting.style``). Colour scales are symmetric about zero and switch to a
symmetric-log scale when the values span orders of magnitude, so no non-zero panel renders
blank (checked by ``geffect.reporting.legibility``). Layers run from the embeddings to the
head, and each objective keeps one colour in every figure. The numbers come from
``geffect.reporting.tables``, so the diagnosis sentences quote exactly what the figures show.
Figures are not registered with pyplot: save them with ``fig.savefig(path)``; notebooks display
a returned figure once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from geffect.reporting import tables
from geffect.reporting.runs import RunData, as_run, as_runs, check_columns, normalise_texts
from geffect.reporting.style import (
    EFFECT_CMAP,
    OBSERVED_LABEL,
    PROBE_LINESTYLES,
    effect_cmap,
    effect_label,
    effect_name,
    effect_norm,
    faint_share,
    is_symlog,
    new_figure,
    ordered_layers,
    run_colors,
    scale_axis,
    shorten,
    sign_key,
    styled,
    symlog_ticks,
    zero_line,
)
from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE

__all__ = [
    "layer_step_heatmap",
    "cumulative_effect",
    "layer_totals",
    "instance_distribution",
    "most_damaged",
    "most_damaged_table",
    "token_heatmap",
    "predicted_vs_observed",
    "pairwise_matrix",
    "comparison_grid",
    "term_weights",
]

STEP_LABEL = "training step"
LAYER_LABEL = "layer group (embed → head)"
TERM_MARKERS = {"forget": "o", "retain": "s"}
DIRECTIONS = (DIRECTION_GRADIENT, DIRECTION_UPDATE)
MAX_PANEL_WIDTH = 9.0  # inches: wider data (many steps, many runs × layers) gets narrower cells/bars


# --------------------------------------------------------------------------- helpers


def _direction_list(direction: str | Sequence[str] | None) -> list[str]:
    """``None`` → both directions (those recorded are kept later); a name → that one."""
    if direction is None:
        return list(DIRECTIONS)
    wanted = [direction] if isinstance(direction, str) else list(direction)
    for name in wanted:
        effect_label(name)  # raises on an unknown direction
    return wanted


def _recorded(runs: list[RunData], probes: Sequence[str], direction: str | Sequence[str] | None
              ) -> tuple[list[str], list[str]]:
    """(probes, directions) with records in any run; a clear error when there are none."""
    directions = _direction_list(direction)
    pairs = [(p, d) for p in probes for d in directions
             if any(tables.has_records(r.effects, p, d) for r in runs)]
    if not pairs:
        what = directions[0] if len(directions) == 1 else directions
        names = ", ".join(repr(r.name) for r in runs)
        raise ValueError(f"no {what!r} effect records for probes {list(probes)} in run(s) {names}; "
                         f"probes there: {sorted({p for r in runs for p in r.probes()})}")
    return ([p for p in probes if any(q == p for q, _ in pairs)],
            [d for d in directions if any(e == d for _, e in pairs)])


def _colors(runs: list[RunData]) -> dict[str, str]:
    return run_colors([r.name for r in runs], [r.objective for r in runs])


def _observed(run: RunData, probe: str) -> dict[str, float] | None:
    """The run's measured change of ``probe``'s mean risk, or None without a risks table."""
    if run.risks.empty or not (run.risks["probe"] == probe).any():
        return None
    return tables.observed_change(run.risks, probe)


def _signed(value: float) -> str:
    return f"{value:+.3g}"


def _view_title(run: RunData, probe: str, direction: str, *, prefix: str = "") -> str:
    """Panel title: probe and view; the update view adds its total and the observed change."""
    title = f"{prefix}{probe} probe: {effect_name(direction)}"
    if direction == DIRECTION_UPDATE and tables.has_records(run.effects, probe, direction):
        predicted = float(tables.cumulative(tables.step_series(run.effects, probe, direction)).iloc[-1])
        observed = _observed(run, probe)
        title += f"\nΣ {_signed(predicted)} nats" + (f", observed {_signed(observed['change'])}" if observed else "")
    return title


def _heatmap_width(steps: int) -> float:
    return float(np.clip(2.6 + 0.16 * steps, 4.5, MAX_PANEL_WIDTH))


def _draw_heatmap(ax: Axes, matrix: pd.DataFrame, norm: Normalize, title: str, direction: str, *,
                  layer_labels: bool = True) -> None:
    """A layer × step matrix as a heatmap with its own colour bar beside it (label: quantity,
    units, sign key); rows in the given (embed → head) order, at most about ten step labels."""
    scale = "symlog" if is_symlog(norm) else "linear"
    sns.heatmap(
        matrix, ax=ax, cmap=effect_cmap(direction), norm=norm,
        cbar_kws={"label": effect_label(direction, colour=True, scale=scale), "pad": 0.02},
        xticklabels=max(1, int(np.ceil(matrix.shape[1] / 10))),
        yticklabels=list(matrix.index) if layer_labels else False,
    )
    if scale == "symlog":
        ax.collections[0].colorbar.set_ticks(symlog_ticks(norm.linthresh, norm.vmax))
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(LAYER_LABEL if layer_labels else "")
    ax.set_title(title, fontsize="medium")
    ax.tick_params(axis="y", rotation=0)


def _shared_or_own(matrix: pd.DataFrame, shared: Normalize, direction: str, scale: str) -> tuple[Normalize, str]:
    """The shared colour scale, or the panel's own (title note " (own scale)") when the shared one
    would render more than a tenth of its non-zero cells indistinguishable from zero."""
    if faint_share(matrix.to_numpy(), shared, effect_cmap(direction)) <= 0.1:
        return shared, ""
    return effect_norm(matrix.to_numpy(), scale), " (own scale)"


def _draw_cumulative(ax: Axes, run: RunData, probe: str, direction: str, color: str,
                     label: str, linestyle: str = "-") -> np.ndarray:
    """The run's cumulative effect; in the update view also the observed risk change (dotted).
    Returns the values drawn (for the axis scale)."""
    curve = tables.cumulative_curve(tables.step_series(run.effects, probe, direction))
    ax.plot(curve.index, curve.to_numpy(), color=color, linestyle=linestyle, label=label,
            marker="o" if len(curve) < 4 else None)
    drawn = [curve.to_numpy()]
    if direction == DIRECTION_UPDATE and _observed(run, probe) is not None:
        observed = tables.observed_curve(run.risks, probe)
        ax.plot(observed.index, observed.to_numpy(), color=color, linestyle=":", linewidth=2.0,
                marker="x" if len(observed) < 4 else None)
        drawn.append(observed.to_numpy())
    return np.concatenate(drawn)


_OBSERVED_HANDLE = Line2D([], [], color="0.2", linestyle=":", linewidth=2.0, label="observed (dotted)")


def _curve_scale(ax: Axes, extremes: list[float]) -> None:
    """Symmetric-log value axis when the runs' curves differ by orders of magnitude (a curve under
    1/30 of the largest would hug the zero line)."""
    magnitudes = np.abs(np.asarray(extremes, dtype=float))
    if magnitudes.size > 1 and magnitudes.max() > 0 and magnitudes.min() < magnitudes.max() / 30:
        scale_axis(ax, magnitudes, scale="symlog")


# --------------------------------------------------------------------------- views


@styled
def layer_step_heatmap(run: Any, probes: Sequence[str] = ("forget", "retain"),
                       direction: str | Sequence[str] | None = None, *, shared_scale: bool = False,
                       scale: str = "auto") -> Figure:
    """Layer × step heatmaps of the batch effect: one row per probe, the G-effect and the
    predicted risk change (update effect) side by side (``direction=None``; or the one named).

    Each cell is the mean over the probe's instances of ``<∇_{θ_k} R_i, v>`` at that step
    (``tables.layer_step_matrix``), ``v`` the objective gradient or the applied update. Red
    raises the risk in both views; the update panels' titles give the run's total predicted
    change and the observed change of the mean risk. Colour limits are symmetric about zero,
    per panel unless ``shared_scale`` (one scale per view across probes); ``scale``:
    ``"auto"`` (symmetric-log when values span orders of magnitude), ``"linear"``, ``"symlog"``.
    """
    data = as_run(run)
    present, directions = _recorded([data], probes, direction)
    matrices = {(p, d): tables.layer_step_matrix(data.effects, p, d)
                for p in present for d in directions if tables.has_records(data.effects, p, d)}
    shared = {d: effect_norm(np.concatenate([m.to_numpy().ravel() for (_, e), m in matrices.items() if e == d]),
                             scale) for d in directions}
    steps = max(m.shape[1] for m in matrices.values())
    height = max(3.0, 1.5 + 0.32 * max(m.shape[0] for m in matrices.values()))
    fig, axes = new_figure(len(present), len(directions), width=_heatmap_width(steps), height=height)
    for row, probe in enumerate(present):
        for col, view in enumerate(directions):
            ax = axes[row, col]
            if (probe, view) not in matrices:
                ax.set_axis_off()
                ax.set_title(f"{probe} probe: no {effect_name(view)} records")
                continue
            matrix = matrices[(probe, view)]
            norm, note = (_shared_or_own(matrix, shared[view], view, scale) if shared_scale
                          else (effect_norm(matrix.to_numpy(), scale), ""))
            _draw_heatmap(ax, matrix, norm, _view_title(data, probe, view) + note, view)
    fig.suptitle(f"{data.name}: per layer and step (red: the step raises the risk)")
    return fig


@styled
def cumulative_effect(runs: Any, probes: Sequence[str] = ("forget", "retain"),
                      direction: str | Sequence[str] | None = None) -> Figure:
    """Cumulative effect over training steps: one row per probe, the G-effect and the predicted
    risk change side by side (``direction=None``), one line per run.

    Each curve is the step-weighted running sum of the batch effect summed over layers
    (``tables.cumulative_curve``). A G-effect curve falling below zero, or a predicted-change
    curve rising above it, means the probe's risk rises (forgetting on forget data, damage on
    retain data). The predicted-change panels also draw the observed change of the mean risk
    (dotted, same colour) where the run measured it. The value axis turns symmetric-log when
    the runs differ by orders of magnitude.
    """
    items = as_runs(runs)
    colors = _colors(items)
    present, directions = _recorded(items, probes, direction)
    fig, axes = new_figure(len(present), len(directions), width=5.2, height=3.8)
    observed = False
    for row, probe in enumerate(present):
        for col, view in enumerate(directions):
            ax = axes[row, col]
            extremes = []
            for run in items:
                if tables.has_records(run.effects, probe, view):
                    values = _draw_cumulative(ax, run, probe, view, colors[run.name], run.name)
                    extremes.append(float(np.abs(values).max()))
                    observed |= view == DIRECTION_UPDATE and _observed(run, probe) is not None
            _curve_scale(ax, extremes)
            zero_line(ax)
            ax.set_title(f"{probe} probe: {effect_name(view)}")
            ax.set_xlabel(STEP_LABEL)
            ax.set_ylabel(effect_label(view, cumulative=True, short=True))
    _figure_legend(fig, axes, [_OBSERVED_HANDLE] if observed else [])
    fig.suptitle("cumulative effect of the steps taken")
    return fig


def _figure_legend(fig: Figure, axes: np.ndarray, extra: Sequence[Line2D] = ()) -> None:
    """One legend of the runs for the whole figure, outside the panels on the right (so it covers
    no data however many runs there are)."""
    handles: dict[str, Any] = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    entries = list(handles.values()) + list(extra)
    if entries:
        fig.legend(handles=entries, labels=[*handles, *(h.get_label() for h in extra)], title="run",
                   loc="outside right upper", fontsize="small")


def _panel_grid(count: int, max_columns: int) -> tuple[int, int]:
    columns = min(count, max_columns)
    return int(np.ceil(count / columns)), columns


@styled
def layer_totals(runs: Any, probes: Sequence[str] = ("forget", "retain"),
                 direction: str | Sequence[str] | None = None, *, scale: str = "auto") -> Figure:
    """Per-layer totals over the run as bars (which blocks carry unlearning, which damage): one
    row per probe, the G-effect and the predicted risk change side by side (``direction=None``).

    Bar height is the step-weighted sum over steps of the layer's batch effect
    (``tables.layer_totals``); runs are grouped within each layer. The value axis turns
    symmetric-log (``scale="auto"``) when the totals span orders of magnitude, so every block's
    bar stays readable beside a dominant one; panels are at most :data:`MAX_PANEL_WIDTH` wide.
    """
    items = as_runs(runs)
    colors = _colors(items)
    present, directions = _recorded(items, probes, direction)
    frames = []
    for run in items:
        for probe in present:
            for view in directions:
                if tables.has_records(run.effects, probe, view):
                    totals = tables.layer_totals(run.effects, probe, view)
                    frames.append(pd.DataFrame({"layer": totals.index, "total": totals.to_numpy(),
                                                "run": run.name, "probe": probe, "direction": view}))
    long = pd.concat(frames, ignore_index=True)
    layers = ordered_layers(long["layer"])
    width = float(np.clip(2.0 + 0.14 * len(layers) * len(items), 4.8, MAX_PANEL_WIDTH))
    fig, axes = new_figure(len(present), len(directions), width=width, height=3.9)
    for row, probe in enumerate(present):
        for col, view in enumerate(directions):
            ax = axes[row, col]
            part = long[(long["probe"] == probe) & (long["direction"] == view)]
            if part.empty:
                ax.set_axis_off()
                continue
            sns.barplot(data=part, x="layer", y="total", hue="run", order=layers,
                        hue_order=[r.name for r in items if r.name in set(part["run"])],
                        palette=colors, errorbar=None, ax=ax)
            used = scale_axis(ax, part["total"].to_numpy(), scale=scale)
            zero_line(ax)
            ax.set_title(f"{probe} probe: {effect_name(view)}")
            ax.set_xlabel(LAYER_LABEL)
            ax.set_ylabel(effect_label(view, short=True, scale=used).replace("\n", "\nsummed over steps\n", 1))
            ax.tick_params(axis="x", rotation=45)
    _figure_legend(fig, axes)
    fig.suptitle("effect per layer, summed over steps")
    return fig


@styled
def instance_distribution(runs: Any, probes: Sequence[str] = ("forget", "retain"),
                          direction: str | Sequence[str] | None = None, *, windows: int = 4,
                          kind: str = "violin") -> Figure:
    """Distribution over instances of the per-instance effect (summed over layers, averaged
    within each step window), as violins or boxes: one row per probe, the G-effect and the
    predicted risk change side by side (``direction=None``), hue = run."""
    if kind not in ("violin", "box"):
        raise ValueError(f"kind must be 'violin' or 'box', got {kind!r}")
    items = as_runs(runs)
    colors = _colors(items)
    present, directions = _recorded(items, probes, direction)
    fig, axes = new_figure(len(present), len(directions),
                           width=float(np.clip(1.4 * windows * max(1, len(items) ** 0.5), 5.0, MAX_PANEL_WIDTH)),
                           height=3.8)
    draw = sns.violinplot if kind == "violin" else sns.boxplot
    extra = {"cut": 0, "inner": "quart"} if kind == "violin" else {}
    steps = np.concatenate([tables.instance_totals(r.effects, p, d)["step"].to_numpy()
                            for r in items for p in present for d in directions
                            if tables.has_records(r.effects, p, d)])
    labels = tables.step_windows(steps, windows)
    order = list(dict.fromkeys(labels[s] for s in sorted(labels)))
    for row, probe in enumerate(present):
        for col, view in enumerate(directions):
            ax = axes[row, col]
            frames = []
            for run in items:
                if tables.has_records(run.effects, probe, view):
                    frame = tables.instance_windows(run.effects, probe, view, labels)
                    frame["run"] = run.name
                    frames.append(frame)
            if not frames:
                ax.set_axis_off()
                continue
            long = pd.concat(frames, ignore_index=True)
            long["window"] = long["window"].astype(str)
            draw(data=long, x="window", y="value", hue="run", order=order,
                 hue_order=[r.name for r in items if r.name in set(long["run"])], palette=colors, ax=ax,
                 **extra)
            zero_line(ax)
            ax.set_title(f"{probe} probe: {effect_name(view)}")
            ax.set_xlabel("step window")
            ax.set_ylabel(f"per-instance {effect_label(view, short=True)}")
    _figure_legend(fig, axes)
    fig.suptitle("per-instance effect by step window")
    return fig


def _texts_for(run: RunData, probe: str, texts: Any) -> pd.DataFrame | None:
    """Text source of ``probe``: ``texts[probe]`` for a per-probe mapping, ``texts`` itself
    otherwise, the run's saved probe texts when ``texts`` is None."""
    if texts is None:
        return run.texts.get(probe)
    if isinstance(texts, Mapping) and probe in texts:
        return normalise_texts(texts[probe], f"texts[{probe!r}]")
    if isinstance(texts, Mapping) and set(texts) & set(run.probes()):
        return None  # texts for other probes only
    return normalise_texts(texts, "texts")


def most_damaged_table(run: Any, probe: str = "retain", n: int = 10, *, texts: Any = None,
                       direction: str = DIRECTION_GRADIENT) -> pd.DataFrame:
    """The ``n`` most damaged instances of ``probe``: instance, damage, measure, and text when a
    text source is known (``texts``: list of strings / table with question, answer or text
    columns / ``{probe: ...}``; default: the run's saved probe texts)."""
    data = as_run(run)
    table = tables.instance_damage(data.effects, data.risks, probe, direction).head(n)
    source = _texts_for(data, probe, texts)
    if source is not None:
        table = table.join(source, on="instance")
    return table.reset_index(drop=True)


@styled
def most_damaged(run: Any, probe: str = "retain", n: int = 10, *, texts: Any = None,
                 direction: str = DIRECTION_GRADIENT) -> Figure:
    """Horizontal bars of the ``n`` most damaged instances of ``probe`` (observed risk
    increase when the run has a risks table), labelled with their text when available."""
    data = as_run(run)
    table = most_damaged_table(data, probe, n, texts=texts, direction=direction)
    labels = [
        f"#{row.instance}: {shorten(row.text, 60)}" if "text" in table.columns and isinstance(row.text, str)
        else f"#{row.instance}"
        for row in table.itertuples()
    ]
    fig, axes = new_figure(1, 1, width=10.0, height=max(2.5, 0.9 + 0.32 * len(table)))
    ax = axes[0, 0]
    ax.barh(np.arange(len(table)), table["damage"].to_numpy(), color=sns.color_palette("Reds_r", 3)[0])
    ax.set_yticks(np.arange(len(table)), labels=labels, fontsize="small")
    ax.invert_yaxis()
    zero_line(ax, vertical=True)
    ax.set_xlabel(str(table["measure"].iloc[0]) if len(table) else "damage")
    ax.set_title(f"{data.name}: most damaged {probe} instances")
    return fig


def _token_frame(effects: pd.DataFrame, layer: str | None) -> tuple[pd.DataFrame, str]:
    position = next((c for c in ("position", "token") if c in effects.columns
                     and pd.api.types.is_integer_dtype(effects[c])), None)
    if position is None:
        raise ValueError(
            "per-token effects need an integer 'position' (or 'token') column besides "
            f"'instance' and 'value'; got columns {list(effects.columns)}"
        )
    check_columns(effects, ("instance", "value"), "per-token effects")
    rows = effects
    if layer is not None:
        check_columns(effects, ("layer",), "per-token effects (layer selected)")
        rows = effects[effects["layer"] == layer]
        if rows.empty:
            raise ValueError(f"no per-token effects for layer {layer!r}; layers: {ordered_layers(effects['layer'])}")
    return rows, position


@styled
def token_heatmap(effects: pd.DataFrame, tokens: Mapping[int, Sequence[str]] | None = None, *,
                  tokenizer: Any = None, instances: Sequence[int] | None = None,
                  layer: str | None = None, max_tokens: int = 48,
                  title: str = "per-token effect") -> Figure:
    """Per-token effects of chosen instances as a heatmap over the tokens' text.

    ``effects``: long table with ``instance``, an integer ``position`` (or ``token``) column,
    ``value`` and optionally ``layer`` (summed unless ``layer`` picks one) — e.g. the result
    of ``geffect.token_effect``. The tokens' text comes from a ``text`` column, else from
    ``tokens`` (instance → token strings indexed by position), else from decoding a
    ``token_id`` column with ``tokenizer``. One row per instance; each cell is coloured by
    its token's effect (symmetric limits) and shows the token.
    """
    rows, position = _token_frame(effects, layer)
    wanted = list(instances) if instances is not None else list(pd.unique(rows["instance"]))
    rows = rows[rows["instance"].isin(wanted)]
    if rows.empty:
        raise ValueError(f"no per-token effects for instances {wanted}")
    matrix = rows.pivot_table(index="instance", columns=position, values="value", aggfunc="sum")
    matrix = matrix.reindex(index=[i for i in wanted if i in matrix.index])
    matrix = matrix.iloc[:, :max_tokens]
    text_of: dict[tuple[int, int], str] = {}
    if "text" in rows.columns:
        text_of = {(int(i), int(p)): str(t) for i, p, t in zip(rows["instance"], rows[position], rows["text"])}
    elif tokens is not None:
        text_of = {(int(i), int(p)): str(tokens[i][p]) for i in matrix.index for p in matrix.columns
                   if i in tokens and 0 <= p < len(tokens[i])}
    elif tokenizer is not None and "token_id" in rows.columns:
        text_of = {(int(i), int(p)): tokenizer.decode([int(t)]).strip()
                   for i, p, t in zip(rows["instance"], rows[position], rows["token_id"])}
    norm = effect_norm(matrix.to_numpy())
    fig, axes = new_figure(1, 1, width=max(5.0, 2.2 + 0.62 * matrix.shape[1]),
                           height=max(2.2, 1.3 + 0.5 * matrix.shape[0]))
    ax = axes[0, 0]
    annotations = np.array([[text_of.get((int(i), int(p)), "") for p in matrix.columns]
                            for i in matrix.index], dtype=object)
    sns.heatmap(matrix, ax=ax, cmap=EFFECT_CMAP, vmin=norm.vmin, vmax=norm.vmax,
                annot=annotations if text_of else False, fmt="", annot_kws={"fontsize": 7},
                cbar_kws={"label": "G-effect on the token's NLL (nats per unit step)\n"
                                   f"{sign_key(DIRECTION_GRADIENT, colour=True)}"},
                xticklabels=list(matrix.columns), yticklabels=[f"#{i}" for i in matrix.index],
                linewidths=0.5, linecolor="white")
    ax.set_xlabel("token position")
    ax.set_ylabel("instance")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(title if layer is None else f"{title} ({layer})")
    return fig


@styled
def predicted_vs_observed(runs: Any, probes: Sequence[str] | None = None) -> Figure:
    """First-order predicted (update effect ``∇R_i·Δθ``) vs observed risk change per instance
    and step, one panel per run, with the Pearson correlation and the y = x line."""
    items = [r for r in as_runs(runs) if not r.risks.empty]
    if not items:
        raise ValueError("predicted_vs_observed needs runs with a risks table (risks.parquet)")
    fig, axes = new_figure(1, len(items), width=4.6, height=4.2)
    for ax, run in zip(axes[0], items):
        pairs = tables.prediction_pairs(run.risks)
        if probes is not None:
            pairs = pairs[pairs["probe"].isin(list(probes))]
        r = tables.pearson(pairs["predicted"], pairs["observed"])
        sns.scatterplot(data=pairs, x="predicted", y="observed", hue="probe", style="probe",
                        s=14, alpha=0.6, linewidth=0, ax=ax)
        both = np.concatenate([pairs["predicted"].to_numpy(), pairs["observed"].to_numpy()])
        low, high = (float(both.min()), float(both.max())) if both.size else (-1.0, 1.0)
        ax.plot([low, high], [low, high], color="0.3", linewidth=0.8, linestyle=":", label="y = x")
        ax.text(0.03, 0.97, f"Pearson r = {r:.3f}\nn = {len(pairs)}", transform=ax.transAxes,
                va="top", ha="left", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
        ax.set_xlabel(effect_label(DIRECTION_UPDATE).replace("\n", "; "))
        ax.set_ylabel(OBSERVED_LABEL.replace("\n", "; "))
        ax.set_title(run.name)
    fig.suptitle("first-order prediction vs observed risk change per instance and step")
    return fig


def _pairwise_frame(matrix: Any, groups: Sequence[str] | None, layer: str | None) -> pd.DataFrame:
    """Forget × probe matrix (DataFrame) from a 2-D/3-D array, a ``PairwiseResult`` or a long table."""
    if not isinstance(matrix, pd.DataFrame) and hasattr(matrix, "values") and hasattr(matrix, "groups"):
        matrix, groups = matrix.values, groups or matrix.groups  # geffect.pairwise_effect's result
    if isinstance(matrix, pd.DataFrame):
        if {"forget", "value"} <= set(matrix.columns):
            probe_col = next((c for c in ("probe_instance", "instance", "probe") if c in matrix.columns), None)
            if probe_col is None:
                raise ValueError(f"pairwise table needs a probe-instance column; got {list(matrix.columns)}")
            rows = matrix if layer is None else matrix[matrix["layer"] == layer]
            return rows.pivot_table(index="forget", columns=probe_col, values="value", aggfunc="sum")
        return matrix.astype(float)
    array = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    if array.ndim == 3:
        if layer is not None:
            if groups is None or layer not in groups:
                raise ValueError(f"layer {layer!r} not among the given groups {groups}")
            array = array[:, :, list(groups).index(layer)]
        else:
            array = array.sum(axis=2)
    if array.ndim != 2:
        raise ValueError(f"pairwise matrix must be 2-D (forget × probe) or 3-D (× layer); got shape {array.shape}")
    return pd.DataFrame(array)


@styled
def pairwise_matrix(matrix: Any, groups: Sequence[str] | None = None, *, layer: str | None = None,
                    title: str = "pairwise G-effect", forget_label: str = "forget instance j",
                    probe_label: str = "retain instance i") -> Figure:
    """Heatmap of the pairwise effects ``<∇ℓ_j, ∇R_i>`` (forget instance j × probe instance i),
    summed over layer groups unless ``layer`` picks one, with symmetric colour limits and the
    row/column sums in the margins (which forget example drives which damage).

    ``matrix``: the result of ``geffect.pairwise_effect``, an array/tensor (F × P) or
    (F × P × K) with ``groups`` naming K, or a long table with ``forget``, probe ``instance``,
    optional ``layer`` and ``value`` columns (``PairwiseResult.to_frame()``).
    """
    frame = _pairwise_frame(matrix, groups, layer)
    norm = effect_norm(frame.to_numpy())
    fig = Figure(figsize=(max(5.0, 2.5 + 0.18 * frame.shape[1]), max(4.0, 2.0 + 0.18 * frame.shape[0])),
                 layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=(5, 1), height_ratios=(1, 5))
    ax = fig.add_subplot(grid[1, 0])
    top = fig.add_subplot(grid[0, 0], sharex=ax)
    side = fig.add_subplot(grid[1, 1], sharey=ax)
    sns.heatmap(frame, ax=ax, cmap=EFFECT_CMAP, vmin=norm.vmin, vmax=norm.vmax, cbar=False,
                xticklabels="auto", yticklabels="auto")
    columns, rows = frame.sum(axis=0).to_numpy(), frame.sum(axis=1).to_numpy()
    top.bar(np.arange(frame.shape[1]) + 0.5, columns, width=0.9, color=np.where(columns < 0, "C3", "C0"))
    side.barh(np.arange(frame.shape[0]) + 0.5, rows, height=0.9, color=np.where(rows < 0, "C3", "C0"))
    top.set_ylabel(f"sum over j\n({sign_key(DIRECTION_GRADIENT)})")
    side.set_xlabel(f"sum over i\n({sign_key(DIRECTION_GRADIENT)})")
    top.tick_params(axis="x", labelbottom=False)
    side.tick_params(axis="y", labelleft=False)
    fig.colorbar(ax.collections[0], ax=side, location="right",
                 label=f"⟨∇ℓ_j, ∇R_i⟩\n{sign_key(DIRECTION_GRADIENT, colour=True)} (R_i, under a step on ℓ_j)")
    ax.set_xlabel(probe_label)
    ax.set_ylabel(forget_label)
    top.set_title(title if layer is None else f"{title} ({layer})")
    return fig


@styled
def comparison_grid(runs: Any, views: Sequence[str] = ("forget", "retain", "cumulative"),
                    direction: str | Sequence[str] | None = None, *, scale: str = "auto") -> Figure:
    """Objectives × views, with one row per run and direction: the G-effect row and, under it,
    the predicted-risk-change row (``direction=None``; or only the direction named).

    A view is a probe name (its layer × step heatmap, with one colour scale per view and
    direction shared down the column so objectives compare, and a colour bar beside every
    panel) or ``"cumulative"`` (the run's cumulative effect per probe: forget solid, retain
    dashed, and in the predicted-change row the observed change dotted; one y range per
    direction). ``scale`` as in :func:`layer_step_heatmap`.
    """
    items = as_runs(runs)
    colors = _colors(items)
    probes = [v for v in views if v != "cumulative"]
    _, directions = _recorded(items, probes or [p for r in items for p in r.probes()], direction)
    matrices = {(r.name, p, d): tables.layer_step_matrix(r.effects, p, d)
                for r in items for p in probes for d in directions if tables.has_records(r.effects, p, d)}
    norms = {(p, d): effect_norm(np.concatenate([m.to_numpy().ravel() for (_, q, e), m in matrices.items()
                                                 if (q, e) == (p, d)] or [np.zeros(1)]), scale)
             for p in probes for d in directions}
    steps = max([m.shape[1] for m in matrices.values()] or [10])
    rows = [(run, view) for run in items for view in directions]
    fig, axes = new_figure(len(rows), len(views), width=min(_heatmap_width(steps), 6.0), height=3.0)
    cumulative_axes: dict[str, list[Axes]] = {d: [] for d in directions}
    for row, (run, view) in enumerate(rows):
        for col, panel in enumerate(views):
            ax = axes[row, col]
            if panel == "cumulative":
                observed = False
                for probe in (p for p in run.probes() if tables.has_records(run.effects, p, view)):
                    _draw_cumulative(ax, run, probe, view, colors[run.name], probe,
                                     PROBE_LINESTYLES.get(probe, "-."))
                    observed |= view == DIRECTION_UPDATE and _observed(run, probe) is not None
                zero_line(ax)
                handles, _ = ax.get_legend_handles_labels()
                ax.legend(handles=handles + ([_OBSERVED_HANDLE] if observed else []), fontsize="x-small")
                ax.set_xlabel(STEP_LABEL)
                ax.set_ylabel(f"cumulative {effect_name(view)}\n{sign_key(view)}")
                ax.set_title(f"{run.name}: cumulative {effect_name(view)}", fontsize="medium")
                cumulative_axes[view].append(ax)
            elif (run.name, panel, view) in matrices:
                matrix = matrices[(run.name, panel, view)]
                norm, title = _shared_or_own(matrix, norms[(panel, view)], view, scale)
                _draw_heatmap(ax, matrix, norm, _view_title(run, panel, view, prefix=f"{run.name}: ") + title,
                              view, layer_labels=col == 0)
            else:
                ax.set_axis_off()
                ax.set_title(f"{run.name}: no {panel!r} {effect_name(view)} records", fontsize="medium")
    for group in cumulative_axes.values():  # one y range per direction, so objectives compare
        if group:
            low = min(ax.get_ylim()[0] for ax in group)
            high = max(ax.get_ylim()[1] for ax in group)
            for ax in group:
                ax.set_ylim(low, high)
    fig.suptitle("objective comparison (red: the step raises the risk)")
    return fig


@styled
def term_weights(runs: Any) -> Figure:
    """The loss-term weights a weight controller learned (``weight_<term>`` of the history), per step,
    beside what moved them: the validation objective M and, for hypergradient controllers, each
    term's mean G-effect on the forget and retain validation probes (see
    ``geffect.training.controllers``). Line style: the term (weights) or the validation probe
    (G-effects), as for probes elsewhere; marker: the term whose gradient is contracted."""
    items = [r for r in as_runs(runs) if any(c.startswith("weight_") for c in r.history.columns)]
    if not items:
        raise ValueError("no run has learned term weights (history columns weight_<term>)")
    colors = _colors(items)
    with_effects = [r for r in items if any(c.startswith("meta_geffect_") for c in r.history.columns)]
    fig, axes = new_figure(1, 3 if with_effects else 2, width=4.6, height=3.4)
    for run in items:
        history = run.history.sort_values("step")
        for column in (c for c in history.columns if c.startswith("weight_")):
            term = column.removeprefix("weight_")
            axes[0, 0].step(history["step"], history[column], where="post", color=colors[run.name],
                            linestyle=PROBE_LINESTYLES.get(term, ":"), label=f"{run.name}: {term}")
        if "meta_objective" in history:
            measured = history.dropna(subset=["meta_objective"])
            axes[0, 1].plot(measured["step"], measured["meta_objective"], marker="o", color=colors[run.name],
                            label=run.name)
    for run in with_effects:
        history = run.history.dropna(subset=["meta_objective"]).sort_values("step")
        for column in (c for c in history.columns if c.startswith("meta_geffect_")):
            term, _, probe = column.removeprefix("meta_geffect_").rpartition("_")
            axes[0, 2].plot(history["step"], history[column], color=colors[run.name],
                            marker=TERM_MARKERS.get(term, "."), linestyle=PROBE_LINESTYLES.get(probe, ":"),
                            label=f"{run.name}: ∇L_{term} on {probe}")
    axes[0, 0].set(title="learned term weights", xlabel=STEP_LABEL, ylabel="weight w_j")
    axes[0, 1].set(title="validation objective M", xlabel=STEP_LABEL, ylabel="R(retain) − γ·R(forget) (nats)")
    if with_effects:
        zero_line(axes[0, 2])
        axes[0, 2].set(title="per-term G-effect on validation probes", xlabel=STEP_LABEL,
                       ylabel=effect_label(DIRECTION_GRADIENT))
    for ax in axes[0]:
        ax.legend(fontsize="x-small")
    fig.suptitle("meta-learned trade-off")
    return fig
