"""Shared pytest fixtures: a relative-error assertion for engine-vs-oracle checks, synthetic runs for reporting."""

from __future__ import annotations

import pytest
import torch


def _assert_rel_close(actual, expected, rtol: float) -> None:
    """Elementwise ``|a - e| <= rtol * max|e|`` (errors are relative to the result's scale)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().item()
    assert scale > 0, "reference is all zeros: the comparison could not fail"
    error = (actual - expected).abs().max().item() / scale
    assert error <= rtol, f"relative error {error:.3g} > {rtol:g}"


@pytest.fixture
def assert_rel_close():
    return _assert_rel_close


@pytest.fixture(scope="module")
def ga():
    """A synthetic GA run with planted structure (see ``geffect.reporting.synthetic``)."""
    from geffect.reporting.synthetic import synthetic_run

    return synthetic_run("ga")


@pytest.fixture(scope="module")
def wga():
    """A synthetic WGA run: every second step recorded, 5x less retain damage."""
    from geffect.reporting.synthetic import synthetic_run

    return synthetic_run("wga", retain_level=0.2, seed=1, record_every=2)
