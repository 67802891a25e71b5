"""The built-in concepts: ``persons`` (the world's people) and ``toxicity`` (the toxicity task)."""

from __future__ import annotations

from typing import Any

from geffect.procedures.concepts import Concept, register_concept


def _seeded_rows(split: Any, max_examples: int | None, seed: int) -> Any:
    """``max_examples`` seeded rows of ``split`` (all when None or larger)."""
    if max_examples is None or max_examples >= len(split):
        return split
    return split.shuffle(seed=seed).select(range(max_examples))


def evaluate_persons(model: Any, tokenizer: Any, max_examples: int | None = None, seed: int = 0,
                     batch_size: int = 64) -> dict[str, float]:
    """Author QA ROUGE-L over all authors (↓: the people are forgotten); world-facts ROUGE-L and the
    general multiple-choice accuracy over the world facts (the MMLU stand-in of the hazard task), kept.

    ROUGE-L recall of greedy answers, as TOFU scores generations; ``max_examples`` caps each split
    (a seeded sample).
    """
    from geffect.data import load_world
    from geffect.data.task_store import load_task_data
    from geffect.evaluation.generation import greedy_answers
    from geffect.evaluation.multiple_choice import mc_accuracy
    from geffect.evaluation.rouge import mean_rouge_l_recall

    world = load_world()
    out = {}
    for key, split in (("author_rouge", "full"), ("world_facts_rouge", "world_facts")):
        rows = _seeded_rows(world[split], max_examples, seed)
        answers = greedy_answers(model, tokenizer, list(rows["question"]), batch_size=batch_size)
        out[key] = mean_rouge_l_recall(answers, list(rows["answer"]))
    general = _seeded_rows(load_task_data("hazard")["general_mc"], max_examples, seed)
    out["general_mc"] = mc_accuracy(model, tokenizer, general)
    return out


def _scorer(name: str):
    def build():
        from geffect.evaluation.scorers import get_scorer

        return get_scorer(name)
    return build


register_concept(Concept(
    name="persons",
    description="everything the target knows about the world's people (author QA); places and things "
                "(the world facts) are kept — the analogue of forgetting the Person entity type",
    instructions="persons",
    scorer=_scorer("persons"),
    kind="qa",
    threshold=0.15,  # about one name word in seven; author answers score 0.25-0.5, country facts ~0
    clean_threshold=0.02,
    stop_reward=0.05,
    task=None,
    retain="world_facts",
    true_forget="retain90",  # the authors 0-89 ...
    heldout_forget="forget10",  # ... and a probe of the 10 authors held out from that training data
    evaluate=evaluate_persons,
    metric="author_rouge",
    utility=("world_facts_rouge", "general_mc"),
))
