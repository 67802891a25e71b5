"""Every geffect.plot view rendered to PNG (Agg) and checked against independently known numbers.

The synthetic runs (``geffect.reporting.synthetic``) plant exact batch effects: retain cell
(layer k, any step) = ``retain_level × RETAIN_WEIGHTS[k]``; forget cell = ``forget_level ×
FORGET_WEIGHTS[k]`` before step 18 and 5 % of it after. Expected values below are derived
from those constants (or from the raw table with numpy), not from the plotting code.
"""

from __future__ import annotations

import dataclasses

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from geffect import plot
from geffect.reporting.legibility import blank_panels, panel_legibility, save_checked
from geffect.reporting.style import (
    color_for,
    effect_cmap,
    effect_label,
    effect_norm,
    is_symlog,
    ordered_layers,
    sign_key,
    symmetric_limit,
)
from geffect.reporting.synthetic import (
    FORGET_WEIGHTS,
    RETAIN_WEIGHTS,
    write_run_dir,
)

LAYERS = ["embed", "block.0", "block.1", "block.2", "block.3", "final_norm", "lm_head"]



def render(fig, tmp_path, name="fig.png", dpi=40):
    """Save as PNG through Agg and read it back: right size, not blank."""
    path = tmp_path / name
    fig.savefig(path, dpi=dpi)
    image = mpimg.imread(path)
    width, height = fig.get_size_inches()
    assert abs(image.shape[0] - height * dpi) <= 1 and abs(image.shape[1] - width * dpi) <= 1
    assert image[..., :3].std() > 0.05
    return image


def titled(fig, title):
    """The one panel whose title (its first line, less an "(own scale)" note) is ``title``."""
    matches = [ax for ax in fig.axes if ax.get_title().split("\n")[0].removesuffix(" (own scale)") == title]
    assert len(matches) == 1, [ax.get_title() for ax in fig.axes]
    return matches[0]


def colorbar_of(ax):
    return ax.collections[0].colorbar


def mesh_values(ax, shape):
    return np.asarray(ax.collections[0].get_array(), dtype=float).reshape(shape)


# --------------------------------------------------------------------------- style


def test_style_helpers():
    assert ordered_layers(["lm_head", "block.10", "block.2", "embed", "final_norm"]) == [
        "embed", "block.2", "block.10", "final_norm", "lm_head"]
    assert symmetric_limit([-3.0, 2.0, np.nan]) == 3.0
    assert symmetric_limit([]) == 1.0
    builtins = ["ga", "gd", "ga_kl", "wga", "npo", "npo_gd", "npo_kl", "simnpo", "tnpo", "wtnpo", "idk",
                "dpo", "rmu", "yao"]
    assert len({color_for(n) for n in builtins}) == len(builtins)
    assert color_for("my_loss") == color_for("my_loss")
    assert "nats" in effect_label("gradient") and "Δθ" in effect_label("update")
    with pytest.raises(ValueError, match="direction"):
        effect_label("sideways")


def test_sign_keys_say_which_sign_raises_the_risk():
    assert sign_key("gradient") == "negative = risk rises"
    assert sign_key("update") == "positive = risk rises"
    assert effect_label("gradient").endswith("negative = risk rises")
    assert effect_label("update", colour=True, scale="symlog").endswith("red (positive) = risk rises, symlog")
    # red means "the risk rises" in both views: the update map is the reversed gradient map
    import matplotlib
    red_gradient = matplotlib.colormaps[effect_cmap("gradient")](0.0)
    red_update = matplotlib.colormaps[effect_cmap("update")](1.0)
    assert red_gradient == red_update and red_gradient[0] > 0.4 > red_gradient[2]


