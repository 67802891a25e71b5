"""Which findings of Wang et al. (ICLR 2025) does the toy reproduce? Runs the five studies and writes CLAIMS.md.

Wang et al., "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond"
(ICLR 2025) read unlearning objectives through their G-effects. This script runs (or reuses,
when finished runs with the same settings exist) the five studies of ``analyses/`` (sizes
below), plus one TNPO run at a larger β for the TNPO investigation, and writes
``analyses/CLAIMS.md``: for each finding we can state, the toy's numbers and a verdict —
*reproduced*, *contradicted* or *cannot tell* — decided by the rule written next to it in
:data:`CLAIMS` (code, not judgement). Risk changes are the observed changes of the probes' mean
NLL (``geffect.reporting.tables.observed_change``): a probe "moved" when its per-instance
changes are shifted by a one-sided Wilcoxon test at p < 0.05 and by at least 0.05 nats
(``geffect.reporting.diagnosis.risk_moved``). Damage is compared at *matched forgetting*: an
objective's retain-risk rise at the step where its forget risk had risen by :data:`LEVEL` nats
(linear interpolation on its recorded curves) against GA's (or the base objective's) at the
same forget rise, so objectives that forget at different speeds, and runs that go on into
collapse, are compared at the same amount of forgetting (also shown at :data:`LEVELS`).

The findings are our reading of the paper's text and figures (section given); where the paper
states a G-effect property we test the G-effect, and we put the update view (the predicted risk
change of the step actually taken under AdamW) and the observed change beside it.

Two sizes:

* ``python analyses/claims.py`` — the default (:data:`QUICK`), sized for a two-core machine
  that others share: 31 steps per run (on the shipped ``tiny`` at lr 5e-4, GA's forget risk rises
  by ~3.7 nats and NPO's weight falls to ~0.3 by step 27), probes of 8 instances, both views
  recorded every 5 steps (the tables weight each record by its interval; the record of step 30
  ends at the final weights, hence 31), CSV tables only, runs under ``analyses/out/quick/``.
  About 19 runs; on 2 cores shared with a dozen other processes one such run took ~70 s with
  ``OMP_NUM_THREADS=1`` (and ~8 minutes with torch's default two threads, which spin against the
  other processes: on a busy machine set ``OMP_NUM_THREADS=1``).
* ``python analyses/claims.py --full`` (:data:`FULL`) — the studies' own size: 100 steps, probes
  of 32, every step recorded, figures drawn, sharing ``analyses/out/<study>/`` with the study
  scripts, so a study run there is reused and vice versa.

The regularisers study's GA and NPO runs are the likelihood and NPO studies' (same objective and
settings): they are copied, not retrained.

``--steps``, ``--probe-size``, ``--record-every``, ``--lr``, ``--model``, ``--out`` override either
size; ``--figures`` draws the studies' figures at the default size; ``--fresh`` retrains every run.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULTS, OUT_ROOT, Variant, model_fingerprint, run_variants  # noqa: E402

from geffect.reporting import tables  # noqa: E402
from geffect.reporting.diagnosis import MIN_RISK_CHANGE, risk_moved, sign_disagreements  # noqa: E402
from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE  # noqa: E402

HERE = Path(__file__).resolve().parent
CLAIMS_FILE = HERE / "CLAIMS.md"
STUDIES = ("likelihood_family", "npo_family", "rmu_layers", "po", "regularisers")
TNPO_BETAS = (1.0,)  # extra TNPO runs beside the default β = 0.1 of npo_family
# Damage is compared where the forget risk (mean per-token NLL) had risen by LEVEL nats (the answers'
# per-token probability down by a factor e: clear forgetting, well before a collapse); LEVELS are shown.
LEVEL = 1.0
LEVELS = (1.0, 2.0, 4.0)
# Run sizes (see the module docstring): QUICK is the default, FULL the studies' own settings.
QUICK = dict(steps=31, probe_size=8, record_every=5)
FULL = dict(steps=DEFAULTS["steps"], probe_size=DEFAULTS["probe_size"], record_every=DEFAULTS["record_every"])
REPRODUCED, CONTRADICTED, CANNOT_TELL = "reproduced", "contradicted", "cannot tell"
NOT_RUN = "not run"  # a run the claim needs is missing (its study was left out with --studies)


@dataclass
class Claim:
    """One finding of the paper, the toy's numbers for it and the verdict of its rule."""

    key: str
    finding: str  # the paper's finding, in our words, with its section
    rule: str  # how the verdict is decided (the code below implements exactly this)
    numbers: str = ""
    verdict: str = CANNOT_TELL
    details: dict[str, Any] = field(default_factory=dict)


