"""Automatic diagnosis: a few plain sentences about where and when a run forgets and damages.

Each :class:`Finding` carries its sentence and the numbers it was computed from (also shown
in the report's findings table), and every number comes from ``geffect.reporting.tables``,
the same functions the figures draw, so a reader can check each claim against a plot.

Two views of each step are read (``geffect.reporting.style``): the paper's G-effect
``∇R·∇L_u`` (negative = the risk rises) and the update effect ``∇R·Δθ``, the predicted risk
change of the step actually taken (nats, positive = the risk rises). Under Adam only the second
predicts the risk, and the two can disagree in sign; the observed change of the mean probe risk
decides between them.

- **outcome**: mean probe risk before the first and after the last recorded step, with the
  change and its noise (standard error over the probe's instances);
- **nothing forgotten**: when the forget risk did not rise beyond noise (per-instance changes
  shifted above zero by a one-sided Wilcoxon test at ``SIGNIFICANCE`` and a mean rise of at
  least ``MIN_RISK_CHANGE`` nats), one plain sentence
  says so and what to change, and the where/when sentences of that probe are not emitted (on
  effects of 1e-4 they would describe noise); likewise retain-damage sentences need a retain
  risk that rose beyond noise. Runs without a risks table keep every sentence;
- **where**: the share of the risk-raising cumulative effect carried by the top layer groups
  (``tables.layer_totals``; the per-layer bars), per probe and view;
- **when**: the step from which the forget effect stays within a fraction of its peak (decays
  by 90 % / 50 %), and whether retain damage continues afterwards (``tables.step_series``);
- **views disagree**: per probe and layer group, where the G-effect and the predicted risk
  change have opposite signs (one says the risk rises, the other that it falls), and which one
  the observed change of the probe's risk supports (:func:`sign_disagreements`);
- **how well first order predicts**: the Pearson correlation between the update effect
  ``∇R_i·Δθ`` and the observed risk change (the scatter plot);
- across runs, which objective does the least retain damage per unit of forgetting: the ratio
  of observed retain-risk rise to forget-risk rise when measured, and of the G-effects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from geffect.reporting import tables
from geffect.reporting.runs import RunData, as_runs
from geffect.reporting.style import effect_name, g_convention, ordered_layers, sign_key
from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE, layer_sort_key

FORGET, RETAIN = "forget", "retain"
DIRECTIONS = (DIRECTION_GRADIENT, DIRECTION_UPDATE)
# A probe's mean risk rose "beyond noise" when the per-instance changes are shifted above zero
# (one-sided Wilcoxon signed-rank p < SIGNIFICANCE over the probe's instances) and the mean rose
# by at least MIN_RISK_CHANGE nats (a floor: on a memorised target every instance may move by
# 1e-4 nats in step, which is consistent but forgets nothing). Falls are judged the same way.
SIGNIFICANCE = 0.05
MIN_RISK_CHANGE = 0.05
# A layer's cumulative effect has a sign when its magnitude is above this share of the largest
# layer total of that run, probe and view (smaller ones count as zero in the sign comparison).
SIGN_TOLERANCE = 1e-3


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


def _view_tag(direction: str) -> str:
    return "G-effect" if direction == DIRECTION_GRADIENT else "predicted change"


def _where(run: RunData, probe: str, what: str, direction: str = DIRECTION_GRADIENT) -> Finding | None:
    if not tables.has_records(run.effects, probe, direction):
        return None
    totals = tables.layer_totals(run.effects, probe, direction)
    found = concentration(g_convention(totals, direction))
    numbers: dict[str, Any] = {"probe": probe, "direction": direction}
    topic = f"where ({probe}, {_view_tag(direction)})"
    if found is None:
        return Finding(run.name, topic, f"No layer's cumulative {effect_name(direction)} raises the {probe} risk: "
                       f"no {what} to first order by this view.", numbers)
    span = layer_span(found["layers"])
    total = g_convention(found["negative_total"], direction)  # back in the view's own sign
    numbers |= {"layers": span, "share": round(found["share"], 4), "rising_total": total}
    if direction == DIRECTION_GRADIENT:
        label = f"of the negative {probe} G-effect, total {fmt(total)}"
    else:
        label = f"of the {probe} risk rise the update effect predicts, total {fmt(total)} nats"
    if found["reached"]:
        sentence = f"by the {effect_name(direction)}, {what} concentrates in {span} ({pct(found['share'])} {label})."
    else:
        sentence = (f"by the {effect_name(direction)}, {what} is spread across layers: the top "
                    f"{len(found['layers'])} ({span}) carry only {pct(found['share'])} {label}.")
    return Finding(run.name, topic, sentence[0].upper() + sentence[1:], numbers)


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


def _when(run: RunData, direction: str = DIRECTION_GRADIENT, levels: Sequence[float] = (0.9, 0.5)
          ) -> Finding | None:
    if not tables.has_records(run.effects, FORGET, direction):
        return None
    name = effect_name(direction)
    topic = f"when ({_view_tag(direction)})"
    series = tables.step_series(run.effects, FORGET, direction)
    rising = g_convention(series, direction)  # negative = the forget risk rises
    peak_step = int(rising.idxmin())
    peak = float(series.loc[peak_step])
    numbers: dict[str, Any] = {"direction": direction, "peak_step": peak_step, "peak": peak}
    if float(rising.min()) >= 0:
        return Finding(run.name, topic, f"The forget {name} never says the forget risk rises: to first order "
                       "the objective does not forget by this view.", numbers)
    for level in levels:
        found = decay_step(rising, level)
        if found is not None:
            break
    if found is None:
        last = int(series.index.max())
        numbers |= {"last_step": last, "final": float(series.iloc[-1])}
        return Finding(run.name, topic,
                       f"The forget {name} stays above {pct(1 - levels[-1])} of its peak "
                       f"({fmt(peak)} at step {peak_step}) through step {last}.", numbers)
    start = found[1]
    bound = (1 - level) * peak
    numbers |= {"decay": level, "decay_step": start, "bound": bound}
    comparison = "≥" if direction == DIRECTION_GRADIENT else "≤"
    sentence = (f"The forget {name} decays by {pct(level)} after step {start} "
                f"(peak {fmt(peak)} at step {peak_step}, afterwards {comparison} {fmt(bound)})")
    if tables.has_records(run.effects, RETAIN, direction):
        retain = tables.step_series(run.effects, RETAIN, direction)
        later = retain[retain.index >= start]
        if len(later):
            mean = float(later.mean())
            numbers["retain_mean_after"] = mean
            state = "continues" if g_convention(mean, direction) < 0 else "stops"
            sentence += f", while retain damage {state} (mean retain {name} {fmt(mean)} per step from step {start})"
    return Finding(run.name, topic, sentence + ".", numbers)


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


def risk_moved(change: Mapping[str, float], min_change: float = MIN_RISK_CHANGE, *, rise: bool = True) -> bool:
    """Whether an observed change (``tables.observed_change``) rose (``rise``) or fell beyond
    noise: a one-sided Wilcoxon p under ``SIGNIFICANCE`` and a mean change of at least
    ``min_change`` nats in that direction."""
    p_value = change["p_rise" if rise else "p_fall"]
    size = change["change"] if rise else -change["change"]
    return bool(np.isfinite(p_value) and p_value < SIGNIFICANCE and size >= min_change)


def _observed(run: RunData, probe: str) -> dict[str, float] | None:
    if run.risks.empty or not (run.risks["probe"] == probe).any():
        return None
    return tables.observed_change(run.risks, probe)


def _outcome(run: RunData) -> Finding | None:
    if run.risks.empty:
        return None
    parts, numbers = [], {}
    for probe in pd.unique(run.risks["probe"]):
        change = tables.observed_change(run.risks, str(probe))
        numbers |= {f"{probe}_risk_before": change["before"], f"{probe}_risk_after": change["after"],
                    f"{probe}_change": change["change"], f"{probe}_noise": change["noise"]}
        parts.append(f"{probe} {fmt(change['before'])} → {fmt(change['after'])} "
                     f"({fmt(change['change'])} ± {fmt(change['noise'])})")
    return Finding(run.name, "outcome", "Mean probe risk (nats), first record → end (change ± noise): "
                   f"{'; '.join(parts)}.", numbers)


def _suggestion(run: RunData) -> str:
    """What to change when nothing was forgotten: a larger learning rate, more steps."""
    lr, steps = run.config.get("lr"), run.config.get("steps")
    parts = []
    parts.append(f"a larger learning rate (now {lr:g}; e.g. {5 * lr:g})" if isinstance(lr, (int, float)) and lr > 0
                 else "a larger learning rate")
    parts.append(f"more steps (now {steps}; e.g. {3 * steps})" if isinstance(steps, int) else "more steps")
    return "try " + " or ".join(parts)


def _nothing_forgotten(run: RunData, change: Mapping[str, float], min_change: float) -> Finding:
    sentence = (f"Nothing was forgotten at these settings: the mean forget risk went {fmt(change['before'])} → "
                f"{fmt(change['after'])} nats ({fmt(change['change'])} ± {fmt(change['noise'])}; forgetting needs a "
                f"rise of at least {fmt(min_change)} nats with Wilcoxon p < {SIGNIFICANCE:g} over the probe's "
                f"instances, here p = {fmt(change['p_rise'])}). Where and when the effects concentrate is not "
                f"reported, since it would describe noise; {_suggestion(run)}.")
    return Finding(run.name, "nothing forgotten", sentence,
                   {"change": change["change"], "noise": change["noise"], "p_rise": change["p_rise"],
                    "min_change": min_change})


# -- the two views against each other ----------------------------------------------------------------------


def _says(value: float, tolerance: float, direction: str) -> str:
    """"rises" / "falls" / "zero": what a view's value says about the risk."""
    if abs(value) <= tolerance:
        return "zero"
    return "rises" if g_convention(value, direction) < 0 else "falls"


