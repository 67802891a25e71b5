"""The numbers behind every plot and diagnosis sentence, computed once from the long tables.

Conventions (Wang et al., ICLR 2025, "Rethinking LLM Unlearning Objectives", Sec. 3):
the effects table holds ``e[i,k] = <∇_{θ_k} R_i, v_k>`` per step, probe, instance ``i`` and
layer group ``k``. The **batch effect** of a probe at a step is the mean over its instances,
per layer (``layer_step_matrix``) or summed over layers (``step_series``): with the objective
gradient as ``v`` this is the paper's G-effect, and one SGD step of size η changes the mean
risk by about ``-η e``. Accumulating over steps (``cumulative``, ``layer_totals``) weights each
recorded step by the number of training steps it stands for (the gap to the next record, the
last record taking the median gap), so recording every k steps estimates the same total as
recording every step. The first-order check compares the update effect ``∇R_i·Δθ`` (the
trainer's ``predicted_change``) with the observed ``R_i(θ_after) − R_i(θ_before)``.

Sign conventions: the G-effect (direction ``"gradient"``) is negative when the risk rises; the
update effect (direction ``"update"``, the predicted risk change in nats) and the observed risk
change are positive when it rises. :func:`observed_change` and :func:`observed_curve` give the
measured change of a probe's mean risk that the two views are read against.

Plots and the diagnosis both read these functions, so a sentence and the figure it refers to
show the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from geffect.reporting.runs import RISK_COLUMNS, check_columns
from geffect.reporting.style import ordered_layers
from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE, EFFECT_COLUMNS


def has_records(effects: pd.DataFrame, probe: str, direction: str = DIRECTION_GRADIENT) -> bool:
    """Whether the effects table holds rows of ``probe`` in ``direction``."""
    return bool(((effects["probe"] == probe) & (effects["direction"] == direction)).any())


def select(effects: pd.DataFrame, probe: str, direction: str = DIRECTION_GRADIENT) -> pd.DataFrame:
    """Rows of one probe and direction; a clear error names what is available when none match."""
    check_columns(effects, EFFECT_COLUMNS, "effects table")
    rows = effects[(effects["probe"] == probe) & (effects["direction"] == direction)]
    if rows.empty:
        pairs = sorted({(str(p), str(d)) for p, d in zip(effects["probe"], effects["direction"])})
        raise ValueError(
            f"no effect records for probe {probe!r} with direction {direction!r}; "
            f"available (probe, direction) pairs: {pairs}"
        )
    return rows


def step_weights(steps: pd.Index | np.ndarray | list) -> pd.Series:
    """Training steps each recorded step stands for: gap to the next record (last: median gap)."""
    ordered = np.sort(np.unique(np.asarray(steps)))
    if ordered.size == 0:
        return pd.Series(dtype=float)
    gaps = np.diff(ordered).astype(float)
    last = float(np.median(gaps)) if gaps.size else 1.0
    return pd.Series(np.append(gaps, last), index=pd.Index(ordered, name="step"), name="weight")


def layer_step_matrix(effects: pd.DataFrame, probe: str,
                      direction: str = DIRECTION_GRADIENT) -> pd.DataFrame:
    """Batch effect per layer (rows, embed → head) and step (columns): mean over instances."""
    rows = select(effects, probe, direction)
    matrix = rows.pivot_table(index="layer", columns="step", values="value", aggfunc="mean")
    return matrix.reindex(ordered_layers(matrix.index)).astype(float)


def step_series(effects: pd.DataFrame, probe: str, direction: str = DIRECTION_GRADIENT) -> pd.Series:
    """Batch effect per step summed over layers (the whole-model effect at each record)."""
    return layer_step_matrix(effects, probe, direction).sum(axis=0).rename("value")


def first_step_share(effects: pd.DataFrame, probe: str, direction: str = DIRECTION_GRADIENT) -> float:
    """|whole-model effect at the first record| / its largest |value| over the run.

    Near 0 means the run starts from vanishing gradients (a target memorised to zero loss)
    and its effects only appear later, in a spike.
    """
    series = step_series(effects, probe, direction)
    largest = float(series.abs().max()) if len(series) else 0.0
    if largest == 0.0:
        raise ValueError(f"no non-zero {direction} effect recorded on probe {probe!r}")
    return abs(float(series.iloc[0])) / largest


def cumulative(series: pd.Series) -> pd.Series:
    """Running step-weighted sum of a per-step series (see module docstring)."""
    weights = step_weights(series.index).reindex(series.index)
    return (series * weights).cumsum().rename("cumulative")


def cumulative_curve(series: pd.Series) -> pd.Series:
    """The cumulative effect as a curve over training steps: 0 at the first record, then the
    running total after the steps each record stands for (indexed by the step reached)."""
    weights = step_weights(series.index).reindex(series.index)
    reached = (series.index.to_numpy() + weights.to_numpy()).astype(float)
    values = np.concatenate([[0.0], (series * weights).cumsum().to_numpy()])
    index = np.concatenate([[float(series.index.min())], reached]) if len(series) else np.zeros(1)
    return pd.Series(values, index=pd.Index(index, name="step"), name="cumulative")


def layer_totals(effects: pd.DataFrame, probe: str, direction: str = DIRECTION_GRADIENT) -> pd.Series:
    """Step-weighted sum over the run of each layer's batch effect, embed → head."""
    matrix = layer_step_matrix(effects, probe, direction)
    weights = step_weights(matrix.columns).reindex(matrix.columns)
    return (matrix * weights).sum(axis=1).rename("total")


