"""The GPU benchmark's toy-size CPU run (``python benchmarks/gpu.py --device cpu --small``), so
the script cannot rot before a GPU is lent: it runs end to end and prints its one table."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu.py"
METHODS = ("engine (instance x layer)", "batch-level inner product", "per-instance backward loop",
           "captum TracInCP", "plain", "record every step", "record every 10")


@pytest.mark.slow
def test_gpu_benchmark_runs_at_toy_size_on_cpu():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--small"], capture_output=True,
                          text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model "))
    rows = [re.split(r"\s{2,}", line) for line in lines[start + 2:] if line.startswith("small ")]
    assert [row[1] for row in rows] == ["8 x 32"] * 4 + ["16 x 32"] * 4 + ["ga step"] * 3 + ["npo step"] * 3
    assert [row[2] for row in rows] == list(METHODS[:4]) * 2 + list(METHODS[4:]) * 2
    for row in rows:  # seconds, ratio and peak memory are numbers
        assert all(math.isfinite(float(cell)) for cell in row[3:6]), row
        assert float(row[3]) > 0
