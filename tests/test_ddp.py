"""Two CPU processes (gloo, launched like torchrun) record what one process records."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from geffect.training.records import read_table
from geffect.training.run import Run

TESTS = Path(__file__).parent
SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_training_support import install_toy_model
    install_toy_model()
    import geffect
    geffect.unlearn("gd", forget="forget01", out=sys.argv[1], steps=3, batch_size=4, grad_accum=2, probe_size=5,
                    seed=2, lr=1e-2, progress=False)
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(script: Path, out: Path, processes: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, str(script), str(out)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def sorted_table(path: Path, name: str) -> pd.DataFrame:
    keys = {"effects": ["step", "probe", "instance", "layer", "direction"], "history": ["step"],
            "risks": ["step", "probe", "instance"]}[name]
    return read_table(path, name).sort_values(keys, ignore_index=True)


@pytest.mark.slow
def test_two_processes_record_what_one_process_records(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    launch(script, tmp_path / "single", processes=1)
    launch(script, tmp_path / "ddp", processes=2)
    assert Run(tmp_path / "ddp").status == "finished"
    for name in ("effects", "risks", "history"):
        single, ddp = sorted_table(tmp_path / "single", name), sorted_table(tmp_path / "ddp", name)
        assert len(single) == len(ddp) > 0
        numeric = [c for c in single.columns if single[c].dtype.kind == "f"]
        pd.testing.assert_frame_equal(ddp.drop(columns=numeric), single.drop(columns=numeric), obj=name)
        pd.testing.assert_frame_equal(ddp[numeric], single[numeric], rtol=1e-4, atol=1e-6, obj=name)
    # probe instances were really split: 5 per probe, 3 steps, 5 groups, 2 directions, 2 probes
    assert len(sorted_table(tmp_path / "ddp", "effects")) == 3 * 2 * 5 * 5 * 2
