"""Reveal: find the instructions that make the model show a concept, and collect what it shows.

1. Every instruction of the concept's pool becomes a prompt (the QA format for ``qa`` concepts,
   raw text for ``prompt`` concepts) and a context vector: the model's last hidden state,
   mean-pooled over the prompt's tokens.
2. A bandit (:class:`~geffect.procedures.bandit.NeuralUCB`, or uniform random choice as the
   ablation) plays ``rounds`` rounds; pulling an instruction samples ``k`` completions at
   ``temperature`` and is rewarded with their mean scorer value.
3. The ``top_instructions`` instructions with the highest mean observed reward (random ones for
   the random policy) each give ``completions`` seeded samples; completions scoring at least the
   concept's threshold are the self-generated forget data, those under its clean threshold join
   the retain data; both are deduplicated.

Interpretation of Xie et al. 2025 (Reveal and Release, arXiv:2509.14624) as issue #11 reads it;
every number here is a parameter of :class:`~geffect.procedures.reveal_release.RevealReleaseConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from geffect.procedures.bandit import BanditLog, NeuralUCB, RandomArms, play
from geffect.procedures.concepts import Concept
from geffect.training.data import stable_seed

POLICIES = ("neural_ucb", "random")


def instruction_prompt(tokenizer: Any, concept: Concept, instruction: str) -> list[int]:
    """Token ids the model continues for ``instruction``: the QA prompt, or the raw prompt text."""
    from geffect.data.rows import generation_prompt

    row = {"question": instruction, "answer": ""} if concept.kind == "qa" else {"prompt": instruction, "response": ""}
    return generation_prompt(tokenizer, row)[0]


def concept_row(concept: Concept, instruction: str, completion: str) -> dict[str, str]:
    """A training row of the concept's kind holding ``instruction`` and its ``completion``."""
    if concept.kind == "qa":
        return {"question": instruction, "answer": completion}
    return {"prompt": instruction, "response": " " + completion}