def test_effect_norm_turns_symlog_when_values_span_decades():
    assert not is_symlog(effect_norm(np.linspace(-1, 1, 50)))  # evenly spread: linear
    spanning = np.concatenate([np.full(40, 1e-4), [-3.0]])  # most values 4 decades under the limit
    norm = effect_norm(spanning)
    assert is_symlog(norm) and (norm.vmin, norm.vmax) == (-3.0, 3.0)
    assert norm.linthresh == pytest.approx(1e-4)
    # the smallest magnitude sits visibly off the zero colour: 15 % of the way to the end colour
    assert abs(float(norm(1e-4)) - 0.5) == pytest.approx(0.075, abs=1e-6)
    assert not is_symlog(effect_norm(spanning, "linear"))
    with pytest.raises(ValueError, match="scale"):
        effect_norm(spanning, "log")


# --------------------------------------------------------------------------- views


def test_layer_step_heatmap(ga, tmp_path):
    fig = plot.layer_step_heatmap(ga)
    render(fig, tmp_path)
    assert len(fig.axes) == 8  # probes × views panels, each with its colour bar
    for probe in ("forget", "retain"):
        grad, update = titled(fig, f"{probe} probe: G-effect"), titled(fig, f"{probe} probe: predicted risk change")
        for ax, view in ((grad, "gradient"), (update, "update")):
            assert [t.get_text() for t in ax.get_yticklabels()] == LAYERS
            assert ax.get_xlabel() == "training step"
            low, high = ax.collections[0].get_clim()
            assert low == -high
            assert colorbar_of(ax).ax.get_ylabel().startswith(effect_label(view, colour=True).split("\n")[0])
            assert sign_key(view, colour=True) in colorbar_of(ax).ax.get_ylabel()
        # the update panel's title gives the predicted total and the observed change
        planted = ga.risks.query("probe == @probe")
        observed = (planted.groupby("instance")["risk_after"].last() - planted.groupby("instance")["risk"].first()).mean()
        assert f"observed {observed:+.3g}" in update.get_title()
    retain = titled(fig, "retain probe: G-effect")
    values = mesh_values(retain, (len(LAYERS), 30))
    expected = np.array([RETAIN_WEIGHTS[layer] for layer in LAYERS])
    np.testing.assert_allclose(values, np.repeat(expected[:, None], 30, axis=1), rtol=1e-12)
    assert retain.collections[0].get_clim() == pytest.approx((-0.4, 0.4))
    # update view: −lr × the gradient effect (the synthetic run's plain SGD)
    update_values = mesh_values(titled(fig, "retain probe: predicted risk change"), (len(LAYERS), 30))
    np.testing.assert_allclose(update_values, -0.01 * values, rtol=1e-9)
    forget_values = mesh_values(titled(fig, "forget probe: G-effect"), (len(LAYERS), 30))
    head = LAYERS.index("lm_head")
    assert forget_values[head, 0] == pytest.approx(4 * FORGET_WEIGHTS["lm_head"])
    assert forget_values[head, 18] == pytest.approx(0.05 * 4 * FORGET_WEIGHTS["lm_head"])
    assert titled(fig, "forget probe: G-effect").collections[0].get_clim() == pytest.approx((-1.8, 1.8))


def test_layer_step_heatmap_one_view_shared_scale_and_errors(ga):
    fig = plot.layer_step_heatmap(ga, direction="gradient", shared_scale=True)
    assert len(fig.axes) == 4
    clims = [titled(fig, f"{p} probe: G-effect").collections[0].get_clim() for p in ("forget", "retain")]
    assert clims[0] == clims[1] == pytest.approx((-1.8, 1.8))
    with pytest.raises(ValueError, match="no 'gradient' effect records for probes \\['nope'\\]"):
        plot.layer_step_heatmap(ga, probes=("nope",), direction="gradient")
    with pytest.raises(ValueError, match="direction"):
        plot.layer_step_heatmap(ga, direction="sideways")