def sign_disagreements(runs: Any, probes: Sequence[str] = (FORGET, RETAIN),
                       min_change: float = MIN_RISK_CHANGE) -> pd.DataFrame:
    """Per run, probe and layer group (and ``"all layers"``): what each view says about the risk.

    Columns run, probe, layer, gradient (cumulative G-effect), update (cumulative predicted risk
    change, nats), gradient_says / update_says (``"rises"``, ``"falls"`` or ``"zero"``: under
    ``SIGN_TOLERANCE`` × the largest layer total of that view), disagree (one says rises, the
    other falls), observed (the probe's observed mean-risk change, NaN without risks),
    observed_says (``"rises"``/``"falls"`` beyond noise, else ``"within noise"``) and supports
    (on a disagreement, the view whose sign the observed change shares: ``"gradient"``,
    ``"update"``, or ``"neither"`` when the change is within noise). Runs or probes that lack
    either view are skipped.
    """
    rows = []
    for run in as_runs(runs):
        for probe in probes:
            if not all(tables.has_records(run.effects, probe, d) for d in DIRECTIONS):
                continue
            totals = {d: tables.layer_totals(run.effects, probe, d) for d in DIRECTIONS}
            change = _observed(run, probe)
            if change is None:
                observed, observed_says = float("nan"), "not measured"
            else:
                observed = change["change"]
                observed_says = ("rises" if risk_moved(change, min_change) else
                                 "falls" if risk_moved(change, min_change, rise=False) else "within noise")
            layers = list(totals[DIRECTION_GRADIENT].index)
            entries = [(layer, {d: float(totals[d].get(layer, 0.0)) for d in DIRECTIONS}) for layer in layers]
            entries.append(("all layers", {d: float(totals[d].sum()) for d in DIRECTIONS}))
            for layer, values in entries:
                scope = totals if layer != "all layers" else {d: pd.Series([values[d]]) for d in DIRECTIONS}
                says = {d: _says(values[d], SIGN_TOLERANCE * float(scope[d].abs().max()), d) for d in DIRECTIONS}
                disagree = {says[DIRECTION_GRADIENT], says[DIRECTION_UPDATE]} == {"rises", "falls"}
                supports = ""
                if disagree:
                    matching = [d for d in DIRECTIONS if says[d] == observed_says]
                    supports = matching[0] if matching else "neither"
                rows.append({"run": run.name, "probe": probe, "layer": layer,
                             "gradient": values[DIRECTION_GRADIENT], "update": values[DIRECTION_UPDATE],
                             "gradient_says": says[DIRECTION_GRADIENT], "update_says": says[DIRECTION_UPDATE],
                             "disagree": disagree, "observed": observed, "observed_says": observed_says,
                             "supports": supports})
    columns = ["run", "probe", "layer", "gradient", "update", "gradient_says", "update_says", "disagree",
               "observed", "observed_says", "supports"]
    return pd.DataFrame(rows, columns=columns)


