"""Batches for unlearning: forget / retain training batches (with the forget views an objective
needs) and the fixed probe sets whose G-effects are recorded, from rows of any kind.

Every batch is a pure function of the run seed and a draw counter: draw ``d`` of a
stream takes positions ``[d·b, (d+1)·b)`` of an endless sequence of per-epoch
permutations, each seeded by (seed, stream, epoch), and the random choices of a view
(which refusal, which mismatched answer) are seeded by (seed, view, position). So the
only data state a checkpoint needs is the draw counter, and resuming reproduces the
exact batches of an uninterrupted run. Rows (question/answer, prompt/response or text; any
split of the run's task, or a file) are encoded once with :func:`geffect.data.encode_row`
and padded with :func:`geffect.data.collate`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from geffect.data.files import DataError
from geffect.data.lengths import LengthPolicy
from geffect.data.rows import KIND_NAMES, row_kind, source_field, target_field, target_text
from geffect.data.sampling import sample_indices, stable_seed
from geffect.tasks.source import TaskData
from geffect.training.config import ConfigError, UnlearnConfig

Row = dict[str, Any]
Batch = dict[str, Any]


# -- forget views ---------------------------------------------------------------------------------

ViewBuilder = Callable[[Row, random.Random, "ViewPools"], Row]


@dataclass
class ViewPools:
    """Targets that views draw from: refusals (the task's ``idk`` pool) and mismatched answers."""

    refusals: Sequence[str]
    retain_answers: Sequence[str]


def _with_target(row: Row, target: str) -> Row:
    """The row's source (question / prompt) with another target: a row of the same kind."""
    kind = row_kind(row.keys())
    source = source_field(kind)
    return {**({source: row[source]} if source is not None else {}), target_field(kind): target}


def _idk(row: Row, rng: random.Random, pools: ViewPools) -> Row:
    if not pools.refusals:
        raise ValueError("the 'idk' view needs refusal answers, but the data source has no 'idk' split")
    return _with_target(row, rng.choice(pools.refusals))


def _mismatch(row: Row, rng: random.Random, pools: ViewPools) -> Row:
    if not pools.retain_answers:
        raise ValueError("the 'mismatch' view needs retain answers, but the run has no retain split")
    return _with_target(row, rng.choice(pools.retain_answers))


def _perturbed(row: Row, rng: random.Random, pools: ViewPools) -> Row:
    target = target_field(row_kind(row.keys()))
    choices = list(row[f"perturbed_{target}"])
    if not choices:
        raise ValueError(f"the 'perturbed' view needs perturbed_{target} values; a forget row has none")
    return _with_target(row, rng.choice(choices))


def _paraphrased(row: Row, rng: random.Random, pools: ViewPools) -> Row:
    kind = row_kind(row.keys())
    source, target = source_field(kind), target_field(kind)
    if source is None:
        return {target: row[f"paraphrased_{target}"]}
    return {source: row.get(f"paraphrased_{source}") or row[source], target: row[f"paraphrased_{target}"]}


VIEWS: dict[str, ViewBuilder] = {
    "idk": _idk,  # forget question/prompt + a refusal
    "mismatch": _mismatch,  # forget question/prompt + a random retain answer (Yao et al. 2023)
    "perturbed": _perturbed,  # forget question + one of its wrong (perturbed) answers
    "paraphrased": _paraphrased,  # paraphrased question + paraphrased answer (or paraphrased text)
}
# What a view needs of the forget rows: a source field (a question or prompt) and/or a column.
_VIEW_NEEDS: dict[str, tuple[bool, str | None]] = {
    "idk": (True, None), "mismatch": (True, None),
    "perturbed": (False, "perturbed_{target}"), "paraphrased": (False, "paraphrased_{target}"),
}


def check_views(views: Sequence[str], who: str) -> None:
    """Raise if a view name is unknown, naming ``who`` asked for it and the known views."""
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ConfigError(f"{who} asks for unknown forget view(s) {unknown}; known views: {sorted(VIEWS)}")


def check_views_fit(views: Sequence[str], columns: Sequence[str], split: str, who: str) -> None:
    """Raise if a view makes no sense for the forget rows (e.g. a refusal for raw text rows)."""
    kind = row_kind(columns)
    for view in views:
        needs_source, column = _VIEW_NEEDS[view]
        if needs_source and source_field(kind) is None:
            raise ConfigError(f"{who} needs the forget view {view!r}, which replaces an answer to a question or "
                              f"prompt, but the forget data {split!r} holds {KIND_NAMES[kind]} rows")
        if column is not None and column.format(target=target_field(kind)) not in columns:
            raise ConfigError(f"{who} needs the forget view {view!r}, which needs a "
                              f"{column.format(target=target_field(kind))!r} column; the forget data {split!r} "
                              f"has {sorted(columns)}")


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
    """Encodes rows of any kind (:func:`geffect.data.encode_row`, cached) and pads them into batches.

    Rows longer than ``lengths`` allows are truncated or refused by that policy
    (:class:`geffect.data.lengths.LengthPolicy`; ``max_length`` alone makes one without a model).
    ``prime`` encodes a whole stream up front, so its one warning counts all its truncated rows;
    rows first met in a batch (forget views) warn once per stream with the count so far.
    """

    def __init__(self, tokenizer, max_length: int | None = None, lengths: LengthPolicy | None = None) -> None:
        self.tokenizer = tokenizer
        self.lengths = lengths if lengths is not None else LengthPolicy(max_length, source=f"max_length={max_length}")
        self._cache: dict[tuple, tuple[dict[str, list[int]], int | None]] = {}
        self._cut: dict[str, list[tuple[int | str, int]]] = {}  # stream -> (row, full length) met in batches

    def _encode_row(self, row: Mapping[str, Any], max_length: int | None) -> dict[str, list[int]]:
        from geffect.data.rows import encode_row

        return encode_row(self.tokenizer, row, max_length)

    def _fit(self, row: Mapping[str, Any], what: str, index: int | str) -> tuple[dict[str, list[int]], int | None, bool]:
        """(encoded row within the length policy, its full length if it was truncated else None,
        whether it was encoded now rather than found in the cache)."""
        from geffect.data.rows import ROW_KINDS

        fields = ROW_KINDS[row_kind(row.keys())]
        key = tuple(fields) + tuple(row[f] for f in fields)
        fresh = key not in self._cache
        if fresh:
            self._cache[key] = self.lengths.encode(self._encode_row, {f: row[f] for f in fields}, what, index)
        return (*self._cache[key], fresh)

    def check(self, row: Mapping[str, Any], what: str, index: int | str) -> None:
        """Encode a row into the cache without a warning (rows checked but not trained: held-out ones;
        strict lengths still refuse a long one, naming ``what`` and ``index``)."""
        self._fit(row, what, index)

    def encode(self, row: Mapping[str, Any], what: str = "rows", index: int | str = "?") -> dict[str, list[int]]:
        example, length, fresh = self._fit(row, what, index)
        if length is not None and fresh:  # rows met first in a batch (views): warn once, counting so far
            cut = self._cut.setdefault(what, [])
            cut.append((index, length))
            self.lengths.warn(what, len(cut), None, cut)
        return example

    def prime(self, rows: Sequence[Mapping[str, Any]], what: str, ids: Sequence[int] | None = None) -> None:
        """Encode every row of a stream now: one warning counts its truncated rows (strict: the first
        long row is an error naming ``ids[i]``, the row's number in its split)."""
        cut = []
        for i, row in enumerate(rows):
            index = ids[i] if ids is not None else i
            length = self._fit(row, what, index)[1]
            if length is not None:
                cut.append((index, length))
        if cut:
            self.lengths.warn(what, len(cut), len(rows), cut)

    def batch(self, rows: Sequence[Mapping[str, Any]], what: str = "rows") -> Batch:
        from geffect.data import collate

        return collate([self.encode(row, what) for row in rows], self.tokenizer, padding_side="right")


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


# -- the run's data -------------------------------------------------------------------------------


def run_source(config: UnlearnConfig, views: Sequence[str] = (), needs_retain: bool = False,
               who: str = "the run") -> TaskData:
    """The data of a (resolved) run config, read and checked before any model loads.

    Loads the forget split (and checks that ``views`` fit its row kind), the retain split when
    ``needs_retain``, every probe split and the view pools, so that a bad file fails here in one
    line naming file, row and field.
    """
    heldout = {config.forget: "forget", **({config.retain: "retain"} if config.retain is not None else {})}
    source = TaskData(config.get_task(), config.data, holdout=config.holdout or 0.0, seed=config.seed,
                      heldout=heldout)
    check_views(views, who)
    source.rows(config.forget)
    check_views_fit(views, source.split(config.forget).column_names, config.forget, who)
    if needs_retain:
        if config.retain is None:
            raise ConfigError(f"{who} needs retain data, and task {source.task.name!r} has none for forget "
                              f"{config.forget!r}: set retain= (CLI: --retain SPLIT_OR_FILE)")
        source.rows(config.retain)
    for split in (config.probes or {}).values():
        source.rows(split)
    if "idk" in views:
        source.pool("idk")
    if "mismatch" in views and "mismatch" in source.task.pools:
        source.pool("mismatch")
    return source


class UnlearningData:
    """Forget / retain batch streams and probe sets of one run.

    ``source`` is the run's :class:`~geffect.tasks.TaskData` (a task or registered task name is
    accepted too); ``forget`` / ``retain`` name splits or files of it. ``views`` are the forget
    views to nest into each forget batch (``batch["idk"]`` ...); ``forget_batch(draw)`` /
    ``retain_batch(draw)`` give draw ``draw`` of each stream, or this process's share of it
    with ``rank``/``world_size``. Held-out rows of the source never enter a batch or probe.
    """

    def __init__(self, tokenizer, source: TaskData | str, forget: str, retain: str | None,
                 views: Sequence[str] = (), seed: int = 0, batch_size: int = 8,
                 retain_batch_size: int | None = None, max_length: int | None = None,
                 lengths: LengthPolicy | None = None) -> None:
        check_views(views, "the run")
        source = source if isinstance(source, TaskData) else TaskData(source)
        self.source, self.seed, self.views = source, seed, list(views)
        self.encoder = Encoder(tokenizer, max_length, lengths)
        self.forget_rows, self.forget_ids = source.rows(forget)
        check_views_fit(self.views, source.split(forget).column_names, forget, "the run")
        self.retain_rows, self.retain_ids = source.rows(retain) if retain is not None else ([], [])
        for split in (forget, retain) if retain is not None else (forget,):
            self._check_text_rows(split)
        self.forget = BatchStream(len(self.forget_rows), batch_size, seed, "forget")
        self.retain = (BatchStream(len(self.retain_rows), retain_batch_size or batch_size, seed, "retain")
                       if self.retain_rows else None)
        retain_targets = [target_text(row) for row in self.retain_rows]
        self.pools = ViewPools(source.pool("idk") if "idk" in self.views else [],
                               source.pool("mismatch", retain_targets) if "mismatch" in self.views else retain_targets)
        # every training row within the length policy now: one warning per split, or a strict error
        self.encoder.prime(self.forget_rows, f"forget {forget!r}", self.forget_ids)
        if retain is not None:
            self.encoder.prime(self.retain_rows, f"retain {retain!r}", self.retain_ids)

    def _check_text_rows(self, split: str) -> None:
        """Encode a text split's rows now (held-out ones too), so that one with no token to learn fails
        in setup, named by row, rather than mid-run or in the evaluation.

        Question/answer and prompt/response rows always keep a predicted label after their
        non-empty prompt; a text row may not (one token under a tokenizer that adds no BOS).
        """
        data = self.source.split(split)
        if row_kind(data.column_names) != "text":
            return
        for i, row in enumerate(data):
            try:
                self.encoder.check(row, repr(split), i)
            except DataError as err:
                raise DataError(f"{split}, row {i + 1}: {err}") from None

    def forget_batch(self, draw: int, rank: int = 0, world_size: int = 1) -> Batch:
        positions = shard(self.forget.positions(draw), rank, world_size)
        indices = shard(self.forget.indices(draw), rank, world_size)
        rows = [self.forget_rows[i] for i in indices]
        batch = self.encoder.batch(rows)
        for view in self.views:
            views = [VIEWS[view](row, random.Random(stable_seed(self.seed, view, pos)), self.pools)
                     for row, pos in zip(rows, positions)]
            batch[view] = self.encoder.batch(views, f"forget view {view!r}")
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
        setattr(self, f"{stream}_ids", [r for i, r in enumerate(getattr(self, f"{stream}_ids")) if i not in picked])
        setattr(self, stream, BatchStream(len(kept), old.batch_size, self.seed, stream))
        if stream == "retain" and "mismatch" not in self.source.task.pools:  # mismatch answers: only trained rows
            self.pools = ViewPools(self.pools.refusals, [target_text(row) for row in kept])
        return self.encoder.batch(held)

    def retain_batch(self, draw: int, rank: int = 0, world_size: int = 1) -> Batch | None:
        if self.retain is None:
            return None
        rows = [self.retain_rows[i] for i in shard(self.retain.indices(draw), rank, world_size)]
        return self.encoder.batch(rows)

    def probe(self, name: str, split: str, size: int | None) -> ProbeSet:
        """The probe ``name`` on ``split``: ``size`` seeded rows (all when ``None``; held-out rows never)."""
        rows, ids = self.source.rows(split)
        indices = sample_indices(len(rows), size, self.seed, name)
        picked = [rows[i] for i in indices]
        self.encoder.prime(picked, f"probe {name!r}", [ids[i] for i in indices])
        return ProbeSet(name, split, [ids[i] for i in indices], picked, self.encoder.batch(picked))


def to_device(batch: Batch | None, device: torch.device | str) -> Batch | None:
    """Move every tensor of a (nested) batch to ``device``."""
    if batch is None:
        return None
    return {k: to_device(v, device) if isinstance(v, dict) else
            (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
