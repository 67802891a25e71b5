"""geffect.models: the tiny Llama target models (build and load) and a loader for any causal LM.

- :func:`load` (alias ``load_model``): ``(model, tokenizer)`` for a shipped name, local path or hub id.
- :data:`SHIPPED_MODELS`: ``tiny`` (the world and every task), ``tiny-retain90/95/99`` (without the
  TOFU forget authors) and ``tiny-reference`` (without any task's forget portion), under ``data/models``;
  what each learns: :data:`MODEL_SPECS`.
- :func:`build_world_models`: regenerate the data and rebuild the shipped models;
  :func:`measure`: what a model knows, as the build report records it.
"""

from geffect.data.paths import data_root
from geffect.models.build import build_world_models, tiny_config
from geffect.models.curriculum import MODEL_SPECS
from geffect.models.knowledge import measure
from geffect.models.loading import SHIPPED_MODELS, default_device, load, models_dir
from geffect.models.train import TrainConfig, memorise

load_model = load

__all__ = [
    "MODEL_SPECS", "SHIPPED_MODELS", "TrainConfig", "build_world_models", "data_root", "default_device", "load",
    "load_model", "measure", "memorise", "models_dir", "tiny_config",
]
