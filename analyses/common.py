"""Shared machinery of the analysis scripts: run a family of objectives, then tabulate and draw it.

Each script in ``analyses/`` names a *study* (a list of :class:`Variant` objectives) and calls
:func:`main`. Every variant is unlearned from the same model with the same small settings via
``geffect.unlearn`` (G-effects recorded at every step on ``forget`` and ``retain`` probes), then
the study folder ``analyses/out/<study>/`` receives

* CSV: ``layer_step.csv`` (objective, probe, layer, step, batch G-effect = mean over the probe's
  instances of ``<∇_{θ_k} R_i, ∇_{θ_k} L_u>``), ``layer_totals.csv`` (sum over steps per layer),
  ``cumulative.csv`` (running sum over steps of the whole-model G-effect) and ``summary.csv``
  (one row per objective: totals, risks before/after, seconds);
* PNG, drawn with the ``geffect.plot`` vocabulary: ``comparison_grid.png`` (layer × step
  heatmaps of every objective on shared colour scales + cumulative curves),
  ``cumulative.png``, ``layer_totals.png`` and one ``heatmap_<objective>.png`` per run.

These are the toy-scale counterparts of the layer-wise and step-wise G-effect figures of
Wang et al., "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond"
(ICLR 2025). All numbers come from ``geffect.reporting.tables``, the definitions the report
and its diagnosis use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

import geffect  # noqa: E402
from geffect.reporting import tables  # noqa: E402

OUT_ROOT = Path(__file__).resolve().parent / "out"
PROBES = ("forget", "retain")
# The trainer's defaults (30 steps, probes of 32) with a learning rate that shows forgetting in 30 steps.
DEFAULTS = dict(model="tiny", forget="forget10", steps=30, probe_size=32, batch_size=8, lr=5e-4)


@dataclass
class Variant:
    """One objective of a study: a run label, the objective (name or function) and its settings."""

    label: str
    objective: str | Callable[..., Any]
    hparams: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # extra UnlearnConfig fields


# -- objectives built for the studies -----------------------------------------------------------------


def with_regulariser(base: str, term: str, weight: float = 1.0) -> Callable[..., Any]:
    """Objective ``base`` plus ``weight`` × a retain regulariser ``term`` (``gd``, ``kl`` or ``rr``).

    GD adds the retain NLL, KL the KL to the frozen starting model on retain data (TOFU,
    Maini et al. 2024), RR the representation-retention term of RMU (Li et al. 2024) at its
    default block. Built-in combinations (``gd``, ``ga_kl``, ``npo_gd``, ``npo_kl``) exist;
    this composes any base with any term the same way, through ``geffect.objectives.combine``.
    """
    from geffect.objectives import combine, get_objective, retain_kl, retain_nll
    from geffect.objectives.representation import representation_retention

    spec = get_objective(base)
    terms = {
        "gd": lambda model, retain, ref: retain_nll(model, retain),
        "kl": lambda model, retain, ref: retain_kl(model, ref, retain),
        "rr": lambda model, retain, ref: representation_retention(model, retain, ref),
    }
    if term not in terms:
        raise ValueError(f"unknown regulariser {term!r}; choose from {sorted(terms)}")
    if spec.needs or spec.uses_retain:
        raise ValueError(f"{base!r} already uses retain data or forget views; pick a forget-only base")

    def objective(model, forget, retain, ref_model):
        base_out = spec(model, forget, ref_model=ref_model if spec.uses_ref_model else None)
        return combine(base_out, **{term: (weight, terms[term](model, retain, ref_model))})

    objective.__name__ = objective.__qualname__ = f"{base}_{term}"
    objective.__doc__ = f"{base} + {weight:g} × {term} regulariser on retain data."
    return objective


# -- running and tabulating ----------------------------------------------------------------------------


def run_variants(variants: Sequence[Variant], folder: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Unlearn every variant into ``folder/runs/<label>`` (fresh); returns ``{label: Run}``."""
    runs = {}
    for variant in variants:
        target = folder / "runs" / variant.label
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        runs[variant.label] = geffect.unlearn(variant.objective, out=target, hparams=dict(variant.hparams),
                                              **{**settings, **variant.settings})
        run = runs[variant.label]
        print(f"  {variant.label:>12s}: {run.status}, {time.perf_counter() - start:.1f} s", flush=True)
    return runs


def layer_step_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Long table objective, probe, layer, step, value: batch G-effect per layer and step."""
    parts = []
    for label, run in runs.items():
        effects = run.effects
        for probe in PROBES:
            matrix = tables.layer_step_matrix(effects, probe)
            long = matrix.rename_axis(index="layer", columns="step").stack().rename("value").reset_index()
            parts.append(long.assign(objective=label, probe=probe))
    return pd.concat(parts)[["objective", "probe", "layer", "step", "value"]]


def layer_totals_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Long table objective, probe, layer, total: each layer's G-effect summed over the run."""
    parts = [tables.layer_totals(run.effects, probe).rename("total").rename_axis("layer").reset_index()
             .assign(objective=label, probe=probe) for label, run in runs.items() for probe in PROBES]
    return pd.concat(parts)[["objective", "probe", "layer", "total"]]