def instance_totals(effects: pd.DataFrame, probe: str,
                    direction: str = DIRECTION_GRADIENT) -> pd.DataFrame:
    """Per-instance effect at each step, summed over layers: columns step, instance, value."""
    rows = select(effects, probe, direction)
    return rows.groupby(["step", "instance"], as_index=False)["value"].sum()


def step_windows(steps: np.ndarray | list, windows: int) -> dict[int, str]:
    """Split the recorded steps into ``windows`` consecutive groups of near-equal size;
    map each step to its window label ``"steps a–b"``."""
    ordered = np.sort(np.unique(np.asarray(steps)))
    if windows < 1:
        raise ValueError(f"windows must be ≥ 1, got {windows}")
    labels: dict[int, str] = {}
    for chunk in np.array_split(ordered, min(windows, ordered.size)):
        label = f"steps {chunk[0]}–{chunk[-1]}" if chunk.size > 1 else f"step {chunk[0]}"
        labels.update({int(s): label for s in chunk})
    return labels


def instance_windows(effects: pd.DataFrame, probe: str, direction: str = DIRECTION_GRADIENT,
                     windows: int | Mapping[int, str] = 4) -> pd.DataFrame:
    """Per-instance mean effect (summed over layers) within each step window:
    columns window (ordered categorical), instance, value. ``windows`` is a number of windows
    or a ready step → label mapping (e.g. from :func:`step_windows` on several runs' steps)."""
    totals = instance_totals(effects, probe, direction)
    labels = step_windows(totals["step"].to_numpy(), windows) if isinstance(windows, int) else dict(windows)
    missing = sorted(set(totals["step"]) - set(labels))
    if missing:
        raise ValueError(f"steps {missing} of probe {probe!r} fall in no step window")
    totals["window"] = totals["step"].map(labels)
    order = list(dict.fromkeys(labels[s] for s in sorted(labels)))
    frame = totals.groupby(["window", "instance"], as_index=False, sort=False)["value"].mean()
    frame["window"] = pd.Categorical(frame["window"], categories=order, ordered=True)
    return frame.sort_values(["window", "instance"]).reset_index(drop=True)


def prediction_pairs(risks: pd.DataFrame, probe: str | None = None) -> pd.DataFrame:
    """First-order predicted vs observed risk change per step and instance:
    columns step, probe, instance, predicted, observed (nats)."""
    check_columns(risks, RISK_COLUMNS, "risks table")
    rows = risks if probe is None else risks[risks["probe"] == probe]
    frame = pd.DataFrame({
        "step": rows["step"].to_numpy(),
        "probe": rows["probe"].to_numpy(),
        "instance": rows["instance"].to_numpy(),
        "predicted": rows["predicted_change"].to_numpy(dtype=float),
        "observed": (rows["risk_after"] - rows["risk"]).to_numpy(dtype=float),
    })
    return frame[np.isfinite(frame["predicted"]) & np.isfinite(frame["observed"])]


def risk_endpoints(risks: pd.DataFrame, probe: str) -> pd.DataFrame:
    """Per instance of ``probe``: its risk at the first record and after the last recorded step
    (columns first, last; indexed by instance)."""
    rows = check_columns(risks, RISK_COLUMNS, "risks table")
    rows = rows[rows["probe"] == probe].sort_values("step", kind="stable")
    if rows.empty:
        raise ValueError(f"the risks table has no rows of probe {probe!r}; probes: {sorted(set(risks['probe']))}")
    return pd.DataFrame({"first": rows.groupby("instance")["risk"].first(),
                         "last": rows.groupby("instance")["risk_after"].last()})


