"""Load a causal LM and its tokenizer: the shipped tiny models by name, or any HF model.

Shipped names resolve to ``<data root>/models/<name>`` (see
:func:`geffect.data.paths.data_root`); anything else is passed to
``from_pretrained`` as a local path or Hugging Face hub id. Safetensors weights are
preferred, remote code runs only when asked, and the model is put in eval mode on
:func:`default_device` unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from geffect.data.paths import data_root

SHIPPED_MODELS: tuple[str, ...] = ("tiny", "tiny-retain90", "tiny-retain95", "tiny-retain99")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def models_dir() -> Path:
    """Folder of the shipped models: ``<data root>/models``."""
    return data_root() / "models"


def resolve(name_or_path: str | Path) -> str:
    """Directory of a shipped model name, else ``name_or_path`` unchanged (a path or hub id)."""
    if str(name_or_path) in SHIPPED_MODELS:
        folder = models_dir() / str(name_or_path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"shipped model {name_or_path!r} not found in {folder}; "
                                    "run `geffect build-world` to build it")
        return str(folder)
    return str(name_or_path)


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype != "auto":
        try:
            return getattr(torch, dtype)
        except AttributeError as err:
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'auto'") from err
    return dtype


def load(name_or_path: str | Path, device: torch.device | str | None = None,
         dtype: torch.dtype | str | None = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a shipped name (``"tiny"``, ``"tiny-retain90"``, ...), local path or hub id.

    ``dtype`` defaults to float32 (exact gradients; ``"auto"`` keeps the stored
    dtype); ``device`` defaults to :func:`default_device`. The model is in eval mode.
    """
    source = resolve(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=_dtype(dtype), trust_remote_code=trust_remote_code,
                                                 use_safetensors=None)
    model.to(default_device() if device is None else torch.device(device))
    model.eval()
    return model, tokenizer
