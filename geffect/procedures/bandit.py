"""Choosing which instruction to try next: diagonal NeuralUCB and its uniform-random baseline.

NeuralUCB (Zhou, Li and Gu, "Neural Contextual Bandits with UCB-based Exploration", ICML 2020)
fits a one-hidden-layer network ``f(x; θ)`` to the rewards seen so far and pulls the arm with the
highest ``μ + ν·sqrt(Σ_k λ g_k² / U_k)``, where ``μ = f(x; θ)``, ``g = ∇θ f(x; θ)`` and ``U``
(the diagonal of the design matrix, started at ``u0``) grows by the chosen arm's ``g²``. After each
round the network is refit on all observed rewards (``fit_steps`` full-batch Adam steps on the
squared error plus ``λ·width/2·‖θ − θ₀‖²``, as in the paper's objective).

Interpretation (Reveal and Release reading of issue #11): the diagonal form follows the paper's
practical variant; ``u0`` (default ``λ``, the paper's ``Z₀ = λI``), the refit schedule and the
normalisation of contexts are parameters the issue leaves open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["BanditLog", "NeuralUCB", "RandomArms", "play"]


class _Policy:
    """Shared bookkeeping: arms, pulls, observed rewards, the seeded generator and initial arms."""

    def __init__(self, n_arms: int, initial: int, seed: int) -> None:
        if n_arms < 1:
            raise ValueError(f"a bandit needs at least one arm, got {n_arms}")
        self.n_arms = n_arms
        self.generator = torch.Generator().manual_seed(seed)
        self.initial = torch.randperm(n_arms, generator=self.generator)[: min(initial, n_arms)].tolist()
        self.arms: list[int] = []
        self.rewards: list[float] = []

    def update(self, arm: int, reward: float) -> None:
        """Record the reward of pulling ``arm``."""
        if not 0 <= arm < self.n_arms:
            raise IndexError(f"arm {arm} out of range (the bandit has {self.n_arms} arms)")
        self.arms.append(int(arm))
        self.rewards.append(float(reward))

    def mean_rewards(self) -> dict[int, float]:
        """Mean observed reward per pulled arm."""
        frame = pd.DataFrame({"arm": self.arms, "reward": self.rewards})
        return frame.groupby("arm")["reward"].mean().to_dict() if self.arms else {}

    def diagnostics(self) -> dict[str, float]:
        return {}


class RandomArms(_Policy):
    """Uniform random choice of arms (with replacement): the ablation that shows whether choosing matters."""

    def __init__(self, n_arms: int, seed: int = 0) -> None:
        super().__init__(n_arms, 0, seed)

    def select(self) -> int:
        return int(torch.randint(self.n_arms, (1,), generator=self.generator))


class NeuralUCB(_Policy):
    """Diagonal NeuralUCB over fixed arms with context vectors ``contexts`` (n_arms × d).

    ``width`` hidden units, exploration scale ``nu``, regularisation ``lam``; the first
    ``initial`` pulls are distinct random arms. ``normalize``: ``"center"`` (default) subtracts the
    mean context and divides by the mean norm, keeping the arms' geometry; ``"unit"`` scales each
    context to unit norm (the paper's ``‖x‖ = 1``, which discards the norms); ``None`` uses them raw.
    """

    def __init__(self, contexts: torch.Tensor | Sequence[Sequence[float]], *, width: int = 100, nu: float = 1.0,
                 lam: float = 1e-3, initial: int = 5, u0: float | None = None, fit_steps: int = 30,
                 fit_lr: float = 1e-2, normalize: str | None = "center", seed: int = 0) -> None:
        contexts = torch.as_tensor(contexts, dtype=torch.float32)
        if contexts.dim() != 2:
            raise ValueError(f"contexts must be a matrix (arms × features), got shape {tuple(contexts.shape)}")
        if not torch.isfinite(contexts).all():
            raise ValueError("contexts hold non-finite values")
        super().__init__(contexts.shape[0], initial, seed)
        contexts = _normalise(contexts, normalize)
        self.contexts = contexts
        self.width, self.nu, self.lam = width, nu, lam
        self.fit_steps, self.fit_lr = fit_steps, fit_lr
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=self.generator)))
            self.network = nn.Sequential(nn.Linear(contexts.shape[1], width), nn.ReLU(), nn.Linear(width, 1))
        self.theta0 = [p.detach().clone() for p in self.network.parameters()]
        n_params = sum(p.numel() for p in self.network.parameters())
        self.U = torch.full((n_params,), lam if u0 is None else u0)
        self._last: dict[str, float] = {}

    # -- the score ------------------------------------------------------------------------------

    def _gradients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, g): the network's output and its gradient for every arm, in closed form.

        For ``f(x) = w₂ᵀ relu(W₁x + b₁) + b₂``: ``∂f/∂W₁ = (w₂ ⊙ 1[z > 0]) xᵀ``, ``∂f/∂b₁ = w₂ ⊙ 1[z > 0]``,
        ``∂f/∂w₂ = relu(z)``, ``∂f/∂b₂ = 1`` (flattened in ``network.parameters()`` order).
        """
        first, _, second = self.network
        with torch.no_grad():
            z = self.contexts @ first.weight.T + first.bias
            h = z.clamp_min(0)
            mu = h @ second.weight[0] + second.bias[0]
            d_hidden = second.weight[0] * (z > 0)
            grad_w1 = (d_hidden.unsqueeze(2) * self.contexts.unsqueeze(1)).reshape(self.n_arms, -1)
            flat = torch.cat([grad_w1, d_hidden, h, torch.ones(self.n_arms, 1)], dim=1)
        return mu, flat

    def scores(self) -> pd.DataFrame:
        """Per arm: ``mu`` (predicted reward), ``bonus`` (ν·sqrt(Σ λ g²/U)) and ``ucb`` (their sum)."""
        mu, g = self._gradients()
        bonus = self.nu * torch.sqrt((self.lam * g.pow(2) / self.U).sum(dim=1))
        return pd.DataFrame({"mu": mu.numpy(), "bonus": bonus.numpy(), "ucb": (mu + bonus).numpy()})

    def select(self) -> int:
        """The next arm: an initial random arm, else the arm with the highest upper confidence bound."""
        if len(self.arms) < len(self.initial):
            arm = self.initial[len(self.arms)]
            self._last = {"mu": math.nan, "bonus": math.nan}
            return arm
        table = self.scores()
        arm = int(table["ucb"].to_numpy().argmax())
        self._last = {"mu": float(table["mu"][arm]), "bonus": float(table["bonus"][arm])}
        return arm

    def diagnostics(self) -> dict[str, float]:
        """``mu`` and ``bonus`` of the last selected arm (NaN for the initial random arms)."""
        return dict(self._last)

    # -- learning -------------------------------------------------------------------------------

    def update(self, arm: int, reward: float) -> None:
        """Record the reward, add the arm's squared gradient to ``U`` and refit the network."""
        super().update(arm, reward)
        _, g = self._gradients()
        self.U += g[arm].pow(2)
        self._fit()

    def _fit(self) -> None:
        x = self.contexts[self.arms]
        y = torch.tensor(self.rewards)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.fit_lr)
        for _ in range(self.fit_steps):
            optimizer.zero_grad()
            loss = 0.5 * (self.network(x).squeeze(1) - y).pow(2).sum()
            loss = loss + 0.5 * self.lam * self.width * sum(
                (p - p0).pow(2).sum() for p, p0 in zip(self.network.parameters(), self.theta0))
            loss.backward()
            optimizer.step()


