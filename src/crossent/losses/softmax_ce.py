r"""Softmax cross-entropy with its gradient: the public functions and the float64 NumPy reference.

:func:`softmax_cross_entropy_with_grad` validates its inputs once (the
options through :class:`crossent._rules.CrossEntropyOptions`), moves the class
axis last, reshapes to ``(N, C)`` and calls either the fused kernel
(:func:`crossent.kernels.softmax_cross_entropy_core`) or the reference
:func:`softmax_ce_2d` below, which follows the rules of :mod:`crossent._rules`
in float64.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._rules import (
    CrossEntropyOptions,
    check_class_weight,
    in_dtype,
    integer_label_denominator,
    reduction_scale,
    scaled_total,
    times,
)
from .._validate import as_float_array, check_axis, check_distribution, check_integer_labels, check_not_nan, show
from ._common import _result_dtype


def check_softmax_logits(logits: np.ndarray) -> None:
    """Reject NaN and ``+inf`` logits (``-inf`` masks a class and is allowed).

    Kept separate from :func:`softmax_ce_2d` so that a kernel that detects
    NaN itself can skip this pass.
    """
    check_not_nan(logits, "logits")
    plus_inf = logits == np.inf
    if plus_inf.any():
        idx = tuple(int(i) for i in np.argwhere(plus_inf)[0])
        raise ValueError(
            f"`logits` must not be +inf (found at index {idx}); use -inf to mask a class out."
        )


def _class_axis_last(array, axis):
    """`array` with the (checked, non-negative) class `axis` last: itself when it already is (np.moveaxis
    costs ~20 us even then, a fifth of a small batch's whole loss)."""
    return array if axis == array.ndim - 1 else np.moveaxis(array, axis, -1)


def labels_to_2d(labels, logits_shape: tuple, axis: int, options: CrossEntropyOptions):
    """Validate `labels` and lay them out like ``(N, C)`` logits with the class axis last.

    Integer labels (shape `logits_shape` without `axis`) become int64 ``(N,)``;
    float labels (shape `logits_shape`, distributions along `axis`; bfloat16
    and float8 are read as float32) become C-contiguous float64 ``(N, C)``.
    Returns the labels and the options that apply to them (without
    `ignore_index` for probability targets).
    """
    num_classes = logits_shape[axis]
    batch_shape = tuple(s for k, s in enumerate(logits_shape) if k != axis)
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        if labels.shape != batch_shape:
            raise ValueError(
                f"integer `labels` must have the logits' shape without axis {axis}, {batch_shape}, got {labels.shape}."
            )
        check_integer_labels(labels, num_classes, "labels", options.ignore_index)
        return labels.reshape(-1).astype(np.int64, copy=False), options
    if labels.dtype.kind in "fV":
        if labels.shape != tuple(logits_shape):
            raise ValueError(
                f"float `labels` are probability targets and must have the logits' shape {tuple(logits_shape)}, "
                f"got {labels.shape}; pass class indices with an integer dtype."
            )
        options = options.for_probability_targets()
        # check_distribution reads bfloat16 and float8 as float32 (exactly), with their own tolerance.
        labels = check_distribution(labels, "labels", axis, offer_normalize=False).astype(np.float64, copy=False)
        return np.ascontiguousarray(_class_axis_last(labels, axis).reshape(-1, num_classes)), options
    raise TypeError(
        f"`labels` must be integer class indices or float probabilities, got dtype {labels.dtype} ({show(labels)})."
    )


def softmax_ce_2d(logits, labels, class_weight, options: CrossEntropyOptions):
    """Loss and gradient of the reduced loss for C-contiguous ``(N, C)`` `logits` (the float64 reference).

    Args:
        logits: ``(N, C)`` float array, class axis last, no NaN and no ``+inf``.
        labels: int64 ``(N,)`` class indices (range-checked; may equal
            `ignore_index`) or float ``(N, C)`` distributions (validated).
        class_weight: ``None`` or ``(C,)`` non-negative weights.
        options: the checked options (see :mod:`crossent._rules`).

    Returns:
        ``(loss, grad)``: a scalar of the logits' dtype (``(N,)`` for
        ``"none"``) and the ``(N, C)`` gradient of the reduced loss (of the
        sum of the rows for ``"none"``).
    """
    n, num_classes = logits.shape
    dtype = logits.dtype
    eps, z_loss = options.label_smoothing, options.z_loss
    weights = np.ones(num_classes, dtype) if class_weight is None else np.asarray(class_weight, dtype)
    integer_labels = labels.ndim == 1
    if integer_labels and options.ignore_index is not None:
        kept = labels != options.ignore_index
    else:
        kept = np.ones(n, dtype=bool)

    # A row whose every logit is -inf has no distribution; allowed only when ignored.
    row_max = logits.max(axis=1, initial=-np.inf)
    all_masked = row_max == -np.inf
    if (all_masked & kept).any():
        row = int(np.argmax(all_masked & kept))
        raise ValueError(f"`logits` are -inf for every class in row {row}: no class is possible.")
    # The shifted frame: x - m <= 0, so exp never overflows, and -log p_c = log S - (x_c - m)
    # keeps its digits under a large common offset (lse - x_c would cancel).
    row_max = np.where(all_masked, 0.0, row_max)
    with np.errstate(over="ignore"):  # x - m below the float range is -inf: exp gives its 0 exactly
        shifted = logits - row_max[:, None]
    # log S = log1p(S - 1), with S - 1 summed without the maxima's exp(0) = 1: a confident row
    # (S = 1 + 1e-12) keeps its digits, where log(1 + 1e-12 rounded) would not.
    at_max = shifted == 0
    probs = np.exp(shifted)  # e^(x - m); divided by S below
    rest = probs.sum(axis=1, where=~at_max) + (at_max.sum(axis=1) - 1)
    del at_max
    log_sum = np.log1p(np.where(all_masked, 0.0, rest))  # an all-masked row: log 1 = 0
    probs /= np.where(all_masked, 1.0, 1.0 + rest)[:, None]

    def shifted_dot(v, coef):
        """sum_c coef v_c (x_c - m) as 2 sum_c coef v_c (x/2 - m/2): x - m can exceed the float range
        where the term, coef first, does not."""
        half_shifted = logits * 0.5 - (row_max * 0.5)[:, None]
        return 2.0 * times(coef * v, half_shifted).sum(axis=1)

    lse = row_max + log_sum
    smooth = eps / num_classes

    if integer_labels:
        rows_idx = np.arange(n)
        safe = np.where(kept, labels, 0)
        # target_coef_i = (1 - eps) w[y_i] for counted rows, 0 for ignored ones.
        target_coef = np.where(kept, (1.0 - eps) * weights[safe], 0.0).astype(dtype)
        with np.errstate(over="ignore"):  # -log p_y = log S - (x_y - m): +inf for a masked target
            target_nll = log_sum - shifted[rows_idx, safe]
        rows = times(target_coef, target_nll)  # 0 * inf (a masked target of no weight) = 0
        grad_coef = target_coef.copy()
        if eps:
            # (eps/C) sum_c w_c (-log p_c); a masked class of positive weight makes it +inf.
            rows += np.where(kept, smooth * weights.sum() * log_sum - shifted_dot(weights, smooth), 0.0)
            grad_coef += kept * (smooth * weights.sum())
        if z_loss:
            rows += np.where(kept, z_loss * lse**2, 0.0)
            grad_coef += kept * (2.0 * z_loss * lse)
        # dL_i/dz_ij = (a_i + eps/C W + 2 z lse_i) p_ij - a_i [j = y_i] - eps/C w_j
        grad = grad_coef[:, None] * probs
        grad[rows_idx, safe] -= target_coef
        if eps:
            grad -= kept[:, None] * (smooth * weights)
        denominator = integer_label_denominator(safe, kept, class_weight)
    else:
        targets = labels.astype(dtype, copy=False)
        if eps:
            targets = (1.0 - eps) * targets + smooth
        weighted_targets = targets * weights
        # 0 * log 0 = 0: a masked class with no target mass contributes nothing.
        grad_coef = weighted_targets.sum(axis=1)
        rows = grad_coef * log_sum - shifted_dot(weighted_targets, 1.0)
        if z_loss:
            rows += z_loss * lse**2
            grad_coef += 2.0 * z_loss * lse
        # dL_i/dz_ij = (sum_c q_ic + 2 z lse_i) p_ij - q_ij, with q = w * targets
        grad = grad_coef[:, None] * probs - weighted_targets
        denominator = float(n)

    rows = in_dtype(rows, dtype)
    grad = grad.astype(dtype, copy=False)
    if options.reduction == "none":
        return rows, grad
    scale = reduction_scale(options.reduction, denominator)  # 0 when nothing counts: 0, not 0/0
    return in_dtype(scaled_total(float(np.sum(rows, dtype=np.float64)), scale), dtype), (grad * scale).astype(dtype, copy=False)


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
    `ignore_index` does not apply to them: None or a negative value (PyTorch's
    default -100) is accepted and ignored, a non-negative one is a ``ValueError``
    (PyTorch refuses it too).

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

    moved = _class_axis_last(logits, axis)
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
    grad = grad2d.reshape(moved.shape)
    grad = (grad if axis == grad.ndim - 1 else np.moveaxis(grad, -1, axis)).astype(dtype, copy=False)
    if options.reduction == "none":
        return in_dtype(loss.reshape(moved.shape[:-1]), dtype), grad
    return in_dtype(loss, dtype), grad


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