def test_cumulative_effect(ga, wga, tmp_path):
    fig = plot.cumulative_effect([ga, wga])
    render(fig, tmp_path)
    forget, retain = titled(fig, "forget probe: G-effect"), titled(fig, "retain probe: G-effect")
    assert "nats" in forget.get_ylabel() and forget.get_xlabel() == "training step"
    assert forget.get_ylabel().endswith("negative = risk rises")
    final = {}
    for ax, probe in ((forget, "forget"), (retain, "retain")):
        lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
        assert set(lines) == {"ga", "wga"}
        for name, line in lines.items():
            assert line.get_ydata()[0] == 0.0
            assert line.get_xdata()[-1] == 30  # the total covers all 30 steps, also when recording every 2
            assert to_hex(line.get_color()) == color_for(name)
            final[(name, probe)] = line.get_ydata()[-1]
    forget_total = 4 * -1 * (18 + 0.05 * 12)
    retain_total = 30 * sum(RETAIN_WEIGHTS.values())
    assert final[("ga", "forget")] == pytest.approx(forget_total)
    assert final[("wga", "forget")] == pytest.approx(forget_total)  # step-weighted: same total
    assert final[("ga", "retain")] == pytest.approx(retain_total)
    assert final[("wga", "retain")] == pytest.approx(0.2 * retain_total)
    # independent check from the raw table: sum over steps of the instance-mean summed over layers
    raw = ga.effects.query("probe == 'retain' and direction == 'gradient'")
    assert final[("ga", "retain")] == pytest.approx(raw.groupby(["step", "layer"])["value"].mean().sum())
    # the predicted-change panel: its curve, and the observed change drawn dotted beside it
    update = titled(fig, "forget probe: predicted risk change")
    assert update.get_ylabel().endswith("positive = risk rises")
    ga_lines = [line for line in update.get_lines() if to_hex(line.get_color()) == color_for("ga")]
    predicted, observed = ga_lines
    assert predicted.get_ydata()[-1] == pytest.approx(-0.01 * forget_total)
    assert observed.get_linestyle() == ":"
    planted = ga.risks.query("probe == 'forget'")
    assert observed.get_ydata()[-1] == pytest.approx(planted.query("step == 29")["risk_after"].mean()
                                                     - planted.query("step == 0")["risk"].mean())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend beside the panels
    assert legend == ["ga", "wga", "observed (dotted)"]
    assert all(ax.get_legend() is None for ax in fig.axes)


def test_layer_totals(ga, wga, tmp_path):
    fig = plot.layer_totals({"GA": ga, "WGA": wga})
    render(fig, tmp_path)
    retain = titled(fig, "retain probe: G-effect")
    assert [t.get_text() for t in retain.get_xticklabels()] == LAYERS
    heights = [p.get_height() for p in retain.patches if p.get_width() > 0 and p.get_height() != 0]
    expected = [30 * RETAIN_WEIGHTS[k] for k in LAYERS] + [0.2 * 30 * RETAIN_WEIGHTS[k] for k in LAYERS]
    assert sorted(heights) == pytest.approx(sorted(expected))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["GA", "WGA"]
    # totals spanning 0.12 .. 12 put the value axis on a symmetric-log scale, noted in its label
    assert retain.get_yscale() == "symlog" and "symlog" in retain.get_ylabel()
    update = titled(fig, "retain probe: predicted risk change")
    heights = [p.get_height() for p in update.patches if p.get_width() > 0 and p.get_height() != 0]
    assert sorted(heights) == pytest.approx(sorted(-0.01 * np.array(expected)))
    width, _ = fig.get_size_inches()
    assert width <= 2 * plot.MAX_PANEL_WIDTH


