"""Benchmark of the G-effect engine against the obvious alternatives, side by side in one run.

On a random Llama (default: hidden 384, 6 blocks, vocabulary 12288: about 20 M parameters) and
64 probe instances of 128 tokens, with the direction = gradient of gradient ascent's loss on a
forget batch, it prints:

1. engine (per-instance × per-layer) time / full-gradient batch-level inner product time
   (``model(**batch).loss.backward()`` then ``Σ grad·v``);            target ≤ 1.3
2. per-instance autograd loop (one backward per instance) time / engine time;
3. captum ``TracInCP`` (per-example gradient dot products, train = probe instances with loss
   R_i, test = the forget batch with GA's loss) time / engine time, with their agreement;
4. peak memory of the engine pass / of a plain forward+backward of the same batch (each in a
   fresh subprocess: peak RSS (VmHWM, reset after setup) minus RSS after setup on CPU,
   ``max_memory_allocated`` minus allocated after setup on CUDA);
                                                                       target ≤ 1.5
5. pairwise forget × probe matrix time / naive time (store per-instance forget gradients, then
   per-instance probe gradients in chunks of 8 and per-group matrix products), with agreement.

Times are medians over ``--repeats`` (after a warm-up) for the fast variants (1), single runs for
the loops (2, 3, 5). Run: ``python benchmarks/effects.py [--instances 64 --length 128 ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from geffect.effects import EffectProbe, oracle_effects, pairwise_effect
from geffect.effects.groups import find_sites

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=64, help="probe instances")
    parser.add_argument("--length", type=int, default=128, help="tokens per instance")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=12288)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="bfloat16 = float32 weights under bf16 autocast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attn", default="sdpa", help="attention implementation")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--forget", type=int, default=8, help="forget instances of the GA direction (captum test set)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: loop,captum,memory,pairwise")
    parser.add_argument("--memory-variant", choices=["plain", "engine"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def autocast(args):
    if args.dtype == "bfloat16":
        return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
    return torch.autocast(torch.device(args.device).type, enabled=False)


def build_model(args) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(8 * args.hidden / 3),
                         num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                         num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=args.length,
                         tie_word_embeddings=False, attn_implementation=args.attn)
    weights = torch.float64 if args.dtype == "float64" else torch.float32
    return LlamaForCausalLM(config).to(device=args.device, dtype=weights).eval()


def make_batch(args, size: int, seed: int) -> dict[str, torch.Tensor]:
    """Right-padded QA-like instances: 3/4 to full length, the first quarter is an unlabelled prompt."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, args.vocab, (size, args.length), generator=gen)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i in range(size):
        n = int(torch.randint(3 * args.length // 4, args.length + 1, (1,), generator=gen))
        mask[i, :n] = 1
        labels[i, args.length // 4:n] = ids[i, args.length // 4:n]
    ids[mask == 0] = 0
    return {k: v.to(args.device) for k, v in {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}


def instance_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-instance mean label NLL (Hugging Face shift)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return nll.sum(1) / (labels != -100).sum(1)


def ga_losses(model, batch) -> torch.Tensor:
    """Gradient ascent's per-forget-instance loss: minus the mean label NLL."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return -instance_nll(logits, batch["labels"])


def sync(args) -> None:
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()


def timed(args, fn: Callable):
    sync(args)
    start = time.perf_counter()
    out = fn()
    sync(args)
    return time.perf_counter() - start, out


def batch_level(model, batch, direction) -> float:
    """The full-gradient batch-level inner product: one backward of the batch loss, then dot."""
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    dot = sum((p.grad * direction[n]).sum() for n, p in model.named_parameters())
    model.zero_grad(set_to_none=True)
    return float(dot)


def captum_scores(args, model, probe, forget) -> torch.Tensor:
    """captum TracInCP influence of each probe instance (loss R_i) on GA's mean forget loss."""
    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    class Logits(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask).logits

    def train_loss(logits, labels):
        return instance_nll(logits, labels)

    def test_loss(logits, labels):
        return -instance_nll(logits, labels)

    train_loss.reduction = test_loss.reduction = "none"  # per-example losses, as captum expects
    train = TensorDataset(probe["input_ids"], probe["attention_mask"], probe["labels"])
    tracin = TracInCP(Logits(model), train, checkpoints=["current"], checkpoints_load_func=lambda m, path: 1.0,
                      loss_fn=train_loss, test_loss_fn=test_loss, batch_size=1, sample_wise_grads_per_batch=False)
    with autocast(args):
        scores = tracin.influence((forget["input_ids"], forget["attention_mask"], forget["labels"]), aggregate=True)
    return scores.reshape(-1).double().cpu() / forget["input_ids"].shape[0]


def naive_pairwise(args, model, forget, probe, chunk: int = 8) -> torch.Tensor:
    """Store per-instance forget gradients (flattened, grouped by layer), then per-instance probe
    gradients in chunks, and per-group matrix products."""
    sites = find_sites(model)
    params = dict(model.named_parameters())
    order = list(dict.fromkeys(s.group for s in sites))
    group_of = {name: s.group for s in sites for name in s.params.values()}
    names = sorted((n for n in params if params[n].requires_grad), key=lambda n: order.index(group_of[n]))
    ends = torch.tensor([params[n].numel() for n in names]).cumsum(0).tolist()
    bounds = {}  # group -> contiguous slice of the flattened gradient
    for name, end in zip(names, ends):
        start = bounds.get(group_of[name], (end - params[name].numel(), end))[0]
        bounds[group_of[name]] = (start, end)

    def gradient(batch, i, loss) -> torch.Tensor:
        single = {k: v[i:i + 1] for k, v in batch.items()}
        with autocast(args):
            value = loss(model, single)[0]
        return torch.cat([g.reshape(-1).float() for g in torch.autograd.grad(value, [params[n] for n in names])])

    def risk(m, b):
        return instance_nll(m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])

    n_forget, n_probe = forget["input_ids"].shape[0], probe["input_ids"].shape[0]
    stored = torch.empty(n_forget, ends[-1], dtype=torch.float32, device=args.device)
    for j in range(n_forget):
        stored[j] = gradient(forget, j, ga_losses)
    out = torch.zeros(n_forget, n_probe, len(order), dtype=torch.float64)
    for start in range(0, n_probe, chunk):
        grads = torch.stack([gradient(probe, i, risk) for i in range(start, min(start + chunk, n_probe))])
        for k, group in enumerate(order):
            a, b = bounds[group]
            out[:, start:start + grads.shape[0], k] = (stored[:, a:b] @ grads[:, a:b].T).double().cpu()
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _cpu_memory_mark() -> int:
    """Reset the peak-RSS mark (Linux ``clear_refs``) and return the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_kb("VmRSS") * 1024


def memory_child(args) -> None:
    """Run one variant once and print its peak memory above the post-setup level (JSON)."""
    model = build_model(args)
    probe = make_batch(args, args.instances, seed=1)
    direction = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    engine = EffectProbe(model) if args.memory_variant == "engine" else None
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _cpu_memory_mark()
    with autocast(args):
        if engine is not None:
            engine.measure(direction, probe)
        else:
            model(**probe).loss.backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_kb("VmHWM") * 1024
    print(json.dumps({"extra_bytes": peak - base}))


def measure_memory(argv: list[str], variant: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, __file__, *argv, "--memory-variant", variant], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_variant:
        memory_child(args)
        return
    skip = set(filter(None, args.skip.split(",")))
    model = build_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    probe = make_batch(args, args.instances, seed=1)
    forget = make_batch(args, args.forget, seed=2)
    params = dict(model.named_parameters())
    with autocast(args):
        direction = dict(zip(params, torch.autograd.grad(ga_losses(model, forget).mean(), list(params.values()))))
    print(f"Llama {n_params / 1e6:.1f} M parameters, {args.instances} probe instances x {args.length} tokens, "
          f"{args.dtype}, {args.device}, attention {args.attn}, torch threads {torch.get_num_threads()}")
    rows = []
    engine = EffectProbe(model)

    def run_engine():
        with autocast(args):
            return engine.measure(direction, probe)

    def run_batch():
        with autocast(args):
            return batch_level(model, probe, direction)

    run_engine(), run_batch()  # warm-up
    engine_times, batch_times = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        t, result = timed(args, run_engine)
        engine_times.append(t)
        t, batch_dot = timed(args, run_batch)
        batch_times.append(t)
    t_engine, t_batch = statistics.median(engine_times), statistics.median(batch_times)
    with EffectProbe(model, reduction="token") as token_probe, autocast(args):
        token_effect = float(token_probe.measure(direction, probe).total().mean())
    token_check = abs(token_effect - batch_dot) / abs(batch_dot)
    rows.append(("1 engine / batch-level inner product", t_engine / t_batch, "<= 1.3",
                 f"engine {t_engine:.2f}s, batch-level {t_batch:.2f}s; token-reduction batch effect vs "
                 f"batch-level dot rel. err {token_check:.1e}"))

    if "loop" not in skip:
        t_loop, oracle = timed(args, lambda: oracle_effects(model, direction, probe))
        rows.append(("2 per-instance loop / engine", t_loop / t_engine, "report",
                     f"loop {t_loop:.1f}s; max rel. err vs engine {rel_err(result.values, oracle.values):.1e}"))
    if "captum" not in skip:
        t_captum, scores = timed(args, lambda: captum_scores(args, model, probe, forget))
        rows.append(("3 captum TracInCP / engine", t_captum / t_engine, ">= 3",
                     f"captum {t_captum:.1f}s; rel. err vs engine {rel_err(scores, result.total()):.1e}"))
    if "memory" not in skip:
        plain, used = measure_memory(argv, "plain"), measure_memory(argv, "engine")
        rows.append(("4 peak memory engine / plain fwd+bwd", used / plain, "<= 1.5",
                     f"engine +{used / 2**20:.0f} MiB, plain +{plain / 2**20:.0f} MiB above setup"))
    if "pairwise" not in skip:
        pair_forget = make_batch(args, args.instances, seed=3)

        def run_pairwise():
            with autocast(args):
                return pairwise_effect(model, ga_losses, pair_forget, probe)

        t_pair, pairs = timed(args, run_pairwise)
        t_naive, naive = timed(args, lambda: naive_pairwise(args, model, pair_forget, probe))
        rows.append((f"5 pairwise {args.instances}x{args.instances} / naive", t_pair / t_naive, "report",
                     f"pairwise {t_pair:.1f}s, naive {t_naive:.1f}s; rel. err {rel_err(pairs.values, naive):.1e}"))

    width = max(len(r[0]) for r in rows)
    print(f"\n{'ratio':<{width}}  {'value':>7}  {'target':>7}  details")
    for name, value, target, details in rows:
        print(f"{name:<{width}}  {value:>7.3f}  {target:>7}  {details}")


if __name__ == "__main__":
    main()