def observed_change(risks: pd.DataFrame, probe: str) -> dict[str, float]:
    """The measured change of ``probe``'s mean risk over the run (nats, positive = it rose).

    Returns before, after (mean risk at the first record and after the last recorded step),
    change (after − before), noise (the standard error of the mean of the per-instance
    changes: how far the mean could move by which instances happened to be probed), count,
    and p_rise / p_fall: one-sided Wilcoxon signed-rank p-values that the per-instance changes
    are shifted above / below zero (``scipy.stats.wilcoxon``; robust to the heavy tail of a few
    badly damaged instances; NaN with fewer than two changes or all zero).
    """
    from scipy.stats import wilcoxon

    ends = risk_endpoints(risks, probe)
    per_instance = (ends["last"] - ends["first"]).to_numpy(dtype=float)
    count = per_instance.size
    noise = float(per_instance.std(ddof=1) / np.sqrt(count)) if count > 1 else float("nan")
    p_rise = p_fall = float("nan")
    if count > 1 and np.any(per_instance != 0):
        p_rise = float(wilcoxon(per_instance, alternative="greater").pvalue)
        p_fall = float(wilcoxon(per_instance, alternative="less").pvalue)
    return {"before": float(ends["first"].mean()), "after": float(ends["last"].mean()),
            "change": float(per_instance.mean()), "noise": noise, "count": float(count),
            "p_rise": p_rise, "p_fall": p_fall}


def observed_curve(risks: pd.DataFrame, probe: str) -> pd.Series:
    """Observed change of ``probe``'s mean risk since the first record, as a curve over training
    steps: 0 at the first record, then ``mean R(θ_{s+1}) − mean R(θ_first)`` at step s + 1 for
    every recorded step s (exact whatever the recording interval)."""
    rows = check_columns(risks, RISK_COLUMNS, "risks table")
    rows = rows[rows["probe"] == probe]
    if rows.empty:
        raise ValueError(f"the risks table has no rows of probe {probe!r}")
    by_step = rows.groupby("step")
    base = float(by_step["risk"].mean().iloc[0])
    after = by_step["risk_after"].mean() - base
    index = np.concatenate([[float(after.index.min())], after.index.to_numpy(dtype=float) + 1.0])
    return pd.Series(np.concatenate([[0.0], after.to_numpy()]), index=pd.Index(index, name="step"),
                     name="observed")


def pearson(x: np.ndarray | pd.Series, y: np.ndarray | pd.Series) -> float:
    """Pearson correlation; NaN when fewer than 3 points or a constant input."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def instance_damage(effects: pd.DataFrame, risks: pd.DataFrame | None, probe: str = "retain",
                    direction: str = DIRECTION_GRADIENT) -> pd.DataFrame:
    """How much each instance of ``probe`` was hurt, most damaged first.

    With a risks table: the observed risk increase from the first record to the end of the
    last recorded step, ``risk_after(last) − risk(first)`` in nats (column ``damage``).
    Without one: minus the instance's cumulative effect (positive = its risk was pushed up).
    Columns instance, damage, measure (a label of what ``damage`` is).
    """
    if risks is not None and not risks.empty and (risks["probe"] == probe).any():
        ends = risk_endpoints(risks, probe)
        damage = (ends["last"] - ends["first"]).rename("damage")
        measure = "observed risk increase (nats)"
    else:
        totals = instance_totals(effects, probe, direction)
        wide = totals.pivot_table(index="instance", columns="step", values="value")
        weights = step_weights(wide.columns).reindex(wide.columns)
        damage = (-(wide * weights).sum(axis=1)).rename("damage")
        measure = "minus cumulative effect"
    frame = damage.reset_index().sort_values("damage", ascending=False, kind="stable")
    frame["measure"] = measure
    return frame.reset_index(drop=True)


def run_summary(effects: pd.DataFrame, risks: pd.DataFrame | None,
                probes: tuple[str, str] = ("forget", "retain")) -> dict[str, float]:
    """Headline numbers of a run, both views beside the measurement: per probe the cumulative
    G-effect (``cumulative_geffect_<p>``, negative = risk rises), the cumulative predicted risk
    change (``predicted_change_<p>``, Σ of the update effect, nats, positive = risk rises) and
    the observed change of the mean risk (``observed_change_<p>``); the retain/forget ratio of
    the G-effects and of the observed changes; the first-order correlation. Probes absent from
    the tables are skipped."""
    summary: dict[str, float] = {}
    for probe in probes:
        if has_records(effects, probe):
            summary[f"cumulative_geffect_{probe}"] = float(cumulative(step_series(effects, probe)).iloc[-1])
        if has_records(effects, probe, DIRECTION_UPDATE):
            summary[f"predicted_change_{probe}"] = float(
                cumulative(step_series(effects, probe, DIRECTION_UPDATE)).iloc[-1])
        if risks is not None and not risks.empty and (risks["probe"] == probe).any():
            summary[f"observed_change_{probe}"] = observed_change(risks, probe)["change"]
    forget, retain = (summary.get(f"cumulative_geffect_{p}") for p in probes)
    if forget is not None and retain is not None and forget != 0:
        summary["retain_per_forget_effect"] = retain / forget
    forget, retain = (summary.get(f"observed_change_{p}") for p in probes)
    if forget is not None and retain is not None and forget > 0:
        summary["retain_per_forget_observed"] = retain / forget
    if risks is not None and not risks.empty:
        pairs = prediction_pairs(risks)
        summary["first_order_correlation"] = pearson(pairs["predicted"], pairs["observed"])
        summary["first_order_pairs"] = float(len(pairs))
    return summary
