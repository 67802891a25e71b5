"""How many nucleus-sampled tokens of a label-smoothed target come from the smoothing's floor.

Label smoothing (the shipped models use 0.2) leaves about 0.2 / vocabulary of probability on every
token. Nucleus sampling at top-p 0.9 (the toxicity suite's ``SAMPLING``, top-k off) then reaches into that
floor whenever the right token holds less than 0.9. This script samples continuations of held-out
toxicity prompts the way the suite does and counts the sampled tokens the model itself gives a
probability under ``--floor`` (default 1e-3). The README's language-functions section quotes it.

Run: ``python analyses/sampling_floor.py [--model tiny] [--prompts 48]``.
"""

from __future__ import annotations

import argparse

import torch

import geffect
from geffect.data.loader import load_rows
from geffect.data.task_store import default_tasks_dir
from geffect.tasks.toxicity import SAMPLING


def floor_share(model, tokenizer, prompts: list[str], floor: float, seed: int = 0) -> tuple[int, int]:
    """(sampled tokens under ``floor``, sampled tokens) over one continuation of 32 tokens per prompt."""
    torch.manual_seed(seed)
    low = total = 0
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        start = ids["input_ids"].shape[1]
        sequence = model.generate(**ids, do_sample=True, temperature=SAMPLING.temperature, top_p=SAMPLING.top_p,
                                  top_k=0, max_new_tokens=32, pad_token_id=tokenizer.pad_token_id)
        new = sequence[0, start:]
        with torch.no_grad():
            logits = model(sequence).logits[0, start - 1:-1]
        probability = torch.softmax(logits.float(), -1).gather(-1, new[:, None]).squeeze(-1)
        kept = new != tokenizer.pad_token_id
        low += int((probability[kept] < floor).sum())
        total += int(kept.sum())
    return low, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompts", type=int, default=48, help="held-out prompts per set (default 48)")
    parser.add_argument("--floor", type=float, default=1e-3, help="probability counted as floor (default 1e-3)")
    args = parser.parse_args()
    model, tokenizer = geffect.load_model(args.model, device="cpu")
    for split in ("nontoxic_heldout", "toxic_heldout"):
        rows = load_rows(default_tasks_dir() / "toxicity" / f"{split}.jsonl").select(range(args.prompts))
        low, total = floor_share(model, tokenizer, [row["prompt"] for row in rows], args.floor)
        print(f"{split}: {low} of {total} sampled tokens ({low / total:.3f}) under probability {args.floor:g}")


if __name__ == "__main__":
    main()
