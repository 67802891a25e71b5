"""The tutorial notebooks: committed without outputs, in sync with their generator, and they execute.

Execution runs each notebook headless with nbclient in a temporary working directory (their
runs land there) and checks what the outputs contain: figures were drawn, tables have the
expected columns, the printed numbers and files exist.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_layerwise.ipynb", "03_diagnose_new_objective.ipynb", "04_tofu_on_gpu.ipynb"]


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_stripped_and_matches_its_source(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    built = _builder().make_notebook(_builder().NOTEBOOKS[name])
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in built.cells], (
        f"{name} differs from notebooks/build_notebooks.py: run `python notebooks/build_notebooks.py`")


# -- execution ------------------------------------------------------------------------------------------

def _execute(name: str, cwd: Path) -> tuple[nbformat.NotebookNode, float]:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb, time.perf_counter() - start


def _outputs(nb: nbformat.NotebookNode) -> tuple[str, list[str], int]:
    """(all text output, all HTML output, number of PNG images) of an executed notebook."""
    text, html, images = [], [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            data = out.get("data", {})
            text.append(data.get("text/plain", ""))
            html.append(data.get("text/html", ""))
            images += "image/png" in data
    return "\n".join(text), html, images


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Each notebook executed once (in its own directory) with its wall time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}

    def get(name: str):
        if name not in results:
            cwd = tmp_path_factory.mktemp(name.split("_")[0])
            nb, seconds = _execute(name, cwd)
            results[name] = (nb, cwd, seconds)
        return results[name]

    yield get
    total = sum(seconds for _, _, seconds in results.values())
    print(f"\nnotebooks executed: {', '.join(f'{n} {s:.0f}s' for n, (_, _, s) in results.items())}; "
          f"total {total:.0f}s")


@pytest.mark.slow
def test_quickstart(executed):
    nb, cwd, _ = executed("01_quickstart.ipynb")
    text, html, images = _outputs(nb)
    assert images >= 2  # heatmap and cumulative plot
    table = next(h for h in html if "block.0" in h and "lm_head" in h)  # the instance x layer table
    assert "embed" in table and "final_norm" in table
    correlation = float(re.search(r"correlation: (-?[0-9.]+)", text).group(1))
    assert correlation > 0.9  # first-order prediction of one small SGD step
    assert (cwd / "runs" / "01_quickstart" / "npo" / "effects.parquet").exists()
    assert "risk_forget" in next(h for h in html if "risk_retain" in h)


@pytest.mark.slow
def test_layerwise(executed):
    nb, cwd, _ = executed("02_layerwise.ipynb")
    text, html, images = _outputs(nb)
    assert images >= 5  # layer totals, grid, cumulative, distributions, predicted vs observed
    losses = html[next(i for i, h in enumerate(html) if "tnpo" in h and "wga" in h)]
    assert all(name in losses for name in ("ga", "wga", "npo", "tnpo"))
    assert any("objective" in h and "forget" in h and "retain" in h and "block.0" in h for h in html)
    assert all((cwd / "runs" / "02_layerwise" / name / "run.json").exists() for name in ("ga", "wga", "npo", "tnpo"))


@pytest.mark.slow
def test_diagnose_notebook(executed):
    nb, cwd, _ = executed("03_diagnose_new_objective.ipynb")
    text, html, images = _outputs(nb)
    assert "objective 'forgot_the_wrapper'" in text and "expected an ObjectiveOutput" in text
    out = cwd / "runs" / "03_diagnose"
    assert (out / "report.html").is_file() and "03_diagnose/report.html" in text
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["capped_gd", "ga", "npo", "wga"]
    assert images >= 2 and "capped_gd:" in text


@pytest.mark.slow
def test_tofu_notebook_falls_back_without_gpu(executed):
    nb, cwd, _ = executed("04_tofu_on_gpu.ipynb")
    text, html, images = _outputs(nb)
    real = "real model and TOFU" in text
    assert real or "fallback: tiny model, embedded world" in text
    assert images >= 1 and any("model_utility" in h and "forget_rouge" in h for h in html)
    assert (cwd / "runs" / "04_tofu" / "report" / "report.html").is_file()
