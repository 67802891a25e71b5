"""One or several processes: the trainer's only view of distribution.

Launched normally, a run is one process (:class:`SingleProcess`, where every operation
is the identity). Launched by ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1),
:class:`AccelerateProcesses` sets the process group up through ``accelerate``
(gloo on CPU, NCCL on GPUs) and the trainer:

* splits each training batch into contiguous per-process shares and averages the
  gradients with one all-reduce per optimiser step. This is the arithmetic of DDP (each
  process's loss is a mean over its share, so with equal shares the average equals the
  single-process gradient of the whole batch), done explicitly because objectives call
  the bare model (its ``config``, its blocks), which a DDP wrapper would hide, and
  because one reduction per step is all gradient accumulation needs;
* splits each probe set into contiguous shares, measures each share's G-effects on its
  process and gathers them in rank order, so the records equal a single-process run's;
* writes records and checkpoints on rank 0 only.

With ``fsdp`` (:class:`ShardedProcesses`), parameters, gradients and optimiser states are
sharded across the processes by FSDP2 (``torch.distributed.fsdp.fully_shard``) instead: each
process holds 1/N of every tensor, each block's weights are gathered just before it runs and
freed after, and backward reduce-scatters (averages) the gradients. The G-effect engine
gathers a module's direction (objective gradient, update) the same way, per module and only
for its contraction (``geffect.effects.direction.gathered``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

_BUCKET = 1 << 25  # elements per gradient all-reduce


class SingleProcess:
    """The default: one process, every collective a no-op."""

    rank = 0
    world_size = 1
    is_main = True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate each process's ``tensor`` along dim 0, in rank order."""
        return tensor

    def mean(self, value: float) -> float:
        """The mean of a scalar over processes."""
        return value

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each ``.grad`` with its mean over processes."""

    def barrier(self) -> None:
        """Wait for every process."""

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as this process set trains it (here: unchanged)."""
        return model

    def grad_norm(self, grads: list[torch.Tensor]) -> float:
        """The global 2-norm of the gradients."""
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0

    def reshard(self, model: torch.nn.Module) -> None:
        """Release gathered weights (sharded models only)."""

    def full_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Whole tensors of a (possibly sharded) name -> tensor state, for a checkpoint."""
        return state

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimiser's state as a checkpoint stores it."""
        return optimizer.state_dict()

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Restore what :meth:`optimizer_state` saved."""
        optimizer.load_state_dict(state)

    def load_params(self, model: torch.nn.Module, params: dict[str, torch.Tensor], where: str) -> None:
        """Copy a checkpoint's whole trainable tensors into the model."""
        from geffect.training.modeling import load_trainable

        load_trainable(model, params, where)


class AccelerateProcesses(SingleProcess):
    """Several processes set up by ``accelerate.PartialState`` (see the module docstring)."""

    def __init__(self, cpu: bool) -> None:
        from accelerate import PartialState

        self.state = PartialState(cpu=cpu)
        self.rank = self.state.process_index
        self.world_size = self.state.num_processes
        self.is_main = self.state.is_main_process
        super().__init__(self.state.device)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        from accelerate.utils import gather_object

        return torch.cat(gather_object([tensor.cpu()]))

    def mean(self, value: float) -> float:
        from accelerate.utils import reduce

        return float(reduce(torch.tensor([value], dtype=torch.float64, device=self.device), "mean"))

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        from accelerate.utils import reduce

        grads = [p.grad for p in params if p.grad is not None]
        for dtype in {g.dtype for g in grads}:
            same = [g for g in grads if g.dtype == dtype]
            start = 0
            while start < len(same):
                bucket, size = [], 0
                while start < len(same) and (not bucket or size + same[start].numel() <= _BUCKET):
                    bucket.append(same[start])
                    size += same[start].numel()
                    start += 1
                flat = reduce(torch.cat([g.reshape(-1) for g in bucket]), "mean")
                offset = 0
                for g in bucket:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()

    def barrier(self) -> None:
        self.state.wait_for_everyone()


class ShardedProcesses(AccelerateProcesses):
    """Several processes with FSDP2-sharded parameters, gradients and optimiser states (module docstring)."""

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wrap every transformer block, then the whole model, with ``fully_shard`` (in place)."""
        from torch.distributed.fsdp import fully_shard

        from geffect.effects.groups import find_block_list

        _, blocks = find_block_list(model)
        for block in blocks:
            fully_shard(block)
        fully_shard(model)
        return model

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Nothing to do: FSDP's backward already reduce-scattered the mean gradient."""

    def grad_norm(self, grads: list[torch.Tensor]) -> float:
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def reshard(self, model: torch.nn.Module) -> None:
        """Put every module back in its sharded state (a no-grad forward, like the probes' risks,
        leaves the root's weights gathered, and state dicts must see the sharded parameters)."""
        from torch.distributed.fsdp import FSDPModule

        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    def full_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every process gathers each tensor whole (a collective, in the same order everywhere)."""
        return {name: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu() for name, t in state.items()}

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                     cpu_offload=True))

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def load_params(self, model: torch.nn.Module, params: dict[str, torch.Tensor], where: str) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from geffect.training.modeling import trainable_state

        if set(params) != set(trainable_state(model)):
            raise ValueError(f"checkpoint {where} does not match the run's trainable parameters; was the config changed?")
        set_model_state_dict(model, params, options=StateDictOptions(full_state_dict=True, strict=False))


def launched_world_size() -> int:
    """The number of processes this one was launched with (``WORLD_SIZE``, 1 if unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank in its launch (``RANK``, 0 if unset): rank 0 claims the run directory."""
    return int(os.environ.get("RANK", "0"))


def processes(device: torch.device, fsdp: bool = False) -> SingleProcess:
    """The process set of this run: several when launched by torchrun / accelerate (sharded with ``fsdp``)."""
    if launched_world_size() > 1:
        return (ShardedProcesses if fsdp else AccelerateProcesses)(cpu=device.type == "cpu")
    return SingleProcess(device)
