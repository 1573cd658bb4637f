r"""Binary cross-entropy from logits and from probabilities, and the sigmoid focal loss, with their gradients."""

from __future__ import annotations

import numbers

import numpy as np
from scipy import special

from .._rules import check_label_smoothing, check_nonnegative_scalar, check_reduction, safe_log, times
from .._validate import check_finite, check_unit_interval
from ._common import _broadcast_weight, _prepare_pair, _reduce, _smooth_binary


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
    logits, labels, dtype = _prepare_pair(logits, labels, "logits", "labels")
    check_finite(logits, "logits")
    check_unit_interval(labels, "labels")
    pos_weight = _broadcast_weight(pos_weight, "pos_weight", logits.shape)
    sample_weight = _broadcast_weight(sample_weight, "sample_weight", logits.shape)

    y = _smooth_binary(labels, label_smoothing)
    losses, grads = sigmoid_bce_terms(logits, y, y if pos_weight is None else pos_weight * y)
    if sample_weight is not None:
        losses = losses * sample_weight
        grads = grads * sample_weight
    return _reduce(losses, grads, reduction, logits.size, dtype)


def sigmoid_bce_terms(logits: np.ndarray, y: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The elementwise terms of :func:`sigmoid_binary_cross_entropy_with_grad`, unchecked and unreduced.

    :math:`-[p\,\log\sigma(z) + (1-y)\log(1-\sigma(z))]` and its derivative
    :math:`(1-y)\,\sigma(z) - p\,\sigma(-z)`, with :math:`p` = `positive` (the
    target times any positive weight), for float64 arrays the caller has
    validated (the lab's training loop calls it on every step).

    Examples:
        >>> losses, grads = sigmoid_bce_terms(np.array([0.0]), np.array([1.0]), np.array([1.0]))
        >>> losses.round(6).tolist(), grads.tolist()
        ([0.693147], [-0.5])
    """
    # log sigma(z) = log_expit(z) and log(1 - sigma(z)) = log_expit(-z): exact
    # for any finite z, where log(1 - expit(z)) would give log(0) = -inf at z = 40.
    losses = 0.0 - (positive * special.log_expit(logits) + (1.0 - y) * special.log_expit(-logits))
    grads = (1.0 - y) * special.expit(logits) - positive * special.expit(-logits)
    return losses, grads


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
    probs, labels, dtype = _prepare_pair(probs, labels, "probs", "labels")
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
    logits, labels, dtype = _prepare_pair(logits, labels, "logits", "labels")
    check_finite(logits, "logits")
    check_unit_interval(labels, "labels")
    sample_weight = _broadcast_weight(sample_weight, "sample_weight", logits.shape)

    y = _smooth_binary(labels, label_smoothing)
    log_p = special.log_expit(logits)
    log_q = special.log_expit(-logits)  # log(1 - p), exact for large z
    ce = 0.0 - (y * log_p + (1.0 - y) * log_q)  # 0 - x: no -0.0
    # log m = log(y (1-p) + (1-y) p), with log 0 = -inf for y in {0, 1} (no warning).
    log_m = np.logaddexp(safe_log(y) + log_q, safe_log(1.0 - y) + log_p)
    m_gamma = np.exp(gamma * log_m)
    # gamma m^(gamma-1) m', in log space; its sign is the sign of 1 - 2y.
    log_abs_slope = (gamma - 1.0) * log_m + safe_log(np.abs(1.0 - 2.0 * y)) + log_p + log_q
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
