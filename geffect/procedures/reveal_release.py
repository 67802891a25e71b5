"""Reveal and Release: unlearn a concept with no forget set, from the model's own generations.

Xie et al. 2025 ("Reveal and Release: Iterative LLM Unlearning with Self-generated Data",
Findings of EMNLP 2025, arXiv:2509.14624) as issue #11 reads it (only the abstract is public to
us; every choice below is a field of :class:`RevealReleaseConfig`). Iteration ``i``:

1. **Reveal** (:mod:`geffect.procedures.reveal`): NeuralUCB picks instructions from the concept's
   pool that make the current model show the concept; the completions of the best instructions
   that the scorer says hold the concept are the forget data, the clean ones join the retain data.
2. **Release**: an ordinary geffect run (records, resume, report) trains a new LoRA module on that
   data with ``olora`` — the registered objective (default NPO + retain NLL) plus the O-LoRA
   penalty against every earlier module, which stays frozen and stacked (``lora_stack``).
3. The concept's evaluation suite scores the model.

It stops after ``iterations`` rounds or when the best instruction's mean reward falls under
``stop_reward`` (the model no longer reveals the concept). Layout of ``out``::

    reveal_release.yaml   the config          status.json   state, iterations done, message, owner
    .geffect.lock         the claim: one live procedure per directory (geffect.training.claim)
    baseline.json         metrics of the untouched model
    summary.csv           one row per iteration: reward, data sizes, metrics, seconds
    iter-01/reveal/       rounds.csv, instructions.csv, completions.csv, forget.jsonl, retain.jsonl, reveal.json
    iter-01/release/      the geffect run directory of the iteration's LoRA module
    iter-01/metrics.json  the concept's metrics after the iteration
    probes/               true_forget.jsonl, retain.jsonl: the probe rows every release measures

A killed procedure continues with ``resume=True``: finished stages are read back, a release run
resumes from its checkpoint. While a procedure lives, ``out`` is claimed like a run directory: a
second procedure there is refused at once (:class:`geffect.errors.RunInUseError` naming the
holder); each release run claims its own ``iter-XX/release`` folder (its own lock file).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from geffect.procedures.concepts import Concept, get_concept
from geffect.training.claim import LOCK_FILE, claim_run_dir
from geffect.training.config import ConfigError, UnlearnConfig, from_known_fields
from geffect.training.data import stable_seed
from geffect.training.rundir import read_json, write_json

CONFIG_FILE = "reveal_release.yaml"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.csv"
BASELINE_FILE = "baseline.json"
PROBES_DIR = "probes"  # the true_forget / retain probe rows every release shares
DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear", "lora_dropout": 0.0}


@dataclass
class RevealReleaseConfig:
    """Every setting of a Reveal and Release procedure (defaults: issue #11's; ``None``: the concept's)."""

    concept: str = "persons"
    model: str = "tiny"
    iterations: int = 4  # K
    stop_reward: float | None = None  # stop when the best instruction's mean reward < this
    # Reveal
    policy: str = "neural_ucb"  # or "random" (the ablation)
    rounds: int = 60
    initial: int = 5  # random initial arms
    k: int = 4  # completions per pull (the reward is their mean score)
    width: int = 100  # NeuralUCB hidden width
    nu: float = 1.0
    lam: float = 1e-3
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    top_instructions: int = 8  # instructions whose completions become data
    completions: int = 32  # samples per chosen instruction
    threshold: float | None = None  # forget data: score >= threshold
    clean_threshold: float | None = None  # retain data: score < clean_threshold
    max_forget: int | None = 256
    max_retain_completions: int | None = 128
    # Release
    objective: str = "npo_gd"  # registered base objective
    hparams: dict[str, Any] = field(default_factory=dict)  # its hyper-parameters
    lambda1: float = 0.5  # O-LoRA weight (0: no orthogonality)
    squared: bool = False  # squared overlaps instead of absolute values
    lora: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LORA))
    steps: int = 30
    lr: float = 1e-3
    batch_size: int = 8
    record_every: int = 1
    probe_size: int | None = 32
    run_settings: dict[str, Any] = field(default_factory=dict)  # other UnlearnConfig fields
    # evaluation and seeds
    eval_examples: int | None = 200
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field (before any model loads)."""
        from geffect.objectives import get_objective
        from geffect.procedures.reveal import POLICIES
        from geffect.tasks import get_task

        try:
            concept = get_concept(self.concept)
            get_objective(self.objective)
        except KeyError as err:
            raise ConfigError(err.args[0]) from None
        try:
            get_task(concept.task or "tofu")
        except KeyError as err:
            raise ConfigError(f"concept {self.concept!r} needs {err.args[0]}") from None
        if self.policy not in POLICIES:
            raise ConfigError(f"field 'policy' must be one of {list(POLICIES)}, got {self.policy!r}")
        for name in ("iterations", "rounds", "k", "width", "top_instructions", "completions", "steps",
                     "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"field {name!r} must be a positive integer, got {value!r}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.lambda1 < 0 or self.nu < 0 or self.lam <= 0:
            raise ConfigError("need temperature > 0, 0 < top_p <= 1, lambda1 >= 0, nu >= 0 and lam > 0")
        overlap = sorted(set(self.run_settings) & {"objective", "hparams", "model", "task", "forget", "retain", "probes",
                                                   "lora", "lora_stack", "steps", "lr", "batch_size", "seed"})
        if overlap:
            raise ConfigError(f"run_settings may not set {overlap}: they are fields of the procedure's config")
        # the release runs' settings (lr, run_settings ...) and the model name are checked now, not at iteration 1
        UnlearnConfig.from_dict(self.release_settings()).validate()
        from geffect.models.loading import resolve

        resolve(self.model)

    def release_settings(self) -> dict[str, Any]:
        """The :class:`UnlearnConfig` fields every release run shares (the data and seed are per iteration)."""
        hparams = {"base": self.objective, "lambda1": self.lambda1, "squared": self.squared,
                   "base_hparams": dict(self.hparams)}
        return {**self.run_settings, "objective": "olora", "hparams": hparams, "model": self.model,
                "lora": dict(self.lora), "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size,
                "record_every": self.record_every, "probe_size": self.probe_size}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RevealReleaseConfig:
        """Build from a mapping; unknown keys are an error (a typo must not pass silently)."""
        return from_known_fields(cls, values, "reveal-release setting")

    def setting(self, concept: Concept, name: str) -> float:
        """A threshold: this config's value, else the concept's."""
        value = getattr(self, name)
        return getattr(concept, name) if value is None else value


# -- the procedure ---------------------------------------------------------------------------------


class RevealRelease:
    """A Reveal and Release output directory as a Python object (config, summary, runs, rounds)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{str(self.path)!r} is not a reveal-release directory (no {CONFIG_FILE})")
        self.config = RevealReleaseConfig.from_dict(yaml.safe_load((self.path / CONFIG_FILE).read_text()) or {})

    def __repr__(self) -> str:
        return f"RevealRelease({str(self.path)!r}, concept={self.config.concept!r}, status={self.status!r})"

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.path / STATUS_FILE)

    @property
    def status(self) -> str | None:
        """``running``, ``finished`` (K iterations), ``stopped`` (reward under the threshold), ``diverged``
        (a release run's loss turned non-finite) or ``failed``."""
        return self.info.get("status")

    @property
    def summary(self) -> pd.DataFrame:
        """One row per iteration (0: the untouched model): reward, data sizes, metrics, seconds."""
        path = self.path / SUMMARY_FILE
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    @property
    def baseline(self) -> dict[str, float]:
        return read_json(self.path / BASELINE_FILE)

    def iteration_dir(self, i: int) -> Path:
        return self.path / f"iter-{i:02d}"

    @property
    def runs(self) -> list:
        """The release runs (``geffect.Run``), in iteration order."""
        from geffect.training import Run

        return [Run(d / "release") for d in sorted(self.path.glob("iter-*")) if (d / "release" / "config.yaml").is_file()]

    @property
    def rounds(self) -> pd.DataFrame:
        """Every bandit round of every Reveal, with an ``iteration`` column."""
        frames = [pd.read_csv(p).assign(iteration=int(p.parent.parent.name.split("-")[1]))
                  for p in sorted(self.path.glob("iter-*/reveal/rounds.csv"))]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def reveal_release(concept: str | None = None, model: str | None = None, out: str | Path | None = None, *,
                   config: RevealReleaseConfig | None = None, resume: bool = False, progress: bool = True,
                   **settings: Any) -> RevealRelease:
    """Run Reveal and Release (module docstring) into ``out``; returns the :class:`RevealRelease`.

    Settings are :class:`RevealReleaseConfig` fields as keywords (``iterations=2``, ``policy="random"``,
    ``lambda1=0`` ...) or a whole ``config``. ``resume=True`` continues the procedure in ``out``.
    ``out`` is claimed for the whole procedure: while another live process holds it, this one is
    refused before any work with a :class:`geffect.errors.RunInUseError` naming the directory and holder.
    """
    if out is None:
        raise ConfigError("reveal_release needs out= (the output directory)")
    out = Path(out)
    given = {k: v for k, v in dict(concept=concept, model=model, **settings).items() if v is not None}
    _check_not_foreign(out)
    # whether out may be continued is decided from its config file, under the claim (no other writer then)
    claim = claim_run_dir(out, resume=True, status_file=STATUS_FILE)
    with claim:
        try:
            config = _settled_config(out, config, given, resume)
            (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        except BaseException:
            claim.abandon()  # nothing started: what the claim wrote (and a folder it created) goes again
            raise
        _Procedure(config, out, progress).run()
    return RevealRelease(out)


def _check_not_foreign(out: Path) -> None:
    """Refuse a file, or a non-empty folder holding no reveal-release procedure, before the claim writes
    there. A claim's own files (left by a procedure killed before it saved its config) do not count."""
    if not out.exists() or (out / CONFIG_FILE).is_file():
        return
    if not out.is_dir() or set(os.listdir(out)) - {LOCK_FILE, STATUS_FILE}:
        raise ConfigError(f"{str(out)!r} is not empty and holds no reveal-release run; choose a new or empty "
                          "out directory")


def _settled_config(out: Path, config: RevealReleaseConfig | None, given: dict[str, Any],
                    resume: bool) -> RevealReleaseConfig:
    """The validated config of the procedure in ``out``: the saved one when resuming (refused if ``config``
    or the ``given`` settings differ from it), else ``config`` updated with ``given``."""
    if not (out / CONFIG_FILE).is_file():
        settled = RevealReleaseConfig.from_dict({**(config.to_dict() if config else {}), **given})
    elif not resume:
        raise ConfigError(f"{str(out)!r} already holds a reveal-release run; pass resume=True (CLI: --resume) "
                          "to continue it or choose another directory")
    else:
        settled = RevealRelease(out).config
        wanted = {**(config.to_dict() if config else {}), **given}
        changed = [f"{k}: saved {getattr(settled, k)!r}, given {v!r}" for k, v in wanted.items()
                   if getattr(settled, k) != v]
        if changed:
            raise ConfigError(f"cannot resume {str(out)!r} with different settings ({'; '.join(changed)})")
    settled.validate()
    return settled


class _Procedure:
    """The iteration loop of :func:`reveal_release` (each stage skipped when its output exists)."""

    def __init__(self, config: RevealReleaseConfig, out: Path, progress: bool) -> None:
        self.config, self.out, self.progress = config, out, progress
        self.concept = get_concept(config.concept)
        self.scorer = None
        self.rows: list[dict[str, Any]] = []

    def run(self) -> None:
        from geffect.models import load

        started = time.perf_counter()
        self._write_status(status="running", iterations=0, message=None)
        try:
            self.scorer = self.concept.scorer()
            model, tokenizer = load(self.config.model)
            self.rows = [{"iteration": 0, **self._metrics(model, tokenizer, self.out / BASELINE_FILE)}]
            status, message, done = "finished", None, 0
            for i in range(1, self.config.iterations + 1):
                stop = self._iteration(i, model, tokenizer)
                if stop is not None:
                    status, message = stop
                    break
                done = i
                run = self._run(i)
                model, tokenizer = run.model, run.tokenizer
        except BaseException as err:
            self._write_status(status="failed", message=f"{type(err).__name__}: {err}")
            raise
        self._write_status(status=status, iterations=done, message=message, seconds=time.perf_counter() - started)

    def _write_status(self, **fields: Any) -> None:
        """Replace status.json with ``fields``, keeping the claim's owner record (a refused second
        procedure reads it to name the holder)."""
        owner = read_json(self.out / STATUS_FILE).get("owner")
        write_json(self.out / STATUS_FILE, {**fields, "owner": owner} if owner else fields)

    def _run(self, i: int):
        from geffect.training import Run

        return Run(self.out / f"iter-{i:02d}" / "release")

    def _iteration(self, i: int, model: Any, tokenizer: Any) -> tuple[str, str] | None:
        """Reveal, Release and evaluate iteration ``i``; (status, message) when the procedure stops instead
        (``stopped``: nothing left to reveal; ``diverged``: the release run's loss turned non-finite)."""
        folder = self.out / f"iter-{i:02d}"
        info = self._reveal(i, model, tokenizer, folder / "reveal")
        row = {"iteration": i, "best_reward": info["best_reward"], "mean_reward": info["mean_reward"],
               "forget_rows": info["forget_rows"], "retain_rows": info["retain_rows"],
               "reveal_seconds": info["seconds"]}
        stop_reward = self.config.setting(self.concept, "stop_reward")
        if info["best_reward"] < stop_reward or info["forget_rows"] == 0:
            self._write_summary(row)
            return "stopped", (f"iteration {i}: the best instruction's mean reward {info['best_reward']:.3g} is "
                               f"under {stop_reward:g}" if info["forget_rows"] else
                               f"iteration {i}: no completion held the concept")
        run = self._release(i, folder)
        row["release_seconds"] = run.info.get("seconds")
        if run.status == "diverged":
            self._write_summary(row)
            return "diverged", f"iteration {i}: the release run {str(run.path)!r} diverged ({run.info.get('message')})"
        row.update(self._metrics(run.model, run.tokenizer, folder / "metrics.json"))
        self._write_summary(row)
        return None

    # -- stages -------------------------------------------------------------------------------------

    def _reveal(self, i: int, model: Any, tokenizer: Any, folder: Path) -> dict[str, Any]:
        from geffect.procedures.reveal import reveal

        done = folder / "reveal.json"
        if done.is_file():
            return read_json(done)
        c = self.config
        started = time.perf_counter()
        result = reveal(model, tokenizer, self.concept, self.scorer, policy=c.policy, rounds=c.rounds,
                        initial=c.initial, k=c.k, width=c.width, nu=c.nu, lam=c.lam, temperature=c.temperature,
                        top_p=c.top_p, max_new_tokens=c.max_new_tokens, top_instructions=c.top_instructions,
                        completions=c.completions, max_forget=c.max_forget, max_retain=c.max_retain_completions,
                        threshold=c.setting(self.concept, "threshold"),
                        clean_threshold=c.setting(self.concept, "clean_threshold"),
                        seed=stable_seed(c.seed, "reveal", i), progress=self.progress)
        folder.mkdir(parents=True, exist_ok=True)
        result.rounds.to_csv(folder / "rounds.csv", index=False)
        result.instructions.to_csv(folder / "instructions.csv", index=False)
        result.completions.to_csv(folder / "completions.csv", index=False)
        _write_jsonl(folder / "forget.jsonl", result.forget_rows)
        _write_jsonl(folder / "retain.jsonl", result.retain_rows + self._retain_split_rows())
        info = {"best_reward": result.best_reward, "mean_reward": float(result.rounds["reward"].mean()),
                "chosen": [result.instructions["instruction"][a] for a in result.chosen],
                "forget_rows": len(result.forget_rows), "retain_rows": len(result.retain_rows),
                "seconds": time.perf_counter() - started}
        write_json(done, info)  # written last: marks the stage done
        return info

    def _retain_split_rows(self) -> list[dict[str, Any]]:
        from geffect.tasks import TaskData

        split = TaskData(self.concept.task or "tofu").split(self.concept.retain)
        return [_kind_columns(self.concept, row) for row in split]

    def release_config(self, i: int, folder: Path) -> UnlearnConfig:
        """The geffect run config of iteration ``i``'s LoRA module."""
        c, reveal_dir = self.config, (folder / "reveal").resolve()
        forget = str(reveal_dir / "forget.jsonl")
        return UnlearnConfig.from_dict({
            **c.release_settings(), "task": self.concept.task or "tofu", "forget": forget,
            "retain": str(reveal_dir / "retain.jsonl"),
            "probes": {"forget": forget, **fixed_probes(c, self.out / PROBES_DIR)},
            "lora_stack": [f"../../iter-{j:02d}/release" for j in range(1, i)] or None, "seed": c.seed + i,
        })

    def _release(self, i: int, folder: Path):
        from geffect.training import Run, unlearn

        run_dir = folder / "release"
        if (run_dir / "run.json").is_file() and Run(run_dir).status == "finished":
            return Run(run_dir)
        resume = (run_dir / "config.yaml").is_file()
        run = unlearn(config=self.release_config(i, folder), out=run_dir, resume=resume, progress=self.progress)
        if run.status not in ("finished", "diverged"):
            raise RuntimeError(f"iteration {i}'s release run stopped ({run.status}): {run.info.get('message')}")
        return run

    def _metrics(self, model: Any, tokenizer: Any, path: Path) -> dict[str, float]:
        if path.is_file():
            return read_json(path)
        if self.concept.evaluate is None:
            return {}
        metrics = self.concept.evaluate(model, tokenizer, max_examples=self.config.eval_examples,
                                        model_name=self.config.model)
        write_json(path, metrics)
        return metrics

    def _write_summary(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        frame = pd.DataFrame(self.rows)
        tmp = self.out / f".{SUMMARY_FILE}.tmp"
        frame.to_csv(tmp, index=False)
        tmp.replace(self.out / SUMMARY_FILE)


def _kind_columns(concept: Concept, row: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``row`` that a row of the concept's kind holds (question/answer or prompt/response)."""
    columns = ("question", "answer") if concept.kind == "qa" else ("prompt", "response")
    return {k: row[k] for k in columns}


def fixed_probes(config: RevealReleaseConfig, folder: str | Path) -> dict[str, str]:
    """Probe files ``true_forget`` (the concept's held-out forget split) and ``retain``, written once.

    ``probe_size`` rows seeded by the procedure's seed (not the run's), so every iteration's release
    — and :func:`release_on_true_forget` given the same files — measures the same rows, and the
    per-iteration and data-mismatch studies compare like with like. Returns probe name -> file.
    """
    from geffect.data.sampling import sample_indices
    from geffect.tasks import TaskData

    concept, folder = get_concept(config.concept), Path(folder)
    data, out = TaskData(concept.task or "tofu"), {}
    for name, split in (("true_forget", concept.heldout_forget), ("retain", concept.retain)):
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            rows = data.split(split)
            folder.mkdir(parents=True, exist_ok=True)
            _write_jsonl(path, [_kind_columns(concept, rows[i])
                                for i in sample_indices(len(rows), config.probe_size, config.seed, name)])
        out[name] = str(path.resolve())
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


# -- the comparison: the same objective on the true forget data -------------------------------------


def release_on_true_forget(config: RevealReleaseConfig, out: str | Path, steps: int | None = None,
                           progress: bool = True, probes: dict[str, str] | None = None):
    """One LoRA run of the base objective on the concept's real forget data (the comparison R&R lacks).

    Same objective, LoRA, lr, batch and probes as a Release; ``steps`` defaults to the procedure's
    total (``iterations × steps``). ``probes`` (name -> split or file) replaces the ``true_forget``
    and ``retain`` probes, e.g. a procedure's :func:`fixed_probes` so both measure the same rows.
    Returns the ``geffect.Run``; the concept's metrics go beside the run's files as ``concept_metrics.json``.
    """
    from geffect.training import Run, unlearn

    concept = get_concept(config.concept)
    out = Path(out)
    settings = {
        **config.run_settings, "objective": config.objective, "hparams": dict(config.hparams), "model": config.model,
        "task": concept.task or "tofu", "forget": concept.true_forget, "retain": concept.retain,
        "probes": {"forget": concept.true_forget,
                   **(probes or {"true_forget": concept.heldout_forget, "retain": concept.retain})},
        "lora": dict(config.lora), "steps": steps or config.iterations * config.steps, "lr": config.lr,
        "batch_size": config.batch_size, "record_every": config.record_every, "probe_size": config.probe_size,
        "seed": config.seed,
    }
    if (out / "run.json").is_file() and Run(out).status == "finished":
        run = Run(out)
    else:
        run = unlearn(config=UnlearnConfig.from_dict(settings), out=out, resume=(out / "config.yaml").is_file(),
                      progress=progress)
    path = out / "concept_metrics.json"
    if not path.is_file() and concept.evaluate is not None:
        write_json(path, concept.evaluate(run.model, run.tokenizer, max_examples=config.eval_examples,
                                          model_name=config.model))
    return run
