r"""Losses and their exact gradients, side by side (the NumPy reference).

Every loss ``f`` has a twin ``f_with_grad`` that returns ``(loss, grad)``,
where ``grad`` is the derivative of the returned loss with respect to the
first argument and has its shape.  The gradient formula is written directly
below the loss formula, so both can be checked at a glance.

Conventions shared by all losses
--------------------------------
* ``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"``.  With
  ``"none"`` the per-element (per-example) losses come back, and ``grad`` is
  the gradient of their *sum*: each example's own gradient.
* Precision: the reference computes everything in float64 (it is the
  yardstick that fast kernels are checked against).  The loss and the
  gradient come back in float64 for float64 input (and for integer or boolean
  input), and in float32 for float32 and narrower floats (float16).
* Bad input is a ``ValueError``/``TypeError`` that names the parameter: NaN,
  out-of-range labels, mismatched shapes, negative weights, bad options.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import special

from . import kernels
from ._rules import (
    CrossEntropyOptions,
    check_class_weight,
    check_label_smoothing,
    check_nonnegative_scalar,
    check_reduction,
    times,
)
from ._softmax_ce import check_softmax_logits, labels_to_2d, softmax_ce_2d
from ._validate import (
    as_float_array,
    check_axis,
    check_finite,
    check_same_shape,
    check_unit_interval,
    check_weights,
    show,
)

__all__ = [
    "sigmoid",
    "sigmoid_derivative",
    "log_sigmoid",
    "softmax",
    "log_softmax",
    "sigmoid_binary_cross_entropy",
    "sigmoid_binary_cross_entropy_with_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_with_grad",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_grad",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_with_grad",
    "mean_squared_error",
    "mean_squared_error_with_grad",
]


# --------------------------------------------------------------------------- helpers


def _result_dtype(arr: np.ndarray) -> np.dtype:
    """float64 for 64-bit (and wider) floats, float32 for float32 and narrower."""
    return np.dtype(np.float64) if arr.dtype.itemsize >= 8 else np.dtype(np.float32)


def _prepare(x, name: str) -> tuple[np.ndarray, np.dtype]:
    """`x` as a float64 array, and the dtype its results come back in."""
    arr = as_float_array(x, name)
    return arr.astype(np.float64, copy=False), _result_dtype(arr)


def _broadcast_weight(weight, name: str, shape: tuple) -> np.ndarray | None:
    """Finite non-negative weights that broadcast to `shape` without enlarging it."""
    if weight is None:
        return None
    weight = check_weights(weight, name).astype(np.float64, copy=False)
    try:
        joint = np.broadcast_shapes(weight.shape, shape)
    except ValueError:
        joint = None
    if joint != tuple(shape):
        raise ValueError(f"`{name}` of shape {weight.shape} does not broadcast to the input's shape {tuple(shape)}.")
    return weight


def _reduce(losses, grads, reduction: str, denominator: float, dtype: np.dtype):
    """Reduce elementwise losses; `grads` are the elementwise derivatives."""
    if reduction == "none":
        return losses.astype(dtype), grads.astype(dtype)
    total = np.sum(losses, dtype=np.float64)
    if reduction == "mean":
        if denominator == 0:  # nothing counted (empty input or zero total weight)
            return dtype.type(0.0), np.zeros(grads.shape, dtype)
        return dtype.type(total / denominator), (grads / denominator).astype(dtype)
    return dtype.type(total), grads.astype(dtype)


def _smooth_binary(labels: np.ndarray, label_smoothing: float) -> np.ndarray:
    """Binary label smoothing as in optax/Keras: ``y(1 - eps) + eps/2``."""
    return labels * (1.0 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else labels


def _activation_input(z) -> np.ndarray:
    arr = as_float_array(z, "z")
    return arr.astype(_result_dtype(arr), copy=False)


# --------------------------------------------------------------------------- activations


def sigmoid(z):
    r"""Logistic sigmoid :math:`\sigma(z) = 1 / (1 + e^{-z})` (``scipy.special.expit``).

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
    return special.expit(_activation_input(z))


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
    return special.expit(z) * special.expit(-z)


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
    z = _activation_input(z)
    axis = check_axis(axis, max(z.ndim, 1))
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
    z = _activation_input(z)
    axis = check_axis(axis, max(z.ndim, 1))
    return special.log_softmax(z, axis=axis)


