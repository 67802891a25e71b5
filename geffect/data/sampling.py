"""Seeded choices of rows that are the same in every process: probe rows and held-out rows."""

from __future__ import annotations

import zlib
from typing import Any


def stable_seed(*parts: Any) -> int:
    """A 32-bit seed from ``parts`` that is the same in every process (unlike ``hash``)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def seeded_subset(size: int, count: int, *seed_parts: Any) -> list[int]:
    """``count`` distinct row numbers out of ``size``, seeded by ``seed_parts``, in increasing order."""
    import torch

    gen = torch.Generator().manual_seed(stable_seed(*seed_parts))
    return sorted(torch.randperm(size, generator=gen)[:count].tolist())


def sample_indices(size: int, count: int | None, seed: int, name: str) -> list[int]:
    """``count`` row numbers of a split of ``size`` rows, seeded by (seed, name), in increasing order."""
    if count is None or count >= size:
        return list(range(size))
    return seeded_subset(size, count, seed, "probe", name)


def holdout_indices(size: int, fraction: float, seed: int, role: str) -> list[int]:
    """Rows of a split of ``size`` rows kept out of training for evaluation (seeded by seed and role).

    ``round(fraction·size)`` rows, at least one and never all, when ``fraction > 0`` and the
    split has two rows or more; none otherwise.
    """
    if fraction <= 0 or size < 2:
        return []
    count = min(size - 1, max(1, round(size * fraction)))
    return seeded_subset(size, count, seed, "holdout", role)
