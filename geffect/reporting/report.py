"""The self-contained HTML report of one or several unlearning runs (``geffect.report``).

``report(runs, out)`` writes into ``out``: ``report.html`` (one file: figures embedded as
base64 PNG, tables as HTML), every figure as a PNG beside it, and ``summary.csv`` (one row
per run: headline numbers and metrics). The page shows the automatic diagnosis (with the
numbers each sentence comes from), the summary and metrics tables, the run configurations
and the figures of ``geffect.plot``, all computed from the same record tables.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from geffect.reporting import plots, tables
from geffect.reporting.diagnosis import findings, findings_frame
from geffect.reporting.runs import RunData, as_runs
from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE

DIRECTIONS = (DIRECTION_GRADIENT, DIRECTION_UPDATE)

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.csv"


@dataclass
class Section:
    """One figure of the report: file stem, heading, caption, the figure, an optional table."""

    slug: str
    heading: str
    caption: str
    figure: Figure
    table: pd.DataFrame | None = None


def slugify(name: str) -> str:
    """A file-name-safe version of a run name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → flat ``{"a/b": value}``; lists and other values become text."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def summary_table(runs: Sequence[RunData]) -> pd.DataFrame:
    """One row per run: objective, status, recorded steps, final loss, headline effect numbers
    (``tables.run_summary``), mean probe risk before/after, and scalar metrics (``metric/…``)."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name, "objective": run.objective,
                               "status": run.config.get("status", "")}
        steps = pd.unique(run.effects["step"])
        row |= {"recorded_steps": len(steps), "last_step": int(max(steps))}
        if "loss" in run.history.columns and len(run.history):
            row["final_loss"] = float(run.history.sort_values("step")["loss"].iloc[-1])
        row |= tables.run_summary(run.effects, run.risks)
        if not run.risks.empty:
            for probe, part in run.risks.groupby("probe", sort=False):
                row[f"{probe}_risk_before"] = float(part.loc[part["step"] == part["step"].min(), "risk"].mean())
                row[f"{probe}_risk_after"] = float(part.loc[part["step"] == part["step"].max(), "risk_after"].mean())
        row |= {f"metric/{k}": v for k, v in flatten(run.metrics).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        rows.append(row)
    return pd.DataFrame(rows)


def config_table(runs: Sequence[RunData]) -> pd.DataFrame:
    """Run configurations side by side: one row per (flattened) setting, one column per run."""
    flat = {run.name: flatten(run.config) for run in runs}
    keys = sorted({key for values in flat.values() for key in values})
    return pd.DataFrame({name: [str(values.get(k, "")) for k in keys] for name, values in flat.items()},
                        index=pd.Index(keys, name="setting"))


def _damage_view(table: pd.DataFrame) -> pd.DataFrame:
    """The most-damaged table as shown: question and answer (or prompt and response) when known, else the text."""
    text = next((pair for pair in (["question", "answer"], ["prompt", "response"]) if pair[0] in table.columns),
                ["text"])
    return table[[c for c in ("instance", "damage", *text) if c in table.columns]]


_BOTH_VIEWS = ("G-effect ∇R·∇L_u (the paper's quantity; negative = the probe's risk rises) beside the "
               "predicted risk change ∇R·Δθ of the step actually taken (nats; positive = the risk rises). "
               "Red means the risk rises in both.")


def build_sections(runs: Sequence[RunData], probes: Sequence[str] = ("forget", "retain"),
                   texts: Any = None) -> list[Section]:
    """The report's figures, for whatever the runs recorded; every effect view shows the G-effect
    and the predicted risk change side by side when both were recorded."""
    recorded = {p: [r for r in runs if any(tables.has_records(r.effects, p, d) for d in DIRECTIONS)]
                for p in probes}
    any_probe = any(recorded.values())
    sections: list[Section] = []
    if any_probe:
        sections.append(Section("cumulative", "Cumulative effect", "Running step-weighted sum over steps of "
                                f"each view (all layers). {_BOTH_VIEWS} The dotted curves are the observed change "
                                "of the mean probe risk: the predicted change should track them.",
                                plots.cumulative_effect(runs, probes)))
    for run in runs:
        if any(run in recorded[p] for p in probes):
            sections.append(Section(f"heatmap_{slugify(run.name)}", f"Layer × step: {run.name}",
                                    "Mean over probe instances of each layer group's effect at each step. "
                                    f"{_BOTH_VIEWS} Scales turn symmetric-log when values span orders of "
                                    "magnitude (noted on the colour bar).",
                                    plots.layer_step_heatmap(run, probes)))
    if any_probe:
        sections.append(Section("layer_totals", "Per-layer totals", "Each layer group's effect summed over the "
                                f"run: which blocks carry unlearning, which carry damage. {_BOTH_VIEWS}",
                                plots.layer_totals(runs, probes)))
        sections.append(Section("instance_distribution", "Per-instance distribution", "Per-instance "
                                f"effect (all layers) averaged within step windows. {_BOTH_VIEWS}",
                                plots.instance_distribution(runs, probes)))
    if len(runs) > 1 and any_probe:
        sections.append(Section("comparison", "Objective comparison", "Per run, a G-effect row and a predicted "
                                "risk change row: layer × step heatmaps with one colour scale per column and "
                                "view (a panel whose cells the shared scale would hide gets its own, noted in its "
                                "title), and cumulative curves on one y range per view.",
                                plots.comparison_grid(runs, (*[p for p in probes if recorded[p]], "cumulative"))))
    with_risks = [r for r in runs if not r.risks.empty]
    if with_risks:
        sections.append(Section("predicted_vs_observed", "First-order prediction", "Predicted risk change "
                                "∇R_i·Δθ (update effect) vs observed change per instance and step; both positive "
                                "when the risk rises.", plots.predicted_vs_observed(with_risks)))
    damaged_probe = probes[-1] if probes else None
    for run in (recorded.get(damaged_probe, []) if damaged_probe else []):
        table = plots.most_damaged_table(run, damaged_probe, texts=texts)
        sections.append(Section(f"most_damaged_{slugify(run.name)}", f"Most damaged {damaged_probe} "
                                f"instances: {run.name}", f"Instances ranked by {table['measure'].iloc[0]}.",
                                plots.most_damaged(run, damaged_probe, texts=texts),
                                _damage_view(table)))
    weighted = [run for run in runs if any(c.startswith("weight_") for c in run.history.columns)]
    if weighted:
        sections.append(Section("term_weights", "Learned term weights", "Loss-term weights set by a weight "
                                "controller over the steps, beside the validation objective and the per-term "
                                "validation G-effects that moved them.", plots.term_weights(weighted)))
    return sections


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid
#ddd;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f5f5f5}figure{margin:1em 0}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}ul.diagnosis li{margin:.3em 0}
.note{color:#666;font-size:.9em}
"""


