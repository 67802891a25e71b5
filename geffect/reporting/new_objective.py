"""Diagnose a new unlearning objective: run it beside known baselines and report the G-effects.

``diagnose(fn)`` answers "what does my loss do, compared with GA / NPO / WGA?" in one call:

1. *validate* the user's function before anything long starts: its signature (the objective
   convention of ``geffect.objectives``), then one dry call on one real forget batch (with the
   retain batch, forget views and frozen reference model it asks for, built exactly as the
   trainer builds them) and one backward pass. Every problem is raised as
   :class:`ObjectiveError` naming the function and saying what was expected: a return value
   that is not an ``ObjectiveOutput`` (the registry accepts nothing else, so neither does
   this check), a loss that is not a scalar tensor, a loss detached from the parameters, a
   NaN/inf loss, loss part or gradient at step 0, or an exception raised inside it;
2. *train* the function and each baseline with the same settings via ``geffect.unlearn``
   into ``out/runs/<name>`` (a finished baseline run with exactly the same settings is
   reused, so iterating on a new objective only retrains that objective);
3. optionally *evaluate* each run (its task's metrics), then write ``geffect.report`` over all runs
   into ``out`` and return the path of ``report.html``.

Objectives are loaded from ``"path/to/module.py:function"``, ``"package.module:function"`` or
a registered name with :func:`load_objective` (the module is imported with ``importlib``;
no source string is ever executed).
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and the trainer load on first use, so ``import geffect.reporting`` stays light
    import torch

    from geffect.training.config import UnlearnConfig

from geffect.errors import InputError, ObjectiveError

__all__ = ["DEFAULT_BASELINES", "ObjectiveError", "check_objective", "diagnose", "load_objective"]

DEFAULT_BASELINES = ("ga", "npo", "wga")
RUNS_DIR = "runs"


def load_objective(ref: str) -> Callable[..., Any]:
    """The objective function named by ``ref`` (``geffect.objectives.loading.load_objective``, imported
    on first use so that ``import geffect.reporting`` does not import torch)."""
    from geffect.objectives.loading import load_objective as load

    return load(ref)


# -- validation -----------------------------------------------------------------------------------------


def _spec(fn: Callable[..., Any]):
    """The objective spec of ``fn``; a signature that breaks the convention is an ObjectiveError."""
    from geffect.objectives import resolve_objective

    if not callable(fn):
        raise ObjectiveError(f"the objective must be a function, got {type(fn).__name__}")
    try:
        return resolve_objective(fn)
    except (TypeError, ValueError) as err:
        raise ObjectiveError(f"{err} (expected fn(model, forget, retain=None, ref_model=None, **hparams) "
                             "-> ObjectiveOutput)") from err


def _dry_inputs(config: UnlearnConfig, spec) -> tuple[Any, dict[str, Any], Callable[[], Any]]:
    """(model, call kwargs, autocast) for one dry call: the trainer's model, batches, views, reference
    and forward-pass precision."""
    from geffect.data.lengths import LengthPolicy
    from geffect.training.data import UnlearningData, run_source, to_device
    from geffect.training.modeling import (
        apply_lora,
        autocast_factory,
        default_device,
        load_base,
        reference_copy,
        select_trainable,
    )

    needs_retain = spec.uses_retain or "mismatch" in spec.needs
    views = list(dict.fromkeys(spec.needs))
    source = run_source(config, views, needs_retain, f"objective {spec.name!r}")  # before any model loads
    device = default_device(config.device)
    model, tokenizer = load_base(config, device)
    kwargs: dict[str, Any] = {}
    if spec.uses_ref_model:
        kwargs["ref_model"] = reference_copy(model)
    hparams = spec.hparams(**config.hparams)
    hint = spec.trainable_parameters(model, **hparams) if config.lora is None else None
    model = apply_lora(model, config.lora)
    select_trainable(model, config, hint)
    model.train()
    lengths = LengthPolicy.for_model(model, tokenizer, config.max_length, config.strict_lengths)
    data = UnlearningData(tokenizer, source, config.forget, config.retain if needs_retain else None, views,
                          config.seed, config.batch_size, config.retain_batch_size, lengths=lengths)
    forget = to_device(data.forget_batch(0), device)
    if spec.uses_retain:
        kwargs["retain"] = to_device(data.retain_batch(0), device)
    return model, {"forget": forget, **kwargs, **hparams}, autocast_factory(config, device)


def _check_output(name: str, out: Any, batch_size: int) -> None:
    """Raise an ObjectiveError unless ``out`` is what the trainer can use."""
    import torch

    from geffect.objectives import ObjectiveOutput
    from geffect.objectives.registry import check_parts

    if torch.is_tensor(out):
        raise ObjectiveError(f"objective {name!r} returned a bare {tuple(out.shape)} tensor; expected an "
                             "ObjectiveOutput: return geffect.objectives.ObjectiveOutput(loss=<scalar tensor>, "
                             "parts={...})")
    if not isinstance(out, ObjectiveOutput):
        raise ObjectiveError(f"objective {name!r} returned {type(out).__name__}; expected an ObjectiveOutput "
                             "(geffect.objectives.ObjectiveOutput(loss=<scalar tensor>, parts={...}))")
    loss = out.loss
    if not torch.is_tensor(loss) or loss.dim() != 0:
        what = f"a tensor of shape {tuple(loss.shape)}" if torch.is_tensor(loss) else type(loss).__name__
        raise ObjectiveError(f"objective {name!r}: ObjectiveOutput.loss must be a scalar (0-dim) tensor, got "
                             f"{what}; reduce it, e.g. with .mean()")
    if not loss.requires_grad:
        raise ObjectiveError(f"objective {name!r}: the loss does not depend on the model's trainable parameters "
                             "(requires_grad is False): was it computed under torch.no_grad() or detached?")
    if not math.isfinite(float(loss.detach())):
        raise ObjectiveError(f"objective {name!r}: the loss is {float(loss.detach())} at step 0 (before any "
                             "update); expected a finite value")
    check_parts(name, out.parts)
    for part, value in out.parts.items():
        if torch.is_tensor(value):
            value = value.detach()
        if not math.isfinite(float(value)):
            raise ObjectiveError(f"objective {name!r}: loss part {part!r} is {float(value)} at step 0; "
                                 "expected a finite value")
    per = out.per_instance
    if per is not None and (not torch.is_tensor(per) or tuple(per.shape) != (batch_size,)):
        shape = tuple(per.shape) if torch.is_tensor(per) else type(per).__name__
        raise ObjectiveError(f"objective {name!r}: per_instance must be a tensor of shape ({batch_size},) "
                             f"(one value per forget instance) or None, got {shape}")


def _check_gradient(name: str, model: torch.nn.Module) -> None:
    """After backward: the gradient must be finite and not identically zero."""
    import torch

    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not grads:
        raise ObjectiveError(f"objective {name!r}: backward produced no gradient for any trainable parameter")
    norm = float(torch.nn.utils.get_total_norm(grads))
    if not math.isfinite(norm):
        raise ObjectiveError(f"objective {name!r}: the gradient is non-finite at step 0 (norm {norm}); "
                             "expected finite gradients")
    if norm == 0.0:
        raise ObjectiveError(f"objective {name!r}: the gradient is exactly zero at step 0, so unlearning "
                             "would never move the model")


def check_objective(fn: Callable[..., Any], *, model: str = "tiny", forget: str | None = None,
                    hparams: Mapping[str, Any] | None = None, **settings: Any) -> float:
    """Validate ``fn`` with one call and one backward pass on the first training batch; return the loss.

    Settings are those of ``geffect.unlearn`` (``retain=``, ``batch_size=``, ``data=`` ...), so
    the call sees what the trainer would feed it at step 0. Raises :class:`ObjectiveError`
    (function name + what was expected) for a bad signature, unknown hyper-parameters, an
    exception inside ``fn``, a wrong return type, a non-scalar or detached loss, a NaN/inf
    loss or loss part, a bad ``per_instance`` shape, or a non-finite or zero gradient.
    """
    from geffect.training.config import UnlearnConfig

    spec = _spec(fn)
    name = spec.name
    try:
        spec.hparams(**(hparams or {}))
    except TypeError as err:
        raise ObjectiveError(str(err)) from None
    config = UnlearnConfig.from_dict({"objective": name, "model": model, "forget": forget,
                                      "hparams": dict(hparams or {}), **settings}).resolved()
    net, kwargs, autocast = _dry_inputs(config, spec)
    try:
        with autocast():
            out = spec.fn(net, **kwargs)
    except Exception as err:
        raise ObjectiveError(f"objective {name!r} raised {type(err).__name__} on the first forget batch: "
                             f"{err}") from err
    _check_output(name, out, int(kwargs["forget"]["input_ids"].shape[0]))
    try:
        out.loss.backward()
    except RuntimeError as err:
        raise ObjectiveError(f"objective {name!r}: backward through its loss failed: {err}") from err
    _check_gradient(name, net)
    return float(out.loss.detach())


# -- running --------------------------------------------------------------------------------------------


def _label(name: str, taken: Sequence[str]) -> str:
    """A directory-safe run name for the user's objective, distinct from the baselines'."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "objective"
    return f"{label}_new" if label in taken else label


