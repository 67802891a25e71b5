"""Forward hooks on every site, registered once and routed to whichever measurement is running.

A ``SiteHooks`` object puts one forward hook on each module that owns trainable parameters.
The hooks do nothing unless a *handler* is active (inside ``active(handler)``), so a probe can
keep them on a model that is also being trained. Rules that re-run a module functionally
(``torch.func``) do so inside ``suspended()`` so they do not trigger the hooks again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from geffect.effects.groups import Site

_state = threading.local()

Handler = Callable[[Site, tuple, dict, Any], Any]


@contextmanager
def suspended() -> Iterator[None]:
    """Run module calls without triggering site hooks (for functional re-evaluation)."""
    previous = getattr(_state, "suspended", False)
    _state.suspended = True
    try:
        yield
    finally:
        _state.suspended = previous


def tensor_leaves(obj: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) tuple / list / dict, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in tensor_leaves(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in tensor_leaves(item)]
    return []


class SiteHooks:
    """One forward hook per site; calls the active handler ``handler(site, args, kwargs, output)``.

    A handler may return a replacement output (used by forward-mode tangents) or ``None``.
    """

    def __init__(self, sites: list[Site]):
        self.sites = sites
        self.handler: Handler | None = None
        self._handles = [site.module.register_forward_hook(partial(self._fire, site), with_kwargs=True)
                         for site in sites]

    def _fire(self, site: Site, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self.handler is None or getattr(_state, "suspended", False):
            return None
        return self.handler(site, args, kwargs, output)

    @contextmanager
    def active(self, handler: Handler) -> Iterator[None]:
        if self.handler is not None:
            raise RuntimeError("a measurement is already running with these hooks (no nesting)")
        if not self._handles:
            raise RuntimeError("the hooks were removed (the probe was closed)")
        self.handler = handler
        try:
            yield
        finally:
            self.handler = None

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
