"""Reveal and Release on the shipped ``tiny`` model, for each concept, with its comparisons and G-effect studies.

Per concept (``persons``, ``toxicity``) four variants are run from the same model and seed:

* ``R&R`` — Reveal and Release as ``geffect reveal-release`` runs it (NeuralUCB instructions,
  stacked O-LoRA modules, NPO + retain NLL);
* ``random instructions`` — the same with uniformly random instructions (the bandit ablation);
* ``λ1 = 0`` — the same without the orthogonality penalty;
* ``true forget`` — one LoRA module trained with the same objective on the concept's real forget
  data for as many steps as all R&R iterations together (what self-generated data stands in for).

It writes under ``--out`` (default ``analyses/out/reveal_release``):

* ``table.csv`` / ``table.md`` — per concept and variant: the concept metric (↓) and the utility
  metrics before and after (toxicity: also fluency perplexities, lower = kept), iterations run,
  revealed forget rows, the first Reveal's mean reward;
* ``iterations.csv`` / ``iterations.png`` — concept metric and utility per iteration;
* ``bandit.csv`` / ``bandit.png`` — reward per bandit round of the first Reveal, NeuralUCB vs random;
* ``module_effects.csv`` / ``module_effects.png`` — after each iteration, each LoRA module's predicted
  risk change (∇R·ΔW, summed over layers) on the true held-out forget probe and the retain probe;
* ``module_matrix_<concept>.csv`` / ``.png`` — at the end, module j's effect on the forget data of
  iteration k, with λ1 = 0.5 and λ1 = 0;
* ``mismatch.csv`` / ``mismatch.png`` — per layer, the mean G-effect on the true held-out forget
  probe of the first Release (self-generated data) and of the true-forget run, over the same steps;
* ``retain_damage.csv`` / ``retain_damage.png`` — per iteration, the observed retain-risk change,
  λ1 = 0.5 vs 0;
* ``overview.png`` — the README figure (bandit rewards and concept metric per iteration);
* ``<concept>/<variant>/`` — the procedure and run directories (``geffect.procedures.RevealRelease``).

* ``bandit_summary.csv`` — per concept and policy: mean reward over all rounds, over the second
  half, and the best observed arm's mean reward;
* ``scorers.json`` — the reward models' held-out quality (PERSON-span tagger F1, toxicity scorer accuracy);
* ``results.md`` — every table above in one markdown file (what the README section quotes).

Sizes. The default (``--size quick``: 2 iterations, 15 bandit rounds, 10 release steps, 40
evaluation examples) takes 3.9 wall minutes for both concepts with ``--jobs 1`` on two cores
running one other job (54 minutes on a two-core machine shared at load ~12);
``--size full`` is issue #11's size (4 iterations, 60 rounds, 30 steps, 200 examples)::

    python analyses/reveal_release.py                       # quick
    python analyses/reveal_release.py --size full --fresh   # the issue's size (about 4x longer)

Any of ``--iterations --rounds --steps --eval-examples`` overrides the size. The Release lr is
1e-2 (``--lr``), not the procedure's default 1e-3: on ``tiny`` as built before label smoothing, 20 steps of NPO + retain
NLL in a rank-8 LoRA on the true forget data raise the held-out forget risk from 0.14 to 0.15
nats/token (persons) at 1e-3, to 9.0 at 1e-2 (toxicity: 1.15 to 1.5, and to 7.1). Concepts run in
parallel processes (``--jobs``, one thread each). A rerun reuses finished stages; ``--fresh``
starts over. The README figure is ``overview.png`` (copied to ``docs/reveal_release.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from geffect.training.summary import to_markdown  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "reveal_release"
VARIANTS = {  # label -> RevealReleaseConfig overrides
    "R&R": {},
    "random instructions": {"policy": "random"},
    "λ1 = 0": {"lambda1": 0.0},
}
TRUE = "true forget"
EXTRA = {"toxicity": ("fluency", "neutral_fluency")}  # shown beside the concept's utility (perplexity: lower = kept)
SIZES = {  # --size: procedure settings (the defaults are "full")
    "quick": dict(iterations=2, rounds=15, steps=10, eval_examples=40),
    "full": dict(iterations=4, rounds=60, steps=30, eval_examples=200),
}


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """The procedure settings: the chosen size, then any explicit option."""
    size = dict(SIZES[args.size])
    size.update({k: getattr(args, k) for k in size if getattr(args, k) is not None})
    return dict(model=args.model, lr=args.lr, seed=args.seed, **size)


def run_concept(concept: str, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Every variant of one concept (in this process, one thread); returns wall seconds per variant."""
    import torch

    from geffect.procedures import RevealReleaseConfig, release_on_true_forget, reveal_release
    from geffect.procedures.reveal_release import PROBES_DIR, fixed_probes

    torch.set_num_threads(1)
    seconds = {}
    for label, overrides in VARIANTS.items():
        started = time.perf_counter()
        folder = out / concept / _slug(label)
        reveal_release(concept, out=folder, resume=folder.exists(), progress=False, **{**settings, **overrides})
        seconds[label] = time.perf_counter() - started
    started = time.perf_counter()
    config = RevealReleaseConfig(concept=concept, **settings)
    probes = fixed_probes(config, out / concept / _slug("R&R") / PROBES_DIR)  # the rows R&R's releases measured
    release_on_true_forget(config, out / concept / _slug(TRUE), progress=False, probes=probes)
    seconds[TRUE] = time.perf_counter() - started
    return seconds


