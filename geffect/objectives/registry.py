"""The objective registry: unlearning losses as plain functions registered by name.

An objective is a function ``fn(model, forget, retain=None, ref_model=None, **hparams)``
returning an :class:`ObjectiveOutput`. Its *signature* says what it needs: a parameter
named ``retain`` asks for a retain batch, one named ``ref_model`` for a frozen reference
model, and every other keyword parameter is a hyper-parameter whose default is the value
from the objective's paper. Registering with ``@objective("name", ...)`` records that
introspection once in an :class:`ObjectiveSpec`, which the trainer reads to know which
batches, forget views (``needs=("idk",)`` → ``forget["idk"]``) and reference model to
build, and which parameters to train by default (``trainable``). Two optional declarations
serve objectives that need more than a loss: ``weights`` maps loss terms (keys of ``parts``) to
the hyper-parameters that weight them, so a weight controller can adjust them while training,
and ``companion`` names a registered training companion (``geffect.training.companions``) that
the trainer runs beside the objective (fitting probe directions, re-weighting terms).

Losses are *minimised*: gradient ascent on the forget NLL is the loss ``-NLL``.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from geffect.errors import ObjectiveError

__all__ = [
    "ObjectiveOutput",
    "ObjectiveSpec",
    "describe",
    "get_objective",
    "list_objectives",
    "objective",
    "resolve_objective",
]

# Parameters filled by the caller rather than hyper-parameters.
_MODEL, _FORGET, _RETAIN, _REF = "model", "forget", "retain", "ref_model"

TrainableHint = Callable[[torch.nn.Module, Mapping[str, Any]], list[str]]


@dataclass
class ObjectiveOutput:
    """What an objective returns.

    ``loss``: the scalar the trainer minimises. ``parts``: named terms for logging
    (unweighted term values such as ``forget``, ``retain``, ``kl``, and diagnostics such
    as the mean NPO weight ``npo_weight``); how they combine into ``loss`` is stated in
    each objective's formula. ``per_instance``: for objectives whose forget term is a mean
    over forget instances, the vector (shape B_forget) of those per-instance terms, so that
    ``per_instance.mean() == parts["forget"]``; ``None`` otherwise.
    """

    loss: torch.Tensor
    parts: dict[str, torch.Tensor | float] = field(default_factory=dict)
    per_instance: torch.Tensor | None = None

    def detached_parts(self) -> dict[str, float]:
        """``parts`` as plain Python floats (for logging)."""
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in self.parts.items()}


@dataclass(frozen=True, eq=False)
class ObjectiveSpec:
    """A registered objective: the function plus what its signature and metadata declare."""

    name: str
    fn: Callable[..., ObjectiveOutput]
    uses_retain: bool
    uses_ref_model: bool
    defaults: Mapping[str, Any]
    needs: tuple[str, ...] = ()
    formula: str = ""
    paper: str = ""
    family: str = "custom"
    trainable: TrainableHint | None = None
    accepts_any_hparam: bool = False
    weights: Mapping[str, str] = field(default_factory=dict)
    companion: str | None = None

    @classmethod
    def from_function(cls, fn: Callable[..., ObjectiveOutput], name: str | None = None,
                      **metadata: Any) -> ObjectiveSpec:
        """Introspect ``fn``'s signature (see the module docstring) into a spec."""
        name = name or getattr(fn, "__name__", None)
        if not name:
            raise ValueError("objective needs a name: pass one to @objective(name)")
        params = list(inspect.signature(fn).parameters.values())
        positional = [p.name for p in params[:2]]
        if positional != [_MODEL, _FORGET]:
            raise TypeError(
                f"objective {name!r}: the first two parameters must be (model, forget), got {positional}")
        defaults: dict[str, Any] = {}
        accepts_any = False
        for p in params[2:]:
            if p.name in (_RETAIN, _REF):
                continue
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                accepts_any = True
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(f"objective {name!r}: *{p.name} is not allowed; use keyword hyper-parameters")
            if p.default is inspect.Parameter.empty:
                raise TypeError(
                    f"objective {name!r}: hyper-parameter {p.name!r} needs a default value "
                    "(only model, forget, retain and ref_model are filled by the caller)")
            defaults[p.name] = p.default
        names = {p.name for p in params}
        unknown = set(metadata) - {"needs", "formula", "paper", "family", "trainable", "weights", "companion"}
        if unknown:
            raise TypeError(f"objective {name!r}: unknown metadata {sorted(unknown)}")
        weights = dict(metadata.pop("weights", {}))
        stray = sorted(h for h in weights.values() if h not in defaults)
        if stray:
            raise TypeError(f"objective {name!r}: weights name hyper-parameter(s) {stray} that it does not take")
        needs = metadata.pop("needs", ())
        needs = (needs,) if isinstance(needs, str) else tuple(needs)
        return cls(name=name, fn=fn, uses_retain=_RETAIN in names, uses_ref_model=_REF in names,
                   defaults=dict(defaults), needs=needs, accepts_any_hparam=accepts_any, weights=weights,
                   **metadata)

    # ----------------------------------------------------------------------------------
    def hparams(self, **overrides: Any) -> dict[str, Any]:
        """The defaults updated by ``overrides``; unknown names raise a clear error."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown and not self.accepts_any_hparam:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise TypeError(f"objective {self.name!r} has no hyper-parameter(s) {unknown}; known: {known}")
        return {**self.defaults, **overrides}

    def trainable_parameters(self, model: torch.nn.Module, **hparams: Any) -> list[str] | None:
        """Names of the parameters this objective trains by default (None: all of them)."""
        if self.trainable is None:
            return None
        return list(self.trainable(model, self.hparams(**hparams)))

    def __call__(self, model: torch.nn.Module, forget: Mapping[str, Any],
                 retain: Mapping[str, Any] | None = None, ref_model: torch.nn.Module | None = None,
                 **hparams: Any) -> ObjectiveOutput:
        """Check the inputs against what the objective declared, then call it."""
        kwargs = self.hparams(**hparams)
        for view in self.needs:
            if view not in forget:
                raise KeyError(f"objective {self.name!r} needs the forget view forget[{view!r}] "
                               f"(a nested batch); the forget batch has keys {sorted(forget)}")
        if self.uses_retain:
            if retain is None:
                raise ValueError(f"objective {self.name!r} needs a retain batch (retain=None was given)")
            kwargs[_RETAIN] = retain
        if self.uses_ref_model:
            if ref_model is None:
                raise ValueError(f"objective {self.name!r} needs a frozen reference model (ref_model=None)")
            kwargs[_REF] = ref_model
        out = self.fn(model, forget, **kwargs)
        if not isinstance(out, ObjectiveOutput):
            raise ObjectiveError(f"objective {self.name!r} returned {type(out).__name__}, expected ObjectiveOutput")
        if not torch.is_tensor(out.loss) or out.loss.dim() != 0:
            raise ObjectiveError(f"objective {self.name!r} must return a scalar tensor loss, "
                                 f"got {getattr(out.loss, 'shape', type(out.loss))}")
        check_parts(self.name, out.parts)
        return out

    def summary(self) -> str:
        """One line: the formula (or the docstring's first line)."""
        if self.formula:
            return self.formula
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else "(no description)"

    def describe(self) -> str:
        """Formula, paper, inputs and default hyper-parameters, as readable text."""
        inputs = ["forget"] + [f"forget[{v!r}]" for v in self.needs]
        inputs += ["retain"] if self.uses_retain else []
        inputs += ["ref_model"] if self.uses_ref_model else []
        defaults = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items()) or "none"
        lines = [f"{self.name} ({self.family})", f"  loss:     {self.summary()}"]
        if self.paper:
            lines.append(f"  paper:    {self.paper}")
        lines += [f"  inputs:   {', '.join(inputs)}", f"  defaults: {defaults}"]
        if self.trainable is not None:
            lines.append("  trains:   " + (inspect.getdoc(self.trainable) or "a subset of parameters")
                         .splitlines()[0])
        if self.weights:
            lines.append("  weights:  " + ", ".join(f"{term} × {h}" for term, h in self.weights.items()))
        if self.companion:
            lines.append(f"  runs:     training companion {self.companion!r} beside the loss")
        doc = inspect.getdoc(self.fn)
        if doc:
            lines += ["", textwrap.indent(doc, "  ")]
        return "\n".join(lines)


