"""Kill-and-resume: a run SIGKILLed mid-way and resumed has exactly the rows of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from geffect.training import checkpoint as ckpt
from geffect.training.records import read_table
from geffect.training.run import Run

TESTS = Path(__file__).parent
SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_training_support import install_toy_model
    install_toy_model()
    import geffect
    geffect.unlearn("test_training_support:slow_ga", forget="forget01", out=sys.argv[1], resume=sys.argv[2] == "1",
                    steps=8, batch_size=4, probe_size=3, seed=11, lr=1e-2, checkpoint_every=3, flush_every=1,
                    progress=False)
""")


def launch(script: Path, out: Path, resume: bool, pause: float) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TEST_OBJECTIVE_PAUSE": str(pause)}
    return subprocess.Popen([sys.executable, str(script), str(out), "1" if resume else "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output


def tables(path: Path) -> dict[str, pd.DataFrame]:
    keys = {"effects": ["step", "probe", "instance", "layer", "direction"], "history": ["step"],
            "risks": ["step", "probe", "instance"]}
    return {t: read_table(path, t).sort_values(k, ignore_index=True) for t, k in keys.items()}


@pytest.mark.slow
def test_sigkilled_run_resumes_to_identical_records(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    finish(launch(script, reference, resume=False, pause=0.0))

    proc = launch(script, killed, resume=False, pause=0.4)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if not read_table(killed, "history").empty and read_table(killed, "history")["step"].max() >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # killed between checkpoints 3 and 6: rows of steps 3.. exist on disk but no checkpoint covers them
    assert Run(killed).status == "running"
    assert ckpt.latest_checkpoint(killed)[0] == 3
    assert read_table(killed, "history")["step"].max() >= 3

    finish(launch(script, killed, resume=True, pause=0.0))
    assert Run(killed).status == "finished"
    expected, got = tables(reference), tables(killed)
    for name in expected:
        pd.testing.assert_frame_equal(got[name], expected[name], check_exact=True, obj=name)
    assert len(got["history"]) == 8 and len(got["effects"]) == 8 * 2 * 3 * 5 * 2
    final = [load_file(str(ckpt.latest_checkpoint(p)[1] / ckpt.PARAMS_FILE)) for p in (reference, killed)]
    assert all(torch.equal(final[0][n], final[1][n]) for n in final[0])
    # resuming a finished run does nothing
    finish(launch(script, killed, resume=True, pause=0.0))
    pd.testing.assert_frame_equal(tables(killed)["history"], expected["history"], check_exact=True)