def not_run(claim: Claim, runs: dict[str, Any], labels: list[str]) -> bool:
    """Mark ``claim`` as not run (and say which runs are missing) if any of ``labels`` is not in ``runs``."""
    missing = [label for label in labels if label not in runs]
    if missing:
        claim.verdict, claim.numbers = NOT_RUN, f"not run (missing: {', '.join(missing)})"
    return bool(missing)


# -- measurements -------------------------------------------------------------------------------------------


def change(run: Any, probe: str) -> dict[str, float]:
    return tables.observed_change(run.risks, probe)


def moved(run: Any, probe: str) -> bool:
    return risk_moved(change(run, probe), MIN_RISK_CHANGE)


def curves(run: Any) -> pd.DataFrame:
    """Observed change of the forget and retain mean risks since the start, per step reached."""
    return pd.DataFrame({probe: tables.observed_curve(run.risks, probe) for probe in ("forget", "retain")})


def retain_at_forget(run: Any, level: float) -> float | None:
    """``run``'s retain-risk rise when its forget-risk rise first reached ``level`` nats (linear
    interpolation between records); None if it never did."""
    frame = curves(run)
    forget, retain = frame["forget"].to_numpy(), frame["retain"].to_numpy()
    above = np.nonzero(forget >= level)[0]
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(retain[0])
    share = (level - forget[i - 1]) / (forget[i] - forget[i - 1])
    return float(retain[i - 1] + share * (retain[i] - retain[i - 1]))


def matched_damage(run: Any, reference: Any, level: float | None = None) -> dict[str, float] | None:
    """Retain-risk rise of ``run`` and of ``reference`` when each had forgotten ``level`` nats
    (default :data:`LEVEL`), and their ratio; None if either never forgot that much."""
    level = LEVEL if level is None else level
    mine, theirs = retain_at_forget(run, level), retain_at_forget(reference, level)
    if mine is None or theirs is None:
        return None
    return {"level": level, "retain": mine, "reference_retain": theirs,
            "ratio": mine / theirs if theirs > 0 else float("inf")}


def matched_text(run: Any, reference: Any, name: str) -> str:
    """"retain +a vs <name> +b (×r)" at each of LEVELS that both reached."""
    parts = []
    for level in LEVELS:
        matched = matched_damage(run, reference, level)
        if matched is not None:
            parts.append(f"at {level:g} nat{'s' if level != 1 else ''} forgotten: retain {fs(matched['retain'])} "
                         f"vs {name} {fs(matched['reference_retain'])} (×{f(matched['ratio'], 2)})")
    return "; ".join(parts) or f"never forgot {LEVELS[0]:g} nat"


def damage_verdict(ratio: float) -> str:
    """Retain damage relative to GA's at matched forgetting: ≤ 0.8 reproduces a "less damage" claim,
    ≥ 1 contradicts it, in between cannot tell."""
    return REPRODUCED if ratio <= 0.8 else CONTRADICTED if ratio >= 1.0 else CANNOT_TELL


def per_step(run: Any, probe: str, direction: str) -> pd.Series:
    """The whole-model effect at each recorded step (``tables.step_series``)."""
    return tables.step_series(run.effects, probe, direction)


