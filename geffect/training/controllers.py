"""Weight controllers: the companion that re-sets an objective's term weights from measured effects.

An objective with weighted terms declares them (``weights={"forget": "forget_weight", "retain":
"retain_weight"}``: loss term -> hyper-parameter) and the companion ``"weight_controller"``
(``geffect.training.companions``); its hyper-parameter ``controller`` names a *rule* registered
here. Every ``every`` steps the companion measures, on validation rows held out of the training
data (``val_size`` forget and retain rows), the validation objective

    M(θ) = R(retain_val) − γ·R(forget_val)        (R: mean per-instance NLL)

and, for rules that ask for it, each term's hypergradient: after a step θ' = θ − η Σ_j w_j ∇L_j,
to first order ∂M(θ')/∂w_j = −η⟨∇M(θ), ∇L_j(θ)⟩, the difference of the G-effects of term j on the
two validation probes, all terms contracted in one engine pass (``EffectProbe.measure_many``).
Those G-effects are logged too (``meta_geffect_<term>_<probe>``), beside the weights they moved.
The rule then returns the weights the next steps use. Built-in rules:

* ``"hypergradient"``: w_j ← w_j·exp(−β ∂M/∂w_j), renormalised to the starting Σ_j w_j;
* ``"bandit"``: UCB1 over a grid of weights for one term, rewarded by the decrease of M.

Weights, M and the rule's signals are logged per step into ``history.parquet``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from geffect.training.companions import Companion, CompanionContext, companion, registrar
from geffect.training.config import ConfigError
from geffect.training.data import to_device
from geffect.training.recording import combine_batches, instance_risks

__all__ = ["Bandit", "Hypergradient", "MetaSignal", "WeightControl", "WeightRule", "controller",
           "list_controllers", "term_gradients", "validation_effects"]

VALIDATION = ("forget", "retain")


@dataclass
class MetaSignal:
    """What a rule sees at a measured step: M(θ_s), the mean validation risks and (if asked) ∂M/∂w_j."""

    step: int
    lr: float
    objective: float
    risks: dict[str, float]
    hypergradient: dict[str, float] | None = None
    effects: dict[str, dict[str, float]] | None = None  # term -> probe -> mean validation G-effect


class WeightRule:
    """A rule ``update(weights, signal) -> weights``; ``needs_hypergradient`` asks for ∂M/∂w_j."""

    needs_hypergradient = False

    def update(self, weights: dict[str, float], signal: MetaSignal) -> dict[str, float]:
        raise NotImplementedError

    def fields(self) -> dict[str, float]:
        """Diagnostics of the last update for the history row."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


RuleFactory = Callable[[Mapping[str, Any], Mapping[str, float]], WeightRule]
_RULES: dict[str, RuleFactory] = {}


def controller(name: str, *, replace: bool = False) -> Callable[[RuleFactory], RuleFactory]:
    """Register a rule factory ``factory(hparams, starting_weights) -> WeightRule`` under ``name``."""
    return registrar(_RULES, "weight controller", name, replace)


def list_controllers() -> list[str]:
    """Names of the registered weight controllers."""
    return list(_RULES)


@controller("hypergradient")
class Hypergradient(WeightRule):
    """w_j ← w_j·exp(−β ∂M/∂w_j), then scaled so that Σ_j w_j keeps its starting value (β: ``meta_lr``)."""

    needs_hypergradient = True

    def __init__(self, hparams: Mapping[str, Any], weights: Mapping[str, float]) -> None:
        self.beta = float(hparams.get("meta_lr", 1.0))
        self.total = float(sum(weights.values()))

    def update(self, weights: dict[str, float], signal: MetaSignal) -> dict[str, float]:
        stepped = {t: w * math.exp(-self.beta * signal.hypergradient[t]) for t, w in weights.items()}
        scale = self.total / sum(stepped.values())
        return {t: w * scale for t, w in stepped.items()}


