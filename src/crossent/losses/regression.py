r"""Squared error and its gradient: what the article compares cross-entropy with."""

from __future__ import annotations

import numpy as np

from .._rules import check_reduction
from .._validate import check_finite
from ._common import _broadcast_weight, _prepare_pair, _reduce


def squared_error_terms(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The elementwise terms of :func:`mean_squared_error_with_grad`, unchecked and unreduced.

    :math:`(a - t)^2` and its derivative :math:`2(a - t)`, for arrays the caller
    has validated (the lab's training loop calls it on every step).

    Examples:
        >>> squared_error_terms(np.array([1.0, 3.0]), np.array([0.0, 1.0]))
        (array([1., 4.]), array([2., 4.]))
    """
    diff = pred - target
    return diff**2, 2.0 * diff


def mean_squared_error_with_grad(pred, target, *, sample_weight=None, reduction="mean"):
    r"""Squared error and its gradient with respect to `pred`.

    .. math::

        L = s\,(a - t)^2, \qquad \frac{\partial L}{\partial a} = 2 s\,(a - t)

    ``"mean"`` divides by the number of elements without weights (PyTorch's
    ``MSELoss``), and by the sum of the weights broadcast to the input's shape
    with `sample_weight` -- a weighted average, as
    ``sklearn.metrics.mean_squared_error(..., sample_weight=...)``.  (Unlike
    the cross-entropies, which follow PyTorch's ``weight`` and divide by the
    element count.)  A zero total weight gives 0 with a zero gradient.

    Args:
        pred: finite predictions.
        target: finite targets, the shape of `pred`.
        sample_weight: optional non-negative weights, broadcast against `pred`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``(loss, grad)``; for ``"none"``, per-element losses and the gradient of their sum.

    Examples:
        >>> loss, grad = mean_squared_error_with_grad([1.0, 3.0], [0.0, 0.0])
        >>> float(loss)  # (1 + 9) / 2
        5.0
        >>> grad  # 2 (a - t) / 2
        array([1., 3.])
    """
    reduction = check_reduction(reduction)
    pred, target, dtype = _prepare_pair(pred, target, "pred", "target")
    check_finite(pred, "pred")
    check_finite(target, "target")
    sample_weight = _broadcast_weight(sample_weight, "sample_weight", pred.shape)

    losses, grads = squared_error_terms(pred, target)
    denominator = pred.size
    if sample_weight is not None:
        losses = losses * sample_weight
        grads = grads * sample_weight
        denominator = float(np.broadcast_to(sample_weight, pred.shape).sum())
    return _reduce(losses, grads, reduction, denominator, dtype)


def mean_squared_error(pred, target, *, sample_weight=None, reduction="mean"):
    r"""Mean squared error; see :func:`mean_squared_error_with_grad`.

    .. math::

        L = \frac{1}{n}\sum_i (a_i - t_i)^2

    Args:
        pred, target, sample_weight, reduction: as in :func:`mean_squared_error_with_grad`.

    Returns:
        The loss alone (per element or per example for ``reduction="none"``).

    Examples:
        >>> float(mean_squared_error([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]))  # 4 / 3
        1.3333333333333333
    """
    return mean_squared_error_with_grad(pred, target, sample_weight=sample_weight, reduction=reduction)[0]
