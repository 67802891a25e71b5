"""Write the tutorial notebooks of ``notebooks/`` (outputs empty) from the cell texts below.

The notebooks are committed as ``.ipynb``; this script is their source, so that a change
reads as a plain diff. Run ``python notebooks/build_notebooks.py`` after editing it.
Markdown cells start with ``#md`` on their first line (dropped from the cell).
Every notebook keeps its runs small (few steps, small probe sets) so that all four execute
on two CPU cores in a few minutes (``tests/test_notebooks.py`` runs them headless).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

SETUP = '''\
%matplotlib inline
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below runs offline
import pandas as pd

import geffect

pd.set_option("display.width", 120)
'''

QUICKSTART = [
    '''#md
# geffect quickstart: one G-effect, one unlearning run, two plots

The **G-effect** of an unlearning objective $L_u$ on data $D$ (Wang et al., ICLR 2025) is
$e = \\nabla_\\theta R(D)^\\top \\nabla_\\theta L_u$, where $R$ is the per-example NLL risk.
One gradient step of size $\\eta$ on $L_u$ changes $R$ by about $-\\eta\\, e$, so

* **negative** $e$ on the *forget* set means the step forgets (the forget risk rises),
* **negative** $e$ on the *retain* set means the step damages what should be kept.

This notebook measures one G-effect by hand on the shipped `tiny` model (a 4-block Llama that
memorised the embedded fictitious-author world), checks the first-order meaning on a real step,
then unlearns with NPO while recording G-effects at every step and plots them.''',
    SETUP + '''
OUT = Path("runs") / "01_quickstart"
shutil.rmtree(OUT, ignore_errors=True)  # start fresh on every run of the notebook''',
    '''#md
## 1. A model, a forget batch and a retain batch

`geffect.load_model` returns a Hugging Face model and tokenizer; `geffect.encode_qa` turns a
question/answer pair into `input_ids`, `attention_mask` and `labels` (question tokens masked),
and `collate` pads them into a batch.''',
    '''import torch

from geffect.data import collate

model, tokenizer = geffect.load_model("tiny", device="cpu")
world = geffect.load_world()


def batch_of(split, n):
    rows = world[split].select(range(n))
    return collate([geffect.encode_qa(tokenizer, q, a) for q, a in zip(rows["question"], rows["answer"])],
                   tokenizer)


forget, retain = batch_of("forget10", 8), batch_of("retain90", 8)
print(world["forget10"][0]["question"], "->", world["forget10"][0]["answer"])''',
    '''#md
## 2. The G-effect of gradient ascent, per instance and layer

Gradient ascent (GA) minimises $-\\mathrm{NLL}$ on the forget batch. We put its gradient in
`.grad` and ask `geffect.gradient_effect` for $\\langle \\nabla_{\\theta_k} R_i, \\nabla_{\\theta_k} L_u\\rangle$
for every retain instance $i$ and layer group $k$ (embeddings, each block, final norm, head).
The engine reads `.grad` and never changes it.''',
    '''ga = geffect.get_objective("ga")
model.zero_grad()
ga(model, forget).loss.backward()

effects = geffect.gradient_effect(model, "grad", retain, by=("instance", "layer"))
by_layer = effects.pivot(index="instance", columns="layer", values="value")[effects["layer"].unique()]
by_layer.round(4)''',
    '''#md
## 3. What the number means: one real SGD step

Summed over layers, $e_i$ predicts the change of retain risk $R_i$ after an SGD step of size
$\\eta$ on the GA loss: $\\Delta R_i \\approx -\\eta\\, e_i$. We take that step on a copy of the model
and compare.''',
    '''import copy

from geffect.objectives.terms import sequence_nll

eta = 1e-3
stepped = copy.deepcopy(model)
with torch.no_grad():
    for p_new, p in zip(stepped.parameters(), model.parameters()):
        p_new -= eta * p.grad
    before, after = sequence_nll(model, retain), sequence_nll(stepped, retain)

check = pd.DataFrame({"predicted": -eta * by_layer.sum(axis=1).to_numpy(),
                      "observed": (after - before).numpy()})
print("correlation:", round(check.corr().iloc[0, 1], 4))
check.round(6)''',
    '''#md
## 4. Unlearn with NPO, recording G-effects at every step

`geffect.unlearn` runs an objective from the target model on a forget split and records, at
every step, the G-effect of the objective's gradient (and of the applied update) per layer
group and per instance of two probe sets, `forget` and `retain`. Small settings keep this fast;
the learning rate is large so that six steps already show forgetting (and damage).''',
    '''run = geffect.unlearn("npo", model="tiny", forget="forget10", steps=6, probe_size=8, batch_size=4,
                      lr=3e-3, out=OUT / "npo", progress=False)
print(run)
run.history[["step", "loss", "risk_forget", "risk_retain"]].round(4)''',
    '''run.effects.head()''',
    '''#md
## 5. Where and when, in two views

The trainer records two effects of every step. The **G-effect** $\\nabla R^\\top \\nabla L_u$ is the
paper's quantity (negative = the probe's risk rises). The **predicted risk change**
$\\nabla R^\\top \\Delta\\theta$ is the first-order change of the risk from the update actually applied
(nats, positive = the risk rises): under Adam the step is not $-\\eta \\nabla L_u$, so only this view
predicts the risk, and the two can even disagree in sign. Every plot draws both side by side, with
red meaning "the risk rises" in both and the sign's meaning written on each colour bar and axis.

The **layer × step heatmap** shows each layer group's mean effect at each step (symmetric-log
colours when the values span orders of magnitude). The **cumulative** view sums them over steps;
the dotted curves are the observed change of the mean probe risk, which the predicted change
should track.''',
    '''geffect.plot.layer_step_heatmap(run)''',
    '''geffect.plot.cumulative_effect(run)''',
    '''#md
Next: `02_layerwise.ipynb` compares objectives layer by layer, `03_diagnose_new_objective.ipynb`
diagnoses your own objective, and `geffect report RUN_DIR` writes all views as one HTML page.''',
]

LAYERWISE = [
    '''#md
# Layer-wise and step-wise G-effects: GA vs WGA vs NPO vs TNPO

Wang et al. (ICLR 2025) read unlearning objectives through their G-effects: *where* (which
layers) and *when* (which steps) an objective removes the forget data and where it hurts the
retain data. This notebook runs four objectives with identical settings from `tiny` and
compares them:

* **GA**: gradient ascent on the forget NLL;
* **WGA**: GA with each token weighted by its (detached) probability to the power α;
* **NPO**: negative preference optimisation, a bounded, self-weighting GA (Zhang et al. 2024);
* **TNPO**: NPO applied token by token.''',
    SETUP + '''
OUT = Path("runs") / "02_layerwise"
shutil.rmtree(OUT, ignore_errors=True)
SETTINGS = dict(model="tiny", forget="forget10", steps=6, probe_size=8, batch_size=4, lr=3e-3)''',
    '''runs = {name: geffect.unlearn(name, out=OUT / name, progress=False, **SETTINGS)
        for name in ("ga", "wga", "npo", "tnpo")}
pd.DataFrame({name: run.history.set_index("step")["loss"] for name, run in runs.items()}).round(4)''',
    '''#md
## Layer view: which layer groups carry forgetting and damage

Per-layer totals add each layer group's batch effect over the run, in both views: G-effect bars
below zero, and predicted-risk-change bars above zero, are where a probe's risk rises (unlearning
on the forget probe, damage on the retain probe). The value axis turns symmetric-log when one layer
dwarfs the others, so every block stays readable.''',
    '''geffect.plot.layer_totals(runs)''',
    '''from geffect.reporting import tables

totals = pd.concat({name: pd.DataFrame({probe: tables.layer_totals(run.effects, probe)
                                         for probe in ("forget", "retain")})
                    for name, run in runs.items()}, names=["objective", "layer"])
totals.round(4)''',
    '''#md
## Step view: how the effects evolve

The comparison grid puts the layer × step heatmaps of every objective on one colour scale per
column, next to the cumulative curves. GA's forget effect typically grows in magnitude as the
forget likelihood falls (its gradient is weighted by $1/p$), while WGA and NPO damp it.''',
    '''geffect.plot.comparison_grid(runs)''',
    '''geffect.plot.cumulative_effect(runs)''',
    '''#md
## Instances and the first-order check

The per-instance distributions show whether a few instances dominate; the predicted
(`∇R_i·Δθ`, from the applied update) versus observed risk change tells how far the first-order
picture can be trusted at this step size.''',
    '''geffect.plot.instance_distribution(runs, windows=2)''',
    '''geffect.plot.predicted_vs_observed(runs)''',
    '''from geffect.reporting import findings

for finding in findings(runs):
    print(f"{finding.run}: {finding.sentence}")''',
    '''#md
## Where the two views disagree

`sign_disagreements` lists, per run, probe and layer group, what each view says about the risk and,
where they disagree in sign, which one the observed change of the probe's risk supports.''',
    '''from geffect.reporting.diagnosis import sign_disagreements

table = sign_disagreements(runs)
table[table["disagree"]] if table["disagree"].any() else "the two views agree in sign everywhere in these runs"''',
]

DIAGNOSE = [
    '''#md
# Diagnose a new unlearning objective

You have an idea for a new unlearning loss. `geffect.diagnose` runs it beside known baselines
(GA, NPO, WGA by default) with the same settings, records the G-effects of every run and writes
one HTML report comparing them, with an automatic diagnosis in words.

An objective is a plain function `fn(model, forget, retain=None, ref_model=None, **hparams)`
returning an `ObjectiveOutput`. Its signature says what it needs: a `retain` parameter gets a
retain batch, `ref_model` a frozen copy of the starting model, and keyword parameters with
defaults are hyper-parameters.''',
    SETUP + '''
OUT = Path("runs") / "03_diagnose"
shutil.rmtree(OUT, ignore_errors=True)''',
    '''#md
## The new objective in ten lines: capped gradient difference

Gradient ascent pushes the forget NLL up without bound, which is what drives the model to
collapse. A simple fix to try: ascend each forget instance's NLL only until it reaches a `cap`
(in nats), and keep a retain NLL term (as gradient difference, GD, does):
$L = \\mathbb{E}_f[\\max(0, \\mathrm{cap} - \\mathrm{NLL})] + \\lambda\\,\\mathbb{E}_r[\\mathrm{NLL}]$.
The part `capped` logs the share of forget instances already past the cap.''',
    '''import torch

from geffect.objectives import ObjectiveOutput
from geffect.objectives.terms import sequence_nll


def capped_gd(model, forget, retain, cap: float = 3.0, retain_weight: float = 1.0):
    """L = E_f[max(0, cap - NLL)] + retain_weight * E_r[NLL]."""
    forget_nll = sequence_nll(model, forget)  # per-instance mean token NLL
    per_instance = torch.relu(cap - forget_nll)
    forget_term, retain_term = per_instance.mean(), sequence_nll(model, retain).mean()
    return ObjectiveOutput(loss=forget_term + retain_weight * retain_term,
                           parts={"forget": forget_term, "retain": retain_term,
                                  "capped": (forget_nll >= cap).float().mean()},
                           per_instance=per_instance)''',
    '''#md
## Mistakes are caught before anything runs

`diagnose` first calls the function once on a real batch (and takes one backward pass). A
wrong return type, a non-scalar loss, a NaN at step 0 or an exception inside the function is
reported with the function's name and what was expected, before any baseline is trained.''',
    '''from geffect.reporting.new_objective import ObjectiveError, check_objective


def forgot_the_wrapper(model, forget):
    return -sequence_nll(model, forget)  # a vector, and not an ObjectiveOutput


try:
    check_objective(forgot_the_wrapper, model="tiny")
except ObjectiveError as err:
    print(err)''',
    '''#md
## Run the diagnosis

Small settings again (6 steps, 8 probe instances per probe set). From the command line the
same is `geffect diagnose my_objectives.py:capped_gd --steps 6 --probe-size 8 --lr 3e-3`.''',
    '''report = geffect.diagnose(capped_gd, baselines=("ga", "npo", "wga"), model="tiny", forget="forget10",
                          steps=6, probe_size=8, batch_size=4, lr=3e-3, out=OUT, progress=False)
print(report)
pd.read_csv(OUT / "summary.csv").set_index("run").T''',
    '''#md
## What the report says

The report (`report.html`, self-contained) holds the diagnosis sentences, the tables and all
figures; the same figures are saved as PNG next to it.''',
    '''from geffect.reporting import findings

runs = {path.name: geffect.Run(path) for path in sorted((OUT / "runs").iterdir())}
for finding in findings(runs):
    print(f"{finding.run}: {finding.sentence}")''',
    '''from IPython.display import Image

Image(filename=str(OUT / "cumulative.png"))''',
    '''geffect.plot.layer_totals(runs)''',
]

TOFU_GPU = [
    '''#md
# The same study on a real model and the real TOFU benchmark

Everything in the previous notebooks works unchanged on a 1–7B model and the TOFU benchmark
(Maini et al., 2024) when a GPU is there. Point the notebook at local copies (no download
happens here):

* `GEFFECT_MODEL`: a Hugging Face model directory fine-tuned on TOFU's `full` split
  (e.g. a Llama-3.2-1B or Llama-2-7B TOFU target model);
* `GEFFECT_TOFU_DIR`: a folder with TOFU's JSON-lines files (`forget10.json`,
  `forget10_perturbed.json`, `retain90.json`, `retain_perturbed.json`, `world_facts.json`, ...);
* optionally `GEFFECT_RETAIN_MODEL`: TOFU's retain90 model, for forget quality.

Without a GPU or without those paths the notebook falls back to the tiny model and the
embedded world, so it always runs end to end.''',
    SETUP + '''import torch

OUT = Path("runs") / "04_tofu"
shutil.rmtree(OUT, ignore_errors=True)

MODEL, TOFU = os.environ.get("GEFFECT_MODEL"), os.environ.get("GEFFECT_TOFU_DIR")
REAL = bool(torch.cuda.is_available() and MODEL and TOFU and Path(MODEL).is_dir() and Path(TOFU).is_dir())
if REAL:
    # bf16 autocast, gradient checkpointing and LoRA adapters keep a 7B model on one GPU;
    # probes of 32 forget and 32 retain instances are measured in chunks of 8.
    SETTINGS = dict(model=MODEL, data=TOFU, forget="forget10", steps=30, batch_size=4, grad_accum=8,
                    lr=1e-5, probe_size=32, probe_chunk_size=8, gradient_checkpointing=True,
                    lora=dict(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"]))
else:
    SETTINGS = dict(model="tiny", forget="forget10", steps=6, batch_size=4, lr=3e-3, probe_size=8)
print("real model and TOFU" if REAL else "fallback: tiny model, embedded world", "|", SETTINGS["model"])''',
    '''#md
## Unlearn with NPO and GA, recording G-effects

Same call as on the tiny model; only the settings differ.''',
    '''runs = {name: geffect.unlearn(name, out=OUT / name, progress=False, **SETTINGS) for name in ("npo", "ga")}
for name, run in runs.items():
    print(name, run.status, f"{run.info['seconds']:.1f} s")''',
    '''geffect.plot.comparison_grid(runs)''',
    '''#md
## TOFU metrics

Forget quality compares the unlearned model's truth ratios on the forget split with those of the
retain model; model utility is TOFU's harmonic mean of probability, ROUGE-L and truth ratio on
retain and world-facts data. On the fallback a handful of rows keeps this quick.''',
    '''retain_model = os.environ.get("GEFFECT_RETAIN_MODEL") if REAL else "default"
limit = None if REAL else 4
metrics = {name: run.evaluate(retain_model=retain_model, max_examples=limit, progress=False)
           for name, run in runs.items()}
pd.DataFrame(metrics).T[["forget_rouge", "retain_rouge", "model_utility", "forget_quality"]]''',
    '''#md
## The report

`geffect.report` writes one self-contained HTML page with every view, the metrics and the
automatic diagnosis.''',
    '''path = geffect.report(runs, OUT / "report", progress=False)
print(path)''',
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_layerwise.ipynb": LAYERWISE,
    "03_diagnose_new_objective.ipynb": DIAGNOSE,
    "04_tofu_on_gpu.ipynb": TOFU_GPU,
}


def make_notebook(cells: list[str]) -> nbformat.NotebookNode:
    """A notebook (Python 3 kernel, no outputs) from cell texts (``#md`` first line = markdown)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for text in cells:
        if text.startswith("#md\n"):
            nb.cells.append(nbformat.v4.new_markdown_cell(text.removeprefix("#md\n")))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(text))
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:02d}"  # stable ids: rebuilding gives an identical file
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(make_notebook(cells), HERE / name)
        print(HERE / name)


if __name__ == "__main__":
    main()