def _normalise(contexts: torch.Tensor, how: str | None) -> torch.Tensor:
    if how is None:
        return contexts
    if how == "unit":
        return contexts / contexts.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if how == "center":
        centred = contexts - contexts.mean(dim=0)
        return centred / centred.norm(dim=1).mean().clamp_min(1e-12)
    raise ValueError(f"normalize must be 'center', 'unit' or None, got {how!r}")


# -- playing a bandit -------------------------------------------------------------------------------


@dataclass
class BanditLog:
    """The rounds of one bandit game: ``rounds`` (round, arm, reward, mu, bonus) and the best arm found."""

    rounds: pd.DataFrame
    means: dict[int, float] = field(default_factory=dict)

    @property
    def best_arm(self) -> int:
        """The pulled arm with the highest mean observed reward."""
        return max(self.means, key=lambda a: (self.means[a], -a))

    @property
    def best_reward(self) -> float:
        return self.means[self.best_arm]

    def top_arms(self, n: int) -> list[int]:
        """The ``n`` pulled arms with the highest mean observed reward, best first."""
        return sorted(self.means, key=lambda a: (-self.means[a], a))[:n]


def play(policy: NeuralUCB | RandomArms, reward: Callable[[int, int], float], rounds: int,
         progress: bool = False, desc: str = "bandit") -> BanditLog:
    """Play ``rounds`` rounds: ``arm = policy.select()``, ``r = reward(arm, round)``, ``policy.update``."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rows = []
    for t in tqdm(range(rounds), desc=desc, disable=not progress, leave=False):
        arm = policy.select()
        value = float(reward(arm, t))
        rows.append({"round": t, "arm": arm, "reward": value, **policy.diagnostics()})
        policy.update(arm, value)
    return BanditLog(pd.DataFrame(rows), policy.mean_rewards())