def thirds(series: pd.Series) -> tuple[float, float]:
    """Mean of the first and of the last third of a per-step series."""
    values = series.sort_index().to_numpy()
    third = max(1, len(values) // 3)
    return float(values[:third].mean()), float(values[-third:].mean())


def rising_share(run: Any, probe: str, direction: str, layers: list[str]) -> float:
    """Share of the risk-raising layer totals (over the transformer blocks) carried by ``layers``."""
    totals = tables.layer_totals(run.effects, probe, direction)
    totals = totals[[k for k in totals.index if k.startswith("block.")]]
    rising = (-totals if direction == DIRECTION_GRADIENT else totals).clip(lower=0.0)
    whole = float(rising.sum())
    return float(rising[[k for k in layers if k in rising.index]].sum() / whole) if whole > 0 else float("nan")


def fs(value: float) -> str:
    """A change for the table: signed, 3 significant digits."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.3g}"


def pct(share: float) -> str:
    """A share as a whole percentage."""
    return "n/a" if not np.isfinite(share) else f"{100 * share:.0f} %"


def f(value: float, digits: int = 3) -> str:
    """A number for the table: 3 significant digits, 'n/a' for missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


# -- the claims -----------------------------------------------------------------------------------------------


def claim_ga_damage_grows(runs: dict[str, Any]) -> Claim:
    claim = Claim(
        "ga-damage-grows",
        "GA's damage to retained data grows as unlearning proceeds: the 1/p factor of its gradient makes "
        "already-forgotten tokens dominate, so its retain G-effects grow in magnitude over the steps "
        "(Sec. 4, GA; 'excessive unlearning').",
        f"GA's retain-risk rise per unit of forget-risk rise at the end of the run vs at {LEVEL:g} nat forgotten: "
        "≥ 2 × → reproduced; ≤ 1 × → contradicted; else, or if GA never forgot twice that much, cannot tell. "
        "(Step-wise: the per-step retain G-effect and predicted retain change, first vs last third.)")
    if not_run(claim, runs, ["ga"]):
        return claim
    ga = runs["ga"]
    forget, retain = change(ga, "forget")["change"], change(ga, "retain")["change"]
    early = retain_at_forget(ga, LEVEL)
    g_early, g_late = thirds(-per_step(ga, "retain", DIRECTION_GRADIENT))
    u_early, u_late = thirds(per_step(ga, "retain", DIRECTION_UPDATE))
    steps = "; per step, first → last third: retain G-effect " \
            f"{f(-g_early)} → {f(-g_late)}, predicted retain change {f(u_early)} → {f(u_late)} nats"
    if early is None or forget < 2 * LEVEL:
        claim.numbers = f"GA forgot {f(forget)} nats in all" + steps
        return claim
    start, end = early / LEVEL, retain / forget
    claim.numbers = (f"retain/forget {f(start, 2)} at {LEVEL:g} nat forgotten → {f(end, 2)} at the end (forget "
                     f"{fs(forget)}, retain {fs(retain)} nats)" + steps)
    claim.verdict = REPRODUCED if end >= 2 * start else CONTRADICTED if end <= start else CANNOT_TELL
    claim.details = {"start": start, "end": end}
    return claim


def claim_weighting(runs: dict[str, Any], label: str, name: str) -> Claim:
    claim = Claim(
        f"weighting-{label}",
        f"Weighting the ascent cuts retain damage per unit of forgetting relative to GA: {name} "
        "(Sec. 4–5: WGA weights tokens by p^α, TNPO applies NPO's weight per token, WTNPO combines both).",
        f"{name}'s retain-risk rise vs GA's when each had forgotten {LEVEL:g} nat: ≤ 0.8 × GA's → reproduced; "
        "≥ GA's → contradicted; in between, or if either never forgot that much → cannot tell.")
    if not_run(claim, runs, [label, "ga"]):
        return claim
    run = runs[label]
    forget, retain = change(run, "forget"), change(run, "retain")
    claim.numbers = (matched_text(run, runs["ga"], "GA") + f"; end of run: forget {fs(forget['change'])}, "
                     f"retain {fs(retain['change'])} nats")
    matched = matched_damage(run, runs["ga"])
    if matched is not None:
        claim.verdict = damage_verdict(matched["ratio"])
        claim.details = matched
    return claim


def claim_npo_fades(runs: dict[str, Any]) -> Claim:
    claim = Claim(
        "npo-fades",
        "NPO's instance weight 2σ(β·log π/π_ref) shrinks as the forget likelihood falls, so its G-effects fade "
        "over the steps: NPO stops by itself where GA keeps going (Sec. 4, NPO).",
        "NPO's mean instance weight at the last step ≤ 0.5 and its per-step forget G-effect over the last "
        "tenth of the steps ≤ 0.5 × its peak magnitude → reproduced; weight ≥ 0.9 at the end, or G-effect "
        "over the last tenth ≥ its peak × 0.9 → contradicted; else cannot tell. (The predicted per-step "
        "forget-risk change, the update view, is shown beside it.)")
    if not_run(claim, runs, ["npo"]):
        return claim
    npo = runs["npo"]
    weight = npo.history.set_index("step")["loss_npo_weight"]
    g = -per_step(npo, "forget", DIRECTION_GRADIENT)
    u = per_step(npo, "forget", DIRECTION_UPDATE)
    tail = max(1, len(g) // 10)
    g_tail, g_peak = float(g.iloc[-tail:].mean()), float(g.max())
    u_tail, u_peak = float(u.iloc[-tail:].mean()), float(u.max())
    claim.numbers = (f"weight {f(weight.iloc[0], 2)} → {f(weight.iloc[len(weight) // 3], 2)} (step "
                     f"{weight.index[len(weight) // 3]}) → {f(weight.iloc[-1], 2)} (step {weight.index[-1]}); forget "
                     f"G-effect last tenth / peak = {f(g_tail / g_peak, 2)}; predicted forget-risk change last "
                     f"tenth / peak = {f(u_tail / u_peak, 2)}; forget {fs(change(npo, 'forget')['change'])} nats")
    if weight.iloc[-1] <= 0.5 and g_tail <= 0.5 * g_peak:
        claim.verdict = REPRODUCED
    elif weight.iloc[-1] >= 0.9 or g_tail >= 0.9 * g_peak:
        claim.verdict = CONTRADICTED
    claim.details = {"weight_end": float(weight.iloc[-1]), "g_tail_over_peak": g_tail / g_peak,
                     "u_tail_over_peak": u_tail / u_peak}
    return claim


def claim_rmu_layers(runs: dict[str, Any]) -> Claim:
    claim = Claim(
        "rmu-at-and-below",
        "RMU acts at and below the block it steers: its forget and retain effects sit in blocks ≤ ℓ "
        "(Sec. 4, RMU; RMU trains the MLPs of blocks ℓ−2..ℓ).",
        "For every steered block ℓ with a forget-risk rise beyond noise: share of the forget risk rise the update "
        "view predicts in blocks ≤ ℓ ≥ 0.9 → reproduced for that ℓ; all ℓ reproduced → reproduced; any ℓ "
        "below 0.5 → contradicted; else cannot tell. (By construction only blocks ℓ−2..ℓ train, so this "
        "checks the engine as much as the paper.)")
    if not_run(claim, runs, [f"rmu_block{i}" for i in range(4)]):
        return claim
    parts, verdicts = [], []
    for label in sorted(k for k in runs if k.startswith("rmu_block")):
        run, block = runs[label], int(label.removeprefix("rmu_block"))
        below = [f"block.{i}" for i in range(block + 1)]
        share = rising_share(run, "forget", DIRECTION_UPDATE, below)
        at = rising_share(run, "forget", DIRECTION_UPDATE, [f"block.{block}"])
        g_total = float(tables.layer_totals(run.effects, "forget", DIRECTION_GRADIENT).sum())
        forget = change(run, "forget")
        parts.append(f"ℓ={block}: forget {fs(forget['change'])} nats, {pct(share)} at/below ℓ "
                     f"({pct(at)} at ℓ), forget G-effect total {f(g_total)}")
        if not moved(run, "forget"):
            verdicts.append(CANNOT_TELL)
        else:
            verdicts.append(REPRODUCED if share >= 0.9 else CONTRADICTED if share < 0.5 else CANNOT_TELL)
    claim.numbers = "; ".join(parts)
    claim.verdict = (REPRODUCED if verdicts and all(v == REPRODUCED for v in verdicts)
                     else CONTRADICTED if CONTRADICTED in verdicts else CANNOT_TELL)
    return claim


def claim_regulariser(runs: dict[str, Any]) -> Claim:
    claim = Claim(
        "best-regulariser",
        "Of the retain regularisers GD (retain NLL), KL (to the original model) and RR (representation "
        "retention), KL offsets the damage most robustly (Sec. 6; our reading of the paper's summary).",
        f"For each base (GA, NPO): each regularised run's retain rise at {LEVEL:g} nat forgotten divided by its "
        "base's (runs that never forgot that much are left out). KL lowest for both bases → reproduced; another "
        "regulariser lowest for both → contradicted; mixed or too few → cannot tell.")
    if not_run(claim, runs, [f"reg:{b}{t}" for b in ("ga", "npo") for t in ("", "+gd", "+kl", "+rr")]):
        return claim
    best, parts = {}, []
    for base in ("ga", "npo"):
        ratios = {}
        for term in ("gd", "kl", "rr"):
            label = f"{base}+{term}"
            matched = matched_damage(runs[f"reg:{label}"], runs[f"reg:{base}"])
            if matched is None:
                forget = change(runs[f"reg:{label}"], "forget")["change"]
                parts.append(f"{label}: forgot {f(forget)} nats in all, no matched comparison")
                continue
            ratios[term] = matched["ratio"]
            parts.append(f"{label}: retain {fs(matched['retain'])} vs {base} {fs(matched['reference_retain'])} "
                         f"(×{f(matched['ratio'], 2)})")
        if len(ratios) >= 2:
            best[base] = min(ratios, key=ratios.get)
    claim.numbers = f"at {LEVEL:g} nat forgotten: " + "; ".join(parts) + (f"; lowest: {best}" if best else "")
    if len(best) == 2 and set(best.values()) == {"kl"}:
        claim.verdict = REPRODUCED
    elif len(best) == 2 and len(set(best.values())) == 1:
        claim.verdict = CONTRADICTED
    claim.details = best
    return claim


def claim_po(runs: dict[str, Any]) -> list[Claim]:
    sign = Claim(
        "po-retain-geffect",
        "PO (learning refusals with a retain NLL) has a positive retain G-effect: its retain term pulls the "
        "retain risk down while it unlearns (Sec. 4, PO).",
        "PO's retain G-effect summed over steps and layers > 0 → reproduced; < 0 → contradicted.")
    spare = Claim(
        "po-spares-retain",
        "PO keeps retained knowledge better than GA: less retain damage for its forgetting (Sec. 4, PO).",
        f"PO's retain-risk rise vs GA's when each had forgotten {LEVEL:g} nat (forget risk = NLL of the original "
        "answers): ≤ 0.8 × → reproduced; ≥ 1 × → contradicted; else, or if PO never forgot that much → cannot tell.")
    if not_run(sign, runs, ["po", "ga"]) | not_run(spare, runs, ["po", "ga"]):
        return [sign, spare]
    po, ga = runs["po"], runs["ga"]
    g_retain = float(tables.layer_totals(po.effects, "retain", DIRECTION_GRADIENT).sum())
    u_retain = float(tables.layer_totals(po.effects, "retain", DIRECTION_UPDATE).sum())
    retain, forget = change(po, "retain"), change(po, "forget")
    sign.numbers = (f"retain G-effect {f(g_retain)}; predicted retain change {f(u_retain)} nats; observed retain "
                    f"change {f(retain['change'])} nats (p rise {f(retain['p_rise'], 2)})")
    sign.verdict = REPRODUCED if g_retain > 0 else CONTRADICTED if g_retain < 0 else CANNOT_TELL
    spare.numbers = (matched_text(po, ga, "GA") + f"; end of run: forget {f(forget['before'])} → {f(forget['after'])}, "
                     f"retain {f(retain['before'])} → {f(retain['after'])} nats")
    matched = matched_damage(po, ga)
    if matched is not None:
        spare.verdict = damage_verdict(matched["ratio"])
    return [sign, spare]


def claim_depth(runs: dict[str, Any]) -> Claim:
    claim = Claim(
        "shallow-layers",
        "Unlearning acts most in the shallow layers: the layer-wise G-effects of GA/NPO-type objectives are "
        "largest in the lower transformer blocks (Sec. 4, layer-wise figures; our reading).",
        "Share of the risk-raising layer totals over the transformer blocks carried by the lower half of the "
        "blocks, for GA, WGA and NPO on the forget and retain probes, in both views: all ≥ 0.5 → reproduced; all "
        "< 0.5 → contradicted; mixed → cannot tell.")
    if not_run(claim, runs, ["ga", "wga", "npo"]):
        return claim
    blocks = sorted({k for k in runs["ga"].effects["layer"].unique() if k.startswith("block.")},
                    key=lambda k: int(k.split(".")[1]))
    lower = blocks[: len(blocks) // 2]
    shares, parts = [], []
    for label in ("ga", "wga", "npo"):
        cells = []
        for probe in ("forget", "retain"):
            for direction, tag in ((DIRECTION_GRADIENT, "G"), (DIRECTION_UPDATE, "Δ")):
                share = rising_share(runs[label], probe, direction, lower)
                shares.append(share)
                cells.append(f"{probe} {tag} {pct(share)}")
        parts.append(f"{label}: " + ", ".join(cells))
    claim.numbers = f"lower half = {', '.join(lower)}; " + "; ".join(parts)
    finite = [s for s in shares if np.isfinite(s)]
    claim.verdict = (REPRODUCED if finite and all(s >= 0.5 for s in finite)
                     else CONTRADICTED if finite and all(s < 0.5 for s in finite) else CANNOT_TELL)
    return claim


CLAIMS: list[Callable[[dict[str, Any]], Claim | list[Claim]]] = [
    claim_ga_damage_grows,
    lambda runs: claim_weighting(runs, "wga", "WGA (α = 1)"),
    lambda runs: claim_weighting(runs, "wga_alpha2", "WGA (α = 2)"),
    lambda runs: claim_weighting(runs, "tnpo", "TNPO"),
    lambda runs: claim_weighting(runs, "wtnpo", "WTNPO"),
    claim_npo_fades,
    claim_rmu_layers,
    claim_regulariser,
    claim_po,
    claim_depth,
]


# -- TNPO ------------------------------------------------------------------------------------------------


def token_weights(run: Any, beta: float, rows: int = 32) -> np.ndarray:
    """TNPO's token weights 2σ(β·(log p_t − log p_t^ref)) of the final model on the first ``rows``
    forget answers (reference: the run's starting model)."""
    import torch

    import geffect
    from geffect.data import collate, encode_qa
    from geffect.objectives.terms import reference_logprobs, token_logprobs

    model, tokenizer = run.model, run.tokenizer
    reference, _ = geffect.load_model(run.config.model, device="cpu")
    split = geffect.load_world()[run.config.forget].select(range(rows))
    batch = collate([encode_qa(tokenizer, q, a) for q, a in zip(split["question"], split["answer"])], tokenizer)
    with torch.no_grad():
        policy, ref = token_logprobs(model, batch), reference_logprobs(reference, batch)
        weights = 2 * torch.sigmoid(beta * (policy.logp - ref.logp))
    return weights[policy.mask].numpy()


def tnpo_section(runs: dict[str, Any], extra: dict[str, Any]) -> str:
    """What TNPO's β does on a memorised target, in numbers (no tuning toward the paper)."""
    lines = ["## TNPO: its β and its weight's range on a memorised target", "",
             "TNPO's gradient is GA's per-token gradient times w_t = 2σ(β·(log p_t − log p_t^ref)). On a target that "
             "memorised its forget answers, p_t^ref ≈ 1, so w_t ≈ 2σ(−β·NLL_t): with β = 0.1 a token's weight halves "
             f"only once its NLL reaches ln 3 / β = {np.log(3) / 0.1:.1f} nats, and until then TNPO is GA. NPO applies "
             "the same function to the whole answer's log-ratio (a sum over its tokens), so its weight falls about "
             "as many times faster as an answer has tokens.", "",
             "The weight is the batch mean the objective logs at each step; 'halved at' is the first step where it is "
             "under 0.5, with the forget risk's rise by then; 'after < 0.05' is the forget-risk rise from the first "
             "step with a weight under 0.05 to the end, i.e. what AdamW's update kept doing once the gradient's "
             "weight had all but vanished.", "",
             "| run | β | weight at step 0 → 29 → last | halved at step (forget rise then) | forget rise after < 0.05 "
             "| final token weights on forget10 (5 / 50 / 95 %) "
             f"| forget rise (nats) | retain rise | retain at {LEVEL:g} nat forgotten (GA's) |",
             "|---|---|---|---|---|---|---|---|---|"]
    entries = [(label, runs[label], 0.1, column) for label, column in (("npo", "loss_npo_weight"),
                                                                        ("tnpo", "loss_token_weight")) if label in runs]
    entries += [(label, run, float(label.split("beta")[1]), "loss_token_weight") for label, run in extra.items()]
    if not entries:
        lines.append("| not run (the NPO study was left out) | | | | | | | | |")
    for label, run, beta, column in entries:
        weight = run.history.set_index("step")[column]
        at29 = weight.loc[min(29, weight.index.max())]
        final = "n/a (instance weight)" if column == "loss_npo_weight" else \
            " / ".join(f"{q:.2f}" for q in np.quantile(token_weights(run, beta), [0.05, 0.5, 0.95]))
        forget, retain = change(run, "forget")["change"], change(run, "retain")["change"]
        matched = matched_damage(run, runs["ga"]) if "ga" in runs else None
        curve = curves(run)["forget"]
        halved, vanished = weight[weight < 0.5], weight[weight < 0.05]
        halved_text = (f"{halved.index[0]} ({fs(float(np.interp(halved.index[0], curve.index, curve)))})"
                       if len(halved) else "never")
        after_text = fs(float(curve.iloc[-1] - np.interp(vanished.index[0], curve.index, curve))) \
            if len(vanished) else "never under 0.05"
        lines.append(f"| {label} | {beta:g} | {weight.iloc[0]:.2f} → {at29:.2f} → {weight.iloc[-1]:.2f} | "
                     f"{halved_text} | {after_text} | {final} | {f(forget)} | {f(retain)} | "
                     + (f"{f(matched['retain'])} ({f(matched['reference_retain'])}) |" if matched else "n/a |"))
    return "\n".join(lines)


# -- the two views ---------------------------------------------------------------------------------------


def views_section(runs: dict[str, Any]) -> str:
    """Where the G-effect and the predicted risk change disagree in sign, per run and probe."""
    table = sign_disagreements(runs)
    lines = ["## The two views: where the G-effect's sign misleads under AdamW", "",
             "Whole-model totals per run and probe: the G-effect (negative = the risk rises), the predicted risk "
             "change of the steps taken (nats, positive = it rises) and the observed change; ✗ marks a sign "
             "disagreement between the two views, and the last column the layer groups where they disagree.", "",
             "| run | probe | G-effect | predicted change | observed change | views | layers where they disagree |",
             "|---|---|---|---|---|---|---|"]
    for (run, probe), rows in table.groupby(["run", "probe"], sort=False):
        whole = rows[rows["layer"] == "all layers"].iloc[0]
        split = rows[(rows["layer"] != "all layers") & rows["disagree"]]
        verdict = {"update": "the observed change supports the predicted change",
                   "gradient": "the observed change supports the G-effect",
                   "neither": "the observed change is within noise"}.get(whole["supports"], "")
        mark = f"✗ ({verdict})" if whole["disagree"] else "agree"
        lines.append(f"| {run} | {probe} | {f(whole['gradient'])} | {f(whole['update'])} | {f(whole['observed'])} | "
                     f"{mark} | {', '.join(split['layer']) or '—'} |")
    return "\n".join(lines)


# -- running ----------------------------------------------------------------------------------------------


def load_study(study: str, settings: dict[str, Any], root: Path, reuse: bool, figures: bool) -> dict[str, Any]:
    """Run (or reuse) one study and write its tables (and figures); returns its runs by label."""
    module = importlib.import_module(study)
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if k != "progress"]
    argv += [f"--out={root}"] + (["--reuse"] if reuse else []) + ([] if figures else ["--no-figures"])
    module.main(study, module.VARIANTS, module.__doc__, argv)
    return {v.label: _run(root / study / "runs" / v.label) for v in module.VARIANTS}


# Runs of the regularisers study that another study already makes with the same objective and settings.
SHARED = {"ga": "likelihood_family", "npo": "npo_family"}


def share_run(source: Path, target: Path) -> None:
    """Copy a finished run (and its model fingerprint) to ``target`` unless one is there; the study's
    ``--reuse`` then keeps it if its settings and model weights match, and retrains it otherwise."""
    marker = source.parent / f"{source.name}.model-sha256"
    if target.exists() or not (source / "config.yaml").is_file() or not marker.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target)
    shutil.copy2(marker, target.parent / marker.name)


def _run(path: Path) -> Any:
    import geffect

    return geffect.Run(path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help=f"the studies' size ({FULL}, figures, runs shared with the study scripts) instead of "
                             f"the default {QUICK}")
    parser.add_argument("--steps", type=int, help="steps per run (default 31; --full: 100)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate (default 5e-4)")
    parser.add_argument("--probe-size", type=int, help="instances per probe (default 8; --full: 32)")
    parser.add_argument("--record-every", type=int, help="record both views every k steps (default 5; --full: 1)")
    parser.add_argument("--model", default=DEFAULTS["model"], help="model (default tiny)")
    parser.add_argument("--out", type=Path,
                        help=f"study output root (default {OUT_ROOT / 'quick'}; --full: {OUT_ROOT})")
    parser.add_argument("--studies", default=",".join(STUDIES),
                        help="comma-separated studies to run (default all five; claims whose runs are missing "
                             "say 'not run')")
    parser.add_argument("--figures", action="store_true", help="draw the studies' figures (always with --full)")
    parser.add_argument("--claims", type=Path, default=CLAIMS_FILE, help=f"where to write (default {CLAIMS_FILE})")
    parser.add_argument("--fresh", action="store_true", help="retrain every run instead of reusing finished ones")
    parser.add_argument("--note", default="", help="a sentence for CLAIMS.md's header (e.g. which build of the model)")
    args = parser.parse_args(argv)
    size = FULL if args.full else QUICK
    for key, value in size.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out = args.out or (OUT_ROOT if args.full else OUT_ROOT / "quick")
    args.figures = args.figures or args.full
    args.studies = [study.strip() for study in args.studies.split(",") if study.strip()]
    unknown = sorted(set(args.studies) - set(STUDIES))
    if unknown:
        parser.error(f"unknown studies {unknown}; choose from {', '.join(STUDIES)}")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    start = time.perf_counter()
    settings = dict(model=args.model, forget=DEFAULTS["forget"], steps=args.steps, probe_size=args.probe_size,
                    batch_size=DEFAULTS["batch_size"], lr=args.lr, record_every=args.record_every)
    runs: dict[str, Any] = {}
    timings = {}
    extra: dict[str, Any] = {}
    for study in [s for s in STUDIES if s in args.studies]:
        began = time.perf_counter()
        if study == "regularisers" and not args.fresh:
            for label, source in SHARED.items():
                share_run(args.out / source / "runs" / label, args.out / study / "runs" / label)
        found = load_study(study, settings, args.out, reuse=not args.fresh, figures=args.figures)
        timings[study] = time.perf_counter() - began
        if study == "regularisers":
            runs |= {f"reg:{label}": run for label, run in found.items()}
        else:
            runs |= found
        if study == "npo_family":  # the TNPO investigation's extra runs, right after the NPO study
            began = time.perf_counter()
            extra = run_variants([Variant(f"tnpo_beta{beta:g}", "tnpo", hparams={"beta": beta}) for beta in TNPO_BETAS],
                                 args.out / "claims", {**settings, "progress": False}, reuse=not args.fresh)
            timings["tnpo β runs"] = time.perf_counter() - began
    claims: list[Claim] = []
    for make in CLAIMS:
        made = make(runs)
        claims.extend(made if isinstance(made, list) else [made])
    command = "python analyses/claims.py" + (" --full" if args.full else "") + (
        f" --studies {','.join(args.studies)}" if list(args.studies) != list(STUDIES) else "")
    text = render(claims, runs, extra, settings, timings, time.perf_counter() - start, command, args.note)
    args.claims.write_text(text, encoding="utf-8")
    print(text)
    print(f"claims: wrote {args.claims} in {time.perf_counter() - start:.0f} s")
    return args.claims


def render(claims: list[Claim], runs: dict[str, Any], extra: dict[str, Any], settings: dict[str, Any],
           timings: dict[str, float], seconds: float, command: str = "python analyses/claims.py",
           note: str = "") -> str:
    counts = {v: sum(c.verdict == v for c in claims) for v in (REPRODUCED, CONTRADICTED, CANNOT_TELL, NOT_RUN)}
    header = [
        "# Which findings of Wang et al. (ICLR 2025) the toy reproduces", "",
        f"Written by `{command}` from the runs of the studies in `analyses/` "
        f"(model `{settings['model']}` (weights sha256 {model_fingerprint(settings['model'])[:12] or 'n/a'}), forget split `{settings['forget']}`, {settings['steps']} AdamW steps at lr "
        f"{settings['lr']:g}, batch {settings['batch_size']}, both views recorded every {settings['record_every']} "
        f"step(s) on probes of {settings['probe_size']} forget and retain instances). Each verdict follows the rule "
        "in its row, implemented in `analyses/claims.py`; nothing here is edited by hand. A probe's risk "
        f"\"moved\" when its per-instance changes are shifted (one-sided Wilcoxon p < 0.05) by at least "
        f"{MIN_RISK_CHANGE:g} nats. Risks are mean per-token NLL of the answers, in nats."
        + (f" {note}" if note else ""), "",
        f"Verdicts: {counts[REPRODUCED]} reproduced, {counts[CONTRADICTED]} contradicted, "
        f"{counts[CANNOT_TELL]} cannot tell" + (f", {counts[NOT_RUN]} not run" if counts[NOT_RUN] else "") + ".", "",
        "| # | finding (Wang et al., our reading) | the toy's numbers | rule | verdict |",
        "|---|---|---|---|---|",
    ]
    rows = [f"| {i} | {c.finding} | {c.numbers} | {c.rule} | **{c.verdict}** |" for i, c in enumerate(claims, 1)]
    timing = ["## Time", "", f"{seconds / 60:.1f} minutes in all on this machine "
              "(per study, with its tables and any figures: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
              + "; a reused run costs only its tables and figures)."]
    return "\n".join(header + rows + ["", tnpo_section(runs, extra), "", views_section(
        {k: v for k, v in runs.items()}), "", *timing]) + "\n"


if __name__ == "__main__":
    main()
