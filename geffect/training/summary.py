"""One row of headline numbers per run, and a comparison table of several runs.

For each probe ``p`` a run is summarised by the mean risk of its instances at the first
recorded step (``risk_<p>_start``) and after the last one (``risk_<p>_end``), and by the
cumulative G-effect ``g_effect_<p>``: the sum over recorded steps of the probe's mean
(over instances) of Σ_layers <∇R_i, ∇L_u> (Wang et al., ICLR 2025). Negative values on
the forget probe mean forgetting; negative values on retain probes mean collateral
damage. Evaluation metrics (``metrics.json``) are appended when present.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from geffect.schema import DIRECTION_GRADIENT
from geffect.training.run import Run


def summarize(run: Run | str | Path) -> dict[str, Any]:
    """Headline numbers of one run (see the module docstring)."""
    run = run if isinstance(run, Run) else Run(run)
    info, history = run.info, run.history
    row: dict[str, Any] = {"run": run.name, "objective": run.config.objective, "task": run.config.task_name(),
                           "status": info.get("status"),
                           "steps": info.get("step"), "seconds": info.get("seconds")}
    if not history.empty:
        row["loss_final"] = float(history["loss"].iloc[-1])
    risks = run.risks
    for probe, frame in risks.groupby("probe", sort=False):
        by_step = frame.groupby("step")
        row[f"risk_{probe}_start"] = float(by_step["risk"].mean().iloc[0])
        row[f"risk_{probe}_end"] = float(by_step["risk_after"].mean().iloc[-1])
    effects = run.effects
    gradient = effects[effects["direction"] == DIRECTION_GRADIENT]
    if not gradient.empty:
        per_instance = gradient.groupby(["probe", "step", "instance"], sort=False)["value"].sum()
        cumulative = per_instance.groupby(level=["probe", "step"], sort=False).mean().groupby(level="probe", sort=False).sum()
        row.update({f"g_effect_{probe}": float(value) for probe, value in cumulative.items()})
    metrics = run.metrics
    row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k not in row})
    return row


def compare(runs: Iterable[Run | str | Path]) -> pd.DataFrame:
    """A table with one :func:`summarize` row per run."""
    rows = [summarize(run) for run in runs]
    if not rows:
        raise ValueError("compare needs at least one run")
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-style markdown table of ``frame`` (floats rounded to ``digits`` significant digits)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.{digits}g}"
        return "" if value is None else str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"
