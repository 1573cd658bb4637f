"""Helpers shared by the test modules (imported as a plain module: pytest puts tests/ on sys.path)."""

import numpy as np


def numerical_gradient(f, x, step=1e-6):
    """Float64 central differences of ``sum(f(x))`` at `x`, one coordinate at a time."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += step
        down[idx] -= step
        grad[idx] = (float(np.sum(f(up))) - float(np.sum(f(down)))) / (2 * step)
    return grad