@pytest.mark.parametrize("kind", ["violin", "box"])
def test_instance_distribution(ga, tmp_path, kind):
    fig = plot.instance_distribution(ga, windows=3, kind=kind)
    render(fig, tmp_path)
    retain = titled(fig, "retain probe: G-effect")
    assert [t.get_text() for t in retain.get_xticklabels()] == ["steps 0–9", "steps 10–19", "steps 20–29"]
    # per-instance totals (sum over layers) are level × Σweights × multiplier: the extent must cover them
    raw = ga.effects.query("probe == 'retain' and direction == 'gradient'")
    per_instance = raw.groupby(["step", "instance"])["value"].sum()
    low, high = retain.get_ylim()
    assert low <= per_instance.min() and high >= min(per_instance.max(), 0.0)
    assert "nats" in retain.get_ylabel()
    assert titled(fig, "retain probe: predicted risk change").get_ylabel().endswith("positive = risk rises")
    with pytest.raises(ValueError, match="kind"):
        plot.instance_distribution(ga, kind="swarm")


def test_most_damaged_from_run_dir(ga, tmp_path):
    folder = write_run_dir(ga, tmp_path / "run")
    table = plot.most_damaged_table(folder, n=4)
    # independent: observed increase = last risk_after - first risk
    risks = ga.risks.query("probe == 'retain'")
    increase = (risks[risks.step == 29].set_index("instance")["risk_after"]
                - risks[risks.step == 0].set_index("instance")["risk"]).sort_values(ascending=False)
    assert list(table["instance"]) == list(increase.index[:4])
    assert table["instance"].iloc[0] == 3  # the planted most-damaged instance
    np.testing.assert_allclose(table["damage"], increase.to_numpy()[:4])
    assert table["text"].iloc[0] == "Question about retained fact 3? → Answer 3."
    fig = plot.most_damaged(folder, n=4)
    render(fig, tmp_path)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("#3: Question about retained fact 3?")
    np.testing.assert_allclose([p.get_width() for p in ax.patches], increase.to_numpy()[:4])
    assert ax.get_xlabel() == "observed risk increase (nats)"


def test_most_damaged_without_risks_uses_effects(ga):
    bare = ga.effects  # a bare effects table: no risks, no texts
    letters = ["a", "b", "c", "d", "e", "f", "g", "h"]
    table = plot.most_damaged_table(bare, n=2, texts=letters)
    assert table["instance"].iloc[0] == 3
    per_instance = bare.query("probe == 'retain' and direction == 'gradient'").groupby("instance")["value"].sum()
    assert table["damage"].iloc[0] == pytest.approx(-per_instance[3])
    assert table["measure"].iloc[0] == "minus cumulative effect"
    assert table["text"].tolist() == ["d", letters[per_instance.drop(3).idxmin()]]


