"""The core of softmax cross-entropy on a 2-D ``(N, C)`` array (private).

:func:`crossent.losses.softmax_cross_entropy_with_grad` validates its inputs,
moves the class axis last, reshapes to ``(N, C)`` and calls
:func:`softmax_ce_2d`; a fused kernel can take that call's place for the
inputs it supports.  The formulas are documented in the public function.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ._validate import check_distribution, check_integer_labels, check_not_nan, show


def times(a, b) -> np.ndarray:
    """``a * b`` where a zero in `a` gives 0 even against an infinite `b`.

    A zero weight (or a zero target probability) means "no contribution",
    so ``0 * inf`` is taken as 0 instead of NaN, without a RuntimeWarning.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))
    np.multiply(a, b, out=out, where=a != 0)
    return out


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


def labels_to_2d(labels, logits_shape: tuple, axis: int, ignore_index) -> np.ndarray:
    """Validate `labels` and lay them out like ``(N, C)`` logits with the class axis last.

    Integer labels (shape `logits_shape` without `axis`) become int64 ``(N,)``;
    float labels (shape `logits_shape`, distributions along `axis`) become
    C-contiguous float64 ``(N, C)``.
    """
    num_classes = logits_shape[axis]
    batch_shape = tuple(s for k, s in enumerate(logits_shape) if k != axis)
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        if labels.shape != batch_shape:
            raise ValueError(
                f"integer `labels` must have the logits' shape without axis {axis}, {batch_shape}, got {labels.shape}."
            )
        check_integer_labels(labels, num_classes, "labels", ignore_index)
        return labels.reshape(-1).astype(np.int64, copy=False)
    if labels.dtype.kind == "f":
        if labels.shape != tuple(logits_shape):
            raise ValueError(
                f"float `labels` are probability targets and must have the logits' shape {tuple(logits_shape)}, "
                f"got {labels.shape}; pass class indices with an integer dtype."
            )
        if ignore_index is not None:
            raise ValueError("`ignore_index` applies to integer labels only; it must be None with probability targets.")
        labels = check_distribution(labels, "labels", axis, offer_normalize=False).astype(np.float64, copy=False)
        return np.ascontiguousarray(np.moveaxis(labels, axis, -1).reshape(-1, num_classes))
    raise TypeError(
        f"`labels` must be integer class indices or float probabilities, got dtype {labels.dtype} ({show(labels)})."
    )


def softmax_ce_2d(logits, labels, class_weight, ignore_index, label_smoothing, z_loss, reduction):
    """Loss and gradient of the reduced loss for C-contiguous ``(N, C)`` `logits`.

    Args:
        logits: ``(N, C)`` float array, class axis last, no NaN and no ``+inf``.
        labels: int64 ``(N,)`` class indices (range-checked; may equal
            `ignore_index`) or float ``(N, C)`` distributions (validated).
        class_weight: ``None`` or ``(C,)`` non-negative weights.
        ignore_index: ``None`` or the int whose rows count for nothing.
        label_smoothing, z_loss: validated floats.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
        ``(loss, grad)``: a scalar of the logits' dtype (``(N,)`` for
        ``"none"``) and the ``(N, C)`` gradient of the reduced loss (of the
        sum of the rows for ``"none"``).
    """
    n, num_classes = logits.shape
    dtype = logits.dtype
    weights = np.ones(num_classes, dtype) if class_weight is None else np.asarray(class_weight, dtype)
    integer_labels = labels.ndim == 1
    if integer_labels and ignore_index is not None:
        kept = labels != ignore_index
    else:
        kept = np.ones(n, dtype=bool)

    # A row whose every logit is -inf has no distribution; allowed only when ignored.
    dead = logits.max(axis=1, initial=-np.inf) == -np.inf
    if (dead & kept).any():
        row = int(np.argmax(dead & kept))
        raise ValueError(f"`logits` are -inf for every class in row {row}: no class is possible.")
    if dead.any():
        logits = np.where(dead[:, None], 0.0, logits).astype(dtype)

    # logsumexp subtracts the row maximum first, so exp never overflows; a -inf
    # (masked) logit gives exp(-inf) = 0, so it drops out of the sum exactly.
    lse = logsumexp(logits, axis=1) if n else np.zeros(0, dtype)
    probs = np.exp(logits - lse[:, None])
    smooth = label_smoothing / num_classes

    if integer_labels:
        rows_idx = np.arange(n)
        safe = np.where(kept, labels, 0)
        # target_coef_i = (1 - eps) w[y_i] for counted rows, 0 for ignored ones.
        target_coef = np.where(kept, (1.0 - label_smoothing) * weights[safe], 0.0).astype(dtype)
        nll = lse - logits[rows_idx, safe]  # +inf when the target's own logit is -inf
        rows = times(target_coef, nll)
        grad_coef = target_coef.copy()
        if label_smoothing:
            # (eps/C) sum_c w_c (-log p_c); a masked class of positive weight makes it +inf.
            smooth_rows = times(smooth * weights, lse[:, None] - logits).sum(axis=1)
            rows += np.where(kept, smooth_rows, 0.0)
            grad_coef += kept * (smooth * weights.sum())
        if z_loss:
            rows += np.where(kept, z_loss * lse**2, 0.0)
            grad_coef += kept * (2.0 * z_loss * lse)
        # dL_i/dz_ij = (a_i + eps/C W + 2 z lse_i) p_ij - a_i [j = y_i] - eps/C w_j
        grad = grad_coef[:, None] * probs
        grad[rows_idx, safe] -= target_coef
        if label_smoothing:
            grad -= kept[:, None] * (smooth * weights)
        denominator = float(np.sum(np.where(kept, weights[safe], 0.0), dtype=np.float64))
    else:
        targets = labels.astype(dtype, copy=False)
        if label_smoothing:
            targets = (1.0 - label_smoothing) * targets + smooth
        weighted_targets = targets * weights
        # 0 * log 0 = 0: a masked class with no target mass contributes nothing.
        rows = times(weighted_targets, lse[:, None] - logits).sum(axis=1)
        grad_coef = weighted_targets.sum(axis=1)
        if z_loss:
            rows += z_loss * lse**2
            grad_coef += 2.0 * z_loss * lse
        # dL_i/dz_ij = (sum_c q_ic + 2 z lse_i) p_ij - q_ij, with q = w * targets
        grad = grad_coef[:, None] * probs - weighted_targets
        denominator = float(n)

    rows = rows.astype(dtype, copy=False)
    grad = grad.astype(dtype, copy=False)
    if reduction == "none":
        return rows, grad
    if reduction == "mean":
        if denominator == 0:  # every target ignored (or zero-weighted): 0, not 0/0
            return dtype.type(0.0), np.zeros_like(grad)
        return dtype.type(np.sum(rows, dtype=np.float64) / denominator), grad / dtype.type(denominator)
    return dtype.type(np.sum(rows, dtype=np.float64)), grad