@controller("bandit")
class Bandit(WeightRule):
    """UCB1 over ``grid`` values of the weight of term ``arm_term`` (default ``"retain"``).

    At each measured step the arm played since the last one is rewarded by the decrease of M
    over its steps; the next arm is an untried one (in grid order) or the one maximising
    mean reward / s + c·sqrt(2 ln N / n_a), with s the largest |reward| seen so far (so that the
    bonus c = ``exploration`` is on the scale of the rewards), N the plays and n_a the arm's plays.
    """

    def __init__(self, hparams: Mapping[str, Any], weights: Mapping[str, float]) -> None:
        self.grid = [float(v) for v in hparams.get("grid", ())]
        self.term = str(hparams.get("arm_term", "retain"))
        self.exploration = float(hparams.get("exploration", 1.0))
        if not self.grid:
            raise ConfigError("the bandit controller needs a non-empty grid of weights (hyper-parameter 'grid')")
        if self.term not in weights:
            raise ConfigError(f"the bandit controller sets the weight of term {self.term!r}, which the objective "
                              f"does not weight (its weighted terms: {sorted(weights)})")
        self.counts = [0] * len(self.grid)
        self.sums = [0.0] * len(self.grid)
        self.arm: int | None = None
        self.last: float | None = None
        self.scale = 0.0
        self.reward = math.nan

    def _choose(self) -> int:
        for arm, count in enumerate(self.counts):
            if count == 0:
                return arm
        plays, scale = sum(self.counts), self.scale or 1.0
        scores = [s / n / scale + self.exploration * math.sqrt(2 * math.log(plays) / n)
                  for s, n in zip(self.sums, self.counts)]
        return max(range(len(scores)), key=scores.__getitem__)

    def update(self, weights: dict[str, float], signal: MetaSignal) -> dict[str, float]:
        self.reward = math.nan
        if self.arm is not None and self.last is not None:
            self.reward = self.last - signal.objective
            self.counts[self.arm] += 1
            self.sums[self.arm] += self.reward
            self.scale = max(self.scale, abs(self.reward))
        self.arm, self.last = self._choose(), signal.objective
        return {**weights, self.term: self.grid[self.arm]}

    def fields(self) -> dict[str, float]:
        return {"meta_arm": float(self.arm) if self.arm is not None else math.nan, "meta_reward": self.reward}

    def state_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sums": list(self.sums), "arm": -1 if self.arm is None else self.arm,
                "last": math.nan if self.last is None else self.last, "scale": self.scale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.counts, self.sums = list(state["counts"]), list(state["sums"])
        self.arm = None if state["arm"] < 0 else int(state["arm"])
        self.last = None if math.isnan(state["last"]) else float(state["last"])
        self.scale = float(state["scale"])


# -- measuring ----------------------------------------------------------------------------------------


