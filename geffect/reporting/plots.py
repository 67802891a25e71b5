"""geffect's plotting vocabulary (``geffect.plot``): where and when an objective forgets and
where it does damage, one function per view, each returning a matplotlib ``Figure``.

Every function takes the record tables of a run (a run directory, a ``geffect.Run``, a
:class:`~geffect.reporting.runs.RunData` or the bare long DataFrame) or several runs (a list
or a ``{name: run}`` mapping) for comparisons. Effects are drawn with a diverging colour map
whose limits are symmetric about zero (red: the step raises the probe's risk — forgetting on
forget data, damage on retain data; blue: it lowers it), layers run from the embeddings to
the head, and each objective keeps one colour in every figure (``geffect.reporting.style``).
The numbers come from ``geffect.reporting.tables`` (definitions there), so the diagnosis
sentences quote exactly what the figures show. Figures are not registered with pyplot: save
them with ``fig.savefig(path)``; notebooks display a returned figure once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from geffect.reporting import tables
from geffect.reporting.runs import RunData, as_run, as_runs, check_columns, normalise_texts
from geffect.reporting.style import (
    EFFECT_CMAP,
    PROBE_LINESTYLES,
    effect_label,
    effect_name,
    effect_norm,
    new_figure,
    ordered_layers,
    run_colors,
    shorten,
    styled,
    zero_line,
)
from geffect.schema import DIRECTION_GRADIENT

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


# --------------------------------------------------------------------------- helpers


def _probes_present(run: RunData, probes: Sequence[str], direction: str) -> list[str]:
    present = [p for p in probes if tables.has_records(run.effects, p, direction)]
    if not present:
        raise ValueError(
            f"run {run.name!r} has no {direction!r} effect records for probes {list(probes)}; "
            f"its probes are {run.probes()}"
        )
    return present


def _probes_in_any(runs: list[RunData], probes: Sequence[str], direction: str) -> list[str]:
    present = [p for p in probes if any(tables.has_records(r.effects, p, direction) for r in runs)]
    if not present:
        raise ValueError(f"no run has {direction!r} effect records for probes {list(probes)}")
    return present


def _colors(runs: list[RunData]) -> dict[str, str]:
    return run_colors([r.name for r in runs], [r.objective for r in runs])


def _draw_heatmap(ax: Axes, matrix: pd.DataFrame, norm: Normalize, title: str,
                  cbar_label: str | None, *, layer_labels: bool = True) -> None:
    """A layer × step matrix as a heatmap: rows in the given (embed → head) order, at most
    about ten step labels."""
    sns.heatmap(
        matrix, ax=ax, cmap=EFFECT_CMAP, vmin=norm.vmin, vmax=norm.vmax,
        cbar=cbar_label is not None, cbar_kws={"label": cbar_label} if cbar_label else None,
        xticklabels=max(1, int(np.ceil(matrix.shape[1] / 10))),
        yticklabels=list(matrix.index) if layer_labels else False,
    )
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(LAYER_LABEL if layer_labels else "")
    ax.set_title(title)
    ax.tick_params(axis="y", rotation=0)


def _draw_cumulative(ax: Axes, run: RunData, probe: str, direction: str, color: str,
                     label: str, linestyle: str = "-") -> None:
    curve = tables.cumulative_curve(tables.step_series(run.effects, probe, direction))
    ax.plot(curve.index, curve.to_numpy(), color=color, linestyle=linestyle, label=label,
            marker="o" if len(curve) < 4 else None)


# --------------------------------------------------------------------------- views


@styled
def layer_step_heatmap(run: Any, probes: Sequence[str] = ("forget", "retain"),
                       direction: str = DIRECTION_GRADIENT, *, shared_scale: bool = False) -> Figure:
    """Layer × step heatmaps of the batch G-effect, one panel per probe side by side.

    Each cell is the mean over the probe's instances of ``<∇_{θ_k} R_i, v>`` at that step
    (``tables.layer_step_matrix``). Colour limits are symmetric about zero, per panel unless
    ``shared_scale``.
    """
    data = as_run(run)
    present = _probes_present(data, probes, direction)
    matrices = {p: tables.layer_step_matrix(data.effects, p, direction) for p in present}
    shared = effect_norm(np.concatenate([m.to_numpy().ravel() for m in matrices.values()]))
    width = max(4.5, 2.5 + 0.18 * max(m.shape[1] for m in matrices.values()))
    height = max(3.0, 1.2 + 0.32 * max(m.shape[0] for m in matrices.values()))
    fig, axes = new_figure(1, len(present), width=width, height=height)
    for ax, probe in zip(axes[0], present):
        norm = shared if shared_scale else effect_norm(matrices[probe].to_numpy())
        _draw_heatmap(ax, matrices[probe], norm, f"{probe} probe", effect_label(direction))
    fig.suptitle(f"{data.name}: {effect_name(direction)} per layer and step")
    return fig


@styled
def cumulative_effect(runs: Any, probes: Sequence[str] = ("forget", "retain"),
                      direction: str = DIRECTION_GRADIENT) -> Figure:
    """Cumulative G-effect over training steps, one panel per probe, one line per run/objective.

    The curve is the step-weighted running sum of the batch effect summed over layers
    (``tables.cumulative_curve``): falling on the forget probe means unlearning; falling on the
    retain probe means accumulating damage.
    """
    items = as_runs(runs)
    colors = _colors(items)
    present = _probes_in_any(items, probes, direction)
    fig, axes = new_figure(1, len(present), width=5.0, height=3.6)
    for ax, probe in zip(axes[0], present):
        for run in items:
            if tables.has_records(run.effects, probe, direction):
                _draw_cumulative(ax, run, probe, direction, colors[run.name], run.name)
        zero_line(ax)
        ax.set_title(f"{probe} probe")
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(effect_label(direction, cumulative=True))
        ax.legend(title="run", fontsize="small")
    fig.suptitle(f"cumulative {effect_name(direction)}")
    return fig


@styled
def layer_totals(runs: Any, probes: Sequence[str] = ("forget", "retain"),
                 direction: str = DIRECTION_GRADIENT) -> Figure:
    """Per-layer totals over the run as bars (which blocks carry unlearning, which damage).

    Bar height is the step-weighted sum over steps of the layer's batch effect
    (``tables.layer_totals``); runs are grouped side by side within each layer.
    """
    items = as_runs(runs)
    colors = _colors(items)
    present = _probes_in_any(items, probes, direction)
    frames = []
    for run in items:
        for probe in present:
            if tables.has_records(run.effects, probe, direction):
                totals = tables.layer_totals(run.effects, probe, direction)
                frames.append(pd.DataFrame({"layer": totals.index, "total": totals.to_numpy(),
                                            "run": run.name, "probe": probe}))
    long = pd.concat(frames, ignore_index=True)
    layers = ordered_layers(long["layer"])
    fig, axes = new_figure(1, len(present), width=max(4.5, 0.45 * len(layers) * max(1, len(items))),
                           height=3.8)
    for ax, probe in zip(axes[0], present):
        part = long[long["probe"] == probe]
        sns.barplot(data=part, x="layer", y="total", hue="run", order=layers,
                    hue_order=[r.name for r in items if r.name in set(part["run"])],
                    palette=colors, errorbar=None, ax=ax)
        zero_line(ax)
        ax.set_title(f"{probe} probe")
        ax.set_xlabel(LAYER_LABEL)
        ax.set_ylabel(effect_label(direction, cumulative=True))
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(f"{effect_name(direction)} per layer, summed over steps")
    return fig


@styled
def instance_distribution(runs: Any, probes: Sequence[str] = ("forget", "retain"),
                          direction: str = DIRECTION_GRADIENT, *, windows: int = 4,
                          kind: str = "violin") -> Figure:
    """Distribution over instances of the per-instance effect (summed over layers, averaged
    within each step window), as violins or boxes; one panel per probe, hue = run."""
    if kind not in ("violin", "box"):
        raise ValueError(f"kind must be 'violin' or 'box', got {kind!r}")
    items = as_runs(runs)
    colors = _colors(items)
    present = _probes_in_any(items, probes, direction)
    fig, axes = new_figure(1, len(present), width=max(5.0, 1.4 * windows * max(1, len(items) ** 0.5)),
                           height=3.8)
    draw = sns.violinplot if kind == "violin" else sns.boxplot
    extra = {"cut": 0, "inner": "quart"} if kind == "violin" else {}
    steps = np.concatenate([tables.instance_totals(r.effects, p, direction)["step"].to_numpy()
                            for r in items for p in present if tables.has_records(r.effects, p, direction)])
    labels = tables.step_windows(steps, windows)
    order = list(dict.fromkeys(labels[s] for s in sorted(labels)))
    for ax, probe in zip(axes[0], present):
        frames = []
        for run in items:
            if tables.has_records(run.effects, probe, direction):
                frame = tables.instance_windows(run.effects, probe, direction, labels)
                frame["run"] = run.name
                frames.append(frame)
        long = pd.concat(frames, ignore_index=True)
        long["window"] = long["window"].astype(str)
        draw(data=long, x="window", y="value", hue="run", order=order,
             hue_order=[r.name for r in items if r.name in set(long["run"])], palette=colors, ax=ax,
             **extra)
        zero_line(ax)
        ax.set_title(f"{probe} probe")
        ax.set_xlabel("step window")
        ax.set_ylabel(f"per-instance {effect_label(direction)}")
    fig.suptitle(f"per-instance {effect_name(direction)} by step window")
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
                cbar_kws={"label": "effect on the token's NLL (nats per unit step size)"},
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
        ax.set_xlabel("predicted risk change ∇R·Δθ (nats)")
        ax.set_ylabel("observed risk change (nats)")
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
    top.set_ylabel("sum over j")
    side.set_xlabel("sum over i")
    top.tick_params(axis="x", labelbottom=False)
    side.tick_params(axis="y", labelleft=False)
    fig.colorbar(ax.collections[0], ax=side, label="⟨∇ℓ_j, ∇R_i⟩", location="right")
    ax.set_xlabel(probe_label)
    ax.set_ylabel(forget_label)
    top.set_title(title if layer is None else f"{title} ({layer})")
    return fig


@styled
def comparison_grid(runs: Any, views: Sequence[str] = ("forget", "retain", "cumulative"),
                    direction: str = DIRECTION_GRADIENT) -> Figure:
    """Objectives (rows) × views (columns). A view is a probe name (its layer × step heatmap,
    with one colour scale shared down the column so objectives compare) or ``"cumulative"``
    (the run's cumulative effect per probe: forget solid, retain dashed; shared y axis)."""
    items = as_runs(runs)
    colors = _colors(items)
    probes = [v for v in views if v != "cumulative"]
    matrices = {(r.name, p): tables.layer_step_matrix(r.effects, p, direction)
                for r in items for p in probes if tables.has_records(r.effects, p, direction)}
    if probes and not matrices:
        raise ValueError(f"no run has {direction!r} effect records for probes {probes}")
    norms = {p: effect_norm(np.concatenate([m.to_numpy().ravel() for (_, q), m in matrices.items() if q == p]
                                           or [np.zeros(1)])) for p in probes}
    fig, axes = new_figure(len(items), len(views), width=4.6, height=3.0)
    cumulative_axes = []
    for row, run in enumerate(items):
        for col, view in enumerate(views):
            ax = axes[row, col]
            if view == "cumulative":
                for probe in (p for p in run.probes() if tables.has_records(run.effects, p, direction)):
                    _draw_cumulative(ax, run, probe, direction, colors[run.name], probe,
                                     PROBE_LINESTYLES.get(probe, ":"))
                zero_line(ax)
                ax.legend(fontsize="x-small")
                ax.set_xlabel(STEP_LABEL)
                ax.set_ylabel(f"cumulative {effect_name(direction)}")
                ax.set_title(f"{run.name}: cumulative")
                cumulative_axes.append(ax)
            elif (run.name, view) in matrices:
                _draw_heatmap(ax, matrices[(run.name, view)], norms[view], f"{run.name}: {view}", None,
                              layer_labels=col == 0)
            else:
                ax.set_axis_off()
                ax.set_title(f"{run.name}: no {view!r} records")
    for col, view in enumerate(views):
        if view in norms:
            fig.colorbar(ScalarMappable(norms[view], EFFECT_CMAP), ax=list(axes[:, col]),
                         label=effect_label(direction), shrink=0.8)
    if cumulative_axes:  # one y range for every cumulative panel, so objectives compare
        low = min(ax.get_ylim()[0] for ax in cumulative_axes)
        high = max(ax.get_ylim()[1] for ax in cumulative_axes)
        for ax in cumulative_axes:
            ax.set_ylim(low, high)
    fig.suptitle(f"objective comparison: {effect_name(direction)}")
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
