"""Shared machinery of the analysis scripts: run a family of objectives, then tabulate and draw it.

Each script in ``analyses/`` names a *study* (a list of :class:`Variant` objectives) and calls
:func:`main`. Every variant is unlearned from the same model with the same settings via
``geffect.unlearn`` (both views recorded at every step on ``forget`` and ``retain`` probes: the
G-effect ``<∇R, ∇L_u>`` of Wang et al. and the update effect ``<∇R, Δθ>``, the predicted risk
change of the step actually taken), then the study folder ``analyses/out/<study>/`` receives

* CSV: ``layer_step.csv`` (objective, probe, direction, layer, step, batch effect = mean over the
  probe's instances of ``<∇_{θ_k} R_i, v_k>``; direction ``gradient``: the G-effect, negative =
  the risk rises; ``update``: the predicted risk change in nats, positive = the risk rises),
  ``layer_totals.csv`` (sum over steps per layer and view), ``cumulative.csv`` (running sums of
  the whole-model effect per view, and the observed change of the mean risk, direction
  ``observed``) and ``summary.csv`` (one row per objective: per probe the total G-effect, the
  total predicted change, the observed change of the mean risk and the risks before/after; the
  retain/forget ratio of the observed changes; seconds);
* PNG, drawn with the ``geffect.plot`` vocabulary (both views side by side, sign keys on every
  colour bar and axis, symmetric-log scales where values span orders of magnitude):
  ``comparison_grid.png``, ``cumulative.png``, ``layer_totals.png`` and one
  ``heatmap_<objective>.png`` per run; ``legibility.csv`` records, for every heatmap and bar
  panel, how many of its non-zero cells or bars render visibly (``geffect.reporting.legibility``).

These are the toy-scale counterparts of the layer-wise and step-wise G-effect figures of
Wang et al., "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond"
(ICLR 2025). All numbers come from ``geffect.reporting.tables``, the definitions the report
and its diagnosis use. A finished run whose ``config.yaml`` matches the settings is reused
(``--reuse``, on by default for ``claims.py``), so the studies and the claims table can share runs.
"""

from __future__ import annotations

import argparse
import hashlib
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
from geffect.reporting.legibility import save_checked  # noqa: E402
from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE  # noqa: E402

OUT_ROOT = Path(__file__).resolve().parent / "out"
PROBES = ("forget", "retain")
DIRECTIONS = (DIRECTION_GRADIENT, DIRECTION_UPDATE)
# The trainer's defaults (probes of 32, lr 5e-4, batch 8), run for 100 steps: long enough for the
# slow effects (NPO's fading weights, TNPO's token weights) that 30 steps do not show.
DEFAULTS = dict(model="tiny", forget="forget10", steps=100, probe_size=32, batch_size=8, lr=5e-4, record_every=1)


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


def model_fingerprint(model: str) -> str:
    """SHA-256 of a local model directory's weight and config files ("" for a hub id): a run made
    from other weights under the same name (a rebuilt ``tiny``) must not be reused."""
    from geffect.models.loading import resolve

    folder = Path(resolve(model).location)
    if not folder.is_dir():
        return ""
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*")):
        if file.suffix in (".safetensors", ".json") and file.is_file():
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _fingerprint_file(target: Path) -> Path:
    return target.parent / f"{target.name}.model-sha256"


def _finished_run(folder: Path, objective: Any, hparams: Mapping[str, Any], settings: Mapping[str, Any]):
    """The finished run in ``folder`` if it was made from the same model weights with exactly these
    settings, else None."""
    from geffect.training import Run, UnlearnConfig
    from geffect.training.trainer import resolve_objective

    marker = _fingerprint_file(folder)
    if not (folder / "config.yaml").is_file() or not marker.is_file():
        return None
    if marker.read_text().strip() != model_fingerprint(settings["model"]):
        return None
    fields = {k: v for k, v in settings.items() if k != "progress"}
    wanted = UnlearnConfig.from_dict({"objective": resolve_objective(objective)[1], "hparams": dict(hparams),
                                      **fields}).resolved()
    try:
        run = Run(folder)
    except (FileNotFoundError, ValueError):
        return None
    return run if run.status == "finished" and run.config.to_dict() == wanted.to_dict() else None