def cumulative_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Long table objective, probe, step, cumulative: running sum of the whole-model G-effect."""
    parts = [tables.cumulative_curve(tables.step_series(run.effects, probe)).reset_index()
             .assign(objective=label, probe=probe) for label, run in runs.items() for probe in PROBES]
    return pd.concat(parts)[["objective", "probe", "step", "cumulative"]]


def summary_table(runs: Mapping[str, Any], totals: pd.DataFrame) -> pd.DataFrame:
    """One row per objective: total forget/retain G-effect, mean probe risk before/after, seconds."""
    rows = []
    for label, run in runs.items():
        history = run.history.sort_values("step")
        row: dict[str, Any] = {"objective": label, "status": run.status,
                               "seconds": round(float(run.info.get("seconds", float("nan"))), 1)}
        for probe in PROBES:
            row[f"{probe}_total_effect"] = float(totals.query("objective == @label and probe == @probe")["total"].sum())
            risks = run.risks.query("probe == @probe")
            row[f"{probe}_risk_before"] = float(risks.loc[risks["step"] == risks["step"].min(), "risk"].mean())
            row[f"{probe}_risk_after"] = float(risks.loc[risks["step"] == risks["step"].max(), "risk_after"].mean())
        row["final_loss"] = float(history["loss"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)


def save_figures(runs: Mapping[str, Any], folder: Path) -> list[Path]:
    """The study's PNGs (see the module docstring); returns their paths."""
    figures = {"comparison_grid": geffect.plot.comparison_grid(runs),
               "cumulative": geffect.plot.cumulative_effect(runs),
               "layer_totals": geffect.plot.layer_totals(runs)}
    figures |= {f"heatmap_{label}": geffect.plot.layer_step_heatmap(run) for label, run in runs.items()}
    paths = []
    for name, figure in figures.items():
        paths.append(folder / f"{name}.png")
        figure.savefig(paths[-1], dpi=110)
    return paths


def write_study(runs: Mapping[str, Any], folder: Path) -> pd.DataFrame:
    """Write the study's CSVs and PNGs into ``folder``; returns the summary table."""
    totals = layer_totals_table(runs)
    layer_step_table(runs).to_csv(folder / "layer_step.csv", index=False)
    totals.to_csv(folder / "layer_totals.csv", index=False)
    cumulative_table(runs).to_csv(folder / "cumulative.csv", index=False)
    summary = summary_table(runs, totals)
    summary.to_csv(folder / "summary.csv", index=False)
    save_figures(runs, folder)
    return summary


# -- command line --------------------------------------------------------------------------------------


def parse_settings(description: str, argv: Sequence[str] | None = None,
                   defaults: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], Path | None]:
    """Shared command-line options: run settings (``defaults`` over :data:`DEFAULTS`) and the output root."""
    values = {**DEFAULTS, **(defaults or {})}
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=values["model"], help="model name or HF directory (default tiny)")
    parser.add_argument("--forget", default=values["forget"], help="forget split (default forget10)")
    parser.add_argument("--steps", type=int, default=values["steps"], help="steps per objective")
    parser.add_argument("--probe-size", type=int, default=values["probe_size"], help="instances per probe")
    parser.add_argument("--batch-size", type=int, default=values["batch_size"], help="forget batch size")
    parser.add_argument("--lr", type=float, default=values["lr"], help="learning rate (AdamW)")
    parser.add_argument("--out", type=Path, help=f"output root (default {OUT_ROOT})")
    args = parser.parse_args(argv)
    settings = dict(model=args.model, forget=args.forget, steps=args.steps, probe_size=args.probe_size,
                    batch_size=args.batch_size, lr=args.lr, progress=False)
    return settings, args.out


def main(study: str, variants: Sequence[Variant], description: str, argv: Sequence[str] | None = None,
         defaults: Mapping[str, Any] | None = None) -> Path:
    """Run ``variants`` and write the study into ``<out root>/<study>``; returns that folder."""
    settings, root = parse_settings(description, argv, defaults)
    folder = (root or OUT_ROOT) / study
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"{study}: {len(variants)} objectives, {settings['steps']} steps each, "
          f"probes of {settings['probe_size']} instances", flush=True)
    runs = run_variants(variants, folder, settings)
    summary = write_study(runs, folder)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary.round(4).to_string(index=False))
    print(f"{study}: wrote {folder} in {time.perf_counter() - start:.0f} s")
    return folder
