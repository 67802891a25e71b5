"""geffect.training: unlearning runs with live G-effect recording.

:func:`unlearn` runs an objective on a forget split, recording every ``k`` steps the
G-effect of the objective gradient and of the applied update, per probe instance and
layer group, into a run directory (``config.yaml``, ``effects.parquet``,
``history.parquet``, ``risks.parquet``, ``run.json``, checkpoints) that :class:`Run`
reads back. :class:`GEffectCallback` adds the same recording to a Hugging Face
``Trainer``.
"""

from __future__ import annotations

from geffect.training.config import ConfigError, UnlearnConfig
from geffect.training.run import Run
from geffect.training.trainer import unlearn

__all__ = ["ConfigError", "GEffectCallback", "Run", "UnlearnConfig", "unlearn"]


def __getattr__(name: str):
    if name == "GEffectCallback":  # imports transformers' Trainer machinery: only on demand
        from geffect.training.callback import GEffectCallback

        return GEffectCallback
    raise AttributeError(f"module 'geffect.training' has no attribute {name!r}")
