"""FSDP2 runs with and without live recording: peak memory per rank and wall time, side by side.

Launches the same ``geffect.unlearn`` run on N processes with ``fsdp=True`` (torchrun; gloo on
CPU, NCCL on CUDA) three times: without recording, recording both directions on a forget and a
retain probe every step, and every 10 steps. Each rank reports the peak memory of its process
(CUDA: ``max_memory_allocated``; CPU: peak resident set size, VmHWM, which includes the Python
and torch baseline every variant shares) and the wall time of its run (setup included). The table
gives the largest rank's peak, its excess over the unrecorded run, and the time ratio.

Run: ``python benchmarks/fsdp.py`` (2 CPU processes, the shipped ``tiny``, 20 steps); on GPUs:
``python benchmarks/fsdp.py --device cuda --processes 8 --model /path/to/model --batch-size 8``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"FSDP, no recording": 0, "FSDP, record every step": 1, "FSDP, record every 10": 10}
MIB = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (one GPU per process)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--objective", default="ga")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8, help="global; also each probe's size")
    parser.add_argument("--worker", nargs=2, metavar=("OUT", "EVERY"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args) -> None:
    """One rank of one variant: run, then write this rank's peak memory and seconds."""
    import torch

    import geffect

    out, every = Path(args.worker[0]), int(args.worker[1])
    cuda = args.device == "cuda"
    started = time.perf_counter()
    geffect.unlearn(args.objective, model=args.model, forget="forget10", out=out, steps=args.steps,
                    batch_size=args.batch_size, probe_size=args.batch_size, record_every=every, fsdp=True,
                    device=args.device, checkpoint_every=10**6, progress=False, seed=0)
    seconds = time.perf_counter() - started
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        with open("/proc/self/status") as status:
            peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    rank = int(os.environ.get("RANK", "0"))
    (out.parent / f"{out.name}-rank{rank}.json").write_text(json.dumps({"peak": peak, "seconds": seconds}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args, out: Path, every: int) -> list[dict]:
    """Run one variant on ``args.processes`` ranks; each rank's report."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.processes}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", __file__, "--worker", str(out), str(every),
               "--device", args.device, "--model", args.model, "--objective", args.objective,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"variant record_every={every} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return [json.loads((out.parent / f"{out.name}-rank{r}.json").read_text()) for r in range(args.processes)]


def main(argv=None) -> dict[str, dict]:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, every in VARIANTS.items():
            results[name] = launch(args, Path(tmp) / f"every-{every}", every)
    base = results["FSDP, no recording"]
    base_peak, base_seconds = max(r["peak"] for r in base), max(r["seconds"] for r in base)
    kind = "CUDA max allocated" if args.device == "cuda" else "peak RSS"
    print(f"FSDP2 on {args.processes} {args.device} processes, {args.model}, {args.objective}, {args.steps} steps, "
          f"batch {args.batch_size} (= each of 2 probes); memory: {kind} of the largest rank")
    print(f"{'variant':<26} {'peak MiB':>9} {'vs plain':>9} {'per rank MiB':>18} {'seconds':>8} {'ratio':>6}")
    for name, ranks in results.items():
        peak, seconds = max(r["peak"] for r in ranks), max(r["seconds"] for r in ranks)
        per_rank = "/".join(f"{r['peak'] / MIB:.0f}" for r in ranks)
        print(f"{name:<26} {peak / MIB:>9.0f} {(peak - base_peak) / MIB:>+9.0f} {per_rank:>18} "
              f"{seconds:>8.1f} {seconds / base_seconds:>6.2f}")
    return results


if __name__ == "__main__":
    main()
