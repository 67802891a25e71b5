"""G-effect studies of Reveal and Release: what each LoRA module does, and what self-generated data misses.

- :func:`module_effects` — per LoRA module ``j`` of a stacked model, the first-order change of each
  probe's risk that the module's whole update causes: ``∇_W R(D) · ΔW_j`` summed per layer group,
  with ``ΔW_j = scaling · B_j A_j`` on the wrapped base weights (peft's ``get_delta_weight``).
  It is the update view (predicted risk change, nats; positive = the risk rises), measured exactly
  by the hook engine with the base weights as the trainable parameters.
- :func:`iteration_module_effects` — the same after every iteration of a procedure, for every
  module present then (issue #11: "per iteration and per LoRA module").
- :func:`module_matrix` — pairwise: module ``j``'s effect on the revealed forget data of
  iteration ``k`` (does a later module keep forgetting what an earlier one forgot, or undo it?).
- :func:`data_mismatch` — per layer, the G-effect on a probe of the *true* held-out forget data
  of a run on self-generated data beside a run on the true forget data (Xie et al.'s mismatch).
- :func:`retain_damage` — per iteration, the observed retain-risk change and the retain metrics.

Interpretations of issue #11's studies (its wording fixes what is compared, not these formulas).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from geffect.schema import DIRECTION_GRADIENT, DIRECTION_UPDATE

__all__ = ["data_mismatch", "iteration_module_effects", "lora_layers", "module_deltas", "module_effects",
           "module_matrix", "probe_batch", "retain_damage"]


def lora_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(path, module) of every peft LoRA layer (a module with a non-empty ``lora_A`` ModuleDict)."""
    for path, module in model.named_modules():
        down = getattr(module, "lora_A", None)
        if isinstance(down, nn.ModuleDict) and len(down) and hasattr(module, "get_delta_weight"):
            yield path, module


def adapters(model: nn.Module) -> list[str]:
    """Adapter names in stacking order: ``stack0``, ``stack1``, ..., then ``default``."""
    from geffect.training.stacking import OWN_ADAPTER, stacked_adapters

    names = stacked_adapters(model)
    return names + ([OWN_ADAPTER] if OWN_ADAPTER in (getattr(model, "peft_config", {}) or {}) else [])


