"""GPU benchmark: the G-effect engine and live recording at real scale, in one table.

On a random-initialised Llama-3.2-1B-shaped model (and a Llama-2-7B-shaped one when the GPU has the
memory), in bf16 on CUDA, it measures side by side in one run:

* the G-effect of gradient ascent's gradient on 64 and 256 probe instances × 512 tokens with the
  engine (per instance × layer), the batch-level gradient inner product (one backward, one dot),
  the per-instance backward loop (``oracle_effects``) and captum ``TracInCP`` — time, peak memory
  above the loaded model, and agreement with the engine (the loop and captum are skipped for the
  7B shape at 256 instances, where they would take minutes);
* the cost of live recording (both directions on a forget and a retain probe of the batch size)
  for GA and NPO: time per step and peak memory of a plain step, recording every step and every
  10 steps (the trainer of ``benchmarks/training.py``, bf16 autocast, on the embedded world).

It prints one table and is built to finish in under 8 minutes on one H200. ``--device cpu
--small`` runs the same code at toy size (a 2-block model, 8 and 16 instances × 32 tokens); the
test suite runs that, so the script cannot rot. Run: ``python benchmarks/gpu.py`` on a GPU
machine (``--skip-7b`` to stop after the 1B shape).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
import effects as fx  # noqa: E402  (benchmarks/effects.py: batch-level dot, captum, memory marks)
import training as tr  # noqa: E402  (benchmarks/training.py: trainers and timed rounds)

from geffect.effects import EffectProbe, oracle_effects  # noqa: E402

SHAPES = {  # Hugging Face configurations of the shapes (weights are random)
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
    "small": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True),  # the shipped tokenizer's size
}
GIB = 2**30


@dataclass
class Row:
    """One line of the table."""

    model: str
    what: str
    method: str
    seconds: float
    ratio: float | None
    peak: float | None  # bytes above the loaded model
    note: str = ""


class Memory:
    """Peak memory above the level at ``start`` (CUDA allocator, or Linux peak RSS on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = fx._cpu_memory_mark()

    def peak(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return float(torch.cuda.max_memory_allocated() - self.base)
        return float(fx._status_kb("VmHWM") * 1024 - self.base)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="toy sizes (for CPU smoke runs)")
    parser.add_argument("--skip-7b", action="store_true", help="only the 1B shape")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of engine and batch-level")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --device cpu --small for the toy-size run")
    args.length = 32 if args.small else 512
    args.sizes = (8, 16) if args.small else (64, 256)
    args.forget = 4 if args.small else 8
    args.steps_rounds = 1 if args.small else 3
    if args.small:
        args.repeats = 1
    return args


def shapes(args) -> list[str]:
    if args.small:
        return ["small"]
    names = ["llama-3.2-1b"]
    free = torch.cuda.mem_get_info(args.device)[0] if args.device.type == "cuda" else 0
    if not args.skip_7b and free > 100 * GIB:  # weights, gradient, direction and 256 x 512 activations
        names.append("llama-2-7b")
    return names


def build(name: str, args) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[name], max_position_embeddings=max(args.length, 2048), attn_implementation="sdpa")
    with torch.device(args.device):
        model = LlamaForCausalLM(config)
    return model.to(torch.bfloat16).eval()


def effect_rows(name: str, model, args, memory: Memory) -> list[Row]:
    """Engine, batch-level dot, per-instance loop and captum on each probe size."""
    fx_args = argparse.Namespace(device=str(args.device), dtype="float32", vocab=min(model.config.vocab_size, 32000),
                                 length=args.length)  # float32 = no autocast: the weights are bf16 already
    forget = fx.make_batch(fx_args, args.forget, seed=2)
    params = dict(model.named_parameters())
    direction = dict(zip(params, torch.autograd.grad(fx.ga_losses(model, forget).mean(), list(params.values()))))
    rows = []
    for size in args.sizes:
        rows += probe_rows(name, model, fx_args, fx.make_batch(fx_args, size, seed=1), forget, direction, args,
                           memory)
    return rows


def batch_level(model, probe, direction) -> float:
    """One backward of the mean instance risk, then the full-gradient dot with the direction."""
    model.zero_grad(set_to_none=True)
    risk = fx.instance_nll(model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits,
                           probe["labels"]).mean()
    risk.backward()
    dot = sum((p.grad.float() * direction[n].float()).sum() for n, p in model.named_parameters())
    model.zero_grad(set_to_none=True)
    return float(dot)


def repeated(fx_args, fn, repeats: int, memory: Memory):
    """(median seconds, max peak bytes, last result) of ``repeats`` timed calls."""
    times, peaks, out = [], [], None
    for _ in range(repeats):
        memory.start()
        seconds, out = fx.timed(fx_args, fn)
        times.append(seconds)
        peaks.append(memory.peak())
    return statistics.median(times), max(peaks), out


