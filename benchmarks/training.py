"""Cost of live G-effect recording: time per unlearning step with and without it, side by side.

Three trainers with the same objective, model and batches run in one process:

* ``plain``: no recording (the objective's forward/backward and the optimiser step);
* ``record every step``: both directions (objective gradient and applied update) on two probe
  sets (forget and retain) of the training batch size, every step;
* ``record every 10``: the same recording on every 10th step;
* ``gradient only, every step``: only the objective-gradient direction (the paper's G-effect),
  for reference.

They take turns in rounds of 10 steps after a warm-up, so machine load hits all of them alike;
each variant's ratio is the median over rounds of its time per step over the plain trainer's in
the same round, printed with the range over rounds. Targets (issue 12): every step ≤ 2.3x plain,
every 10 steps ≤ 1.15x plain, for GA. Run: ``python benchmarks/training.py [--objective ga]
[--batch-size 8] [--rounds 5]``. On a CPU shared with other work, ``--clock cpu`` times each round
by the process's CPU time instead of the wall clock (with ``OMP_NUM_THREADS=1``, so that no thread
spins waiting for a core), which other processes' load barely changes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from geffect.training.config import UnlearnConfig
from geffect.training.data import run_source
from geffect.training.heap import steady_heap
from geffect.training.trainer import Trainer

# name -> (record_every, directions)
VARIANTS = {
    "plain": (0, ["gradient", "update"]),
    "record every step": (1, ["gradient", "update"]),
    "record every 10": (10, ["gradient", "update"]),
    "gradient only, every step": (1, ["gradient"]),
}
TARGETS = {"record every step": 2.3, "record every 10": 1.15}
ROUND = 10  # steps per timed round (one recording period of the every-10 variant)


def build(args: argparse.Namespace, record_every: int, directions: list[str], folder: Path) -> Trainer:
    config = UnlearnConfig(objective=args.objective, model=args.model, forget=args.forget, directions=directions,
                           batch_size=args.batch_size, probe_size=args.batch_size, record_every=record_every,
                           steps=(args.warmup + args.rounds) * ROUND, checkpoint_every=10**9,
                           flush_every=10**9, lr=args.lr, seed=0, device=args.device).resolved()
    trainer = Trainer(config, folder / f"every-{record_every}-{len(directions)}", progress=False)
    needs_retain = trainer.spec.uses_retain or "mismatch" in trainer.views
    trainer.source = run_source(config, trainer.views, needs_retain, "the benchmark")
    trainer._setup()
    trainer._prepare_dir(resume=False, status={})
    trainer.pending = None
    return trainer


def timed_round(trainer: Trainer, first: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per step over steps ``first .. first + ROUND - 1`` (wall clock, or ``clock``)."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start = clock()
    for step in range(first, first + ROUND):
        message = trainer._step(step)
        if message is not None:
            raise RuntimeError(f"benchmark run diverged: {message}")
    sync()
    return (clock() - start) / ROUND


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="ga")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--forget", default="forget10")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch = each probe set's size")
    parser.add_argument("--lr", type=float, default=1e-5, help="small, so that no variant diverges")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of 10 steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--device", default=None)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time (CPU runs on a shared machine)")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.device is not None and args.device.startswith("cuda"):
        parser.error("--clock cpu times CPU work only; use the wall clock on CUDA")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: build(args, every, directions, Path(tmp)) for name, (every, directions) in VARIANTS.items()}
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        with steady_heap():  # as in Trainer.run
            for r in range(args.warmup + args.rounds):
                for name, trainer in trainers.items():
                    seconds = timed_round(trainer, r * ROUND, clock)
                    if r >= args.warmup:
                        times[name].append(seconds)
        for trainer in trainers.values():
            trainer.recorder and trainer.recorder.close()

    median = {name: statistics.median(values) for name, values in times.items()}
    per_round = {name: [t / p for t, p in zip(values, times["plain"])] for name, values in times.items()}
    print(f"objective {args.objective}, model {args.model}, batch {args.batch_size} (= each of 2 probe sets), "
          f"threads {torch.get_num_threads()}, {args.rounds} rounds x {ROUND} steps, {args.clock} clock")
    print(f"{'variant':<26} {'ms/step':>9} {'ratio':>7} {'range over rounds':>18} {'target':>7}")
    ratios = {}
    for name in VARIANTS:
        ratios[name] = statistics.median(per_round[name])
        target = f"<= {TARGETS[name]:.2f}" if name in TARGETS else ""
        spread = f"{min(per_round[name]):.2f}-{max(per_round[name]):.2f}"
        print(f"{name:<26} {1000 * median[name]:>9.1f} {ratios[name]:>7.2f} {spread:>18} {target:>7}")
    return ratios


if __name__ == "__main__":
    main()
