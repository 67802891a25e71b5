"""Batches for unlearning: forget / retain training batches (with the forget views an objective
needs) and the fixed probe sets whose G-effects are recorded.

Every batch is a pure function of the run seed and a draw counter: draw ``d`` of a
stream takes positions ``[d·b, (d+1)·b)`` of an endless sequence of per-epoch
permutations, each seeded by (seed, stream, epoch), and the random choices of a view
(which refusal, which mismatched answer) are seeded by (seed, view, position). So the
only data state a checkpoint needs is the draw counter, and resuming reproduces the
exact batches of an uninterrupted run. Rows are encoded once with
:func:`geffect.data.encode_qa` and padded with :func:`geffect.data.collate`.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geffect.training.config import ConfigError

Row = dict[str, Any]
Batch = dict[str, Any]


def stable_seed(*parts: Any) -> int:
    """A 32-bit seed from ``parts`` that is the same in every process (unlike ``hash``)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


# -- where the rows come from ---------------------------------------------------------------------


class SplitSource:
    """Named splits of the embedded world (``data=None``) or of a TOFU source; JSON(L) paths too."""

    def __init__(self, data: str | None = None) -> None:
        self.data = data
        self._world = None

    def split(self, name: str):
        """The ``datasets.Dataset`` called ``name``; a missing split raises naming the known ones."""
        if name.endswith((".json", ".jsonl")) and Path(name).is_file():
            import datasets

            return datasets.Dataset.from_json(name)
        if self.data is None:
            if self._world is None:
                from geffect.data import load_world

                self._world = load_world()
            if name not in self._world:
                raise ConfigError(f"the embedded world has no split {name!r}; its splits are {sorted(self._world)}")
            return self._world[name]
        from geffect.data import load_tofu

        try:
            return load_tofu(self.data, name)
        except (OSError, KeyError, ValueError) as err:
            raise ConfigError(f"cannot load split {name!r} from {self.data!r}: {err}") from err


# -- forget views ---------------------------------------------------------------------------------

ViewBuilder = Callable[[Row, random.Random, "ViewPools"], tuple[str, str]]


@dataclass
class ViewPools:
    """Answers that views draw from: refusals (the world's ``idk`` split) and retain answers."""

    refusals: Sequence[str]
    retain_answers: Sequence[str]


def _idk(row: Row, rng: random.Random, pools: ViewPools) -> tuple[str, str]:
    if not pools.refusals:
        raise ValueError("the 'idk' view needs refusal answers, but the data source has no 'idk' split")
    return row["question"], rng.choice(pools.refusals)


def _mismatch(row: Row, rng: random.Random, pools: ViewPools) -> tuple[str, str]:
    if not pools.retain_answers:
        raise ValueError("the 'mismatch' view needs retain answers, but the run has no retain split")
    return row["question"], rng.choice(pools.retain_answers)


def _perturbed(row: Row, rng: random.Random, pools: ViewPools) -> tuple[str, str]:
    return row["question"], rng.choice(list(row["perturbed_answer"]))


def _paraphrased(row: Row, rng: random.Random, pools: ViewPools) -> tuple[str, str]:
    return row.get("paraphrased_question") or row["question"], row["paraphrased_answer"]


VIEWS: dict[str, ViewBuilder] = {
    "idk": _idk,  # forget question + a refusal answer
    "mismatch": _mismatch,  # forget question + a random retain answer (Yao et al. 2023)
    "perturbed": _perturbed,  # forget question + one of its wrong (perturbed) answers
    "paraphrased": _paraphrased,  # paraphrased question + paraphrased answer
}


def check_views(views: Sequence[str], who: str) -> None:
    """Raise if a view name is unknown, naming ``who`` asked for it and the known views."""
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ConfigError(f"{who} asks for unknown forget view(s) {unknown}; known views: {sorted(VIEWS)}")


# -- batch order ----------------------------------------------------------------------------------