def probe_rows(name, model, fx_args, probe, forget, direction, args, memory: Memory) -> list[Row]:
    what = f"{probe['input_ids'].shape[0]} x {args.length}"
    with EffectProbe(model) as engine:
        engine.measure(direction, probe)  # warm-up
        t_engine, peak, result = repeated(fx_args, lambda: engine.measure(direction, probe), args.repeats, memory)
    rows = [Row(name, what, "engine (instance x layer)", t_engine, 1.0, peak)]
    seconds, peak, dot = repeated(fx_args, lambda: batch_level(model, probe, direction), args.repeats, memory)
    agreement = abs(float(result.total().mean()) - dot) / abs(dot)
    rows.append(Row(name, what, "batch-level inner product", seconds, seconds / t_engine, peak,
                    f"engine mean vs batch dot {agreement:.1e}"))
    if name == "llama-2-7b" and probe["input_ids"].shape[0] > min(args.sizes):
        return rows + [Row(name, what, "per-instance loop, captum", float("nan"), None, None, "skipped (minutes)")]
    seconds, peak, oracle = repeated(fx_args, lambda: oracle_effects(model, direction, probe), 1, memory)
    rows.append(Row(name, what, "per-instance backward loop", seconds, seconds / t_engine, peak,
                    f"rel. err vs engine {fx.rel_err(result.values, oracle.values):.1e}"))
    seconds, peak, scores = repeated(fx_args, lambda: fx.captum_scores(fx_args, model, probe, forget), 1, memory)
    rows.append(Row(name, what, "captum TracInCP", seconds, seconds / t_engine, peak,
                    f"rel. err vs engine totals {fx.rel_err(scores, result.total()):.1e}"))
    return rows


def save(model, folder: Path) -> Path:
    """The model in a folder the trainer can load, with the shipped tokenizer (ids within its vocabulary)."""
    import geffect

    _, tokenizer = geffect.load_model("tiny", device="cpu")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def training_rows(name: str, path: Path, args, memory: Memory, folder: Path) -> list[Row]:
    """Plain, record-every-step and record-every-10 steps of GA and NPO, side by side (float32
    weights under bf16 autocast on CUDA, as ``geffect unlearn`` trains)."""
    rows = []
    variants = {k: tr.VARIANTS[k] for k in ("plain", "record every step", "record every 10")}
    for objective in ("ga", "npo"):
        settings = argparse.Namespace(objective=objective, model=str(path), forget="forget10", batch_size=8,
                                      lr=1e-6, warmup=1, rounds=args.steps_rounds, device=str(args.device))
        times: dict[str, list[float]] = {v: [] for v in variants}
        peaks: dict[str, float] = dict.fromkeys(variants, 0.0)
        trainers = {v: tr.build(settings, every, directions, folder / objective) for v, (every, directions)
                    in variants.items()}
        for r in range(settings.warmup + settings.rounds):
            for variant, trainer in trainers.items():
                memory.start()
                seconds = tr.timed_round(trainer, r * tr.ROUND)
                peaks[variant] = max(peaks[variant], memory.peak())
                if r >= settings.warmup:
                    times[variant].append(seconds)
        for trainer in trainers.values():
            trainer.recorder and trainer.recorder.close()
        del trainers
        plain = statistics.median(times["plain"])
        for variant in variants:
            seconds = statistics.median(times[variant])
            spread = f"rounds {min(times[variant]):.3f}-{max(times[variant]):.3f}s"
            rows.append(Row(name, f"{objective} step", variant, seconds, seconds / plain, peaks[variant], spread))
    return rows


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    columns = ("model", "inputs / objective", "method", "seconds", "ratio", "peak GiB", "notes")
    cells = [(r.model, r.what, r.method, f"{r.seconds:.3f}", "" if r.ratio is None else f"{r.ratio:.2f}",
              "" if r.peak is None else f"{max(r.peak, 0.0) / GIB:.2f}", r.note) for r in rows]
    widths = [max(len(c[i]) for c in [columns, *cells]) for i in range(len(columns))]
    for line in [columns, tuple("-" * w for w in widths), *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def main(argv=None) -> list[Row]:
    args = parse_args(argv)
    memory = Memory(args.device)
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in shapes(args):
            model = build(name, args)
            train = name != "llama-2-7b"  # 7B: float32 weights + AdamW states would not fit beside the rest
            path = save(model, Path(tmp) / name) if train else None
            rows += effect_rows(name, model, args, memory)
            del model
            if args.device.type == "cuda":
                torch.cuda.empty_cache()
            if train:
                rows += training_rows(name, path, args, memory, Path(tmp) / f"{name}-runs")
    device = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu"
    print_table(rows, f"geffect GPU benchmark on {device}, bf16, torch {torch.__version__}; ratios: seconds / engine "
                      f"(effects) or / plain step (training); total {time.perf_counter() - started:.0f}s")
    return rows


if __name__ == "__main__":
    main()