def _slug(label: str) -> str:
    return {"R&R": "rr", "random instructions": "random", "λ1 = 0": "lambda0", TRUE: "true_forget"}[label]


# -- tables -------------------------------------------------------------------------------------------


def collect(out: Path, concepts: list[str], seconds: dict[str, dict[str, float]]) -> dict[str, pd.DataFrame]:
    from geffect.procedures import RevealRelease, get_concept
    from geffect.training.rundir import read_json

    table, iterations, bandit = [], [], []
    for concept in concepts:
        spec = get_concept(concept)
        metrics = [spec.metric, *spec.utility, *EXTRA.get(concept, ())]
        for label in VARIANTS:
            rr = RevealRelease(out / concept / _slug(label))
            summary = rr.summary
            iterations.append(summary.assign(concept=concept, variant=label))
            evaluated = summary[summary[spec.metric].notna()]  # a stopped procedure's last row has no metrics
            first, last = evaluated.iloc[0], evaluated.iloc[-1]
            row = {"concept": concept, "variant": label, "iterations": int(rr.info.get("iterations", 0)),
                   "forget_rows": int(summary["forget_rows"].fillna(0).sum()),
                   "mean_reward_1": float(summary["mean_reward"].iloc[1]) if len(summary) > 1 else float("nan")}
            row.update({f"{m}_before": first[m] for m in metrics})
            row.update({f"{m}_after": last[m] for m in metrics})
            table.append(row)
            rounds = rr.rounds
            if not rounds.empty:
                first_reveal = rounds[rounds["iteration"] == 1]
                bandit.append(first_reveal.assign(concept=concept, variant=label,
                                                  running_mean=first_reveal["reward"].expanding().mean()))
        true_dir = out / concept / _slug(TRUE)
        after = read_json(true_dir / "concept_metrics.json")
        base = RevealRelease(out / concept / _slug("R&R")).summary.iloc[0]
        row = {"concept": concept, "variant": TRUE, "iterations": 1, "forget_rows": float("nan"),
               "mean_reward_1": float("nan"), **{f"{m}_before": base[m] for m in metrics},
               **{f"{m}_after": after.get(m) for m in metrics},
               }
        table.append(row)
    bandit_frame = pd.concat(bandit, ignore_index=True) if bandit else pd.DataFrame()
    return {"table": pd.DataFrame(table), "iterations": pd.concat(iterations, ignore_index=True),
            "bandit": bandit_frame, "bandit_summary": bandit_summary(bandit_frame)}


