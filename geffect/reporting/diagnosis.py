"""Automatic diagnosis: a few plain sentences about where and when a run forgets and damages.

Each :class:`Finding` carries its sentence and the numbers it was computed from (also shown
in the report's findings table), and every number comes from ``geffect.reporting.tables``,
the same functions the figures draw, so a reader can check each claim against a plot:

- **where**: the share of the negative (risk-raising) cumulative effect carried by the top
  layer groups (``tables.layer_totals``; the per-layer bars), on the retain probe (damage)
  and on the forget probe (unlearning);
- **when**: the step from which the forget G-effect stays within a fraction of its peak
  (decays by 90 % / 50 %), and whether the retain effect is still negative afterwards
  (``tables.step_series``; the cumulative plot's slope, the heatmap's columns);
- **how well first order predicts**: the Pearson correlation between the update effect
  ``∇R_i·Δθ`` and the observed risk change (the scatter plot);
- **outcome**: mean probe risk before the first and after the last recorded step;
- across runs, which objective does the least retain damage per unit of forgetting
  (ratio of cumulative retain to forget G-effect).

Sign convention (Wang et al., ICLR 2025): a negative G-effect raises the risk — forgetting on
the forget set, damage on retained data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from geffect.reporting import tables
from geffect.reporting.runs import RunData, as_runs
from geffect.reporting.style import ordered_layers
from geffect.schema import layer_sort_key

FORGET, RETAIN = "forget", "retain"


@dataclass(frozen=True)
class Finding:
    """One diagnosis sentence with the numbers behind it."""

    run: str
    topic: str
    sentence: str
    numbers: dict[str, Any] = field(default_factory=dict)


def fmt(value: float) -> str:
    """A number with three significant digits, trailing zeros kept (``8.00``, ``-0.400``)."""
    return f"{value:#.3g}".rstrip(".")


def pct(share: float) -> str:
    """A share as a whole percentage (``0.614 → '61 %'``)."""
    return f"{100 * share:.0f} %"


def layer_span(layers: Sequence[str]) -> str:
    """Readable list of layer groups; consecutive blocks collapse (``block.0–1``)."""
    ordered = sorted(layers, key=layer_sort_key)
    parts: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            parts.append(f"block.{run[0]}" if len(run) == 1 else f"block.{run[0]}–{run[-1]}")
            run.clear()

    for name in ordered:
        head, _, index = name.partition(".")
        if head == "block" and index.isdigit():
            if run and int(index) != run[-1] + 1:
                flush()
            run.append(int(index))
        else:
            flush()
            parts.append(name)
    flush()
    return ", ".join(parts)


def concentration(totals: pd.Series, share: float = 0.5, max_layers: int = 3) -> dict[str, Any] | None:
    """The fewest layers (at most ``max_layers``) holding ``share`` of the negative total.

    ``totals``: cumulative effect per layer. Only negative totals count (their magnitudes
    form the "negative effect"). Returns layers, their share, the negative total and whether
    ``share`` was reached; None when no layer is negative.
    """
    negative = (-totals.clip(upper=0.0)).sort_values(ascending=False, kind="stable")
    negative = negative[negative > 0]
    whole = float(negative.sum())
    if whole <= 0:
        return None
    shares = negative.cumsum() / whole
    count = int(min(np.searchsorted(shares.to_numpy(), share - 1e-12) + 1, max_layers, len(shares)))
    return {
        "layers": ordered_layers(negative.index[:count]),
        "share": float(shares.iloc[count - 1]),
        "negative_total": -whole,
        "reached": bool(shares.iloc[count - 1] >= share - 1e-12),
    }


def _where(run: RunData, probe: str, what: str) -> Finding | None:
    if not tables.has_records(run.effects, probe):
        return None
    found = concentration(tables.layer_totals(run.effects, probe))
    numbers = {"probe": probe}
    if found is None:
        return Finding(run.name, f"where ({probe})",
                       f"no layer has a negative cumulative {probe} G-effect: no {what} to first order.",
                       numbers)
    span = layer_span(found["layers"])
    numbers |= {"layers": span, "share": round(found["share"], 4),
                "negative_total": found["negative_total"]}
    label = f"of the negative {probe} effect, total {fmt(found['negative_total'])}"
    if found["reached"]:
        sentence = f"{what} concentrates in {span} ({pct(found['share'])} {label})."
    else:
        sentence = f"{what} is spread across layers: the top {len(found['layers'])} ({span}) carry only " \
                   f"{pct(found['share'])} {label}."
    return Finding(run.name, f"where ({probe})", sentence[0].upper() + sentence[1:], numbers)


def decay_step(series: pd.Series, fraction: float) -> tuple[int, int] | None:
    """For a per-step effect, the peak (most negative) step and the first step after it from
    which the effect stays at or above ``(1 - fraction) × peak`` (i.e. its negative magnitude
    has decayed by ``fraction``); None when there is no negative peak or no such step."""
    peak_step = int(series.idxmin())
    peak = float(series.min())
    if peak >= 0:
        return None
    after = series[series.index > peak_step]
    bound = (1.0 - fraction) * peak
    # the earliest step s such that every recorded step >= s is within the bound
    within = (after >= bound).to_numpy()[::-1]
    tail = int(np.argmin(within)) if not within.all() else len(within)
    if tail == 0:
        return None
    return peak_step, int(after.index[len(after) - tail])


def _when(run: RunData, levels: Sequence[float] = (0.9, 0.5)) -> Finding | None:
    if not tables.has_records(run.effects, FORGET):
        return None
    forget = tables.step_series(run.effects, FORGET)
    peak_step, peak = int(forget.idxmin()), float(forget.min())
    numbers: dict[str, Any] = {"peak_step": peak_step, "peak": peak}
    if peak >= 0:
        return Finding(run.name, "when", "The forget G-effect is never negative: to first order the "
                       "objective does not raise the forget risk.", numbers)
    for level in levels:
        found = decay_step(forget, level)
        if found is not None:
            break
    if found is None:
        last = int(forget.index.max())
        numbers |= {"last_step": last, "final": float(forget.iloc[-1])}
        return Finding(run.name, "when",
                       f"The forget G-effect stays above {pct(1 - levels[-1])} of its peak "
                       f"({fmt(peak)} at step {peak_step}) through step {last}.", numbers)
    start = found[1]
    numbers |= {"decay": level, "decay_step": start, "bound": (1 - level) * peak}
    sentence = (f"The forget G-effect decays by {pct(level)} after step {start} "
                f"(peak {fmt(peak)} at step {peak_step}, afterwards ≥ {fmt((1 - level) * peak)})")
    if tables.has_records(run.effects, RETAIN):
        retain = tables.step_series(run.effects, RETAIN)
        later = retain[retain.index >= start]
        if len(later):
            mean = float(later.mean())
            numbers["retain_mean_after"] = mean
            state = "continues" if mean < 0 else "stops"
            sentence += f", while retain damage {state} (mean retain G-effect {fmt(mean)} per step from step {start})"
    return Finding(run.name, "when", sentence + ".", numbers)


def _first_order(run: RunData) -> Finding | None:
    if run.risks.empty:
        return None
    pairs = tables.prediction_pairs(run.risks)
    r = tables.pearson(pairs["predicted"], pairs["observed"])
    if not np.isfinite(r):
        return None
    numbers: dict[str, Any] = {"pearson_r": r, "pairs": len(pairs)}
    per_probe: dict[str, float] = {}
    for probe, part in pairs.groupby("probe", sort=False):
        value = tables.pearson(part["predicted"], part["observed"])
        if np.isfinite(value):
            per_probe[str(probe)] = numbers[f"pearson_r_{probe}"] = value
    # the verdict follows the weakest correlation: a good overall r can hide a poor probe
    weakest = min([r, *per_probe.values()])
    verdict = ("first-order predictions track the observed changes" if weakest >= 0.9 else
               "first-order predictions capture the trend only" if weakest >= 0.5 else
               "first-order predictions explain little of the observed change")
    if len(per_probe) > 1 and weakest < 0.9:
        verdict += f" (weakest: {min(per_probe, key=per_probe.get)})"
    detail = "; " + ", ".join(f"{p} {v:.2f}" for p, v in per_probe.items()) if len(per_probe) > 1 else ""
    return Finding(run.name, "first order",
                   f"First-order prediction correlation {r:.2f} over {len(pairs)} instance-steps"
                   f"{detail}: {verdict}.", numbers)


def _outcome(run: RunData) -> Finding | None:
    if run.risks.empty:
        return None
    parts, numbers = [], {}
    for probe, rows in run.risks.groupby("probe", sort=False):
        first, last = rows["step"].min(), rows["step"].max()
        before = float(rows.loc[rows["step"] == first, "risk"].mean())
        after = float(rows.loc[rows["step"] == last, "risk_after"].mean())
        numbers |= {f"{probe}_risk_before": before, f"{probe}_risk_after": after}
        parts.append(f"{probe} {fmt(before)} → {fmt(after)}")
    return Finding(run.name, "outcome", f"Mean probe risk (nats), first record → end: {'; '.join(parts)}.",
                   numbers)


def _comparison(runs: list[RunData]) -> Finding | None:
    ratios = {}
    for run in runs:
        summary = tables.run_summary(run.effects, None)
        forget = summary.get(f"cumulative_geffect_{FORGET}")
        if forget is not None and forget < 0 and "retain_per_forget_effect" in summary:
            ratios[run.name] = summary["retain_per_forget_effect"]
    if len(ratios) < 2:
        return None
    best = min(ratios, key=ratios.get)
    others = ", ".join(f"{name} {fmt(v)}" for name, v in ratios.items() if name != best)
    return Finding("all runs", "comparison",
                   f"Per unit of forgetting, {best} does the least retain damage (cumulative "
                   f"retain/forget G-effect ratio {fmt(ratios[best])}; {others}).",
                   {f"ratio_{name}": v for name, v in ratios.items()})


def findings(runs: Any) -> list[Finding]:
    """All diagnosis findings for one or several runs (see the module docstring)."""
    items = as_runs(runs)
    out: list[Finding] = []
    for run in items:
        candidates = [_where(run, RETAIN, "retain damage"), _where(run, FORGET, "unlearning"),
                      _when(run), _first_order(run), _outcome(run)]
        out.extend(f for f in candidates if f is not None)
    comparison = _comparison(items)
    if comparison is not None:
        out.append(comparison)
    return out


def findings_frame(found: Sequence[Finding]) -> pd.DataFrame:
    """Findings as a table: run, topic, sentence, and the numbers as ``key = value`` text."""
    def render(value: Any) -> str:
        return fmt(value) if isinstance(value, (float, np.floating)) else str(value)

    return pd.DataFrame({
        "run": [f.run for f in found],
        "topic": [f.topic for f in found],
        "sentence": [f.sentence for f in found],
        "numbers": ["; ".join(f"{k} = {render(v)}" for k, v in f.numbers.items()) for f in found],
    })