def run_variants(variants: Sequence[Variant], folder: Path, settings: Mapping[str, Any],
                 reuse: bool = False) -> dict[str, Any]:
    """Unlearn every variant into ``folder/runs/<label>`` (fresh, unless ``reuse`` finds a finished
    run from the same model weights with the same settings there); returns ``{label: Run}``."""
    runs = {}
    for variant in variants:
        target = folder / "runs" / variant.label
        merged = {**settings, **variant.settings}
        previous = _finished_run(target, variant.objective, variant.hparams, merged) if reuse else None
        if previous is not None:
            runs[variant.label] = previous
            print(f"  {variant.label:>12s}: reused finished run", flush=True)
            continue
        shutil.rmtree(target, ignore_errors=True)
        _fingerprint_file(target).unlink(missing_ok=True)
        start = time.perf_counter()
        runs[variant.label] = geffect.unlearn(variant.objective, out=target, hparams=dict(variant.hparams), **merged)
        run = runs[variant.label]
        if run.status == "finished":
            _fingerprint_file(target).write_text(model_fingerprint(merged["model"]) + "\n")
        print(f"  {variant.label:>12s}: {run.status}, {time.perf_counter() - start:.1f} s", flush=True)
    return runs


def _recorded(run: Any) -> list[tuple[str, str]]:
    return [(p, d) for p in PROBES for d in DIRECTIONS if tables.has_records(run.effects, p, d)]


def layer_step_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Long table objective, probe, direction, layer, step, value: batch effect per layer and step."""
    parts = []
    for label, run in runs.items():
        for probe, direction in _recorded(run):
            matrix = tables.layer_step_matrix(run.effects, probe, direction)
            long = matrix.rename_axis(index="layer", columns="step").stack().rename("value").reset_index()
            parts.append(long.assign(objective=label, probe=probe, direction=direction))
    return pd.concat(parts)[["objective", "probe", "direction", "layer", "step", "value"]]


def layer_totals_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Long table objective, probe, direction, layer, total: each layer's effect summed over the run."""
    parts = [tables.layer_totals(run.effects, probe, direction).rename("total").rename_axis("layer").reset_index()
             .assign(objective=label, probe=probe, direction=direction)
             for label, run in runs.items() for probe, direction in _recorded(run)]
    return pd.concat(parts)[["objective", "probe", "direction", "layer", "total"]]


def cumulative_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Long table objective, probe, direction, step, cumulative: running sum of the whole-model
    effect per view, and (direction ``observed``) the observed change of the probe's mean risk."""
    parts = [tables.cumulative_curve(tables.step_series(run.effects, probe, direction)).reset_index()
             .assign(objective=label, probe=probe, direction=direction)
             for label, run in runs.items() for probe, direction in _recorded(run)]
    parts += [tables.observed_curve(run.risks, probe).rename("cumulative").reset_index()
              .assign(objective=label, probe=probe, direction="observed")
              for label, run in runs.items() for probe in PROBES
              if not run.risks.empty and (run.risks["probe"] == probe).any()]
    return pd.concat(parts)[["objective", "probe", "direction", "step", "cumulative"]]


def summary_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per objective: per probe the total G-effect, total predicted change, observed change
    (with its Wilcoxon p-value of a rise) and mean risk before/after; the retain/forget ratio of the
    observed changes; the final loss and seconds."""
    rows = []
    for label, run in runs.items():
        history = run.history.sort_values("step")
        summary = tables.run_summary(run.effects, run.risks)
        row: dict[str, Any] = {"objective": label, "status": run.status,
                               "seconds": round(float(run.info.get("seconds", float("nan"))), 1)}
        for probe in PROBES:
            row[f"{probe}_geffect"] = summary.get(f"cumulative_geffect_{probe}", float("nan"))
            row[f"{probe}_predicted"] = summary.get(f"predicted_change_{probe}", float("nan"))
            change = tables.observed_change(run.risks, probe)
            row |= {f"{probe}_observed": change["change"], f"{probe}_p_rise": change["p_rise"],
                    f"{probe}_risk_before": change["before"], f"{probe}_risk_after": change["after"]}
        row["retain_per_forget_observed"] = summary.get("retain_per_forget_observed", float("nan"))
        row["final_loss"] = float(history["loss"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)


def study_figures(runs: Mapping[str, Any]) -> dict[str, Any]:
    """The study's figures by file stem: both views side by side in each."""
    figures = {"comparison_grid": geffect.plot.comparison_grid(runs),
               "cumulative": geffect.plot.cumulative_effect(runs),
               "layer_totals": geffect.plot.layer_totals(runs)}
    figures |= {f"heatmap_{label}": geffect.plot.layer_step_heatmap(run) for label, run in runs.items()}
    return figures