def bandit_summary(bandit: pd.DataFrame) -> pd.DataFrame:
    """Per concept and policy (first Reveal): mean reward over all rounds and the second half, best arm."""
    rows = []
    if bandit.empty:
        return pd.DataFrame(rows)
    part = bandit[bandit["variant"].isin(["R&R", "random instructions"])]
    for (concept, variant), group in part.groupby(["concept", "variant"], sort=False):
        late = group[group["round"] >= group["round"].max() / 2]
        rows.append({"concept": concept, "policy": "NeuralUCB" if variant == "R&R" else "random",
                     "rounds": len(group), "mean_reward": group["reward"].mean(),
                     "mean_reward_second_half": late["reward"].mean(),
                     "best_arm_reward": group.groupby("arm")["reward"].mean().max(),
                     "distinct_arms": group["arm"].nunique()})
    return pd.DataFrame(rows)


def scorer_quality(concepts: list[str]) -> dict[str, Any]:
    """The reward models' held-out quality, as their training recorded it."""
    out: dict[str, Any] = {}
    if "persons" in concepts:
        from geffect.evaluation.persons import load_person_tagger

        info = load_person_tagger().info
        out["persons"] = {k: info[k] for k in ("heldout_f1", "heldout_precision", "heldout_recall",
                                               "heldout_gold_spans", "heldout_texts", "train_texts") if k in info}
    if "toxicity" in concepts:
        import json

        from geffect.data.paths import data_root

        info = json.loads((data_root() / "scorers" / "toxicity.json").read_text()).get("info", {})
        out["toxicity"] = {k: info[k] for k in ("heldout_accuracy", "test_size", "train_size") if k in info}
    return out


def studies(out: Path, concepts: list[str]) -> dict[str, pd.DataFrame]:
    """The G-effect studies; the two that load every model (module effects, matrices) are read back
    from their CSVs when a rerun finds them (``--fresh`` recomputes)."""
    from geffect.procedures import RevealRelease
    from geffect.procedures.studies import (
        data_mismatch,
        iteration_module_effects,
        module_matrix,
        retain_damage,
    )
    from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE
    from geffect.training import Run

    effects, mismatch, damage, matrices = [], [], [], {}
    saved_effects = out / "module_effects.csv"
    saved = pd.read_csv(saved_effects) if saved_effects.is_file() else None
    for concept in concepts:
        rr = RevealRelease(out / concept / _slug("R&R"))
        if saved is not None and concept in set(saved["concept"]):
            effects.append(saved[saved["concept"] == concept])
        else:
            effects.append(iteration_module_effects(rr).assign(concept=concept))
        for label in ("R&R", "λ1 = 0"):
            procedure = RevealRelease(out / concept / _slug(label))
            path = out / f"module_matrix_{concept}_{_slug(label)}.csv"
            matrices[(concept, label)] = (pd.read_csv(path, index_col=0) if path.is_file()
                                          else module_matrix(procedure))
            damage.append(retain_damage(procedure).assign(concept=concept, variant=label))
        if rr.runs:
            true_run = Run(out / concept / _slug(TRUE))
            runs = {"self-generated (R&R iteration 1)": rr.runs[0], "true forget data": true_run}
            for direction, view in ((DIRECTION_GRADIENT, "G-effect"), (DIRECTION_UPDATE, "update effect")):
                table = data_mismatch(runs, direction=direction, steps=rr.config.steps)
                mismatch.append(table.assign(concept=concept, view=view))
    return {"module_effects": pd.concat(effects, ignore_index=True), "mismatch": pd.concat(mismatch, ignore_index=True),
            "retain_damage": pd.concat(damage, ignore_index=True), "matrices": matrices}


# -- figures ------------------------------------------------------------------------------------------