@torch.no_grad()
def module_deltas(model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """``{base weight name: ΔW}`` of one adapter (its merged update to each wrapped weight)."""
    out = {}
    for path, module in lora_layers(model):
        if adapter in module.lora_A:
            out[f"{path}.base_layer.weight"] = module.get_delta_weight(adapter).detach()
    if not out:
        raise ValueError(f"the model has no LoRA module named {adapter!r}; it has {adapters(model)}")
    return out


@contextlib.contextmanager
def _only_trainable(model: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Make exactly ``names`` require grad inside the block; restore every flag after."""
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    chosen = set(names)
    try:
        for name, param in model.named_parameters():
            param.requires_grad_(name in chosen)
        yield
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(saved[name])


def module_effects(model: nn.Module, probes: Mapping[str, Mapping[str, Any]],
                   modules: Sequence[str] | None = None, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Predicted risk change per (module, probe, layer) of each module's update: ``∇_W R · ΔW_j``.

    ``probes``: name -> encoded batch; ``modules``: adapter names (default all, in stacking order);
    ``labels``: adapter name -> label for the ``module`` column. ``value`` is the mean over the
    probe's instances (per-instance NLL), summed within each layer group.
    """
    from geffect.effects import EffectProbe

    names = list(modules) if modules is not None else adapters(model)
    deltas = {name: module_deltas(model, name) for name in names}
    targets = sorted({w for d in deltas.values() for w in d})
    rows = []
    was_training = model.training
    model.eval()
    with _only_trainable(model, targets), EffectProbe(model, granularity="layer") as engine:
        for probe, batch in probes.items():
            for name, result in engine.measure_many(deltas, batch).items():
                per_layer = result.values.mean(dim=0)  # batch effect: mean over instances
                rows += [{"module": (labels or {}).get(name, name), "probe": probe, "layer": layer, "value": float(v)}
                         for layer, v in zip(result.groups, per_layer)]
    model.train(was_training)
    return pd.DataFrame(rows, columns=["module", "probe", "layer", "value"])


# -- probes of a procedure's runs --------------------------------------------------------------------


def probe_rows(run_dir: str | Path, name: str) -> list[dict[str, Any]]:
    """The rows of probe ``name`` recorded in a run directory (``probes/<name>.jsonl``)."""
    path = Path(run_dir) / "probes" / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"run {str(run_dir)!r} recorded no probe {name!r}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k != "instance"} for row in rows]


def probe_batch(tokenizer: Any, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Encode probe rows (any row kind) into one right-padded batch."""
    from geffect.data import collate, encode_row

    return collate([encode_row(tokenizer, r) for r in rows], tokenizer, padding_side="right")


def _iteration_labels(model: nn.Module) -> dict[str, str]:
    """Adapter name -> ``module i`` (1-based iteration that trained it)."""
    names = adapters(model)
    return {name: f"module {i}" for i, name in enumerate(names, 1)}


def iteration_module_effects(procedure: Any, probes: Sequence[str] = ("true_forget", "retain")) -> pd.DataFrame:
    """For every iteration ``i`` (its model: modules 1..i), each module's predicted risk change per probe and layer.

    ``procedure``: a :class:`~geffect.procedures.RevealRelease` (or its path). The probes are those
    the iteration's release run recorded (``true_forget``/``retain``: the same rows in every iteration,
    :func:`~geffect.procedures.reveal_release.fixed_probes`).
    """
    from geffect.procedures.reveal_release import RevealRelease

    procedure = procedure if isinstance(procedure, RevealRelease) else RevealRelease(procedure)
    frames = []
    for i, run in enumerate(procedure.runs, 1):
        model, tokenizer = run.model, run.tokenizer
        batches = {p: probe_batch(tokenizer, probe_rows(run.path, p)) for p in probes}
        frame = module_effects(model, batches, labels=_iteration_labels(model))
        frames.append(frame.assign(iteration=i))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def module_matrix(procedure: Any, extra_probes: Sequence[str] = ("true_forget", "retain")) -> pd.DataFrame:
    """Module × target table at the final model: each module's predicted risk change (summed over
    layers) on each iteration's revealed forget data (``forget k``) and on ``extra_probes``."""
    from geffect.procedures.reveal_release import RevealRelease

    procedure = procedure if isinstance(procedure, RevealRelease) else RevealRelease(procedure)
    runs = procedure.runs
    if not runs:
        raise ValueError(f"{procedure.path} holds no release run")
    model, tokenizer = runs[-1].model, runs[-1].tokenizer
    batches = {f"forget {k}": probe_batch(tokenizer, probe_rows(run.path, "forget")) for k, run in enumerate(runs, 1)}
    batches.update({p: probe_batch(tokenizer, probe_rows(runs[-1].path, p)) for p in extra_probes})
    frame = module_effects(model, batches, labels=_iteration_labels(model))
    table = frame.groupby(["module", "probe"], sort=False)["value"].sum().unstack("probe")
    return table[list(batches)]


# -- from the records ----------------------------------------------------------------------------------


def data_mismatch(runs: Mapping[str, Any], probe: str = "true_forget", direction: str = DIRECTION_GRADIENT,
                  steps: int | None = None) -> pd.DataFrame:
    """Per layer and run: the mean per-step batch effect on ``probe`` (first ``steps`` recorded steps).

    ``runs``: label -> run (a ``geffect.Run``, run directory, ``RunData`` or effects table), e.g.
    ``{"self-generated": ..., "true forget": ...}``; all must have recorded ``probe`` (the same held-out
    rows). Columns: layer, run, value, steps.
    """
    from geffect.reporting.runs import as_run

    rows = []
    for label, run in runs.items():
        effects = as_run(run, str(label)).effects
        part = effects[(effects["probe"] == probe) & (effects["direction"] == direction)]
        if part.empty:
            raise ValueError(f"run {label!r} recorded no {direction} effects on probe {probe!r}")
        if steps is not None:
            part = part[part["step"].isin(sorted(part["step"].unique())[:steps])]
        per_step = part.groupby(["step", "layer"], sort=False)["value"].mean()  # batch effect per step
        mean = per_step.groupby("layer", sort=False).mean()
        rows += [{"layer": layer, "run": label, "value": value, "steps": part["step"].nunique()}
                 for layer, value in mean.items()]
    return pd.DataFrame(rows)


def retain_damage(procedure: Any, probe: str = "retain") -> pd.DataFrame:
    """Per iteration: the observed change of the mean ``probe`` risk over the release run, its
    predicted change (Σ of the update effects), and the procedure's utility metrics."""
    from geffect.procedures.concepts import get_concept
    from geffect.procedures.reveal_release import RevealRelease

    procedure = procedure if isinstance(procedure, RevealRelease) else RevealRelease(procedure)
    summary = procedure.summary.set_index("iteration")
    utility = [m for m in get_concept(procedure.config.concept).utility if m in summary.columns]
    rows = []
    for i, run in enumerate(procedure.runs, 1):
        history, effects = run.history, run.effects
        observed = history[f"risk_change_{probe}"].sum()
        update = effects[(effects["probe"] == probe) & (effects["direction"] == DIRECTION_UPDATE)]
        predicted = update.groupby("step")["value"].mean().sum() if not update.empty else float("nan")
        rows.append({"iteration": i, f"{probe}_risk_before": history[f"risk_{probe}"].iloc[0],
                     f"{probe}_risk_change": observed, f"{probe}_predicted_change": predicted,
                     **{m: summary.loc[i, m] for m in utility}})
    return pd.DataFrame(rows)
