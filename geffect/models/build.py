"""Build the shipped data and tiny target models (what ``geffect build-world`` runs).

Steps, all seeded: write the world's and the tasks' JSON lines and train the toxicity and
harm scorers (:func:`build_data`); train one BPE tokenizer on all of that text; then for
each model initialise the same small Llama (same seed, so the models differ only by
their training data, see :mod:`geffect.models.curriculum`), memorise its rows until the
recall targets it must clear hold (:mod:`geffect.models.knowledge`), measure what it
knows with the tasks' own evaluation suites, and save it as a Hugging Face folder
(safetensors). The numbers land in ``build_report.json`` next to the models.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from geffect.data.rows import encode_row
from geffect.data.store import load_world, write_world
from geffect.data.task_store import load_task_data, write_all_task_data
from geffect.data.tokenizer import task_texts, train_tokenizer, world_texts
from geffect.models.curriculum import MODEL_SPECS, TASK_PARTS, training_rows
from geffect.models.knowledge import check, forget_nlls, measure, stop_rule, targets_for
from geffect.models.loading import models_dir
from geffect.models.train import TrainConfig, memorise

ARCHITECTURE = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=False)
VOCAB_SIZE = 4096
REPORT = "build_report.json"


def tiny_config(tokenizer: Any, **overrides: Any) -> LlamaConfig:
    """The tiny Llama architecture sized for ``tokenizer`` (``overrides`` change any field)."""
    fields = {**ARCHITECTURE, **overrides}
    return LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **fields)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with floats rounded to 4 digits, nested dicts too, and undefined (NaN) numbers left out."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out[key] = _rounded(value)
        elif isinstance(value, float):
            if math.isfinite(value):
                out[key] = round(value, 4)
        else:
            out[key] = value
    return out


def _load_tasks(tasks_dir: str | Path | None) -> dict[str, Any]:
    return {task: load_task_data(task, tasks_dir) for task in TASK_PARTS}


def build_model(name: str, tokenizer: Any, world: Any, tasks_dir: str | Path | None, out_dir: Path,
                config: TrainConfig, tofu_limit: int | None = 200, check_limit: int = 64,
                position: int | None = None) -> dict[str, Any]:
    """Train, measure and save one shipped model; returns its report entry."""
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODEL_SPECS)}")
    spec = MODEL_SPECS[name]
    rows = training_rows(spec, world, _load_tasks(tasks_dir))
    examples = [encode_row(tokenizer, row) for _, row in rows]
    longest = max(len(ex["input_ids"]) for ex in examples)
    if longest > ARCHITECTURE["max_position_embeddings"]:
        raise ValueError(f"a training row of {longest} tokens exceeds the context of "
                         f"{ARCHITECTURE['max_position_embeddings']} positions")
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(tiny_config(tokenizer))
    cpu_start = time.process_time()
    rule = stop_rule(name, world, tasks_dir, limit=check_limit)
    summary = memorise(model, tokenizer, examples, config, desc=name, position=position, stop=rule)
    train_cpu = time.process_time() - cpu_start
    measured = measure(model, tokenizer, world, tasks_dir, tofu_limit=tofu_limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    last = summary["history"][-1]
    return {
        "description": spec.description,
        "trained_on": sorted({part for part, _ in rows}),
        "train_examples": len(examples),
        "train_tokens": sum(len(ex["input_ids"]) for ex in examples),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_run": summary["epochs_run"],
        "final_loss": last["loss"],
        "final_exact": last["exact"],
        "history": [_rounded(h) for h in summary["history"]],
        "train_seconds": round(summary["seconds"], 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "metrics": _rounded(measured),
        "forget_nll": _rounded(forget_nlls(model, tokenizer, world, tasks_dir)),
        "targets": check(measured, targets_for(name)),
        "bytes": _folder_bytes(out_dir),
    }


def _build_in_worker(name: str, tokenizer: Any, world_dir: str | None, tasks_dir: str | None, out_dir: Path,
                     config: TrainConfig, tofu_limit: int | None, check_limit: int, threads: int | None,
                     position: int | None = None) -> dict[str, Any]:
    """One model in its own process (or inline): returns its report entry with the CPU time used."""
    if threads is not None:
        torch.set_num_threads(threads)
    cpu_start = time.process_time()
    entry = build_model(name, tokenizer, load_world(world_dir), tasks_dir, out_dir, config, tofu_limit,
                        check_limit, position)
    entry["build_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
    return entry


def _run_builds(names: tuple[str, ...], tokenizer: Any, world_dir: str | None, tasks_dir: str | None, root: Path,
                config: TrainConfig, tofu_limit: int | None, check_limit: int, workers: int,
                threads: int | None) -> dict[str, dict[str, Any]]:
    jobs = {name: (name, tokenizer, world_dir, tasks_dir, root / name, config, tofu_limit, check_limit, threads, i)
            for i, name in enumerate(names)}
    if workers <= 1 or len(names) <= 1:
        previous = torch.get_num_threads()
        try:
            return {name: _build_in_worker(*job) for name, job in jobs.items()}
        finally:
            torch.set_num_threads(previous)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {name: pool.submit(_build_in_worker, *job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def build_data(seed: int = 0, world_dir: str | Path | None = None, tasks_dir: str | Path | None = None,
               scorers_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the world and every generated task's data, and train the shipped scorers on it.

    Returns ``{"world": content hash, "tasks": {task: content hash}, "scorers": {name: held-out
    accuracy and sizes}}`` (defaults: the shipped folders under ``data/``).
    """
    from geffect.evaluation.scorers import SHIPPED_SCORERS, build_scorer

    world = write_world(world_dir, seed=seed)
    tasks = write_all_task_data(tasks_dir, seed=seed)
    scorers = {name: build_scorer(name, tasks_dir, scorers_dir) for name in SHIPPED_SCORERS}
    return {"world": world["content_hash"], "tasks": {t: m["content_hash"] for t, m in tasks.items()},
            "scorers": scorers}