def figures(out: Path, tables: dict[str, Any], concepts: list[str]) -> None:
    from geffect.procedures import get_concept
    from geffect.reporting.style import (
        effect_cmap,
        effect_label,
        effect_norm,
        new_figure,
        ordered_layers,
        scale_axis,
        zero_line,
    )

    bandit, iterations = tables["bandit"], tables["iterations"]
    if not bandit.empty:
        fig, axes = new_figure(1, len(concepts), width=4.5, height=3.4)
        for ax, concept in zip(axes[0], concepts):
            part = bandit[(bandit["concept"] == concept) & bandit["variant"].isin(["R&R", "random instructions"])]
            part = part.assign(policy=part["variant"].map({"R&R": "NeuralUCB", "random instructions": "random"}))
            sns.lineplot(data=part, x="round", y="reward", hue="policy", ax=ax)
            ax.set_title(f"{concept}: reward per round (first Reveal)")
        fig.savefig(out / "bandit.png", dpi=120)

    fig, axes = new_figure(2, len(concepts), width=4.5, height=3.2)
    for col, concept in enumerate(concepts):
        spec = get_concept(concept)
        part = iterations[iterations["concept"] == concept]
        for row, metric in enumerate([spec.metric, spec.utility[0]]):
            sns.lineplot(data=part, x="iteration", y=metric, hue="variant", marker="o", ax=axes[row][col])
            axes[row][col].set_title(f"{concept}: {metric} ({'↓ forgotten' if row == 0 else '↑ kept'})")
    fig.savefig(out / "iterations.png", dpi=120)

    effects = tables["module_effects"]
    totals = effects.groupby(["concept", "iteration", "module", "probe"], as_index=False)["value"].sum()
    grid = sns.catplot(data=totals, x="iteration", y="value", hue="module", col="probe", row="concept", kind="bar",
                       height=3.0, aspect=1.5, sharey=False)
    for (concept, probe), ax in grid.axes_dict.items():
        part = totals[(totals["concept"] == concept) & (totals["probe"] == probe)]
        zero_line(ax)
        ax.set_ylabel(effect_label("update", short=True, scale=scale_axis(ax, part["value"].to_numpy())))
    grid.set_xlabels("after iteration")
    grid.figure.subplots_adjust(wspace=0.5)
    grid.figure.savefig(out / "module_effects.png", dpi=120)

    mismatch = tables["mismatch"]
    fig, axes = new_figure(1, len(concepts), width=4.8, height=3.6)
    for ax, concept in zip(axes[0], concepts):
        part = mismatch[(mismatch["concept"] == concept) & (mismatch["view"] == "G-effect")]
        sns.barplot(data=part, x="layer", y="value", hue="run", order=ordered_layers(part["layer"]), ax=ax)
        zero_line(ax)
        scale = scale_axis(ax, part["value"].to_numpy())
        ax.set_title(f"{concept}: G-effect on held-out true forget data")
        ax.set_ylabel(effect_label("gradient", short=True, scale=scale))
        ax.tick_params(axis="x", rotation=45)
    fig.savefig(out / "mismatch.png", dpi=120)

    damage = tables["retain_damage"]
    fig, axes = new_figure(1, len(concepts), width=4.5, height=3.4)
    for ax, concept in zip(axes[0], concepts):
        part = damage[damage["concept"] == concept]
        sns.lineplot(data=part, x="iteration", y="retain_risk_change", hue="variant", marker="o", ax=ax)
        zero_line(ax)
        ax.set_title(f"{concept}: retain risk change per iteration")
    fig.savefig(out / "retain_damage.png", dpi=120)

    for (concept, label), matrix in tables["matrices"].items():
        matrix.to_csv(out / f"module_matrix_{concept}_{_slug(label)}.csv")
        fig, axes = new_figure(1, 1, width=1.2 * matrix.shape[1] + 2.5, height=0.6 * matrix.shape[0] + 1.8)
        norm = effect_norm(matrix.to_numpy())
        sns.heatmap(matrix, annot=True, fmt=".2g", cmap=effect_cmap("update"), norm=norm, ax=axes[0][0],
                    cbar_kws={"label": effect_label("update", colour=True)})
        axes[0][0].set_title(f"{concept}, {label}: module j on the data of iteration k")
        fig.savefig(out / f"module_matrix_{concept}_{_slug(label)}.png", dpi=120)

    fig, axes = new_figure(len(concepts), 2, width=4.4, height=3.3)
    for row, concept in enumerate(concepts):
        spec = get_concept(concept)
        part = bandit[(bandit["concept"] == concept) & bandit["variant"].isin(["R&R", "random instructions"])]
        part = part.assign(policy=part["variant"].map({"R&R": "NeuralUCB", "random instructions": "random"}))
        sns.lineplot(data=part, x="round", y="running_mean", hue="policy", ax=axes[row][0])
        axes[row][0].set_title(f"{concept}: Reveal reward (running mean)")
        axes[row][0].set_ylabel("mean reward so far")
        it = iterations[iterations["concept"] == concept]
        sns.lineplot(data=it, x="iteration", y=spec.metric, hue="variant", marker="o", ax=axes[row][1])
        axes[row][1].set_title(f"{concept}: {spec.metric} per iteration (↓)")
        axes[row][1].xaxis.get_major_locator().set_params(integer=True)
    fig.savefig(out / "overview.png", dpi=120)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--concepts", nargs="*", default=["persons", "toxicity"])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", choices=list(SIZES), default="quick", help="quick (default) or the issue's full size")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float, default=1e-2,
                        help="Release lr (default 1e-2: a rank-8 LoRA on tiny moves little in 20 steps at 1e-3)")
    parser.add_argument("--eval-examples", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="concepts run in parallel processes")
    parser.add_argument("--fresh", action="store_true", help="delete earlier outputs first")
    args = parser.parse_args(argv)
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = settings_from(args)
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(args.concepts)))) as pool:
        futures = {c: pool.submit(run_concept, c, args.out, settings) for c in args.concepts}
        seconds = {c: f.result() for c, f in futures.items()}
    tables = collect(args.out, args.concepts, seconds)
    tables.update(studies(args.out, args.concepts))
    for name in ("table", "iterations", "bandit", "bandit_summary", "module_effects", "mismatch", "retain_damage"):
        tables[name].to_csv(args.out / f"{name}.csv", index=False)
    quality = scorer_quality(args.concepts)
    (args.out / "scorers.json").write_text(json.dumps(quality, indent=2))
    figures(args.out, tables, args.concepts)
    minutes = (time.perf_counter() - started) / 60
    report = results_markdown(tables, quality, settings, minutes)
    (args.out / "table.md").write_text(to_markdown(tables["table"]))
    (args.out / "results.md").write_text(report)
    print(report)
    return tables["table"]