def save_figures(runs: Mapping[str, Any], folder: Path) -> pd.DataFrame:
    """Write the study's PNGs and ``legibility.csv`` (one row per heatmap or bar panel: non-zero
    cells or bars and how many render visibly); returns the legibility table."""
    checks = []
    for name, figure in study_figures(runs).items():
        dpi = 80 if len(figure.axes) > 24 else 110
        checks += [{"figure": f"{name}.png", "panel": c.panel.split("\n")[0], "kind": c.kind,
                    "nonzero": c.nonzero, "visible": c.visible} for c in save_checked(figure, folder / f"{name}.png", dpi)]
    legibility = pd.DataFrame(checks, columns=["figure", "panel", "kind", "nonzero", "visible"])
    legibility.to_csv(folder / "legibility.csv", index=False)
    hidden = legibility[legibility["visible"] < 0.9 * legibility["nonzero"]]
    print(f"legibility: {len(legibility)} panels checked, {len(hidden)} hide more than 10 % of their non-zero values"
          + "".join(f"\n  {r.figure}: {r.panel} ({r.visible}/{r.nonzero})" for r in hidden.itertuples()))
    return legibility


def write_study(runs: Mapping[str, Any], folder: Path, figures: bool = True) -> pd.DataFrame:
    """Write the study's CSVs (and, with ``figures``, its PNGs) into ``folder``; returns the summary table."""
    layer_step_table(runs).to_csv(folder / "layer_step.csv", index=False)
    layer_totals_table(runs).to_csv(folder / "layer_totals.csv", index=False)
    cumulative_table(runs).to_csv(folder / "cumulative.csv", index=False)
    summary = summary_table(runs)
    summary.to_csv(folder / "summary.csv", index=False)
    if figures:
        save_figures(runs, folder)
    return summary


# -- command line --------------------------------------------------------------------------------------


def parse_settings(description: str, argv: Sequence[str] | None = None,
                   defaults: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], Path | None, bool, bool]:
    """Shared command-line options: run settings (``defaults`` over :data:`DEFAULTS`), the output
    root, whether to reuse finished runs and whether to draw the figures."""
    values = {**DEFAULTS, **(defaults or {})}
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=values["model"], help="model name or HF directory (default tiny)")
    parser.add_argument("--forget", default=values["forget"], help="forget split (default forget10)")
    parser.add_argument("--steps", type=int, default=values["steps"], help=f"steps per objective (default {values['steps']})")
    parser.add_argument("--probe-size", type=int, default=values["probe_size"], help="instances per probe")
    parser.add_argument("--batch-size", type=int, default=values["batch_size"], help="forget batch size")
    parser.add_argument("--lr", type=float, default=values["lr"], help="learning rate (AdamW)")
    parser.add_argument("--record-every", type=int, default=values["record_every"],
                        help="record both views every k steps (default 1)")
    parser.add_argument("--out", type=Path, help=f"output root (default {OUT_ROOT})")
    parser.add_argument("--reuse", action="store_true",
                        help="keep finished runs whose config matches these settings instead of retraining them")
    parser.add_argument("--no-figures", action="store_true", help="write the CSV tables only (no PNGs)")
    args = parser.parse_args(argv)
    settings = dict(model=args.model, forget=args.forget, steps=args.steps, probe_size=args.probe_size,
                    batch_size=args.batch_size, lr=args.lr, record_every=args.record_every, progress=False)
    return settings, args.out, args.reuse, not args.no_figures


def main(study: str, variants: Sequence[Variant], description: str, argv: Sequence[str] | None = None,
         defaults: Mapping[str, Any] | None = None) -> Path:
    """Run ``variants`` and write the study into ``<out root>/<study>``; returns that folder."""
    settings, root, reuse, figures = parse_settings(description, argv, defaults)
    folder = (root or OUT_ROOT) / study
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"{study}: {len(variants)} objectives, {settings['steps']} steps each, "
          f"probes of {settings['probe_size']} instances", flush=True)
    runs = run_variants(variants, folder, settings, reuse)
    summary = write_study(runs, folder, figures)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary.round(4).to_string(index=False))
    print(f"{study}: wrote {folder} in {time.perf_counter() - start:.0f} s")
    return folder
