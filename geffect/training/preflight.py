"""Checks every run passes before its directory is claimed and before any model weights load.

Each check takes the resolved :class:`UnlearnConfig` and raises :class:`geffect.errors.InputError`
(one line: what is wrong and where) or returns. They are cheap: no model weights, no network wait
(see ``geffect.sources``). Checks that need only the config or small files belong in ``CHECKS``;
the config's own fields were already validated by ``UnlearnConfig.validate``.
"""

from __future__ import annotations

from collections.abc import Callable

from geffect.training.config import UnlearnConfig

Check = Callable[[UnlearnConfig], None]


def check_model_reference(config: UnlearnConfig) -> None:
    """The model is a shipped name, an existing path, or a hub id that can be served now."""
    from geffect.models.loading import resolve

    resolve(config.model)


def check_data_reference(config: UnlearnConfig) -> None:
    """A ``data`` source is an existing path or a dataset id the hub can serve now."""
    from geffect.sources import resolve_source

    if config.data is not None:
        resolve_source(config.data, kind="data source", repo_type="dataset")


CHECKS: list[Check] = [check_model_reference, check_data_reference]


def preflight(config: UnlearnConfig) -> None:
    """Run every check of ``CHECKS`` in order (the first failure raises)."""
    for check in CHECKS:
        check(config)
