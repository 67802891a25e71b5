"""The ``probe_directions`` companion: fit the objective's per-block probes before the first step.

Logistic probes (``geffect.objectives.probe_directions``) separate the forget split's rows
(toxic, label 1) from the retain split's (non-toxic, label 0) on mean-pooled activations of the
model as it is before unlearning, up to ``probe_rows`` rows of each. They are cached in the run
directory (``probe_directions.safetensors`` / ``.json``, with the train and held-out accuracy per
block), so a resumed run uses the same probes; the accuracies are also logged (``logging``,
logger ``geffect``) and readable with :func:`read_probe_accuracy`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from geffect.objectives.probe_directions import ProbeDirections, fit_probe_directions, probe_layers
from geffect.training.companions import Companion, CompanionContext, companion

__all__ = ["CACHE_NAME", "ProbeFitting", "read_probe_accuracy"]

CACHE_NAME = "probe_directions"
logger = logging.getLogger("geffect")


def _rows_of(draw_batch, total: int) -> list[dict[str, torch.Tensor]]:
    """The first ``total`` rows of a stream's draws 0, 1, ... as batches (the last one trimmed)."""
    batches, left, draw = [], total, 0
    while left > 0:
        batch = {k: v for k, v in draw_batch(draw).items() if torch.is_tensor(v)}
        take = min(left, batch["input_ids"].shape[0])
        batches.append({k: v[:take] for k, v in batch.items()})
        left, draw = left - take, draw + 1
    return batches


@companion("probe_directions")
class ProbeFitting(Companion):
    """Fits (or, on resume, reloads) the probes and hands them to the objective as ``probes=``."""

    def __init__(self, spec: Any, hparams: Mapping[str, Any]) -> None:
        super().__init__(spec, hparams)
        self.data = None
        self.probes: ProbeDirections | None = None

    def prepare(self, data: Any) -> None:
        if data.retain is None:
            from geffect.training.config import ConfigError

            raise ConfigError(f"objective {self.spec.name!r} fits its probes on forget (toxic) vs retain "
                              "(non-toxic) rows: the run needs a retain split")
        self.data = data

    def start(self, context: CompanionContext, state: Mapping[str, Any] | None = None) -> None:
        cache = context.run_dir / CACHE_NAME if context.run_dir is not None else None
        if cache is not None and cache.with_suffix(".safetensors").is_file():
            self.probes = ProbeDirections.load(cache)
        else:
            self.probes = self.fit(context.model, context.seed)
            if cache is not None and context.is_main:
                self.probes.save(cache)
        for block, scores in self.probes.accuracy.items():
            logger.info("probe_directions: %s probe accuracy train %.3f, held-out %.3f (%d rows)", block,
                        scores.get("train", math.nan), scores.get("heldout", math.nan), int(scores.get("rows", 0)))

    def fit(self, model: torch.nn.Module, seed: int = 0) -> ProbeDirections:
        """Probes of the objective's blocks on up to ``probe_rows`` forget and retain rows of the data."""
        if self.data is None:
            raise RuntimeError("ProbeFitting.fit before prepare(data): no rows to fit the probes on")
        hp, data = self.hparams, self.data
        layers = probe_layers(model, hp["layers"], hp["single_layer"])
        rows = int(hp["probe_rows"])
        toxic = _rows_of(data.forget_batch, min(rows, len(data.forget_rows)))
        clean = _rows_of(data.retain_batch, min(rows, len(data.retain_rows)))
        return fit_probe_directions(model, toxic, clean, layers, hp["tokens"], float(hp["probe_l2"]),
                                    float(hp["probe_holdout"]), seed)

    def objective_kwargs(self) -> dict[str, Any]:
        return {"probes": self.probes}


def read_probe_accuracy(run_dir: str | Path) -> pd.DataFrame:
    """Per fitted block of a ``probe_directions`` run: rows, train and held-out probe accuracy."""
    path = Path(run_dir) / f"{CACHE_NAME}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} has no fitted probes ({path.name}); is it a probe_directions run?")
    accuracy = json.loads(path.read_text())["accuracy"]
    return pd.DataFrame([{"layer": block, **scores} for block, scores in accuracy.items()])