# --------------------------------------------------------------------------- binary losses


def sigmoid_binary_cross_entropy_with_grad(
    logits, labels, *, pos_weight=None, sample_weight=None, label_smoothing=0.0, reduction="mean"
):
    r"""Binary cross-entropy from logits and its gradient with respect to the logits.

    With :math:`\tilde y = y(1-\varepsilon) + \varepsilon/2` (label smoothing),
    `pos_weight` :math:`p` and `sample_weight` :math:`s`:

    .. math::

        L = -s\,\big[p\,\tilde y \log\sigma(z) + (1-\tilde y)\log(1-\sigma(z))\big]

        \frac{\partial L}{\partial z} = s\,\big[(1-\tilde y)\,\sigma(z) - p\,\tilde y\,\sigma(-z)\big]

    This is PyTorch's ``BCEWithLogitsLoss`` (`pos_weight` multiplies the
    positive term, `sample_weight` is its ``weight``; both broadcast against
    the logits).  ``"mean"`` divides by the number of elements, whatever the
    weights (as PyTorch does).

    Args:
        logits: finite real array.
        labels: probabilities in [0, 1] (soft labels allowed), the logits' shape.
        pos_weight: optional non-negative weight of the positive term.
        sample_weight: optional non-negative weight of each element.
        label_smoothing: :math:`\varepsilon` in [0, 1].
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``(loss, grad)``; for ``"none"``, per-element losses and the gradient of their sum.

    Examples:
        A logit of 0 is a fair coin: :math:`\ln 2` nats whatever the label,
        and the gradient is :math:`\sigma(0) - y`:

        >>> loss, grad = sigmoid_binary_cross_entropy_with_grad([0.0, 0.0], [1.0, 0.0], reduction="sum")
        >>> round(float(loss), 12) == round(2 * float(np.log(2)), 12)
        True
        >>> grad
        array([-0.5,  0.5])
    """
    reduction = check_reduction(reduction)
    label_smoothing = check_label_smoothing(label_smoothing)
    logits, dtype = _prepare(logits, "logits")
    labels, _ = _prepare(labels, "labels")
    check_same_shape(logits, labels, "logits", "labels")
    check_finite(logits, "logits")
    check_unit_interval(labels, "labels")
    pos_weight = _broadcast_weight(pos_weight, "pos_weight", logits.shape)
    sample_weight = _broadcast_weight(sample_weight, "sample_weight", logits.shape)

    y = _smooth_binary(labels, label_smoothing)
    positive = y if pos_weight is None else pos_weight * y
    # log sigma(z) = log_expit(z) and log(1 - sigma(z)) = log_expit(-z): exact
    # for any finite z, where log(1 - expit(z)) would give log(0) = -inf at z = 40.
    losses = 0.0 - (positive * special.log_expit(logits) + (1.0 - y) * special.log_expit(-logits))
    grads = (1.0 - y) * special.expit(logits) - positive * special.expit(-logits)
    if sample_weight is not None:
        losses = losses * sample_weight
        grads = grads * sample_weight
    return _reduce(losses, grads, reduction, logits.size, dtype)