def test_token_heatmap(tmp_path):
    tokens = {0: ["The", "cat", "sat", "."], 5: ["Paris", "is", "nice"]}
    rows = [(i, p, float((p + 1) * (1 if i == 0 else -2))) for i, toks in tokens.items() for p in range(len(toks))]
    frame = pd.DataFrame(rows, columns=["instance", "position", "value"])
    fig = plot.token_heatmap(frame, tokens, instances=[5, 0])
    render(fig, tmp_path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["#5", "#0"]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["Paris", "is", "nice", "The", "cat", "sat", "."]  # no text in the empty cell
    assert ax.collections[0].get_clim() == pytest.approx((-6.0, 6.0))
    values = np.ma.getdata(ax.collections[0].get_array()).reshape(2, 4)
    np.testing.assert_allclose(values[0, :3], [-2, -4, -6])
    np.testing.assert_allclose(values[1], [1, 2, 3, 4])
    # a text column in the table itself, per layer summed unless one is chosen
    layered = pd.concat([frame.assign(layer="block.0"), frame.assign(layer="lm_head", value=1.0)])
    layered["text"] = [tokens[i][p] for i, p in zip(layered["instance"], layered["position"])]
    fig = plot.token_heatmap(layered, layer="lm_head", max_tokens=2)
    assert fig.axes[0].collections[0].get_clim() == pytest.approx((-1.0, 1.0))
    assert [t.get_text() for t in fig.axes[0].texts] == ["The", "cat", "Paris", "is"]
    with pytest.raises(ValueError, match="integer 'position'"):
        plot.token_heatmap(frame.rename(columns={"position": "pos"}))


def test_predicted_vs_observed(ga, wga, tmp_path):
    fig = plot.predicted_vs_observed([ga, wga])
    render(fig, tmp_path)
    for run in (ga, wga):
        ax = titled(fig, run.name)
        expected = np.corrcoef(run.risks["predicted_change"], run.risks["risk_after"] - run.risks["risk"])[0, 1]
        box = [t.get_text() for t in ax.texts]
        assert box == [f"Pearson r = {expected:.3f}\nn = {len(run.risks)}"]
        points = sum(len(c.get_offsets()) for c in ax.collections)
        assert points == len(run.risks)
        assert "nats" in ax.get_xlabel() and "nats" in ax.get_ylabel()


def test_pairwise_matrix(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 7, 3))
    fig = plot.pairwise_matrix(array, groups=["embed", "block.0", "lm_head"])
    render(fig, tmp_path)
    heat = next(ax for ax in fig.axes if ax.get_xlabel() == "retain instance i")
    summed = array.sum(axis=2)
    np.testing.assert_allclose(mesh_values(heat, (5, 7)), summed)
    assert heat.collections[0].get_clim() == pytest.approx((-np.abs(summed).max(), np.abs(summed).max()))
    top = next(ax for ax in fig.axes if ax.get_ylabel() == "sum over j\n(negative = risk rises)")
    np.testing.assert_allclose([p.get_height() for p in top.patches], summed.sum(axis=0))
    side = next(ax for ax in fig.axes if ax.get_xlabel() == "sum over i\n(negative = risk rises)")
    np.testing.assert_allclose([p.get_width() for p in side.patches], summed.sum(axis=1))
    one = plot.pairwise_matrix(array, groups=["embed", "block.0", "lm_head"], layer="block.0")
    heat = next(ax for ax in one.axes if ax.get_xlabel() == "retain instance i")
    np.testing.assert_allclose(mesh_values(heat, (5, 7)), array[:, :, 1])
    long = pd.DataFrame([(j, i, k, array[j, i, n]) for j in range(5) for i in range(7)
                         for n, k in enumerate(["embed", "block.0", "lm_head"])],
                        columns=["forget", "instance", "layer", "value"])
    heat = next(ax for ax in plot.pairwise_matrix(long).axes if ax.get_xlabel() == "retain instance i")
    np.testing.assert_allclose(mesh_values(heat, (5, 7)), summed)
    with pytest.raises(ValueError, match="2-D"):
        plot.pairwise_matrix(np.zeros(4))


def test_comparison_grid(ga, wga, tmp_path):
    fig = plot.comparison_grid([ga, wga])
    render(fig, tmp_path)
    for probe, limit in (("forget", 1.8), ("retain", 0.4)):
        clims = [titled(fig, f"{run}: {probe} probe: G-effect").collections[0].get_clim() for run in ("ga", "wga")]
        assert clims[0] == clims[1] == pytest.approx((-limit, limit))  # one scale per column and view
        clims = [titled(fig, f"{run}: {probe} probe: predicted risk change").collections[0].get_clim()
                 for run in ("ga", "wga")]
        assert clims[0] == clims[1] == pytest.approx((-0.01 * limit, 0.01 * limit))
    curves = [titled(fig, f"{run}: cumulative G-effect") for run in ("ga", "wga")]
    assert curves[0].get_ylim() == curves[1].get_ylim()
    styles = {line.get_label(): line.get_linestyle() for line in curves[1].get_lines()
              if not line.get_label().startswith("_")}
    assert styles == {"forget": "-", "retain": "--"}
    assert "negative = risk rises" in curves[0].get_ylabel()
    predicted = titled(fig, "ga: cumulative predicted risk change")
    assert "positive = risk rises" in predicted.get_ylabel()
    assert ":" in [line.get_linestyle() for line in predicted.get_lines()]  # the observed change
    # (2 runs × 2 views) rows × 3 columns, and a colour bar beside each of the 8 heatmaps
    assert len(fig.axes) == 12 + 8
    for ax in fig.axes:
        if ax.collections and ax.collections[0].colorbar is not None:
            bar = ax.collections[0].colorbar.ax.get_position()
            panel = ax.get_position()
            assert 0 <= bar.x0 - panel.x1 < 0.05 and bar.y0 >= panel.y0 - 0.05 and bar.y1 <= panel.y1 + 0.05
    assert [t.get_text() for t in titled(fig, "wga: forget probe: G-effect").get_yticklabels()] == LAYERS
    assert titled(fig, "wga: retain probe: G-effect").get_yticklabels() == []