def check_parts(name: str, parts: Mapping[str, Any]) -> None:
    """Raise :class:`ObjectiveError` unless every loss part is a number or a one-element tensor."""
    for part, value in parts.items():
        if torch.is_tensor(value):
            if value.numel() != 1:
                raise ObjectiveError(f"objective {name!r}: loss part {part!r} must be a scalar, got a tensor of "
                                     f"shape {tuple(value.shape)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ObjectiveError(f"objective {name!r}: loss part {part!r} must be a number or a scalar tensor, "
                                 f"got {type(value).__name__} {value!r:.40}")


_REGISTRY: dict[str, ObjectiveSpec] = {}


def objective(name: str | Callable[..., ObjectiveOutput] | None = None, *, replace: bool = False,
              **metadata: Any) -> Any:
    """Register an objective function under ``name`` (decorator).

    ``@objective("my_loss", formula="...", needs=("idk",))`` or bare ``@objective``
    (the function's name is used). Metadata: ``needs`` (forget views), ``formula``,
    ``paper``, ``family``, ``trainable`` (callable ``(model, hparams) -> parameter names``),
    ``weights`` (loss term -> the hyper-parameter weighting it), ``companion`` (a registered
    training companion, see ``geffect.training.companions``).
    Re-registering an existing name raises unless ``replace=True``. Returns the function
    unchanged, so it stays callable directly.
    """

    def register(fn: Callable[..., ObjectiveOutput]) -> Callable[..., ObjectiveOutput]:
        spec = ObjectiveSpec.from_function(fn, name if isinstance(name, str) else None, **metadata)
        if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name].fn is not fn:
            raise ValueError(f"an objective named {spec.name!r} is already registered; "
                             "pick another name or pass replace=True")
        _REGISTRY[spec.name] = spec
        return fn

    if callable(name):  # used as a bare decorator
        return register(name)
    return register


def get_objective(name: str) -> ObjectiveSpec:
    """The registered objective ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY) or "none"
        raise KeyError(f"unknown objective {name!r}; known objectives: {known}") from None


def list_objectives() -> list[str]:
    """Names of all registered objectives, in registration order (built-ins first)."""
    return list(_REGISTRY)


def describe(name: str) -> str:
    """Formula, paper, inputs and default hyper-parameters of objective ``name``."""
    return get_objective(name).describe()


def resolve_objective(obj: str | ObjectiveSpec | Callable[..., ObjectiveOutput]) -> ObjectiveSpec:
    """A spec from a registered name, a spec, or an unregistered objective function."""
    if isinstance(obj, ObjectiveSpec):
        return obj
    if isinstance(obj, str):
        return get_objective(obj)
    if callable(obj):
        for spec in _REGISTRY.values():
            if spec.fn is obj:
                return spec
        return ObjectiveSpec.from_function(obj)
    raise TypeError(f"expected an objective name, ObjectiveSpec or function, got {type(obj).__name__}")
