"""Checkpoints that make a resumed run continue exactly where the killed one left off.

A checkpoint taken before step ``s`` is a directory ``checkpoints/step-<s>`` holding
``params.safetensors`` (the trainable parameters by name) and ``state.pt`` (optimiser
and schedule state, the RNG states of torch / CUDA / Python / NumPy, the data draw
counters and anything else the trainer adds), saved with ``torch.save`` and loadable
with ``torch.load(weights_only=True)`` (only tensors and plain containers inside). The
directory is assembled under a hidden temporary name and renamed into place, so a
killed process never leaves a half-written checkpoint; older checkpoints are then
removed.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from geffect.errors import DamagedRunError, one_line

CHECKPOINT_DIR = "checkpoints"
PARAMS_FILE = "params.safetensors"
STATE_FILE = "state.pt"
_NAME = re.compile(r"step-(\d+)")


def rng_state() -> dict[str, Any]:
    """The RNG states of every generator training may draw from, as weights-only-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """(step, path) of the newest complete checkpoint, or None."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, step: int, params: dict[str, torch.Tensor],
                    state: dict[str, Any], keep: int = 1) -> Path:
    """Write the checkpoint taken before ``step`` atomically; keep the ``keep`` newest ones."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    final = folder / f"step-{step:08d}"
    tmp = folder / f".tmp-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({name: t.detach().contiguous().cpu() for name, t in params.items()}, str(tmp / PARAMS_FILE))
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The (parameters, state) saved in checkpoint directory ``path`` (DamagedRunError if unreadable)."""
    path = Path(path)
    return _read(path / PARAMS_FILE, lambda f: load_file(str(f))), _read(path / STATE_FILE, _load_state)


def _load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def _read(path: Path, load: Any) -> Any:
    try:
        return load(path)
    except Exception as err:  # safetensors / torch.load raise several types for a truncated or corrupt file
        raise DamagedRunError(f"checkpoint file {str(path)!r} is damaged: {one_line(err)}") from None
