"""Synthetic run records with planted, exactly known structure.

Used to test the plots and the diagnosis against numbers known in advance, and to preview
the report without training a model. The tables follow the trainer's record format
(``geffect.schema`` / common.md "Records"); the planted facts are:

- the batch (instance-mean) retain G-effect of every step is ``retain_level × weight[layer]``
  with ``RETAIN_WEIGHTS`` (negative weights sum to −1: block.0 carries 40 % and block.1 25 %
  of the negative retain effect; levels are magnitudes, the weights carry the sign);
- the batch forget G-effect is ``forget_level × weight[layer]`` (``FORGET_WEIGHTS``, all
  negative, summing to −1; lm_head and block.3 carry 75 %) up to ``decay_step`` and
  ``decay_factor`` times that from then on;
- per-instance values are the batch value times a multiplier with mean exactly 1 (so batch
  means are exact); retain instance ``damaged_instance`` has the largest multiplier;
- the update effect is ``-lr ×`` the gradient effect (plain SGD), ``predicted_change`` its
  sum over layers, and the observed change adds Gaussian noise of std ``noise``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from geffect.reporting.runs import RunData
from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE

RETAIN_WEIGHTS = {"embed": -0.05, "block.0": -0.40, "block.1": -0.25, "block.2": -0.15,
                  "block.3": -0.10, "final_norm": 0.02, "lm_head": -0.05}
FORGET_WEIGHTS = {"embed": -0.02, "block.0": -0.03, "block.1": -0.05, "block.2": -0.10,
                  "block.3": -0.30, "final_norm": -0.05, "lm_head": -0.45}


def _multipliers(rng: np.random.Generator, count: int, top: int | None) -> np.ndarray:
    """Positive per-instance multipliers with mean exactly 1; ``top`` gets the largest."""
    values = rng.uniform(0.5, 1.3, size=count)
    if top is not None:
        values[top] = 2.0
    return values / values.mean()


def synthetic_run(name: str = "synthetic", *, steps: int = 30, instances: int = 8,
                  forget_level: float = 4.0, retain_level: float = 1.0, decay_step: int = 18,
                  decay_factor: float = 0.05, lr: float = 0.01, noise: float = 0.002,
                  damaged_instance: int = 3, record_every: int = 1, seed: int = 0) -> RunData:
    """A :class:`RunData` with the planted structure described in the module docstring."""
    rng = np.random.default_rng(seed)
    recorded = np.arange(0, steps, record_every)
    mult = {"forget": _multipliers(rng, instances, None),
            "retain": _multipliers(rng, instances, damaged_instance)}
    weights = {"forget": FORGET_WEIGHTS, "retain": RETAIN_WEIGHTS}
    effect_rows, risk_rows, history_rows = [], [], []
    risk = {p: rng.uniform(0.5, 1.5, size=instances) for p in mult}
    for step in recorded:
        level = {"forget": forget_level * (1.0 if step < decay_step else decay_factor),
                 "retain": retain_level}
        history = {"step": int(step), "loss": float(-2.0 + 0.05 * step), "lr": lr}
        for probe in ("forget", "retain"):
            per_instance = np.zeros(instances)
            for layer, weight in weights[probe].items():
                values = level[probe] * weight * mult[probe]
                per_instance += values
                for direction, scale in ((DIRECTION_GRADIENT, 1.0), (DIRECTION_UPDATE, -lr)):
                    effect_rows += [(int(step), probe, i, layer, direction, float(scale * v))
                                    for i, v in enumerate(values)]
            predicted = -lr * per_instance
            observed = predicted + rng.normal(0.0, noise, size=instances)
            risk_rows += [(int(step), probe, i, float(risk[probe][i]), float(risk[probe][i] + observed[i]),
                           float(predicted[i])) for i in range(instances)]
            history[f"risk_{probe}"] = float(risk[probe].mean())
            history[f"risk_change_{probe}"] = float(observed.mean())
            risk[probe] = risk[probe] + observed
        history_rows.append(history)
    texts = pd.DataFrame({"question": [f"Question about retained fact {i}?" for i in range(instances)],
                          "answer": [f"Answer {i}." for i in range(instances)]})
    texts["text"] = texts["question"] + " → " + texts["answer"]
    texts.index.name = "instance"
    return RunData(
        name=name,
        effects=pd.DataFrame(effect_rows, columns=["step", "probe", "instance", "layer", "direction", "value"]),
        history=pd.DataFrame(history_rows),
        risks=pd.DataFrame(risk_rows, columns=["step", "probe", "instance", "risk", "risk_after",
                                               "predicted_change"]),
        config={"objective": name, "lr": lr, "steps": steps, "record_every": record_every,
                "probes": {"forget": instances, "retain": instances}},
        metrics={"forget": {"rouge_l": 0.2}, "retain": {"rouge_l": 0.8}, "model_utility": 0.5},
        texts={"retain": texts},
    )


def write_run_dir(run: RunData, folder: str | Path) -> Path:
    """Write ``run`` as a trainer-style run directory (parquet part dirs, yaml, json)."""
    root = Path(folder)
    for table, frame in (("effects", run.effects), ("history", run.history), ("risks", run.risks)):
        (root / f"{table}.parquet").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / f"{table}.parquet" / "part-000000.parquet", index=False)
    (root / "config.yaml").write_text(yaml.safe_dump(run.config))
    (root / "metrics.json").write_text(json.dumps(run.metrics))
    (root / "run.json").write_text(json.dumps({"status": "finished"}))
    (root / "probes").mkdir(exist_ok=True)
    for probe, texts in run.texts.items():
        texts.reset_index().to_json(root / "probes" / f"{probe}.jsonl", orient="records", lines=True)
    return root
