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


def launched_world_size() -> int:
    """The number of processes this one was launched with (``WORLD_SIZE``, 1 if unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank in its launch (``RANK``, 0 if unset): rank 0 claims the run directory."""
    return int(os.environ.get("RANK", "0"))


def processes(device: torch.device) -> SingleProcess:
    """The process set of this run: several when launched by torchrun / accelerate."""
    if launched_world_size() > 1:
        return AccelerateProcesses(cpu=device.type == "cpu")
    return SingleProcess(device)