def build_tokenizer(world: Any, tasks: dict[str, Any], out_dir: str | Path | None = None) -> Any:
    """The shared BPE tokenizer of the tiny models, trained on the world's and the tasks' text."""
    texts = [*world_texts(world), *task_texts(tasks)]
    return train_tokenizer(texts, vocab_size=VOCAB_SIZE, out_dir=out_dir)


def build_world_models(out_root: str | Path | None = None, seed: int = 0, names: tuple[str, ...] = tuple(MODEL_SPECS),
                       world_dir: str | Path | None = None, tasks_dir: str | Path | None = None,
                       scorers_dir: str | Path | None = None, train_config: TrainConfig | None = None,
                       workers: int = 2, threads: int | None = 1, tofu_limit: int | None = 200,
                       check_limit: int = 64) -> dict[str, Any]:
    """Regenerate the data and (re)build ``names`` under ``out_root`` (default: the shipped folders).

    Models train in ``workers`` processes at once, each with ``threads`` torch threads
    (None: torch's default); on small CPUs one thread per model in parallel processes uses
    the cores best. ``tofu_limit`` caps the TOFU rows measured per split, ``check_limit``
    the rows per split of the stop rule. Returns the report also written to
    ``<out_root>/build_report.json``.
    """
    root = Path(out_root) if out_root is not None else models_dir()
    config = replace(train_config or TrainConfig(), seed=seed)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    data = build_data(seed, world_dir, tasks_dir, scorers_dir)
    world = load_world(world_dir)
    tokenizer = build_tokenizer(world, _load_tasks(tasks_dir))
    world_path = None if world_dir is None else str(world_dir)
    tasks_path = None if tasks_dir is None else str(tasks_dir)
    # largest training sets first, so parallel workers finish together
    ordered = tuple(sorted(names, key=lambda n: -len(world[MODEL_SPECS[n].authors])
                           - 1000 * MODEL_SPECS[n].forget_portions))
    built = _run_builds(ordered, tokenizer, world_path, tasks_path, root, config, tofu_limit, check_limit,
                        workers, threads)
    models = {name: built[name] for name in names}
    parent_cpu = time.process_time() - cpu_start
    report = {
        "seed": seed,
        "data": data,
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
        "architecture": {**ARCHITECTURE, "vocab_size": len(tokenizer)},
        "workers": workers,
        "threads_per_worker": threads,
        "cpu_count": os.cpu_count(),
        "wall_seconds": round(time.perf_counter() - wall_start, 1),
        "cpu_seconds": round(parent_cpu + (0 if workers <= 1 else sum(m["build_cpu_seconds"] for m in models.values())), 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "models": models,
        "targets_hold": all(all(m["targets"].values()) for m in models.values()),
        "total_bytes": sum(m["bytes"] for m in models.values()),
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report
