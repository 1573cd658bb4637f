"""The rules of ``crossent._rules``, written again in extended precision: the conformance table's yardstick.

Everything is computed in ``np.longdouble`` (64-bit significand on x86, about
19 digits) in the shifted frame: with the row maximum :math:`m` and
:math:`d_c = x_c - m`, :math:`\\ell - x_c = \\operatorname{log1p}(T) - d_c` where
:math:`T = \\sum_{c \\ne \\arg\\max} e^{d_c}`, so a loss near 0 (a confident row)
keeps its digits and a large common offset cancels exactly.

Integer labels and probability targets share one formula: a row's target mass
:math:`Q_c` is :math:`(1-\\varepsilon) w_y [c = y] + \\frac{\\varepsilon}{C} w_c`
(integer label :math:`y`) or :math:`w_c((1-\\varepsilon) t_c + \\varepsilon/C)`
(probability target :math:`t`); then

    L = sum_c Q_c (l - x_c) + zeta l^2,    dL/dx_j = (sum_c Q_c + 2 zeta l) p_j - Q_j,

with 0 * inf = 0, on the kept rows (an ignored row costs 0 and has gradient 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WIDE = np.longdouble
#: Whether WIDE is wider than float64; without it the float64 rows of the table are not decisive.
IS_WIDER_THAN_FLOAT64 = np.finfo(WIDE).eps < np.finfo(np.float64).eps / 100


@dataclass(frozen=True)
class Expected:
    """The reference answer in WIDE: loss (scalar or (N,)), gradient (N, C) and its error scale."""

    loss: np.ndarray
    grad: np.ndarray
    #: Per entry, the size of the two terms the gradient subtracts, ``s (|P_i| p_ij + |Q_ij|)``:
    #: an implementation's rounding error in entry ij is measured against its row's largest term.
    grad_terms: np.ndarray


def _times(a, b):
    """``a * b`` with ``0 * inf = 0`` (a zero weight or target mass counts nothing)."""
    a, b = np.broadcast_arrays(np.asarray(a, WIDE), np.asarray(b, WIDE))
    out = np.zeros(a.shape, WIDE)
    np.multiply(a, b, out=out, where=a != 0)
    return out


def _wide(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "V" or (a.dtype.kind == "f" and a.dtype.itemsize == 2):
        a = a.astype(np.float32)  # bfloat16 / float16: exact in float32
    return a.astype(WIDE)


def log_softmax(x):
    """Per row of (N, C) `x` (no row all ``-inf``): ``(lse, lse - x, softmax(x))``, in the shifted frame."""
    x = _wide(x)
    m = x.max(axis=1, initial=-np.inf)
    d = x - m[:, None]  # <= 0, -inf where masked
    e = np.exp(d)
    e[np.arange(len(x)), np.argmax(x, axis=1)] = 0  # the maximum's own 1 is the "1" of log1p
    r = np.log1p(e.sum(axis=1))  # lse - m
    return m + r, r[:, None] - d, np.exp(d - r[:, None])


def softmax_cross_entropy(logits, labels, *, class_weight=None, ignore_index=None, label_smoothing=0.0,
                          z_loss=0.0, reduction="mean") -> Expected:
    """The loss and the gradient (of the sum, for ``"none"``) of (N, C) `logits`, or the rule's ValueError."""
    x = _wide(logits)
    n, num_classes = x.shape
    if np.isnan(x).any() or (x == np.inf).any():
        raise ValueError("NaN and +inf logits are a ValueError")
    w = np.ones(num_classes, WIDE) if class_weight is None else _wide(class_weight)
    eps = WIDE(label_smoothing)
    labels = np.asarray(labels)
    integer = labels.dtype.kind in "iu"
    if integer:
        kept = labels != ignore_index if ignore_index is not None else np.ones(n, bool)
    else:
        if ignore_index is not None and ignore_index >= 0:
            raise ValueError("a non-negative ignore_index does not apply to probability targets")
        kept = np.ones(n, bool)

    m = x.max(axis=1, initial=-np.inf)
    all_masked = m == -np.inf
    if (all_masked & kept).any():
        raise ValueError("a kept row is -inf everywhere")
    lse, neg_log_p, p = log_softmax(np.where(all_masked[:, None], WIDE(0), x))
    rows = np.arange(n)

    if integer:
        y = np.where(kept, labels, 0)
        q = np.zeros((n, num_classes), WIDE)
        q[rows, y] = (1 - eps) * w[y]
        q += eps / num_classes * w
        denominator = np.sum(np.where(kept, w[y], 0), dtype=WIDE)
    else:
        q = w * ((1 - eps) * _wide(labels) + eps / num_classes)
        denominator = WIDE(n)
    q[~kept] = 0
    loss_rows = _times(q, neg_log_p).sum(axis=1) + np.where(kept, WIDE(z_loss) * lse**2, 0)
    coef = np.where(kept, q.sum(axis=1) + 2 * WIDE(z_loss) * lse, 0)

    if reduction == "mean":
        scale = 1 / denominator if denominator > 0 else WIDE(0)  # the empty mean: 0, zero gradient
        loss = np.sum(loss_rows) * scale if denominator > 0 else WIDE(0)
    else:
        scale = WIDE(1)
        loss = loss_rows if reduction == "none" else np.sum(loss_rows, dtype=WIDE)
    grad = scale * (coef[:, None] * p - q)
    terms = scale * (np.abs(coef)[:, None] * p + np.abs(q))
    return Expected(np.asarray(loss, WIDE), grad, terms)


def entropy(logits) -> np.ndarray:
    """Per row of (N, C) `logits` with a finite entry: :math:`H = \\sum_c p_c (\\ell - x_c)`, 0 * inf = 0."""
    _, neg_log_p, p = log_softmax(logits)
    return _times(p, neg_log_p).sum(axis=1)
