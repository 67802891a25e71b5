"""Shared pytest fixtures: a relative-error assertion for comparing engine outputs with oracles."""

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
