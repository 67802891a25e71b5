"""Every plot type and the report, from short real unlearning runs and the real engine.

A small random Llama (world tokenizer, 2 blocks) is unlearned for a few steps with GA and
NPO by ``geffect.unlearn``; the report and each view must render and quote the numbers of
the recorded tables. Per-token and pairwise effects come from ``geffect.token_effect`` and
``geffect.pairwise_effect`` on the same model.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import geffect  # noqa: E402
from geffect import plot  # noqa: E402
from geffect.data import collate, encode_qa, load_world, train_tokenizer, world_texts  # noqa: E402
from geffect.reporting import findings, report, tables  # noqa: E402
from geffect.reporting.diagnosis import risk_moved  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A freshly initialised 2-block Llama with the world tokenizer, saved as an HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("model")
    tokenizer = train_tokenizer(world_texts(load_world()), vocab_size=1024, out_dir=folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, attn_implementation="eager")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def runs(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [geffect.unlearn(name, model=str(model_dir), forget="forget10", steps=4, probe_size=6, batch_size=4,
                            lr=1e-3, out=root / name, progress=False) for name in ("ga", "npo")]


def test_report_from_real_runs(runs, tmp_path):
    path = report(runs, tmp_path / "report", progress=False, dpi=50)
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert pngs == ["comparison.png", "cumulative.png", "heatmap_ga.png", "heatmap_npo.png",
                    "instance_distribution.png", "layer_totals.png", "most_damaged_ga.png", "most_damaged_npo.png",
                    "predicted_vs_observed.png"]
    page = path.read_text(encoding="utf-8")
    found = findings(runs)
    topics = {f.topic for f in found if f.run == "ga"}
    assert topics >= {"first order", "outcome"}
    # where/when sentences exactly when the forget risk rose beyond noise, else the plain sentence
    forgot = risk_moved(tables.observed_change(runs[0].risks, "forget"))
    assert ("when (G-effect)" in topics and "where (forget, predicted change)" in topics) == forgot
    assert ("nothing forgotten" in topics) == (not forgot)
    for finding in found:
        assert finding.sentence in page
    # the first-order sentence quotes the correlation of the recorded risks table
    risks = runs[0].risks
    r = np.corrcoef(risks["predicted_change"], risks["risk_after"] - risks["risk"])[0, 1]
    order = next(f for f in found if f.run == "ga" and f.topic == "first order")
    assert order.numbers["pearson_r"] == pytest.approx(r)
    summary = pd.read_csv(path.parent / "summary.csv")
    assert summary["run"].tolist() == ["ga", "npo"] and summary["status"].tolist() == ["finished"] * 2
    effects = runs[0].effects.query("probe == 'forget' and direction == 'gradient'")
    expected = effects.groupby(["step", "layer"])["value"].mean().sum()  # all steps recorded
    assert summary["cumulative_geffect_forget"].iloc[0] == pytest.approx(expected)
    assert expected < 0  # gradient ascent raises the forget risk to first order
    # the most-damaged table carries the probe's question text saved by the trainer
    table = plot.most_damaged_table(runs[0])
    assert table["question"].str.endswith("?").all()


def test_every_view_renders_from_real_runs(runs, tmp_path):
    figures = {
        "heatmap": plot.layer_step_heatmap(runs[0]),
        "update_heatmap": plot.layer_step_heatmap(runs[0], direction="update"),
        "cumulative": plot.cumulative_effect(runs),
        "totals": plot.layer_totals(runs),
        "distribution": plot.instance_distribution(runs, windows=2),
        "damaged": plot.most_damaged(runs[1]),
        "scatter": plot.predicted_vs_observed(runs),
        "grid": plot.comparison_grid(runs),
    }
    for name, fig in figures.items():
        fig.savefig(tmp_path / f"{name}.png", dpi=40)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    layers = [t.get_text() for t in figures["heatmap"].axes[0].get_yticklabels()]
    assert layers == ["embed", "block.0", "block.1", "final_norm", "lm_head"]
    colorbar_labels = [a.get_ylabel() for a in figures["update_heatmap"].axes if "nats" in a.get_ylabel()]
    assert len(colorbar_labels) == 2
    assert all(label.startswith("predicted risk change") and "red (positive) = risk rises" in label
               for label in colorbar_labels)


def test_token_and_pairwise_views_from_engine(model_dir, tmp_path):
    model, tokenizer = geffect.load_model(str(model_dir), device="cpu")
    rows = load_world()["forget10"].select(range(3))
    batch = collate([encode_qa(tokenizer, r["question"], r["answer"]) for r in rows], tokenizer)
    objective = geffect.get_objective("ga")
    model.zero_grad()
    objective(model, batch).loss.backward()
    tokens = geffect.token_effect(model, "grad", batch)
    fig = plot.token_heatmap(tokens, tokenizer=tokenizer, instances=[0, 2])
    fig.savefig(tmp_path / "tokens.png", dpi=40)
    ax = fig.axes[0]
    first = tokens[tokens["instance"] == 0]
    shown = [t.get_text() for t in ax.texts][: len(first)]
    assert shown == [tokenizer.decode([int(t)]).strip() for t in first["token_id"]]
    limit = tokens.loc[tokens["instance"].isin([0, 2]), "value"].abs().max()
    assert ax.collections[0].get_clim() == pytest.approx((-limit, limit))

    retain = load_world()["retain90"].select(range(4))
    probe = collate([encode_qa(tokenizer, r["question"], r["answer"]) for r in retain], tokenizer)
    result = geffect.pairwise_effect(model, lambda m, b: objective(m, b).per_instance, batch, probe)
    fig = plot.pairwise_matrix(result)
    fig.savefig(tmp_path / "pairwise.png", dpi=40)
    heat = next(a for a in fig.axes if a.get_xlabel() == "retain instance i")
    values = np.asarray(heat.collections[0].get_array(), dtype=float).reshape(3, 4)
    np.testing.assert_allclose(values, result.values.sum(dim=2).numpy())
