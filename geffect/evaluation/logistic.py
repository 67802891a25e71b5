"""L2-penalised logistic regression on a sparse feature matrix (scipy L-BFGS): the fit behind the
small synthetic scorers and taggers, written once."""

from __future__ import annotations

import numpy as np
from scipy import optimize, sparse
from scipy.special import expit


def fit_logistic(x: sparse.spmatrix | np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float, bool]:
    """(weights, bias, converged) minimising Σ log(1 + e^z) − y·z + l2/2·‖w‖², z = x·w + b (bias unpenalised)."""
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != len(y) or len(y) == 0 or not set(np.unique(y)) <= {0.0, 1.0} or len(np.unique(y)) < 2:
        raise ValueError("fit needs one 0/1 label per row, with both labels present")

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[:-1] + theta[-1]
        value = float(np.sum(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(theta[:-1] @ theta[:-1])
        residual = expit(z) - y
        return value, np.concatenate([x.T @ residual + l2 * theta[:-1], [residual.sum()]])

    result = optimize.minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    return result.x[:-1], float(result.x[-1]), bool(result.success)