def _supported_phrase(supports: str, observed: float, observed_says: str) -> str:
    if observed_says == "not measured":
        return "the run has no observed risk change to decide between them"
    if supports == "neither":
        return f"the observed change ({fmt(observed)} nats) is within noise and supports neither"
    return (f"the observed change ({fmt(observed)} nats: the risk {observed_says}) supports the "
            f"{effect_name(supports)}")


def _disagreement(run_name: str, probe: str, table: pd.DataFrame) -> Finding | None:
    rows = table[(table["run"] == run_name) & (table["probe"] == probe)]
    split = rows[rows["disagree"]]
    if split.empty:
        return None
    whole = rows[rows["layer"] == "all layers"].iloc[0]
    layers = split[split["layer"] != "all layers"]
    parts = []
    if bool(whole["disagree"]):
        parts.append(f"over the whole model the G-effect ({fmt(whole['gradient'])}) says the {probe} risk "
                     f"{whole['gradient_says']} but the predicted risk change ({fmt(whole['update'])} nats) says it "
                     f"{whole['update_says']}; {_supported_phrase(whole['supports'], whole['observed'], whole['observed_says'])}")
    if len(layers):
        g_rises = layers[layers["gradient_says"] == "rises"]
        groups = []
        for says_g, part in ((True, g_rises), (False, layers[layers["gradient_says"] == "falls"])):
            if len(part):
                groups.append(f"in {layer_span(list(part['layer']))} the G-effect says it "
                              f"{'rises' if says_g else 'falls'}, the predicted change that it "
                              f"{'falls' if says_g else 'rises'}")
        supported = layers["supports"].iloc[0]
        parts.append(f"the views disagree in sign in {len(layers)} of {len(rows) - 1} layer groups ("
                     + "; ".join(groups) + f"); {_supported_phrase(supported, whole['observed'], whole['observed_says'])}")
    sentence = f"{probe.capitalize()} probe, G-effect ({sign_key(DIRECTION_GRADIENT)}) vs predicted risk change " \
               f"({sign_key(DIRECTION_UPDATE)}): " + "; ".join(parts) + "."
    numbers = {"layers": layer_span(list(layers["layer"])) if len(layers) else "", "whole_model": bool(whole["disagree"]),
               "gradient_total": float(whole["gradient"]), "update_total": float(whole["update"]),
               "observed": float(whole["observed"]),
               "supports": str(whole["supports"] or (layers["supports"].iloc[0] if len(layers) else ""))}
    return Finding(run_name, f"views disagree ({probe})", sentence, numbers)