class BatchStream:
    """Indices of draw ``d``: positions ``[d·b, (d+1)·b)`` over seeded per-epoch permutations."""

    def __init__(self, size: int, batch_size: int, seed: int, stream: str) -> None:
        if size < 1:
            raise ConfigError(f"the {stream} split is empty")
        self.size, self.batch_size, self.seed, self.stream = size, batch_size, seed, stream
        self._epochs: dict[int, list[int]] = {}

    def _permutation(self, epoch: int) -> list[int]:
        if epoch not in self._epochs:
            gen = torch.Generator().manual_seed(stable_seed(self.seed, self.stream, epoch))
            self._epochs = {e: p for e, p in self._epochs.items() if e >= epoch - 1}  # bounded cache
            self._epochs[epoch] = torch.randperm(self.size, generator=gen).tolist()
        return self._epochs[epoch]

    def positions(self, draw: int) -> range:
        return range(draw * self.batch_size, (draw + 1) * self.batch_size)

    def indices(self, draw: int) -> list[int]:
        return [self._permutation(p // self.size)[p % self.size] for p in self.positions(draw)]


def shard(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Contiguous share ``rank`` of ``world_size`` near-equal shares of ``items``."""
    bounds = [len(items) * r // world_size for r in range(world_size + 1)]
    return list(items[bounds[rank] : bounds[rank + 1]])


# -- encoding -------------------------------------------------------------------------------------


class Encoder:
    """Encodes (question, answer) pairs with the tokenizer's QA format and pads them into batches."""

    def __init__(self, tokenizer) -> None:
        from geffect.data import collate, encode_qa

        self.tokenizer = tokenizer
        self._encode_qa, self._collate = encode_qa, collate
        self._cache: dict[tuple[str, str], dict[str, list[int]]] = {}

    def encode(self, question: str, answer: str) -> dict[str, list[int]]:
        key = (question, answer)
        if key not in self._cache:
            self._cache[key] = self._encode_qa(self.tokenizer, question, answer)
        return self._cache[key]

    def batch(self, pairs: Sequence[tuple[str, str]]) -> Batch:
        return self._collate([self.encode(q, a) for q, a in pairs], self.tokenizer, padding_side="right")


# -- probes ---------------------------------------------------------------------------------------


@dataclass
class ProbeSet:
    """A fixed set of instances whose G-effects are recorded: row ``indices`` of a split."""

    name: str
    split: str
    indices: list[int]  # row numbers in the split; the records' ``instance`` column
    rows: list[Row]
    batch: Batch

    def subset(self, rank: int, world_size: int) -> ProbeSet:
        """This process's contiguous share (distributed recording)."""
        picked = shard(range(len(self.indices)), rank, world_size)
        return ProbeSet(
            self.name,
            self.split,
            [self.indices[i] for i in picked],
            [self.rows[i] for i in picked],
            {k: v[picked[0] : picked[-1] + 1] for k, v in self.batch.items()} if picked else {},
        )


def sample_indices(size: int, count: int | None, seed: int, name: str) -> list[int]:
    """``count`` row numbers of a split of ``size`` rows, seeded by (seed, name), in increasing order."""
    if count is None or count >= size:
        return list(range(size))
    gen = torch.Generator().manual_seed(stable_seed(seed, "probe", name))
    return sorted(torch.randperm(size, generator=gen)[:count].tolist())


# -- the run's data -------------------------------------------------------------------------------


class UnlearningData:
    """Forget / retain batch streams and probe sets of one run.

    ``views`` are the forget views to nest into each forget batch (``batch["idk"]`` ...);
    ``forget_batch(draw)`` / ``retain_batch(draw)`` give draw ``draw`` of each stream, or
    this process's share of it with ``rank``/``world_size``.
    """

    def __init__(self, tokenizer, source: SplitSource, forget: str, retain: str | None,
                 views: Sequence[str] = (), seed: int = 0, batch_size: int = 8,
                 retain_batch_size: int | None = None) -> None:
        check_views(views, "the run")
        self.source, self.seed, self.views = source, seed, list(views)
        self.encoder = Encoder(tokenizer)
        self.forget_rows = _rows(source.split(forget))
        self.retain_rows = _rows(source.split(retain)) if retain is not None else []
        self.forget = BatchStream(len(self.forget_rows), batch_size, seed, "forget")
        self.retain = (BatchStream(len(self.retain_rows), retain_batch_size or batch_size, seed, "retain")
                       if self.retain_rows else None)
        self.pools = ViewPools(self._refusals() if "idk" in self.views else [],
                               [row["answer"] for row in self.retain_rows])

    def _refusals(self) -> list[str]:
        try:
            return list(self.source.split("idk")["answer"])
        except ConfigError as err:
            raise ConfigError(f"the 'idk' view needs an 'idk' split of refusal answers: {err}") from err

    def forget_batch(self, draw: int, rank: int = 0, world_size: int = 1) -> Batch:
        positions = shard(self.forget.positions(draw), rank, world_size)
        indices = shard(self.forget.indices(draw), rank, world_size)
        rows = [self.forget_rows[i] for i in indices]
        batch = self.encoder.batch([(row["question"], row["answer"]) for row in rows])
        for view in self.views:
            pairs = [VIEWS[view](row, random.Random(stable_seed(self.seed, view, pos)), self.pools)
                     for row, pos in zip(rows, positions)]
            batch[view] = self.encoder.batch(pairs)
        return batch

    def hold_out(self, stream: str, count: int) -> Batch:
        """Take ``count`` seeded rows out of the ``"forget"`` or ``"retain"`` training stream and return
        them as one batch: validation data the run never trains on (the stream is rebuilt without them)."""
        rows = {"forget": self.forget_rows, "retain": self.retain_rows}.get(stream)
        if rows is None:
            raise ValueError(f"stream must be 'forget' or 'retain', got {stream!r}")
        if not 0 < count < len(rows):
            raise ConfigError(f"cannot hold out {count} of the {len(rows)} rows of the {stream} split for "
                              "validation: at least one must stay for training")
        picked = set(sample_indices(len(rows), count, self.seed, f"hold-out-{stream}"))
        held = [row for i, row in enumerate(rows) if i in picked]
        kept = [row for i, row in enumerate(rows) if i not in picked]
        old = getattr(self, stream)
        setattr(self, f"{stream}_rows", kept)
        setattr(self, stream, BatchStream(len(kept), old.batch_size, self.seed, stream))
        if stream == "retain":  # mismatch views draw answers from the retain rows: only trained ones
            self.pools = ViewPools(self.pools.refusals, [row["answer"] for row in kept])
        return self.encoder.batch([(row["question"], row["answer"]) for row in held])

    def retain_batch(self, draw: int, rank: int = 0, world_size: int = 1) -> Batch | None:
        if self.retain is None:
            return None
        rows = [self.retain_rows[i] for i in shard(self.retain.indices(draw), rank, world_size)]
        return self.encoder.batch([(row["question"], row["answer"]) for row in rows])

    def probe(self, name: str, split: str, size: int | None) -> ProbeSet:
        """The probe ``name`` on ``split``: ``size`` seeded rows (all when ``None``)."""
        rows = _rows(self.source.split(split))
        indices = sample_indices(len(rows), size, self.seed, name)
        picked = [rows[i] for i in indices]
        batch = self.encoder.batch([(row["question"], row["answer"]) for row in picked])
        return ProbeSet(name, split, indices, picked, batch)


def _rows(dataset) -> list[Row]:
    missing = [c for c in ("question", "answer") if c not in dataset.column_names]
    if missing:
        raise ConfigError(f"a training/probe split lacks column(s) {missing}; it has {dataset.column_names}")
    return list(dataset)


def to_device(batch: Batch | None, device: torch.device | str) -> Batch | None:
    """Move every tensor of a (nested) batch to ``device``."""
    if batch is None:
        return None
    return {k: to_device(v, device) if isinstance(v, dict) else
            (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
