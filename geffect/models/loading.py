"""Load a causal LM and its tokenizer: the shipped tiny models by name, or any HF model.

Shipped names resolve to ``<data root>/models/<name>`` (see
:func:`geffect.data.paths.data_root`), then existing local paths; anything else must be a
Hugging Face hub id the hub (or the local hub cache) can serve, else it fails at once
(``geffect.sources``: nothing waits on an unreachable hub). Safetensors weights are
preferred, remote code runs only when asked, and the model is put in eval mode on
:func:`default_device` unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from geffect.data.paths import data_root
from geffect.sources import Source, resolve_source

SHIPPED_MODELS: tuple[str, ...] = ("tiny", "tiny-retain90", "tiny-retain95", "tiny-retain99", "tiny-reference")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def models_dir() -> Path:
    """Folder of the shipped models: ``<data root>/models``."""
    return data_root() / "models"


def resolve(name_or_path: str | Path) -> Source:
    """Where a model reference points (shipped folder, local path or hub id), checked without waiting.

    Raises :class:`geffect.errors.InputError` at once for a name that is neither shipped, nor an
    existing path, nor a hub id the hub or its local cache can serve.
    """
    source = resolve_source(name_or_path, kind="model", shipped={n: models_dir() / n for n in SHIPPED_MODELS})
    if source.kind == "shipped" and not (Path(source.location) / "config.json").is_file():
        raise FileNotFoundError(f"shipped model {name_or_path!r} not found in {source.location}; "
                                "run `geffect build-world` to build it")
    return source


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
    options = {"trust_remote_code": trust_remote_code, "local_files_only": source.local_only}
    tokenizer = AutoTokenizer.from_pretrained(source.location, **options)
    model = AutoModelForCausalLM.from_pretrained(source.location, dtype=_dtype(dtype), use_safetensors=None,
                                                 **options)
    model.to(default_device() if device is None else torch.device(device))
    model.eval()
    return model, tokenizer