@torch.no_grad()
def context_vectors(model: Any, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean-pooled last hidden state of ``model`` on each prompt (arms × hidden size)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for ids in prompts:
        hidden = model(input_ids=torch.tensor([list(ids)], device=device), output_hidden_states=True).hidden_states
        out.append(hidden[-1][0].float().mean(dim=0).cpu())
    model.train(was_training)
    return torch.stack(out)


def sample_completions(model: Any, tokenizer: Any, prompt: Sequence[int], n: int, *, temperature: float = 1.0,
                       top_p: float = 1.0, max_new_tokens: int = 32, seed: int = 0) -> list[str]:
    """``n`` seeded completions of one prompt sampled at ``temperature`` (nucleus ``top_p``)."""
    from geffect.evaluation.generation import Sampling, continue_prompts

    sampling = Sampling(temperature=temperature, top_p=top_p, samples=n, seed=seed)
    return continue_prompts(model, tokenizer, [prompt], max_new_tokens, sampling, batch_size=max(n, 1))


@dataclass
class RevealResult:
    """One Reveal: the bandit's rounds, per-instruction rewards, and the revealed rows."""

    rounds: pd.DataFrame  # round, arm, instruction, reward, mu, bonus
    instructions: pd.DataFrame  # arm, instruction, pulls, mean_reward
    best_reward: float
    chosen: list[int]  # arms whose completions became data
    completions: pd.DataFrame  # instruction, completion, score, kept ("forget" | "retain" | "")
    forget_rows: list[dict[str, str]]
    retain_rows: list[dict[str, str]]


def reveal(model: Any, tokenizer: Any, concept: Concept, scorer: Any, *, policy: str = "neural_ucb",
           rounds: int = 60, initial: int = 5, k: int = 4, width: int = 100, nu: float = 1.0, lam: float = 1e-3,
           temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 32, top_instructions: int = 8,
           completions: int = 32, max_forget: int | None = None, max_retain: int | None = None,
           threshold: float | None = None, clean_threshold: float | None = None,
           seed: int = 0, progress: bool = True, instructions: Sequence[str] | None = None) -> RevealResult:
    """Run one Reveal on ``model`` (see the module docstring); ``seed`` makes it deterministic.

    ``threshold`` / ``clean_threshold`` (default: the concept's) split the sampled completions into
    forget data (score >= threshold) and clean retain data (score < clean_threshold).
    """
    threshold = concept.threshold if threshold is None else threshold
    clean_threshold = concept.clean_threshold if clean_threshold is None else clean_threshold
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {list(POLICIES)}, got {policy!r}")
    pool = list(instructions) if instructions is not None else concept.pool()
    prompts = [instruction_prompt(tokenizer, concept, text) for text in pool]
    if policy == "neural_ucb":
        bandit: NeuralUCB | RandomArms = NeuralUCB(context_vectors(model, prompts), width=width, nu=nu, lam=lam,
                                                   initial=initial, seed=seed)
    else:
        bandit = RandomArms(len(pool), seed=seed)

    def reward(arm: int, round_: int) -> float:
        texts = sample_completions(model, tokenizer, prompts[arm], k, temperature=temperature, top_p=top_p,
                                   max_new_tokens=max_new_tokens, seed=stable_seed(seed, "round", round_))
        return float(sum(scorer.score(texts)) / k)

    log = play(bandit, reward, rounds, progress=progress, desc=f"reveal ({policy})")
    chosen = _chosen_arms(log, policy, len(pool), top_instructions, seed)
    table = _sampled_table(model, tokenizer, concept, scorer, pool, prompts, chosen, completions,
                           temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    forget = _dedup(table[table["score"] >= threshold], max_forget)
    clean = _dedup(table[table["score"] < clean_threshold], max_retain)
    table["kept"] = ""
    table.loc[forget.index, "kept"] = "forget"
    table.loc[clean.index, "kept"] = "retain"
    rounds_frame = log.rounds.assign(instruction=[pool[a] for a in log.rounds["arm"]])
    pulls = rounds_frame.groupby("arm")["reward"].agg(["count", "mean"])
    per_arm = pd.DataFrame({"arm": range(len(pool)), "instruction": pool})
    per_arm["pulls"] = per_arm["arm"].map(pulls["count"]).fillna(0).astype(int)
    per_arm["mean_reward"] = per_arm["arm"].map(pulls["mean"])
    return RevealResult(
        rounds=rounds_frame, instructions=per_arm, best_reward=log.best_reward, chosen=chosen, completions=table,
        forget_rows=[concept_row(concept, r.instruction, r.completion) for r in forget.itertuples()],
        retain_rows=[concept_row(concept, r.instruction, r.completion) for r in clean.itertuples()],
    )


def _chosen_arms(log: BanditLog, policy: str, n_arms: int, count: int, seed: int) -> list[int]:
    """The best-rewarded pulled arms, or (random policy) a seeded random choice of arms."""
    if policy == "random":
        generator = torch.Generator().manual_seed(stable_seed(seed, "random-instructions"))
        return sorted(torch.randperm(n_arms, generator=generator)[:count].tolist())
    return log.top_arms(count)


def _sampled_table(model: Any, tokenizer: Any, concept: Concept, scorer: Any, pool: Sequence[str],
                   prompts: Sequence[Sequence[int]], arms: Sequence[int], n: int, *, seed: int,
                   **sampling: Any) -> pd.DataFrame:
    rows = []
    for arm in arms:
        texts = sample_completions(model, tokenizer, prompts[arm], n, seed=stable_seed(seed, "data", arm), **sampling)
        for text, score in zip(texts, scorer.score(texts)):
            rows.append({"arm": arm, "instruction": pool[arm], "completion": text, "score": float(score)})
    return pd.DataFrame(rows, columns=["arm", "instruction", "completion", "score"])


def _dedup(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """Rows with distinct non-empty completions (first kept), at most ``limit``."""
    frame = frame[frame["completion"].str.strip() != ""].drop_duplicates("completion")
    return frame if limit is None else frame.head(limit)
