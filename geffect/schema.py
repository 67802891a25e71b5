"""Shared names of batch keys and record-table columns, so every stage speaks one vocabulary.

A *batch* is a dict of tensors in the Hugging Face causal-LM convention:
``input_ids`` and ``attention_mask`` of shape (B, T) and ``labels`` of shape (B, T)
aligned with ``input_ids`` (the model shifts them; -100 marks ignored positions).
Objectives that need extra views of a forget example (a refusal answer, a random
mismatched answer, ...) find them as nested batches under the view's name,
e.g. ``batch["idk"]["input_ids"]``.
"""

from __future__ import annotations

IGNORE_INDEX = -100
BATCH_KEYS = ("input_ids", "attention_mask", "labels")

# Long-format G-effect records: one row per step x probe x instance x layer x direction.
EFFECT_COLUMNS = ("step", "probe", "instance", "layer", "direction", "value")
# ``direction`` values: the objective's gradient (the paper's G-effect) and the applied update.
DIRECTION_GRADIENT = "gradient"
DIRECTION_UPDATE = "update"

# Fixed layer-group names; blocks are ``block.{i}``.
GROUP_EMBED = "embed"
GROUP_FINAL_NORM = "final_norm"
GROUP_HEAD = "lm_head"


def block_group(index: int) -> str:
    """Name of the layer group of transformer block ``index``."""
    return f"block.{index}"


def layer_sort_key(name: str) -> tuple[int, int, str]:
    """Order layer-group (or module) names from the embeddings to the head."""
    head, _, rest = name.partition(".")
    if name.startswith(GROUP_EMBED):
        return (0, 0, name)
    if head == "block":
        index, _, sub = rest.partition(".")
        return (1, int(index) if index.isdigit() else 0, sub)
    if name.startswith(GROUP_FINAL_NORM):
        return (2, 0, name)
    if name.startswith(GROUP_HEAD):
        return (3, 0, name)
    return (4, 0, name)
