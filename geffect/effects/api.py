"""``gradient_effect``: the one-shot, DataFrame-returning entry point to the engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from geffect.effects.direction import Direction
from geffect.effects.probe import EffectProbe
from geffect.effects.tokens import token_effect

BY_KEYS = ("instance", "layer", "module", "token")


def gradient_effect(model: nn.Module, direction: Direction, batch: Mapping,
                    by: Sequence[str] = ("instance", "layer"), reduction: str = "instance",
                    chunk_size: int | None = None, dtype: torch.dtype | None = None) -> pd.DataFrame:
    """G-effects ``<∇R_i, v>`` of ``direction`` on the instances of ``batch``, as a long DataFrame.

    ``by`` picks the breakdown: ``"instance"`` (batch row; without it values are averaged over
    instances, i.e. the batch G-effect), ``"layer"`` (embed, block.i, final_norm, lm_head),
    ``"module"`` (e.g. ``block.3.mlp.down_proj``; implies ``layer``), ``"token"`` (per label token,
    the effect on that token's NLL; needs ``"instance"``). Without ``layer``/``module`` values are
    summed over layers. ``direction``: mapping parameter name -> tensor, or ``"grad"``. ``dtype``:
    measure in that precision (e.g. ``torch.float32`` for a bf16 model; see ``EffectProbe``).
    Columns: the requested keys (``token`` adds ``token_id`` and ``nll``) and ``value``.
    """
    by = tuple(by)
    unknown = sorted(set(by) - set(BY_KEYS))
    if unknown:
        raise ValueError(f"unknown 'by' key(s) {unknown}; choose from {BY_KEYS}")
    granularity = "module" if "module" in by else "layer" if "layer" in by else None
    if "token" in by:
        if "instance" not in by:
            raise ValueError("by=('token', ...) needs 'instance' too (tokens belong to instances)")
        if reduction != "instance":
            raise ValueError("per-token effects do not depend on the reduction; leave reduction='instance'")
        return token_effect(model, direction, batch, granularity=granularity, chunk_size=chunk_size, dtype=dtype)
    with EffectProbe(model, granularity=granularity or "layer", reduction=reduction, dtype=dtype) as probe:
        frame = probe.measure(direction, batch, chunk_size=chunk_size).to_frame()
    keys = [k for k in ("instance", "layer", "module") if k in frame and (k in by or (k == "layer" and granularity))]
    if "instance" not in by:
        # batch G-effect: mean over instances of each column
        frame = frame.groupby([k for k in keys if k != "instance"], sort=False, as_index=False)["value"].mean()
    elif granularity is None:
        frame = frame.groupby("instance", sort=False, as_index=False)["value"].sum()
    return frame.reset_index(drop=True)
