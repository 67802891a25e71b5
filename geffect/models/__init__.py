"""geffect.models: the tiny Llama target models (build and load) and a loader for any causal LM.

- :func:`load` (alias ``load_model``): ``(model, tokenizer)`` for a shipped name, local path or hub id.
- :data:`SHIPPED_MODELS`: ``tiny`` (trained on the whole world) and ``tiny-retain90/95/99``
  (trained without the forget authors), stored under ``data/models``.
- :func:`build_world_models`: regenerate the world and rebuild the shipped models.
"""

from geffect.data.paths import data_root
from geffect.models.build import build_world_models, evaluate_memorisation, tiny_config
from geffect.models.loading import SHIPPED_MODELS, default_device, load, models_dir
from geffect.models.train import TrainConfig, memorise

load_model = load

__all__ = [
    "SHIPPED_MODELS", "TrainConfig", "build_world_models", "data_root", "default_device",
    "evaluate_memorisation", "load", "load_model", "memorise", "models_dir", "tiny_config",
]