def sigmoid_binary_cross_entropy(
    logits, labels, *, pos_weight=None, sample_weight=None, label_smoothing=0.0, reduction="mean"
):
    r"""Binary cross-entropy from logits; see :func:`sigmoid_binary_cross_entropy_with_grad`.

    .. math::

        L = -\big[p\,y \log\sigma(z) + (1-y)\log(1-\sigma(z))\big]

    Args:
        logits, labels, pos_weight, sample_weight, label_smoothing, reduction: as in :func:`sigmoid_binary_cross_entropy_with_grad`.

    Returns:
        The loss alone (per element or per example for ``reduction="none"``).

    Examples:
        >>> float(sigmoid_binary_cross_entropy(0.0, 1.0)) == float(np.log(2))
        True
        >>> float(sigmoid_binary_cross_entropy(np.float32(-1e4), 1.0))  # exact, no overflow
        10000.0
    """
    return sigmoid_binary_cross_entropy_with_grad(
        logits, labels, pos_weight=pos_weight, sample_weight=sample_weight, label_smoothing=label_smoothing,
        reduction=reduction,
    )[0]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` for numerator >= 0: 0/0 = 0 and x/0 = +inf, silently."""
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    out[(denominator == 0) & (numerator != 0)] = np.inf
    return out


def binary_cross_entropy_with_grad(probs, labels, *, sample_weight=None, label_smoothing=0.0, reduction="mean"):
    r"""Binary cross-entropy from probabilities (the article's formula) and its gradient.

    With :math:`a` the predicted probability, :math:`\tilde y = y(1-\varepsilon)+\varepsilon/2`
    and `sample_weight` :math:`s`:

    .. math::

        L = -s\,\big[\tilde y \log a + (1-\tilde y)\log(1-a)\big]

        \frac{\partial L}{\partial a} = -s\,\Big[\frac{\tilde y}{a} - \frac{1-\tilde y}{1-a}\Big]

    :math:`0 \log 0 = 0` (``scipy.special.xlogy``/``xlog1py``), so a confident
    *right* answer costs 0.  A confident *wrong* one (:math:`a = 0` with
    :math:`\tilde y > 0`, or :math:`a = 1` with :math:`\tilde y < 1`) costs
    ``+inf``, silently; its gradient is then the one-sided limit, ``-inf`` at
    :math:`a = 0` and ``+inf`` at :math:`a = 1` (never NaN).  PyTorch's
    ``binary_cross_entropy`` instead clamps each log at -100 (so at most 100
    per element) and divides its gradient by :math:`\max(a(1-a), 10^{-12})`;
    we do not clamp.

    Prefer :func:`sigmoid_binary_cross_entropy` whenever the probabilities
    come from a sigmoid: passing logits keeps the digits that
    :math:`a = \sigma(z)` rounds away (:math:`\sigma(40)` is exactly 1.0 in
    float64, so the loss of a wrong label becomes inf instead of 40).

    ``"mean"`` divides by the number of elements (as PyTorch does).

    Args:
        probs: predicted probabilities in [0, 1].
        labels: targets in [0, 1], the shape of `probs`.
        sample_weight: optional non-negative weights, broadcast against `probs`.
        label_smoothing: :math:`\varepsilon` in [0, 1].
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``(loss, grad)`` with ``grad`` taken with respect to `probs`.

    Examples:
        >>> loss, grad = binary_cross_entropy_with_grad([0.5, 1.0], [1.0, 1.0], reduction="none")
        >>> loss  # ln 2 for a coin flip, 0 for a certain right answer
        array([0.69314718, 0.        ])
        >>> grad
        array([-2., -1.])
        >>> float(binary_cross_entropy(0.0, 1.0))  # certain and wrong
        inf
    """
    reduction = check_reduction(reduction)
    label_smoothing = check_label_smoothing(label_smoothing)
    probs, dtype = _prepare(probs, "probs")
    labels, _ = _prepare(labels, "labels")
    check_same_shape(probs, labels, "probs", "labels")
    check_unit_interval(probs, "probs")
    check_unit_interval(labels, "labels")
    sample_weight = _broadcast_weight(sample_weight, "sample_weight", probs.shape)

    y = _smooth_binary(labels, label_smoothing)
    # xlog1py(1 - y, -a) = (1 - y) log(1 - a) computed as log1p(-a): no 1 - a rounding for small a.
    losses = 0.0 - (special.xlogy(y, probs) + special.xlog1py(1.0 - y, -probs))
    # y/a and (1-y)/(1-a) with 0/0 = 0 and y/0 = inf; they are never both infinite.
    grads = _ratio(1.0 - y, 1.0 - probs) - _ratio(y, probs)
    if sample_weight is not None:
        losses = times(sample_weight, losses)
        grads = times(sample_weight, grads)
    return _reduce(losses, grads, reduction, probs.size, dtype)


def binary_cross_entropy(probs, labels, *, sample_weight=None, label_smoothing=0.0, reduction="mean"):
    r"""Binary cross-entropy from probabilities; see :func:`binary_cross_entropy_with_grad`.

    .. math::

        L = -\big[y \log a + (1-y)\log(1-a)\big]

    Args:
        probs, labels, sample_weight, label_smoothing, reduction: as in :func:`binary_cross_entropy_with_grad`.

    Returns:
        The loss alone (per element or per example for ``reduction="none"``).

    Examples:
        >>> float(binary_cross_entropy(0.5, 0.0)) == float(np.log(2))
        True
    """
    return binary_cross_entropy_with_grad(
        probs, labels, sample_weight=sample_weight, label_smoothing=label_smoothing, reduction=reduction
    )[0]


def _check_alpha(alpha):
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be a number in [0, 1] or None (no weighting), got {alpha!r}.")
    return float(alpha)


def sigmoid_focal_loss_with_grad(
    logits, labels, *, alpha=0.25, gamma=2.0, label_smoothing=0.0, sample_weight=None, reduction="mean"
):
    r"""Sigmoid focal loss (Lin et al., 2017) from logits, and its gradient.

    With :math:`p = \sigma(z)`, :math:`\tilde y = y(1-\varepsilon)+\varepsilon/2`,
    :math:`m = 1 - p_t = \tilde y (1-p) + (1-\tilde y) p`,
    :math:`\alpha_t = \alpha\tilde y + (1-\alpha)(1-\tilde y)` and the binary
    cross-entropy :math:`\mathrm{CE} = -[\tilde y\log p + (1-\tilde y)\log(1-p)]`:

    .. math::

        L = s\,\alpha_t\, m^\gamma\, \mathrm{CE}

        \frac{\partial L}{\partial z} = s\,\alpha_t \big[\gamma\, m^{\gamma-1} m'\,\mathrm{CE}
            + m^\gamma (p - \tilde y)\big], \qquad m' = (1 - 2\tilde y)\, p (1-p)

    This is ``torchvision.ops.sigmoid_focal_loss`` (which also takes soft
    labels through the same linear :math:`p_t`); ``alpha=None`` switches the
    :math:`\alpha_t` factor off (torchvision: ``alpha < 0``).  Label smoothing,
    when used, replaces :math:`y` everywhere, :math:`\alpha_t` included.
    ``"mean"`` divides by the number of elements.

    Everything is computed in log space: :math:`\log m` is a ``logaddexp`` of
    ``log_expit`` terms, :math:`m^\gamma = e^{\gamma\log m}` and
    :math:`m^{\gamma-1} m' = \pm e^{(\gamma-1)\log m + \log|1-2\tilde y| + \log p + \log(1-p)}`,
    so no ``0 * inf`` or ``0 ** negative`` arises at extreme logits, for any
    :math:`\gamma \ge 0` (including :math:`\gamma < 1` and :math:`\gamma = 0`).

    Args:
        logits: finite real array.
        labels: targets in [0, 1], the logits' shape.
        alpha: weight of the positive class in [0, 1], or None.
        gamma: focusing exponent :math:`\gamma \ge 0` (0 gives the weighted CE).
        label_smoothing: :math:`\varepsilon` in [0, 1].
        sample_weight: optional non-negative weights, broadcast against the logits.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``(loss, grad)``; for ``"none"``, per-element losses and the gradient of their sum.

    Examples:
        At a logit of 0, :math:`m = 1/2`, so the loss is
        :math:`\alpha \cdot \tfrac14 \cdot \ln 2` for a positive label:

        >>> loss, grad = sigmoid_focal_loss_with_grad([0.0], [1.0])
        >>> round(float(loss), 12) == round(0.25 * 0.25 * float(np.log(2)), 12)
        True
    """
    reduction = check_reduction(reduction)
    label_smoothing = check_label_smoothing(label_smoothing)
    alpha = _check_alpha(alpha)
    gamma = check_nonnegative_scalar(gamma, "gamma")
    logits, dtype = _prepare(logits, "logits")
    labels, _ = _prepare(labels, "labels")
    check_same_shape(logits, labels, "logits", "labels")
    check_finite(logits, "logits")
    check_unit_interval(labels, "labels")
    sample_weight = _broadcast_weight(sample_weight, "sample_weight", logits.shape)

    y = _smooth_binary(labels, label_smoothing)
    log_p = special.log_expit(logits)
    log_q = special.log_expit(-logits)  # log(1 - p), exact for large z
    ce = 0.0 - (y * log_p + (1.0 - y) * log_q)  # 0 - x: no -0.0
    # log m = log(y (1-p) + (1-y) p), with log 0 = -inf for y in {0, 1} (no warning).
    log_m = np.logaddexp(_log_or_minus_inf(y) + log_q, _log_or_minus_inf(1.0 - y) + log_p)
    m_gamma = np.exp(gamma * log_m)
    # gamma m^(gamma-1) m', in log space; its sign is the sign of 1 - 2y.
    log_abs_slope = (gamma - 1.0) * log_m + _log_or_minus_inf(np.abs(1.0 - 2.0 * y)) + log_p + log_q
    slope = np.sign(1.0 - 2.0 * y) * np.exp(log_abs_slope)
    losses = m_gamma * ce
    grads = gamma * slope * ce + m_gamma * (special.expit(logits) - y)
    if alpha is not None:
        alpha_t = alpha * y + (1.0 - alpha) * (1.0 - y)
        losses = alpha_t * losses
        grads = alpha_t * grads
    if sample_weight is not None:
        losses = losses * sample_weight
        grads = grads * sample_weight
    return _reduce(losses, grads, reduction, logits.size, dtype)


def _log_or_minus_inf(x: np.ndarray) -> np.ndarray:
    """``log(x)`` for ``x >= 0`` with ``log(0) = -inf`` and no divide-by-zero warning."""
    out = np.full(x.shape, -np.inf)
    np.log(x, out=out, where=x > 0)
    return out


def sigmoid_focal_loss(
    logits, labels, *, alpha=0.25, gamma=2.0, label_smoothing=0.0, sample_weight=None, reduction="mean"
):
    r"""Sigmoid focal loss; see :func:`sigmoid_focal_loss_with_grad`.

    .. math::

        L = \alpha_t (1 - p_t)^\gamma\, \mathrm{CE}(p, y)

    Args:
        logits, labels, alpha, gamma, label_smoothing, sample_weight, reduction: as in :func:`sigmoid_focal_loss_with_grad`.

    Returns:
        The loss alone (per element or per example for ``reduction="none"``).

    Examples:
        With ``gamma=0`` and ``alpha=None`` it is the binary cross-entropy:

        >>> float(sigmoid_focal_loss(0.0, 1.0, alpha=None, gamma=0.0)) == float(np.log(2))
        True
    """
    return sigmoid_focal_loss_with_grad(
        logits, labels, alpha=alpha, gamma=gamma, label_smoothing=label_smoothing, sample_weight=sample_weight,
        reduction=reduction,
    )[0]


# --------------------------------------------------------------------------- regression


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
    pred, dtype = _prepare(pred, "pred")
    target, _ = _prepare(target, "target")
    check_same_shape(pred, target, "pred", "target")
    check_finite(pred, "pred")
    check_finite(target, "target")
    sample_weight = _broadcast_weight(sample_weight, "sample_weight", pred.shape)

    diff = pred - target
    losses = diff**2
    grads = 2.0 * diff
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


# --------------------------------------------------------------------------- softmax cross-entropy

_BACKENDS = ("auto", "fused", "reference")


def softmax_cross_entropy_with_grad(
    logits,
    labels,
    *,
    axis=-1,
    class_weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
    backend="auto",
):
    r"""Softmax cross-entropy from logits and its gradient with respect to the logits.

    With :math:`p = \mathrm{softmax}(z)` along `axis`, :math:`\ell = \log\sum_c e^{z_c}`,
    :math:`C` classes, class weights :math:`w` (all 1 by default, :math:`W = \sum_c w_c`),
    smoothing :math:`\varepsilon` and `z_loss` :math:`\zeta`, one example with
    integer label :math:`y` costs (PyTorch's ``cross_entropy``, exactly):

    .. math::

        L = (1-\varepsilon)\, w_y\,(-\log p_y) + \frac{\varepsilon}{C}\sum_c w_c\,(-\log p_c) + \zeta\,\ell^2

        \frac{\partial L}{\partial z_j} = \Big((1-\varepsilon) w_y + \frac{\varepsilon}{C} W + 2\zeta\ell\Big)\, p_j
            - (1-\varepsilon) w_y [j = y] - \frac{\varepsilon}{C} w_j

    An example whose label equals `ignore_index` costs 0 and has a zero
    gradient.  ``"mean"`` divides the sum by :math:`\sum_i w_{y_i}` over the
    non-ignored examples (their count without weights) -- PyTorch's weighted
    mean, also with smoothing and with `z_loss`.

    Probability targets :math:`t` (float labels, the logits' shape) use
    :math:`q_c = w_c\,((1-\varepsilon) t_c + \varepsilon/C)`:

    .. math::

        L = \sum_c q_c\,(-\log p_c) + \zeta\,\ell^2, \qquad
        \frac{\partial L}{\partial z_j} = \Big(\sum_c q_c + 2\zeta\ell\Big) p_j - q_j

    and ``"mean"`` divides by the number of examples (as PyTorch does);
    `ignore_index` must be None with them (PyTorch does not support it either).

    The `z_loss` term (PaLM's auxiliary loss, pushing :math:`\ell` to 0) is
    added once per counted example and is not multiplied by any class weight.

    Numerics and edge cases (deliberate choices):

    * :math:`\ell` comes from ``scipy.special.logsumexp``, which subtracts the
      row maximum, so huge logits never overflow.
    * ``-inf`` logits mask classes out: they get probability 0 and, without
      smoothing, a zero gradient; the loss stays finite if the target's logit
      is finite.  A target whose own logit is ``-inf`` costs ``+inf``.  With
      smoothing, a masked class of positive weight makes the loss ``+inf``
      (the smoothed target gives it mass :math:`\varepsilon/C` while the model
      gives it probability 0, so the cross-entropy *is* infinite, as in
      PyTorch); the gradient stays the finite formula above (PyTorch's
      autograd gives the same).  A weight of 0 (or a target probability of 0)
      times an infinite :math:`-\log p_c` counts 0, never NaN (PyTorch: NaN).
      A counted row whose every logit is ``-inf`` is a ``ValueError``.
    * A batch with nothing counted (every target ignored, zero total weight,
      or no example) has ``"mean"`` loss 0.0 and a zero gradient (PyTorch: NaN).
    * NaN and ``+inf`` logits are a ``ValueError``.
    * float32 and float64 logits run through the fused kernel
      (:func:`crossent.kernels.softmax_cross_entropy_fused`: one pass for the
      loss and the gradient, multi-threaded); it keeps row statistics in
      float64 and agrees with the float64 NumPy reference to about 1e-12
      (float64) or ``atol=2e-6, rtol=2e-5`` (float32).  ``backend="reference"``
      forces the plain NumPy reference, which computes in float64.  float16
      logits are computed by the reference and get a float32 loss and
      gradient; integer/boolean logits are taken as float64.

    Args:
        logits: real array with the classes along `axis`.
        labels: integer class indices with the logits' shape minus `axis`
            (``0 <= y < C``, or equal to `ignore_index`), or float probability
            targets with the logits' shape that sum to 1 along `axis`.
        axis: the class axis (PyTorch's layout ``(N, C, d1, ...)`` is ``axis=1``).
        class_weight: optional ``(C,)`` non-negative weights.
        ignore_index: optional integer label value that counts for nothing.
        label_smoothing: :math:`\varepsilon` in [0, 1].
        z_loss: :math:`\zeta \ge 0`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one loss per example).
        backend: ``"auto"`` (the fused kernel where it applies, else the
            reference), ``"fused"`` (the kernel; a ``ValueError`` where it
            does not apply) or ``"reference"`` (the float64 NumPy reference).

    Returns:
        ``(loss, grad)``, ``grad`` shaped like `logits`; for ``"none"`` the
        per-example losses and the gradient of their sum.

    Examples:
        Uniform logits over 4 classes cost :math:`\ln 4`, and the gradient is
        :math:`p - \text{onehot}(y)`:

        >>> loss, grad = softmax_cross_entropy_with_grad(np.zeros((1, 4)), np.array([2]))
        >>> round(float(loss), 12) == round(float(np.log(4)), 12)
        True
        >>> grad
        array([[ 0.25,  0.25, -0.75,  0.25]])

        A masked (``-inf``) class drops out: two classes left, so :math:`\ln 2`:

        >>> float(softmax_cross_entropy([0.0, 0.0, -np.inf], 0)) == float(np.log(2))
        True
    """
    options = CrossEntropyOptions.check(label_smoothing=label_smoothing, ignore_index=ignore_index, z_loss=z_loss,
                                        reduction=reduction)
    logits = as_float_array(logits, "logits")  # float16/float32 kept until the core call
    dtype = _result_dtype(logits)
    if logits.ndim == 0:
        raise ValueError(f"`logits` must have a class axis, got the scalar {show(logits)}.")
    axis = check_axis(axis, logits.ndim)
    num_classes = logits.shape[axis]
    if num_classes == 0:
        raise ValueError(f"`logits` must have at least one class along axis {axis}, got shape {logits.shape}.")
    class_weight = check_class_weight(class_weight, num_classes)
    if backend not in _BACKENDS:
        raise ValueError(f"`backend` must be one of {_BACKENDS}, got {backend!r}.")
    labels2d, options = labels_to_2d(labels, logits.shape, axis, options)

    moved = np.moveaxis(logits, axis, -1)
    logits2d = np.ascontiguousarray(moved.reshape(-1, num_classes))
    kernel_labels = labels2d  # the kernel takes probability targets in the logits' dtype; the reference, float64
    if labels2d.ndim == 2 and logits2d.dtype in (np.float32, np.float64):
        kernel_labels = labels2d.astype(logits2d.dtype, copy=False)
    fused = backend != "reference" and kernels.supports_softmax(logits2d, kernel_labels)
    if backend == "fused" and not fused:
        raise ValueError(
            f"`backend`='fused' supports float32/float64 logits only, got {logits.dtype}; use backend='auto'."
        )
    if fused:
        # The kernel finds NaN/+inf logits in the pass it makes anyway; on error,
        # re-check the original array so the message indexes the caller's shape.
        try:
            loss, grad2d = kernels.softmax_cross_entropy_core(
                logits2d, kernel_labels, class_weight, options,
                inplace=not np.may_share_memory(logits2d, logits),  # our own copy: reuse it
            )
        except ValueError:
            check_softmax_logits(logits)
            raise
    else:
        check_softmax_logits(logits)
        loss, grad2d = softmax_ce_2d(logits2d.astype(np.float64, copy=False), labels2d, class_weight, options)
    grad = np.moveaxis(grad2d.reshape(moved.shape), -1, axis).astype(dtype, copy=False)
    if options.reduction == "none":
        return loss.reshape(moved.shape[:-1]).astype(dtype), grad
    return dtype.type(loss), grad


def softmax_cross_entropy(
    logits,
    labels,
    *,
    axis=-1,
    class_weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
    backend="auto",
):
    r"""Softmax cross-entropy from logits; see :func:`softmax_cross_entropy_with_grad`.

    .. math::

        L = -\log p_y = \log\sum_c e^{z_c} - z_y

    Args:
        logits, labels, axis, class_weight, ignore_index, label_smoothing, z_loss, reduction, backend:
            as in :func:`softmax_cross_entropy_with_grad`.

    Returns:
        The loss alone (per element or per example for ``reduction="none"``).

    Examples:
        Three classes by hand: logits (2, 1, 0), label 0 costs
        :math:`\log(e^2 + e + 1) - 2 \approx 0.4076`:

        >>> round(float(softmax_cross_entropy([2.0, 1.0, 0.0], 0)), 4)
        0.4076
        >>> float(softmax_cross_entropy([2.0, 1.0, 0.0], [1.0, 0.0, 0.0]))  # the same, as a distribution
        0.40760596444438
    """
    return softmax_cross_entropy_with_grad(
        logits, labels, axis=axis, class_weight=class_weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction, backend=backend,
    )[0]