def test_comparison_grid_gives_a_hidden_panel_its_own_scale(ga, tmp_path):
    """A run 10⁶× smaller than another would render white on the column's shared scale."""
    tiny = dataclasses.replace(ga, name="tiny", effects=ga.effects.assign(value=ga.effects["value"] * 1e-7))
    fig = plot.comparison_grid([ga, tiny], direction="gradient")
    assert titled(fig, "tiny: forget probe: G-effect").get_title().endswith("(own scale)")
    assert not titled(fig, "ga: forget probe: G-effect").get_title().endswith("(own scale)")
    assert blank_panels(fig) == []


# --------------------------------------------------------------------------- legibility


def _linear_grid(run):
    """The comparison grid as it was drawn before scales adapted: linear, one scale per column."""
    return plot.comparison_grid(run, direction="gradient", scale="linear")


def test_legibility_finds_blank_panels_in_pixels(ga):
    """A run whose values span decades (most cells 10⁻⁴ of the largest, as on a memorised target
    before the last steps): on a linear scale its panels render blank; the default scale shows them."""
    effects = ga.effects.copy()
    late = effects["step"] >= 27
    effects.loc[~late, "value"] *= 1e-4
    spanning = dataclasses.replace(ga, effects=effects)
    linear = panel_legibility(plot.layer_step_heatmap(spanning, scale="linear"))
    forget = next(c for c in linear if c.panel.startswith("forget probe: G-effect"))
    assert forget.kind == "heatmap" and forget.nonzero == 7 * 30
    assert forget.visible <= 7 * 3 + 2  # only the last three steps' cells stand out of the white
    assert blank_panels(plot.layer_step_heatmap(spanning, scale="linear"))
    assert blank_panels(plot.layer_step_heatmap(spanning)) == []
    for view in (plot.cumulative_effect, plot.layer_totals, plot.comparison_grid):
        assert blank_panels(view([spanning, ga])) == [], view.__name__


def test_legibility_checks_bars(ga):
    """One layer 10⁴× larger than the others flattens their bars on a linear axis."""
    effects = ga.effects.copy()
    effects.loc[effects["layer"] == "lm_head", "value"] *= 1e4
    dominated = dataclasses.replace(ga, effects=effects)
    linear = blank_panels(plot.layer_totals(dominated, scale="linear"))
    assert linear and all(check.kind == "bars" for check in linear)
    assert blank_panels(plot.layer_totals(dominated)) == []
    checks = panel_legibility(plot.layer_totals(dominated))
    assert {c.nonzero for c in checks} == {7}


def test_save_checked_writes_the_checked_rendering(ga, tmp_path):
    fig = plot.layer_totals(ga)
    checks = save_checked(fig, tmp_path / "totals.png", dpi=40)
    image = mpimg.imread(tmp_path / "totals.png")
    width, height = fig.get_size_inches()
    assert image.shape[:2] == (round(height * 40), round(width * 40))
    assert [(c.panel, c.nonzero, c.visible) for c in checks] == \
        [(c.panel, c.nonzero, c.visible) for c in panel_legibility(fig)]
