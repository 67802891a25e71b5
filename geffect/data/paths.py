"""Where geffect's shipped data lives: the repository's ``data/`` folder.

The environment variable ``GEFFECT_DATA`` points elsewhere (e.g. a copy outside an
installed package), which is how tests and users relocate the world and models.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "GEFFECT_DATA"


def data_root() -> Path:
    """The data folder: ``$GEFFECT_DATA`` if set, else ``<repository>/data``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "data"
