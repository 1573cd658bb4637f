"""The core of softmax cross-entropy on a 2-D ``(N, C)`` array (private).

:func:`crossent.losses.softmax_cross_entropy_with_grad` validates its inputs,
moves the class axis last, reshapes to ``(N, C)`` and calls
:func:`softmax_ce_2d`; a fused kernel can take that call's place for the
inputs it supports.  The formulas are documented in the public function.
"""

from __future__ import annotations

import numpy as np

from ._rules import CrossEntropyOptions, integer_label_denominator, reduction_scale, times
from ._validate import as_float_array, check_distribution, check_integer_labels, check_not_nan, show


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
        labels = as_float_array(labels, "labels")  # bfloat16 and float8 become float32, exactly
        labels = check_distribution(labels, "labels", axis, offer_normalize=False).astype(np.float64, copy=False)
        return np.ascontiguousarray(np.moveaxis(labels, axis, -1).reshape(-1, num_classes)), options
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
    shifted = logits - row_max[:, None]
    log_sum = np.log(np.where(all_masked, 1.0, np.exp(shifted).sum(axis=1)))  # an all-masked row: log 1 = 0
    neg_log_p = log_sum[:, None] - shifted  # -log p, +inf on masked classes
    probs = np.exp(-neg_log_p)
    lse = row_max + log_sum
    smooth = eps / num_classes

    if integer_labels:
        rows_idx = np.arange(n)
        safe = np.where(kept, labels, 0)
        # target_coef_i = (1 - eps) w[y_i] for counted rows, 0 for ignored ones.
        target_coef = np.where(kept, (1.0 - eps) * weights[safe], 0.0).astype(dtype)
        rows = times(target_coef, neg_log_p[rows_idx, safe])  # 0 * inf (a masked target of no weight) = 0
        grad_coef = target_coef.copy()
        if eps:
            # (eps/C) sum_c w_c (-log p_c); a masked class of positive weight makes it +inf.
            rows += np.where(kept, times(smooth * weights, neg_log_p).sum(axis=1), 0.0)
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
        rows = times(weighted_targets, neg_log_p).sum(axis=1)
        grad_coef = weighted_targets.sum(axis=1)
        if z_loss:
            rows += z_loss * lse**2
            grad_coef += 2.0 * z_loss * lse
        # dL_i/dz_ij = (sum_c q_ic + 2 z lse_i) p_ij - q_ij, with q = w * targets
        grad = grad_coef[:, None] * probs - weighted_targets
        denominator = float(n)

    rows = rows.astype(dtype, copy=False)
    grad = grad.astype(dtype, copy=False)
    if options.reduction == "none":
        return rows, grad
    scale = reduction_scale(options.reduction, denominator)  # 0 when nothing counts: 0, not 0/0
    return dtype.type(np.sum(rows, dtype=np.float64) * scale), (grad * scale).astype(dtype, copy=False)