def _table_html(frame: pd.DataFrame, index: bool = False) -> str:
    if frame.empty:
        return '<p class="note">(none recorded)</p>'
    return frame.to_html(index=index, border=0, na_rep="", float_format=lambda v: f"{v:.4g}")


def _png(figure: Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def report(runs: Any, out: str | Path, *, title: str = "geffect report", probes: Sequence[str] = ("forget", "retain"),
           texts: Any = None, extra_figures: Mapping[str, Figure] | None = None, dpi: int = 110,
           progress: bool = True) -> Path:
    """Write the HTML report, the PNGs and ``summary.csv`` of ``runs`` into ``out``.

    ``runs``: a run directory, a ``geffect.Run``, a list of them or a ``{name: run}``
    mapping. ``texts``: probe instance texts for the most-damaged view (see
    ``geffect.plot.most_damaged_table``). ``extra_figures``: ``{heading: Figure}`` appended to
    the page. Returns the path of ``report.html``.
    """
    items = as_runs(runs)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    sections = build_sections(items, probes, texts)
    for heading, figure in (extra_figures or {}).items():
        sections.append(Section(slugify(heading), heading, "", figure))

    found = findings(items)
    summary = summary_table(items)
    summary.to_csv(folder / SUMMARY_FILE, index=False)

    blocks = []
    for section in tqdm(sections, desc="report figures", disable=not progress):
        png = _png(section.figure, dpi)
        (folder / f"{section.slug}.png").write_bytes(png)
        data = base64.b64encode(png).decode("ascii")
        blocks.append(
            f'<h2 id="{section.slug}">{html.escape(section.heading)}</h2><figure>'
            f'<img alt="{html.escape(section.heading)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(section.caption)}</figcaption></figure>"
            + (_table_html(section.table) if section.table is not None else "")
        )
    sentences = "".join(f"<li><b>{html.escape(f.run)}</b>: {html.escape(f.sentence)}</li>" for f in found)
    metrics = summary[["run", *[c for c in summary.columns if c.startswith("metric/")]]]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">{len(items)} run(s): {html.escape(", ".join(r.name for r in items))}.
Two views of every step: the G-effect ∇R·∇L_u (Wang et al., ICLR 2025; <b>negative</b> = the
probe's risk rises) and the predicted risk change ∇R·Δθ of the update actually applied (nats;
<b>positive</b> = the risk rises), beside the observed change where it was measured. Under Adam
only the second predicts the risk; red means "the risk rises" in every figure.</p>
<h2 id="diagnosis">Diagnosis</h2><ul class="diagnosis">{sentences or "<li>(no findings)</li>"}</ul>
<details><summary>Numbers behind each sentence</summary>{_table_html(findings_frame(found))}</details>
<h2 id="summary">Summary</h2>{_table_html(summary.drop(columns=metrics.columns[1:]))}
<h2 id="metrics">Metrics</h2>{_table_html(metrics if metrics.shape[1] > 1 else pd.DataFrame())}
{"".join(blocks)}
<h2 id="config">Run configurations</h2>{_table_html(config_table(items), index=True)}
</body></html>
"""
    path = folder / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path