def _reusable(folder: Path, objective: str, settings: Mapping[str, Any]):
    """The finished run in ``folder`` if it was made with exactly these settings, else None."""
    from geffect.training import ConfigError, Run, UnlearnConfig

    if not (folder / "config.yaml").is_file():
        return None
    try:
        wanted = UnlearnConfig.from_dict({"objective": objective, **settings}).resolved()
        run = Run(folder)
    except (ConfigError, FileNotFoundError, ValueError):
        return None
    return run if run.status == "finished" and run.config.to_dict() == wanted.to_dict() else None


def _clear(folder: Path) -> None:
    """Remove a previous run of the user's objective (only a geffect run directory no live process holds)."""
    from geffect.training.claim import claim_run_dir

    if not folder.exists():
        return
    if not (folder / "config.yaml").is_file():
        raise ObjectiveError(f"{str(folder)!r} exists and is not a geffect run directory; choose another out=")
    with claim_run_dir(folder, resume=True):  # refused while a live run writes there
        shutil.rmtree(folder)


def diagnose(fn: Callable[..., Any] | str, baselines: Sequence[str] = DEFAULT_BASELINES, model: str = "tiny",
             forget: str | None = None, steps: int | None = 30, out: str | Path | None = None, *,
             hparams: Mapping[str, Any] | None = None, name: str | None = None, evaluate: bool = False,
             eval_examples: int | None = None, reuse: bool = True, progress: bool = True,
             **unlearn_kwargs: Any) -> Path:
    """Run objective ``fn`` beside ``baselines`` with the same settings and report them; returns report.html.

    ``fn``: a function ``fn(model, forget, retain=None, ref_model=None, **hparams) ->
    ObjectiveOutput`` or a reference for :func:`load_objective`. ``hparams`` go to ``fn`` only
    (baselines keep their papers' defaults). Every other keyword (``lr``, ``batch_size``,
    ``probe_size``, ``retain``, ``data`` ...) is an ``UnlearnConfig`` field shared by all runs.
    ``fn`` is validated by :func:`check_objective` before any run starts. Runs go to
    ``out/runs/<name>`` (default ``out``: ``runs/diagnose-<name>``); with ``reuse`` a finished
    baseline run with identical settings is kept instead of retrained (with its metrics, if it
    has any). ``evaluate`` adds the task's metrics (on at most ``eval_examples`` rows per split) to
    the report. ``epochs=`` (an ``UnlearnConfig`` field) replaces ``steps``.
    """
    import geffect
    from geffect.training.claim import check_out_dir

    if isinstance(fn, str):
        fn = load_objective(fn)
    spec = _spec(fn)
    baselines = [b for b in dict.fromkeys(baselines) if not (b == spec.name and spec.fn is fn)]
    label = _label(name or spec.name, baselines)
    if unlearn_kwargs.get("epochs") is not None:
        steps = None  # a run length in epochs replaces the default step count
    shared = {"model": model, **({"forget": forget} if forget is not None else {}), **unlearn_kwargs}
    if steps is not None:
        shared["steps"] = steps
    folder = Path(out) if out is not None else Path("runs") / f"diagnose-{label}"
    runs_dir = folder / RUNS_DIR
    check_out_dir(runs_dir / label)  # before the check below loads the model
    check_objective(fn, hparams=hparams, **shared)

    _clear(runs_dir / label)
    runs = {}
    try:
        runs[label] = geffect.unlearn(fn, out=runs_dir / label, hparams=dict(hparams or {}), progress=progress,
                                      **shared)
    except InputError:
        raise
    except Exception as err:
        raise ObjectiveError(f"objective {spec.name!r} failed while unlearning (run {str(runs_dir / label)!r}): "
                             f"{type(err).__name__}: {err}") from err
    for baseline in baselines:
        target = runs_dir / baseline
        previous = _reusable(target, baseline, shared) if reuse else None
        if previous is None:
            _clear(target)
        runs[baseline] = previous or geffect.unlearn(baseline, out=target, progress=progress, **shared)
    if evaluate:
        for run in runs.values():
            if not run.metrics:
                run.evaluate(max_examples=eval_examples, progress=progress)
    title = f"diagnose {label} vs {', '.join(baselines) or 'no baselines'}"
    return geffect.report(runs, folder, title=title, progress=progress)