def _comparison(runs: list[RunData], min_change: float = MIN_RISK_CHANGE) -> Finding | None:
    observed, geffect = {}, {}
    for run in runs:
        forget, retain = _observed(run, FORGET), _observed(run, RETAIN)
        if forget is not None and retain is not None and risk_moved(forget, min_change):
            observed[run.name] = retain["change"] / forget["change"]
        summary = tables.run_summary(run.effects, None)
        total = summary.get(f"cumulative_geffect_{FORGET}")
        if total is not None and total < 0 and "retain_per_forget_effect" in summary:
            geffect[run.name] = summary["retain_per_forget_effect"]
    ratios, what = (observed, "observed retain-risk rise / forget-risk rise") if len(observed) >= 2 else \
        (geffect, "cumulative retain/forget G-effect ratio")
    if len(ratios) < 2:
        return None
    best = min(ratios, key=ratios.get)
    others = ", ".join(f"{name} {fmt(v)}" for name, v in ratios.items() if name != best)
    sentence = f"Per unit of forgetting, {best} does the least retain damage ({what} {fmt(ratios[best])}; {others})"
    if ratios is observed and len(geffect) >= 2:
        by_g = min(geffect, key=geffect.get)
        sentence += (f"; by the G-effect ratio {by_g} would" if by_g != best else "; the G-effect ratio agrees") + \
            f" ({', '.join(f'{n} {fmt(v)}' for n, v in geffect.items())})"
    numbers = {f"ratio_{name}": v for name, v in ratios.items()}
    numbers |= {f"geffect_ratio_{name}": v for name, v in geffect.items()} if ratios is observed else {}
    return Finding("all runs", "comparison", sentence + ".", numbers)


def findings(runs: Any, min_change: float = MIN_RISK_CHANGE) -> list[Finding]:
    """All diagnosis findings for one or several runs (see the module docstring); ``min_change``:
    the smallest rise of a probe's mean risk (nats) that counts as forgetting or damage."""
    items = as_runs(runs)
    disagreements = sign_disagreements(items, min_change=min_change)
    out: list[Finding] = []
    for run in items:
        forget, retain = _observed(run, FORGET), _observed(run, RETAIN)
        forgotten = forget is None or risk_moved(forget, min_change)
        damaged = retain is None or risk_moved(retain, min_change)
        candidates: list[Finding | None] = [_outcome(run)]
        if not forgotten:
            candidates.append(_nothing_forgotten(run, forget, min_change))
        for direction in DIRECTIONS:
            if damaged:
                candidates.append(_where(run, RETAIN, "retain damage", direction))
            if forgotten:
                candidates += [_where(run, FORGET, "unlearning", direction), _when(run, direction)]
        candidates += [_disagreement(run.name, probe, disagreements) for probe in (FORGET, RETAIN)]
        candidates.append(_first_order(run))
        out.extend(f for f in candidates if f is not None)
    comparison = _comparison(items, min_change)
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
