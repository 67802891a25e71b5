"""TOFU evaluation of a model on the embedded world (or on real TOFU): ``geffect.evaluate``.

Per split it computes the three TOFU scores (probability, ROUGE-L recall of greedy
answers, truth-ratio score; formulas in ``metrics``) and combines them as TOFU does:
forget quality from the forget split's truth ratios against a retain model's, model
utility as the harmonic mean of the scores on the retain, world-facts (and, when the
data has them, real-authors) splits. Maini et al. 2024, "TOFU: A Task of Fictitious
Unlearning for LLMs".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
import torch

from geffect.evaluation import generation, metrics, rouge
from geffect.evaluation.scoring import answer_nlls, perturbed_nlls

__all__ = ["SplitScores", "evaluate", "forget_truth_ratios", "score_split"]

# How each role is scored: the base answer of the truth ratio, the probability form, the
# truth-ratio transform. World facts and real authors use the plain answer as base and the
# multiple-choice probability (TOFU's eval_real_world_wo_options / real_author tasks).
_ROLES = {
    "forget": ("paraphrased_answer", "plain", "forget"),
    "retain": ("paraphrased_answer", "plain", "utility"),
    "facts": ("answer", "multiple_choice", "utility"),
}
_GENERATION_MARGIN = 8  # greedy tokens allowed beyond the longest reference answer


@dataclass
class SplitScores:
    """TOFU scores of one split, with the per-question truth ratios they came from."""

    probability: float
    rouge: float
    truth_ratio: float
    ratios: np.ndarray
    n: int


def _columns(split: Any, max_examples: int | None) -> dict[str, list]:
    """The first ``max_examples`` rows of a Dataset / list of dicts / dict of lists, as columns."""
    if isinstance(split, Mapping):
        columns = {k: list(v) for k, v in split.items()}
    elif hasattr(split, "column_names"):  # datasets.Dataset
        columns = {k: list(split[k]) for k in split.column_names}
    else:
        rows = list(split)
        columns = {k: [row[k] for row in rows] for k in (rows[0] if rows else {})}
    n = len(next(iter(columns.values()), []))
    if n == 0:
        raise ValueError("cannot evaluate an empty split")
    if max_examples is not None:
        if max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {max_examples}")
        columns = {k: v[:max_examples] for k, v in columns.items()}
    return columns


def _require(columns: Mapping[str, list], keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in columns]
    if missing:
        raise ValueError(f"split {where!r} lacks the TOFU column(s) {missing}; it has {sorted(columns)}")


def _generation_budget(tokenizer: Any, answers: Sequence[str]) -> int:
    longest = max(len(tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in answers)
    return longest + 1 + _GENERATION_MARGIN


def score_split(model: torch.nn.Module, tokenizer: Any, split: Any, role: str, *, name: str = "split",
                max_examples: int | None = None, batch_size: int = 32, max_new_tokens: int | None = None,
                truth_mean: str = "geometric", progress: bool = False) -> SplitScores:
    """Probability, ROUGE-L recall and truth-ratio score of ``split`` in ``role``.

    ``role``: ``"forget"`` (truth score min(R, 1/R)), ``"retain"`` (max(0, 1 - R)) or
    ``"facts"`` (world facts / real authors: multiple-choice probability, R against the
    plain answer, max(0, 1 - R)).
    """
    if role not in _ROLES:
        raise ValueError(f"role must be one of {sorted(_ROLES)}, got {role!r}")
    base_key, probability_form, truth_form = _ROLES[role]
    columns = _columns(split, max_examples)
    _require(columns, ["question", "answer", base_key, "perturbed_answer"], name)
    questions, answers = columns["question"], columns["answer"]
    kwargs = dict(batch_size=batch_size, progress=progress)

    answer_nll = answer_nlls(model, tokenizer, questions, answers, desc=f"{name} answers", **kwargs)
    base_nll = answer_nll if base_key == "answer" else answer_nlls(
        model, tokenizer, questions, columns[base_key], desc=f"{name} paraphrases", **kwargs)
    wrong_nll = perturbed_nlls(model, tokenizer, questions, columns["perturbed_answer"], **kwargs)

    if probability_form == "plain":
        probability = metrics.normalized_probability(answer_nll).mean()
    else:
        probability = metrics.multiple_choice_probability(answer_nll, wrong_nll).mean()
    ratios = metrics.truth_ratio(base_nll, wrong_nll, mean=truth_mean)
    budget = max_new_tokens or _generation_budget(tokenizer, answers)
    generated = generation.greedy_answers(model, tokenizer, questions, max_new_tokens=budget,
                                          batch_size=batch_size, progress=progress)
    return SplitScores(probability=float(probability), rouge=float(rouge.mean_rouge_l_recall(generated, answers)),
                       truth_ratio=metrics.truth_ratio_score(ratios, truth_form), ratios=ratios, n=len(questions))


def _resolve_world(world: Any) -> Mapping[str, Any]:
    if world is None or isinstance(world, (str, PathLike)):
        from geffect.data import load_world

        return load_world() if world is None else load_world(world)
    if not isinstance(world, Mapping):
        raise TypeError(f"world must be a DatasetDict / mapping of splits or a path, got {type(world).__name__}")
    return world


def _pick(world: Mapping[str, Any], candidates: Sequence[str], what: str) -> str:
    for name in candidates:
        if name in world:
            return name
    raise ValueError(f"no {what} split: looked for {list(candidates)}; the data has {sorted(world)}")


def forget_truth_ratios(model: torch.nn.Module, tokenizer: Any, world: Any = None, forget_split: str = "forget10",
                        max_examples: int | None = None, batch_size: int = 32, truth_mean: str = "geometric",
                        progress: bool = False) -> np.ndarray:
    """Truth ratios of ``model`` on the forget split's questions (no generation).

    Compute them once for the retain model and pass them to :func:`evaluate` as
    ``retain_truth_ratios`` to get forget quality for many unlearned models.
    """
    world = _resolve_world(world)
    name = _pick(world, [f"{forget_split}_perturbed", forget_split], "forget")
    columns = _columns(world[name], max_examples)
    _require(columns, ["question", "paraphrased_answer", "perturbed_answer"], name)
    kwargs = dict(batch_size=batch_size, progress=progress)
    base = answer_nlls(model, tokenizer, columns["question"], columns["paraphrased_answer"],
                       desc=f"{name} paraphrases", **kwargs)
    wrong = perturbed_nlls(model, tokenizer, columns["question"], columns["perturbed_answer"], **kwargs)
    return metrics.truth_ratio(base, wrong, mean=truth_mean)


def _load_retain(retain_model: Any, tokenizer: Any) -> tuple[torch.nn.Module, Any]:
    if isinstance(retain_model, (str, PathLike)):
        from geffect.models import load

        return load(str(retain_model))
    return retain_model, tokenizer


def evaluate(model: torch.nn.Module, tokenizer: Any, world: Any = None, forget_split: str = "forget10",
             retain_model: Any = None, retain_truth_ratios: Sequence[float] | None = None,
             max_examples: int | None = None, batch_size: int = 32, progress: bool = True,
             max_new_tokens: int | None = None, truth_mean: str = "geometric") -> dict[str, Any]:
    """TOFU metrics of ``model`` as a flat, JSON-serialisable dict.

    ``world``: a DatasetDict (TOFU schema) or its root folder; default the embedded world.
    Splits used (a ``_perturbed`` view is preferred, as TOFU's evaluation files are):
    ``{forget_split}_perturbed``, ``retain_perturbed``, ``world_facts_perturbed`` (else
    ``world_facts``) and, if present, ``real_authors_perturbed`` (else ``real_authors``).
    ``retain_model`` (a model sharing ``tokenizer``, or a name/path for
    ``geffect.models.load``) or precomputed
    ``retain_truth_ratios`` (same forget questions, see :func:`forget_truth_ratios`) enable
    ``forget_quality``; without either that key is absent. ``max_examples`` caps every
    split (first rows); ``max_new_tokens`` defaults to the longest reference answer + 8.

    Keys: ``{split}_prob``, ``{split}_rouge``, ``{split}_truth_ratio`` for split in forget,
    retain, world_facts (real_authors), ``model_utility``, ``forget_quality``,
    ``forget_ks_statistic``, ``n_{split}``, ``forget_split``; and ``undefined``, the keys whose
    value is NaN because the model's answer likelihoods are not finite (a diverged model).
    """
    world = _resolve_world(world)
    plan = [
        ("forget", _pick(world, [f"{forget_split}_perturbed", forget_split], "forget"), "forget"),
        ("retain", _pick(world, ["retain_perturbed"], "retain evaluation"), "retain"),
        ("world_facts", _pick(world, ["world_facts_perturbed", "world_facts"], "world facts"), "facts"),
    ]
    for name in ("real_authors_perturbed", "real_authors"):
        if name in world:
            plan.append(("real_authors", name, "facts"))
            break
    options = dict(max_examples=max_examples, batch_size=batch_size, max_new_tokens=max_new_tokens,
                   truth_mean=truth_mean, progress=progress)
    scores = {key: score_split(model, tokenizer, world[split], role, name=split, **options)
              for key, split, role in plan}

    result: dict[str, Any] = {"forget_split": forget_split}
    for key, s in scores.items():
        result.update({f"{key}_prob": s.probability, f"{key}_rouge": s.rouge,
                       f"{key}_truth_ratio": s.truth_ratio, f"n_{key}": s.n})
    utility = [v for key, s in scores.items() if key != "forget" for v in (s.probability, s.rouge, s.truth_ratio)]
    result["model_utility"] = metrics.model_utility(utility)

    reference = None
    if retain_truth_ratios is not None:
        reference = np.asarray(retain_truth_ratios, dtype=np.float64)
    elif retain_model is not None:
        retain, retain_tokenizer = _load_retain(retain_model, tokenizer)
        reference = forget_truth_ratios(retain, retain_tokenizer, world, forget_split, max_examples,
                                        batch_size, truth_mean, progress)
    if reference is not None:
        ratios = scores["forget"].ratios
        if reference.shape != ratios.shape:
            raise ValueError(f"retain truth ratios cover {reference.size} forget questions but {ratios.size} "
                             "were evaluated; compute both on the same questions (same max_examples)")
        result["forget_quality"], result["forget_ks_statistic"] = metrics.forget_quality(ratios, reference)
    return metrics.name_undefined(result)
