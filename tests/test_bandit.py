"""NeuralUCB (diagonal) against uniform random choice on a synthetic bandit with known rewards."""

from __future__ import annotations

import pytest
import torch

from geffect.procedures.bandit import NeuralUCB, RandomArms, play

N_ARMS = 40


def synthetic_bandit(seed: int, n: int = N_ARMS, d: int = 16, rank: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Contexts whose informative part lies in a ``rank``-dim subspace, and each arm's mean reward."""
    g = torch.Generator().manual_seed(1000 + seed)
    latent = torch.randn(n, rank, generator=g)
    contexts = latent @ torch.randn(rank, d, generator=g) + 0.05 * torch.randn(n, d, generator=g)
    direction = torch.randn(rank, generator=g)
    return contexts, torch.sigmoid(latent @ (direction / direction.norm()))


def pulls_to_best(policy, means: torch.Tensor, seed: int, limit: int) -> int:
    """Pulls until the arm with the highest mean reward is pulled (noisy rewards, sd 0.05)."""
    noise, best = torch.Generator().manual_seed(seed), int(means.argmax())
    for pull in range(1, limit + 1):
        arm = policy.select()
        if arm == best:
            return pull
        policy.update(arm, float(means[arm] + 0.05 * torch.randn(1, generator=noise)))
    return limit + 1


def test_neural_ucb_finds_the_best_arm_in_far_fewer_pulls_than_random():
    ucb = [pulls_to_best(NeuralUCB(synthetic_bandit(s)[0], seed=s), synthetic_bandit(s)[1], s, 60)
           for s in range(5)]
    rand = [pulls_to_best(RandomArms(N_ARMS, seed=s), synthetic_bandit(s)[1], s, 10_000) for s in range(300)]
    mean_ucb, mean_rand = sum(ucb) / len(ucb), sum(rand) / len(rand)
    print(f"pulls to the best of {N_ARMS} arms: NeuralUCB {ucb} (mean {mean_ucb:.1f}); "
          f"uniform random mean {mean_rand:.1f} over 300 games (expected {N_ARMS})")
    assert max(ucb) <= 15  # 5 random initial arms, then a few UCB pulls
    assert mean_ucb * 3 < mean_rand


def test_closed_form_gradients_match_autograd():
    policy = NeuralUCB(torch.randn(7, 5), width=11, seed=3)
    mu, grads = policy._gradients()
    for arm in range(7):
        policy.network.zero_grad()
        out = policy.network(policy.contexts[arm:arm + 1]).squeeze()
        out.backward()
        expected = torch.cat([p.grad.reshape(-1) for p in policy.network.parameters()])
        torch.testing.assert_close(grads[arm], expected)
        torch.testing.assert_close(mu[arm], out.detach())


def test_ucb_score_and_design_update_follow_the_formula():
    policy = NeuralUCB(torch.randn(6, 4), width=8, nu=2.0, lam=0.1, initial=0, fit_steps=0, seed=1)
    mu, g = policy._gradients()
    table = policy.scores()
    expected_bonus = 2.0 * torch.sqrt((0.1 * g.pow(2) / 0.1).sum(dim=1))  # U starts at λ
    torch.testing.assert_close(torch.tensor(table["bonus"].to_numpy()), expected_bonus)
    arm = policy.select()
    assert arm == int((mu + expected_bonus).argmax())
    policy.update(arm, 0.5)
    torch.testing.assert_close(policy.U, 0.1 + g[arm].pow(2))


def test_initial_arms_are_distinct_and_play_logs_every_round():
    policy = NeuralUCB(torch.randn(10, 3), initial=5, fit_steps=2, seed=0)
    log = play(policy, lambda arm, t: arm / 10, rounds=8)
    assert len(set(log.rounds["arm"][:5])) == 5
    assert list(log.rounds["round"]) == list(range(8))
    assert log.best_reward == max(log.means.values())
    assert log.top_arms(2)[0] == log.best_arm


def test_bad_contexts_are_rejected():
    with pytest.raises(ValueError, match="matrix"):
        NeuralUCB(torch.randn(5))
    with pytest.raises(ValueError, match="non-finite"):
        NeuralUCB(torch.tensor([[0.0, float("nan")]]))