def term_gradients(output: Any, terms: Mapping[str, str] | list[str], model: torch.nn.Module) -> dict[str, dict]:
    """∇_θ L_j of each named loss term (``output.parts[j]``) over the trainable parameters, by name.

    Uses ``torch.autograd.grad`` (the graph is kept, ``.grad`` untouched); a term that does not
    depend on a parameter gives no entry for it (a zero direction there).
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {}
    for term in terms:
        value = output.parts.get(term)
        if not torch.is_tensor(value):
            raise ValueError(f"the objective's parts have no tensor term {term!r} to weight; parts: {sorted(output.parts)}")
        if not value.requires_grad:
            out[term] = {}
            continue
        grads = torch.autograd.grad(value, list(params.values()), retain_graph=True, allow_unused=True)
        out[term] = {n: g.detach() for n, g in zip(params, grads) if g is not None}
    return out


@dataclass
class ValidationEffects:
    """One engine pass on the validation probes: per term j and probe p the mean G-effect
    ⟨∇R_p, ∇L_j⟩ (``effects[j][p]``), and the mean risk per probe."""

    effects: dict[str, dict[str, float]]
    risks: dict[str, float]

    def hypergradient(self, lr: float, gamma: float) -> dict[str, float]:
        """∂M(θ')/∂w_j = −η(⟨∇R(retain), ∇L_j⟩ − γ⟨∇R(forget), ∇L_j⟩) per term, η = ``lr``."""
        return {term: -lr * (e["retain"] - gamma * e["forget"]) for term, e in self.effects.items()}


def validation_effects(engine: Any, gradients: Mapping[str, Mapping[str, torch.Tensor]],
                       validation: Mapping[str, Mapping[str, torch.Tensor]]) -> ValidationEffects:
    """The G-effects of every term's gradient on ``{"forget": batch, "retain": batch}``, one pass."""
    batch, slices = combine_batches([validation[name] for name in VALIDATION])
    results = engine.measure_many(dict(gradients), batch)
    risks = next(iter(results.values())).risks
    effects = {term: {name: float(result.values.sum(1)[part].mean()) for name, part in zip(VALIDATION, slices)}
               for term, result in results.items()}
    return ValidationEffects(effects, {name: float(risks[part].mean()) for name, part in zip(VALIDATION, slices)})


# -- the companion ------------------------------------------------------------------------------------


@companion("weight_controller")
class WeightControl(Companion):
    """Re-sets the declared term weights every ``every`` steps with the rule named by ``controller``.

    Hyper-parameters read (from the objective's): ``controller``, ``every``, ``gamma``, ``val_size``,
    ``val_forget`` / ``val_retain`` (validation splits; None: hold rows out) and the rule's own (``meta_lr``; ``grid``, ``exploration``). Validation rows are held out of
    the training streams in :meth:`prepare`, or given with :meth:`set_validation`.
    """

    def __init__(self, spec: Any, hparams: Mapping[str, Any]) -> None:
        super().__init__(spec, hparams)
        if not spec.weights:
            raise ConfigError(f"objective {spec.name!r} asks for a weight controller but declares no weighted "
                              "terms (register it with weights={term: hyper-parameter})")
        self.terms = dict(spec.weights)
        self.weights = {term: float(hparams[h]) for term, h in self.terms.items()}
        name = hparams.get("controller", "hypergradient")
        if name not in _RULES:
            raise ConfigError(f"unknown weight controller {name!r}; known controllers: {', '.join(_RULES)}")
        self.rule = _RULES[name](hparams, self.weights)
        self.every = int(hparams.get("every", 1))
        self.gamma = float(hparams.get("gamma", 1.0))
        self.val_size = int(hparams.get("val_size", 16))
        if self.every < 1 or self.val_size < 1:
            raise ConfigError(f"objective {spec.name!r}: 'every' and 'val_size' must be >= 1, got "
                              f"{self.every} and {self.val_size}")
        self.validation: dict[str, dict] | None = None
        self.engine = None
        self._signal: MetaSignal | None = None

    def prepare(self, data: Any) -> None:
        """The validation probes: ``val_size`` rows of the splits named by ``val_forget`` / ``val_retain``
        (splits the run does not train on), or else rows held out of the forget / retain training stream."""
        batches = {}
        for stream in VALIDATION:
            split = self.hparams.get(f"val_{stream}")
            if split is not None:
                batches[stream] = data.probe(f"validation-{stream}", split, self.val_size).batch
            elif stream == "retain" and data.retain is None:
                raise ConfigError(f"objective {self.spec.name!r}: the weight controller needs a retain split (or "
                                  "val_retain=SPLIT) for its retain validation probe")
            else:
                batches[stream] = data.hold_out(stream, self.val_size)
        self.set_validation(batches["forget"], batches["retain"])

    def set_validation(self, forget: Mapping[str, torch.Tensor], retain: Mapping[str, torch.Tensor]) -> None:
        """Use these batches (rows the run does not train on) as the forget and retain validation probes."""
        self.validation = {"forget": dict(forget), "retain": dict(retain)}

    def start(self, context: CompanionContext, state: Mapping[str, Any] | None = None) -> None:
        if self.validation is None:
            raise RuntimeError("WeightControl.start before prepare/set_validation: no validation probes")
        self.context = context
        device = next(context.model.parameters()).device
        self.validation = {k: to_device(v, device) for k, v in self.validation.items()}
        if self.rule.needs_hypergradient:
            from geffect.effects import EffectProbe

            self.engine = EffectProbe(context.model)
        if state:
            self.weights = {t: float(w) for t, w in state["weights"].items()}
            self.rule.load_state_dict(state.get("rule", {}))

    def objective_kwargs(self) -> dict[str, Any]:
        return {h: self.weights[t] for t, h in self.terms.items()}

    @contextlib.contextmanager
    def _measuring(self):
        model = self.context.model
        was_training = model.training
        model.eval()
        try:
            with self.context.autocast():
                yield
        finally:
            model.train(was_training)

    def measure(self, step: int, lr: float, objective: Callable[[], Any]) -> MetaSignal:
        """M(θ_s), the validation risks and (if the rule asks) ∂M/∂w_j, at the current parameters."""
        model, mean = self.context.model, self.context.mean
        hyper = effects = None
        if self.rule.needs_hypergradient:
            gradients = term_gradients(objective(), list(self.terms), model)
            with self._measuring():
                measured = validation_effects(self.engine, gradients, self.validation)
            # each process saw its share of the batch: average the effects over processes
            effects = {t: {p: mean(v) for p, v in e.items()} for t, e in measured.effects.items()}
            hyper = ValidationEffects(effects, measured.risks).hypergradient(lr, self.gamma)
            risks = measured.risks
        else:
            with self._measuring(), torch.no_grad():
                risks = {name: float(instance_risks(model, self.validation[name]).mean()) for name in VALIDATION}
        value = risks["retain"] - self.gamma * risks["forget"]
        return MetaSignal(step, lr, value, risks, hyper, effects)

    def before_step(self, step: int, lr: float, objective: Callable[[], Any]) -> None:
        self._signal = None
        if step % self.every:
            return
        self._signal = self.measure(step, lr, objective)
        self.weights = self.rule.update(dict(self.weights), self._signal)

    def history_fields(self) -> dict[str, float]:
        fields = {f"weight_{t}": w for t, w in self.weights.items()}
        signal = self._signal
        fields["meta_objective"] = signal.objective if signal else math.nan
        if self.rule.needs_hypergradient:
            for t in self.terms:
                fields[f"meta_hypergradient_{t}"] = signal.hypergradient[t] if signal else math.nan
                fields |= {f"meta_geffect_{t}_{p}": signal.effects[t][p] if signal else math.nan
                           for p in VALIDATION}
        rule_fields = self.rule.fields()
        return fields | {k: (v if signal else math.nan) for k, v in rule_fields.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "rule": self.rule.state_dict()}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
