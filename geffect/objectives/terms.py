"""Shared building blocks of the objectives: token log-probabilities, per-instance
likelihoods, KL to a reference model and hidden states at a transformer block.

Every objective is written from these, so the causal shift, the ``-100`` label masking
and the per-instance averaging are defined once. Conventions (used by the whole package):

* a batch follows the Hugging Face causal-LM convention (``geffect.schema``): ``labels``
  aligned with ``input_ids``; the token at position t+1 is predicted from position t;
* the *per-instance NLL* of example i is the mean token NLL over its label tokens, the
  risk R_i that the G-effect engine measures; a likelihood term on a batch is the mean of
  these over instances (each example counts once whatever its answer length).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from geffect.schema import IGNORE_INDEX

__all__ = [
    "TokenLogProbs",
    "batch_view",
    "decoder_blocks",
    "forward_logits",
    "hidden_states_at",
    "hidden_states_at_blocks",
    "instance_mean",
    "kl_to_reference",
    "model_device",
    "reference_logprobs",
    "sequence_nll",
    "token_logprobs",
    "token_logprobs_from_logits",
]


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter."""
    return next(model.parameters()).device


def batch_view(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The model inputs of ``batch`` (input_ids, attention_mask, labels) on ``device``."""
    missing = [k for k in ("input_ids", "attention_mask") if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; it has keys {sorted(batch)}")
    return {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels") if k in batch}


def forward_logits(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits (B, T, V) of ``model`` on ``batch``; half precision is upcast to float32."""
    inputs = batch_view(batch, model_device(model))
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits


@dataclass
class TokenLogProbs:
    """Log-probabilities of the label tokens after the causal shift.

    ``logp[i, t]`` = log p(labels[i, t+1] | tokens ≤ t) where ``mask[i, t]`` is true, else 0;
    both of shape (B, T-1).
    """

    logp: torch.Tensor
    mask: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        """Number of label tokens per instance (B,)."""
        return self.mask.sum(dim=1)

    def sequence(self) -> torch.Tensor:
        """log π(y|x) per instance: the sum of the label-token log-probs (B,)."""
        return self.logp.sum(dim=1)

    def mean(self) -> torch.Tensor:
        """Mean label-token log-prob per instance (B,)."""
        return self.sequence() / self.counts


def token_logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> TokenLogProbs:
    """Shift ``logits``/``labels`` and gather the label tokens' log-probs (see TokenLogProbs)."""
    labels = labels.to(logits.device)
    shifted_logits = logits[:, :-1, :]
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    empty = (~mask).all(dim=1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"batch rows {empty} have no label tokens (all labels are {IGNORE_INDEX} after "
                         "the causal shift); every example needs at least one answer token")
    # cross_entropy avoids materialising a full log-softmax copy; ignored positions give 0.
    nll = F.cross_entropy(shifted_logits.transpose(1, 2), shifted_labels, ignore_index=IGNORE_INDEX,
                          reduction="none")
    return TokenLogProbs(logp=-nll, mask=mask)


def token_logprobs(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> TokenLogProbs:
    """Label-token log-probs of ``model`` on ``batch`` (forward pass included)."""
    if "labels" not in batch:
        raise KeyError(f"batch lacks 'labels'; it has keys {sorted(batch)}")
    return token_logprobs_from_logits(forward_logits(model, batch), batch["labels"])


def reference_logprobs(ref_model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> TokenLogProbs:
    """Label-token log-probs of a frozen reference model (no graph is built)."""
    with torch.no_grad():
        return token_logprobs(ref_model, batch)


def instance_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, T) over the positions where ``mask`` is true, per row (B,)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim=1) / mask.sum(dim=1)


def sequence_nll(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-instance NLL: mean token NLL over each example's label tokens (B,)."""
    return -token_logprobs(model, batch).mean()


def kl_to_reference(model: torch.nn.Module, ref_model: torch.nn.Module,
                    batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-instance KL(π_ref ‖ π_θ) of the next-token distributions (B,).

    The KL is summed over the vocabulary at every real position (``attention_mask`` = 1)
    and averaged over those positions per example. This is the direction of the KL terms
    of TOFU's KL baseline (Maini et al. 2024) and of Yao et al. (2023); its gradient is
    that of the cross-entropy -Σ π_ref log π_θ, since the reference entropy is constant.
    """
    logits = forward_logits(model, batch)
    with torch.no_grad():
        ref_logits = forward_logits(ref_model, batch)
    logq = F.log_softmax(logits, dim=-1)
    logp_ref = F.log_softmax(ref_logits.to(logq.dtype), dim=-1)
    kl = (logp_ref.exp() * (logp_ref - logq)).sum(dim=-1)
    mask = batch["attention_mask"].to(kl.device).bool()
    return instance_mean(kl, mask)


# ------------------------------------------------------------------------------------------
# Hidden states at a transformer block
# ------------------------------------------------------------------------------------------
def _num_layers(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell how many transformer blocks {type(model).__name__} has "
                     "(its config has no num_hidden_layers / n_layer)")


def decoder_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's list of transformer blocks and its module path (e.g. ``model.layers``).

    Found as the shallowest ``ModuleList`` whose length is the config's layer count, which
    covers Llama, GPT-2, GPT-NeoX and peft-wrapped models alike.
    """
    n = _num_layers(model)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return name, module
    raise ValueError(f"found no list of {n} transformer blocks in {type(model).__name__}")


def check_layer(model: torch.nn.Module, layer: int) -> int:
    """``layer`` validated against the model's block count (negative counts from the end)."""
    n = _num_layers(model)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range: the model has {n} transformer blocks (0..{n - 1})")
    return layer % n


def hidden_states_at(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Output (B, T, H) of transformer block ``layer`` (0-based) on ``batch``.

    Read with a forward hook on the block, so it is the residual stream right after the
    block whatever the architecture (no final norm applied, unlike the last entry of
    ``output_hidden_states``). The graph is kept for backward; see :func:`hidden_states_at_blocks`
    for where the forward pass stops.
    """
    return hidden_states_at_blocks(model, batch, [layer])[check_layer(model, layer)]


class _Captured(Exception):
    """Raised by the hook of the deepest block asked for: the rest of the forward pass is not needed."""


def hidden_states_at_blocks(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                            layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Outputs (B, T, H) of several transformer blocks from one forward pass, by block index.

    Same reading as :func:`hidden_states_at` (a forward hook on each block); the graph is kept.
    The pass stops right after the deepest of ``layers`` (later blocks and the head never run),
    except under ``torch.distributed``, where wrappers such as DDP prepare gradient syncing only
    when their forward returns: there the full pass runs.
    """
    stop = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    layers = sorted({check_layer(model, layer) for layer in layers})
    _, blocks = decoder_blocks(model)
    captured: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def hook(layer, _module, _inputs, output):
        captured[layer].append(output[0] if isinstance(output, tuple) else output)
        if stop and layer == layers[-1]:
            raise _Captured

    handles = [blocks[layer].register_forward_hook(partial(hook, layer)) for layer in layers]
    try:
        inputs = batch_view(batch, model_device(model))
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    for layer, outputs in captured.items():
        if len(outputs) != 1:
            raise RuntimeError(f"block {layer} ran {len(outputs)} times in one forward pass; expected once")
    return {layer: outputs[0] for layer, outputs in captured.items()}
