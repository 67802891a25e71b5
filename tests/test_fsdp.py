"""FSDP2 across two CPU processes (gloo): live recording equals the single-process run, and
recording leaves training (gradients, optimiser, parameters) exactly as it is without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_ddp import TESTS, launch, sorted_table

from geffect.training.checkpoint import latest_checkpoint, load_checkpoint
from geffect.training.run import Run

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_training_support import install_toy_model
    install_toy_model()
    import geffect
    geffect.unlearn("gd", forget="forget01", out=sys.argv[1], steps=3, batch_size=4, grad_accum=2, probe_size=6,
                    seed=2, lr=1e-2, progress=False, fsdp={fsdp}, record_every={every}, max_grad_norm=1.0)
""")
TOLERANCE = 1e-5  # float32, relative to each column's largest value


def final_parameters(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(run)[1])[0]


def relative_error(actual, expected) -> float:
    actual, expected = torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.slow
def test_fsdp_records_what_one_process_records_and_changes_no_step(tmp_path):
    runs = {}
    for name, processes, fsdp, every in (("single", 1, False, 1), ("fsdp", 2, True, 1), ("plain", 2, True, 0)):
        script = tmp_path / f"{name}.py"
        script.write_text(SCRIPT.format(tests=str(TESTS), fsdp=fsdp, every=every))
        runs[name] = tmp_path / name
        launch(script, runs[name], processes)
        assert Run(runs[name]).status == "finished"
    for table in ("effects", "risks", "history"):
        single, fsdp = sorted_table(runs["single"], table), sorted_table(runs["fsdp"], table)
        assert len(single) == len(fsdp) > 0
        numeric = [c for c in single.columns if single[c].dtype.kind == "f" and single[c].notna().any()]
        assert (fsdp.drop(columns=numeric) == single.drop(columns=numeric)).all().all(), table
        for column in numeric:
            assert relative_error(fsdp[column].fillna(0), single[column].fillna(0)) <= TOLERANCE, (table, column)
    # the probes were split over the processes: 6 per probe, 3 steps, 5 groups, 2 directions, 2 probes
    assert len(sorted_table(runs["fsdp"], "effects")) == 3 * 2 * 5 * 6 * 2
    # recording saw nothing different: same losses, gradient norms and final parameters, bit for bit
    recorded, plain = sorted_table(runs["fsdp"], "history"), sorted_table(runs["plain"], "history")
    for column in ("loss", "grad_norm"):
        assert recorded[column].tolist() == plain[column].tolist(), column
    with_records, without = final_parameters(runs["fsdp"]), final_parameters(runs["plain"])
    assert with_records.keys() == without.keys()
    assert all(torch.equal(with_records[n], without[n]) for n in without)
    single = final_parameters(runs["single"])
    assert max(relative_error(with_records[n], single[n]) for n in single) <= TOLERANCE


def test_the_cli_runs_as_a_module_for_launchers():
    """``accelerate launch -m geffect.cli unlearn ... --fsdp`` (the README's command) needs ``-m geffect.cli``."""
    done = subprocess.run([sys.executable, "-m", "geffect.cli", "unlearn", "--help"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--fsdp" in done.stdout and "--max-length" in done.stdout
