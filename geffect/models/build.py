"""Build the shipped world and tiny target models (what ``geffect build-world`` runs).

Steps, all seeded: write the world's JSON lines, train the BPE tokenizer on it,
then for each model initialise the same small Llama (same seed, so the models
differ only by their training data), memorise its training split plus
``world_facts`` (see :mod:`geffect.models.train`), score greedy answers with
ROUGE-L recall, and save it as a Hugging Face folder (safetensors). The numbers
land in ``build_report.json`` next to the models.

The target ``tiny`` learns ``full``; the references ``tiny-retainNN`` learn
``retainNN`` only, so they never see the forget authors — what a perfectly
unlearned model would know (TOFU's retain model).
"""

from __future__ import annotations

import json
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

from geffect.data.encoding import encode_qa
from geffect.data.store import load_world, write_world
from geffect.data.tokenizer import train_tokenizer, world_texts
from geffect.models.loading import SHIPPED_MODELS, models_dir
from geffect.models.train import TrainConfig, memorise

TRAIN_SPLITS = {"tiny": "full", "tiny-retain90": "retain90", "tiny-retain95": "retain95",
                "tiny-retain99": "retain99"}
ARCHITECTURE = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=False)
VOCAB_SIZE = 3072
EVAL_SPLITS = ("forget01", "forget05", "forget10", "retain90", "world_facts")
REPORT = "build_report.json"


def tiny_config(tokenizer: Any, **overrides: Any) -> LlamaConfig:
    """The tiny Llama architecture sized for ``tokenizer`` (``overrides`` change any field)."""
    fields = {**ARCHITECTURE, **overrides}
    return LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **fields)


def evaluate_memorisation(model: Any, tokenizer: Any, world: Any, splits: tuple[str, ...] = EVAL_SPLITS,
                          limit: int | None = 200) -> dict[str, float]:
    """Mean greedy ROUGE-L recall per split (on an evenly spaced sample of at most ``limit`` rows)."""
    # imported here: geffect.evaluation builds on geffect.models, so a top-level import could cycle
    from geffect.evaluation.generation import greedy_answers
    from geffect.evaluation.rouge import mean_rouge_l_recall

    scores = {}
    for name in splits:
        data = world[name]
        if limit is not None and len(data) > limit:
            step = len(data) / limit
            data = data.select([int(i * step) for i in range(limit)])
        answers = greedy_answers(model, tokenizer, data["question"], max_new_tokens=40)
        scores[name] = mean_rouge_l_recall(answers, data["answer"])
    return scores


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build_model(name: str, tokenizer: Any, world: Any, out_dir: Path, config: TrainConfig,
                eval_limit: int | None = 200, position: int | None = None) -> dict[str, Any]:
    """Train, score and save one shipped model; returns its report entry."""
    if name not in TRAIN_SPLITS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(TRAIN_SPLITS)}")
    rows = list(world[TRAIN_SPLITS[name]]) + list(world["world_facts"])
    examples = [encode_qa(tokenizer, row["question"], row["answer"]) for row in rows]
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(tiny_config(tokenizer))
    cpu_start = time.process_time()
    summary = memorise(model, tokenizer, examples, config, desc=name, position=position)
    train_cpu = time.process_time() - cpu_start
    scores = evaluate_memorisation(model, tokenizer, world, limit=eval_limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return {
        "train_split": TRAIN_SPLITS[name],
        "train_examples": len(examples),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_run": summary["epochs_run"],
        "final_loss": summary["history"][-1]["loss"],
        "final_exact": summary["history"][-1]["exact"],
        "train_seconds": round(summary["seconds"], 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "rouge_l_recall": {k: round(v, 4) for k, v in scores.items()},
        "bytes": _folder_bytes(out_dir),
    }


def _build_in_worker(name: str, tokenizer: Any, world_dir: str | None, out_dir: Path, config: TrainConfig,
                     eval_limit: int | None, threads: int | None, position: int | None = None) -> dict[str, Any]:
    """One model in its own process (or inline): returns its report entry with the CPU time used."""
    if threads is not None:
        torch.set_num_threads(threads)
    cpu_start = time.process_time()
    entry = build_model(name, tokenizer, load_world(world_dir), out_dir, config, eval_limit, position)
    entry["build_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
    return entry


def _run_builds(names: tuple[str, ...], tokenizer: Any, world_dir: str | None, root: Path, config: TrainConfig,
                eval_limit: int | None, workers: int, threads: int | None) -> dict[str, dict[str, Any]]:
    jobs = {name: (name, tokenizer, world_dir, root / name, config, eval_limit, threads, i)
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
    from geffect.data.task_store import write_all_task_data
    from geffect.evaluation.scorers import SHIPPED_SCORERS, build_scorer

    world = write_world(world_dir, seed=seed)
    tasks = write_all_task_data(tasks_dir, seed=seed)
    scorers = {name: build_scorer(name, tasks_dir, scorers_dir) for name in SHIPPED_SCORERS}
    return {"world": world["content_hash"], "tasks": {t: m["content_hash"] for t, m in tasks.items()},
            "scorers": scorers}


def build_world_models(out_root: str | Path | None = None, seed: int = 0, names: tuple[str, ...] = SHIPPED_MODELS,
                       world_dir: str | Path | None = None, train_config: TrainConfig | None = None,
                       workers: int = 2, threads: int | None = 1, eval_limit: int | None = 200) -> dict[str, Any]:
    """Regenerate the world and (re)build ``names`` under ``out_root`` (default: the shipped folders).

    Models train in ``workers`` processes at once, each with ``threads`` torch
    threads (None: torch's default). On small CPUs one thread per model in parallel
    processes uses the cores best: these matrices are too small to split well.
    Returns the report that is also written to ``<out_root>/build_report.json``.
    """
    root = Path(out_root) if out_root is not None else models_dir()
    config = replace(train_config or TrainConfig(), seed=seed)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    manifest = write_world(world_dir, seed=seed)
    world = load_world(world_dir)
    tokenizer = train_tokenizer(world_texts(world), vocab_size=VOCAB_SIZE)
    world_path = None if world_dir is None else str(world_dir)
    # largest training sets first, so parallel workers finish together
    ordered = tuple(sorted(names, key=lambda n: -len(world[TRAIN_SPLITS[n]])))
    built = _run_builds(ordered, tokenizer, world_path, root, config, eval_limit, workers, threads)
    models = {name: built[name] for name in names}
    parent_cpu = time.process_time() - cpu_start
    report = {
        "seed": seed,
        "world_content_hash": manifest["content_hash"],
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
        "total_bytes": sum(m["bytes"] for m in models.values()),
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report
