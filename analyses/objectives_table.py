"""Every built-in objective, 30 steps from ``tiny`` on ``forget10``, with per-step G-effect recording.

For each registered objective this runs ``geffect.unlearn`` (AdamW, recording both
directions on a forget and a retain probe of 32 instances at every step), then the TOFU
evaluation on the embedded world (forget quality against ``tiny-retain90``, whose truth
ratios are computed once). It writes ``objectives.csv`` / ``objectives.md`` with one row per
objective (plus the untouched target model): forget and retain ROUGE-L recall, forget
quality, model utility, the retain ROUGE-L gap to the target, and the seconds the 30
recorded steps took. It also checks the issue's claims and prints them:

* every objective's forget ROUGE-L falls below the target's (``rr`` is a retain-only
  regulariser with zero gradient at the start, reported but not expected to forget);
* GD, NPO+KL and WGA keep retain ROUGE-L closer to the target than GA does;
* each 30-step recorded run takes at most 180 seconds.

Run: ``python analyses/objectives_table.py [--out analyses/out/objectives] [--max-examples N]``
(the README's table: ``--max-examples 40`` and the 15 objectives listed there, ``--objectives ...``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

import geffect
from geffect.evaluation import evaluate, forget_truth_ratios
from geffect.models import load
from geffect.training.summary import to_markdown

COLUMNS = ["objective", "forget_rouge", "retain_rouge", "retain_gap", "forget_quality", "model_utility", "seconds"]
# One learning rate for all objectives, the trainer's default 5e-4 (chosen on the earlier, TOFU-only
# tiny: GA barely moved at 1e-4 and collapsed every split at 1e-3). The label-smoothed tiny's forget10
# answers sit at 0.37 nats per token (build_report.json), so GA moves faster there.
SETTINGS = dict(model="tiny", forget="forget10", steps=30, batch_size=8, probe_size=32, record_every=1, lr=5e-4)
# RMU's defaults (c = 6.5, α = 1200, the MLP output projections of blocks ℓ-2..ℓ) are the paper's
# Zephyr-7B setting; on the 4-block tiny model (activation norms ~100 at block ℓ = 1) its forget
# term does not move in 30 steps. Scaled here: a target c·u longer than the activations, a retain
# weight on the scale of the forget term, all parameters of blocks 0..ℓ, and a larger step.
OVERRIDES: dict[str, dict[str, Any]] = {
    "rmu": dict(lr=1e-2, trainable=[r"layers\.[01]\."], hparams=dict(steering_coeff=100.0, alpha=10.0)),
}
RETAIN_PRESERVING = ("gd", "npo_kl", "wga")
NOT_FORGETTING = ("rr",)  # retain-only regulariser
TIME_LIMIT = 180.0


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="analyses/out/objectives", help="output directory")
    parser.add_argument("--objectives", nargs="*", help="subset of objectives (default: all registered)")
    parser.add_argument("--max-examples", type=int, help="evaluate only the first N rows of each split")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    target, tokenizer = load("tiny")
    options = dict(max_examples=args.max_examples, progress=False)
    retain_model, retain_tokenizer = load("tiny-retain90")
    ratios = forget_truth_ratios(retain_model, retain_tokenizer, forget_split="forget10",
                                 max_examples=args.max_examples)
    base = evaluate(target, tokenizer, forget_split="forget10", retain_truth_ratios=ratios, **options)
    rows = [{"objective": "(target: tiny)", **base, "seconds": 0.0}]

    for name in args.objectives or geffect.list_objectives():
        settings = {**SETTINGS, **OVERRIDES.get(name, {})}
        target_dir = out / "runs" / name
        shutil.rmtree(target_dir, ignore_errors=True)  # this script's own earlier run: start fresh
        run = geffect.unlearn(name, out=target_dir, **settings)
        if run.status != "finished":
            print(f"{name}: run {run.status}: {run.info.get('message')}")
            rows.append({"objective": name, "seconds": run.info.get("seconds")})
            continue
        metrics = run.evaluate(retain_model=None, retain_truth_ratios=ratios, **options)
        rows.append({"objective": name, **metrics, "seconds": run.info["seconds"]})
        print(f"{name}: forget ROUGE-L {metrics['forget_rouge']:.3f}, retain ROUGE-L {metrics['retain_rouge']:.3f}, "
              f"{run.info['seconds']:.0f} s", flush=True)

    table = pd.DataFrame(rows)
    table["retain_gap"] = (table["retain_rouge"] - base["retain_rouge"]).abs()
    table = table[[c for c in COLUMNS if c in table.columns]]
    table.to_csv(out / "objectives.csv", index=False)
    (out / "objectives.md").write_text(to_markdown(table, digits=3))
    print(to_markdown(table, digits=3))
    check(table, base)
    return table


def check(table: pd.DataFrame, base: dict[str, Any]) -> None:
    """Print whether the issue's claims hold on this table."""
    rows = table.set_index("objective")
    forgot = [n for n in rows.index[1:] if n not in NOT_FORGETTING and rows.loc[n, "forget_rouge"] < base["forget_rouge"]]
    others = [n for n in rows.index[1:] if n not in NOT_FORGETTING]
    print(f"forget ROUGE-L falls: {len(forgot)}/{len(others)} objectives"
          + ("" if len(forgot) == len(others) else f" (not: {sorted(set(others) - set(forgot))})"))
    if "ga" in rows.index:
        closer = {n: bool(rows.loc[n, "retain_gap"] < rows.loc["ga", "retain_gap"]) for n in RETAIN_PRESERVING
                  if n in rows.index}
        print(f"retain ROUGE-L closer to the target than GA: {closer}")
    slow = rows.index[rows["seconds"] > TIME_LIMIT].tolist()
    print(f"30 recorded steps within {TIME_LIMIT:.0f} s: " + ("all" if not slow else f"not {slow}"))


if __name__ == "__main__":
    main()
