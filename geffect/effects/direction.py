"""Directions ``v`` in parameter space: a name -> tensor mapping, or the parameters' current ``.grad``.

Names are those of ``model.named_parameters()`` (a tied weight is listed once, under its first
name). Trainable parameters missing from the mapping contribute zero, but a mapping that names
none of them is an error (its effect would be zero by construction). Values are tensors or
NumPy arrays (converted).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.distributed.tensor import DTensor

from geffect.effects.groups import Site

Direction = Mapping[str, torch.Tensor] | str


def resolve_direction(model: nn.Module, direction: Direction) -> dict[str, torch.Tensor]:
    """Check a direction against the model and return it as ``{parameter name: detached tensor}``."""
    params = dict(model.named_parameters())
    if isinstance(direction, str):
        if direction != "grad":
            raise ValueError(f"direction must be a mapping of parameter name -> tensor or the string "
                             f"'grad', got the string {direction!r}")
        resolved = {n: p.grad.detach() for n, p in params.items() if p.requires_grad and p.grad is not None}
        if not resolved:
            raise ValueError("direction='grad' but no trainable parameter has a .grad (run backward first)")
        return resolved
    if not isinstance(direction, Mapping):
        raise TypeError(f"direction must be a mapping or 'grad', got {type(direction).__name__}")
    resolved = {}
    for name, tensor in direction.items():
        if tensor is None:
            continue
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(tensor)
        if not torch.is_tensor(tensor):
            raise TypeError(f"direction entry {name!r} is a {type(tensor).__name__}; expected a tensor "
                            "(or a NumPy array) shaped like the parameter")
        if name not in params:
            raise ValueError(f"direction entry {name!r} is not a parameter of {type(model).__name__} "
                             "(use the names of model.named_parameters())")
        param = params[name]
        if not param.requires_grad:
            raise ValueError(f"direction entry {name!r} is a frozen parameter (requires_grad=False); "
                             "effects are measured over trainable parameters only")
        if tuple(tensor.shape) != tuple(param.shape):
            raise ValueError(f"direction entry {name!r} has shape {tuple(tensor.shape)} but the parameter "
                             f"has shape {tuple(param.shape)}")
        resolved[name] = tensor.detach()
    if not resolved:
        raise ValueError("the direction names no parameter (an empty mapping, or only None values): its "
                         "G-effect would be zero by construction; pass {name: tensor} for trainable parameters "
                         "of model.named_parameters(), or 'grad'")
    return resolved


def site_directions(sites: list[Site], resolved: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor] | None]:
    """Per site: its parameters' direction (cast to each parameter's device/dtype), or None if none."""
    out: list[dict[str, torch.Tensor] | None] = []
    for site in sites:
        own = {ln: site.module.get_parameter(ln) for ln in site.params}
        local = {ln: resolved[gn].to(device=own[ln].device, dtype=own[ln].dtype)
                 for ln, gn in site.params.items() if gn in resolved}
        out.append(local or None)
    return out


def gathered(v: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """A site's direction with sharded tensors (FSDP2 ``DTensor``) gathered whole, for one contraction.

    Called by every process for the same module in the same order (the backward visits modules
    identically on each), like FSDP's own per-module gathers of the weights; the full tensors are
    dropped as soon as that module's contraction is done, so only one module's direction is ever
    whole at once.
    """
    if v is None or not any(isinstance(t, DTensor) for t in v.values()):
        return v
    return {name: t.full_tensor() if isinstance(t, DTensor) else t for name, t in v.items()}