def results_markdown(tables: dict[str, Any], quality: dict[str, Any], settings: dict[str, Any],
                     minutes: float) -> str:
    """Every table of the analysis in one markdown text."""
    mismatch = tables["mismatch"].groupby(["concept", "view", "run"], as_index=False, sort=False)["value"].sum()
    effects = tables["module_effects"].groupby(["concept", "iteration", "module", "probe"], as_index=False,
                                               sort=False)["value"].sum()
    parts = [
        f"Settings: {json.dumps(settings)}; {minutes:.1f} minutes in all.",
        "Reward models (held out): " + "; ".join(f"{c}: {json.dumps(v)}" for c, v in quality.items()),
        "## Concept metric (↓) and utility, before and after",
        *(to_markdown(part.dropna(axis=1, how="all")) for _, part in tables["table"].groupby("concept", sort=False)),
        "## First Reveal: NeuralUCB against random instructions", to_markdown(tables["bandit_summary"]),
        "## Per iteration", to_markdown(tables["iterations"]),
        "## Module effects (predicted risk change of each LoRA module's update, summed over layers; "
        "positive = the risk rises)", to_markdown(effects),
        "## Data mismatch (mean per-step effect on the held-out true forget probe, summed over layers; "
        "G-effect: negative = that risk rises, i.e. forgotten; update effect: the predicted risk change of "
        "the steps taken, positive = that risk rises)", to_markdown(mismatch),
        "## Retain damage per iteration", to_markdown(tables["retain_damage"]),
    ]
    parts += [f"## Module matrix: {concept}, {label}\n\n" + to_markdown(matrix.reset_index())
              for (concept, label), matrix in tables["matrices"].items()]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
