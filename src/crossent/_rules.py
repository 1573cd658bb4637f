r"""The rules of softmax cross-entropy, written once.

Every implementation of softmax cross-entropy in the package (the NumPy
reference in :mod:`crossent.losses`, the fused kernels in
:mod:`crossent.kernels`, the plain-torch and fused paths of
:mod:`crossent.torch`, the tiled ``linear_cross_entropy``) takes its options
from one :class:`CrossEntropyOptions`, checked here once at the public
boundary, and follows the rules below.  ``tests/conformance`` runs one table
of cases through all of them against a float64 reference of these rules.

The rules
---------
For logits :math:`x` of one row (:math:`C` classes), class weights :math:`w`
(all 1 by default, :math:`W = \sum_c w_c`), smoothing :math:`\varepsilon`,
`z_loss` :math:`\zeta`, the row maximum :math:`m` and
:math:`\ell = m + \log\sum_c e^{x_c - m}` (the log-sum-exp):

* integer label :math:`y`: :math:`L = (1-\varepsilon)\,w_y(\ell - x_y)
  + \frac{\varepsilon}{C}\sum_c w_c(\ell - x_c) + \zeta\ell^2`
  (PyTorch's ``cross_entropy``: the smoothing term is weighted per class);
* probability target :math:`t`: :math:`L = \sum_c q_c(\ell - x_c) + \zeta\ell^2`
  with :math:`q_c = w_c((1-\varepsilon)t_c + \varepsilon/C)`;
* **shifted frame**: every difference :math:`\ell - x_c` is computed as
  :math:`\log\sum_c e^{x_c - m} - (x_c - m)`, never as ``lse - x``: at a large
  common offset ``lse - x`` cancels (``1e30 + log 2`` rounds to ``1e30``); and
  where :math:`S = \sum_c e^{x_c - m} < 2`, :math:`\log S` is ``log1p`` of
  :math:`S - 1` summed without the maxima, so a confident row keeps its digits;
* **kept** rows: a row counts unless its integer label equals `ignore_index`
  (probability targets have no ignored rows); an ignored row costs 0 and has a
  zero gradient;
* **denominator** of ``"mean"``: :math:`\sum_i w_{y_i}` over the kept rows
  (their number without weights) for integer labels, the number of rows for
  probability targets -- PyTorch's weighted mean, also with smoothing and
  `z_loss`; :func:`mean_scale` turns it into the factor the sum is multiplied by;
* **empty mean**: a denominator of 0 (every row ignored, zero total weight, or
  no row) gives loss 0 and a zero gradient (PyTorch: NaN);
* `z_loss` adds :math:`\zeta\ell^2` once per kept row, not multiplied by a
  class weight, divided by the same denominator;
* **masked** classes: a ``-inf`` logit has probability 0 and (without
  smoothing) a zero gradient; a masked target costs ``+inf``; a weight (or
  target mass) of 0 times an infinite :math:`\ell - x_c` counts 0, never NaN;
  with smoothing, a masked class of positive weight makes the loss ``+inf``
  (PyTorch's answer) with the finite gradient of the formula; a kept row that
  is ``-inf`` everywhere (**all_masked**) is a ``ValueError``, an ignored one
  costs 0;
* NaN and ``+inf`` logits are a ``ValueError``.

Glossary (one word per idea, the same in every module)
------------------------------------------------------
``logits`` (:math:`x`), ``labels`` (integer class indices or probability
targets; ``target`` in :mod:`crossent.torch`, PyTorch's name),
``class_weight`` (:math:`w`; ``weight`` in :mod:`crossent.torch`),
``ignore_index``, ``label_smoothing`` (:math:`\varepsilon`, never
``smoothing`` or ``eps``), ``z_loss`` (:math:`\zeta`), ``reduction``,
``kept`` (a row that counts), ``masked`` (a ``-inf`` logit) and
``all_masked`` (a row of them), ``lse`` (:math:`\ell`), ``denominator``,
``scale`` (what the summed loss and gradient are multiplied by).
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass

import numpy as np

from ._validate import check_weights  # the generic array checks; _validate imports nothing of ours

REDUCTIONS = ("none", "sum", "mean")


def check_reduction(reduction) -> str:
    """Return `reduction` if it is one of ``"none"``, ``"sum"``, ``"mean"``.

    Examples:
        >>> check_reduction("sum")
        'sum'
    """
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}.")
    return reduction


def check_label_smoothing(value) -> float:
    r"""Return the smoothing :math:`\varepsilon` as a float in [0, 1].

    Examples:
        >>> check_label_smoothing(0.1)
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`label_smoothing` must be a number in [0, 1], got {value!r}.")
    return float(value)


def check_nonnegative_scalar(value, name: str) -> float:
    """Return `value` as a float after checking it is finite and >= 0.

    Examples:
        >>> check_nonnegative_scalar(0.5, "z_loss")
        0.5
    """
    # math.isfinite (not np.isfinite): plain Python, so torch.compile folds the check instead of breaking the graph.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite non-negative number, got {value!r}.")
    return float(value)


def check_ignore_index(ignore_index, *, allow_none: bool = True) -> int | None:
    """Return `ignore_index` as an int (or None); a bool is a `TypeError`, as is anything not integral.

    Examples:
        >>> check_ignore_index(-100)
        -100
        >>> check_ignore_index(True)
        Traceback (most recent call last):
        ...
        TypeError: `ignore_index` must be an integer or None, got True.
    """
    what = "an integer or None" if allow_none else "an integer"
    if ignore_index is None and allow_none:
        return None
    if isinstance(ignore_index, (bool, np.bool_)):
        raise TypeError(f"`ignore_index` must be {what}, got {ignore_index!r}.")
    try:
        value = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"`ignore_index` must be {what}, got {ignore_index!r}.") from None
    if not -(2**63) <= value < 2**63:  # labels are compared as int64 (torch's ignore_index is one too)
        raise ValueError(f"`ignore_index` must fit in int64, [-2**63, 2**63 - 1], got {value}.")
    return value


@dataclass(frozen=True)
class CrossEntropyOptions:
    """The checked options of one softmax cross-entropy call.

    Build it with :meth:`check` at the public boundary; private cores and
    autograd Functions take it as it is and never check again.  Class weights
    are an array of the caller's framework, checked by the boundary against
    :func:`check_class_weight`'s rule (finite, non-negative, one per class).

    Examples:
        >>> CrossEntropyOptions.check(label_smoothing=0.1, ignore_index=-100)
        CrossEntropyOptions(label_smoothing=0.1, ignore_index=-100, z_loss=0.0, reduction='mean')
    """

    label_smoothing: float = 0.0
    ignore_index: int | None = None
    z_loss: float = 0.0
    reduction: str = "mean"

    @classmethod
    def check(cls, *, label_smoothing=0.0, ignore_index=None, z_loss=0.0, reduction="mean") -> CrossEntropyOptions:
        """Validate each option once (naming the parameter in the error) and return the options."""
        return cls(
            label_smoothing=check_label_smoothing(label_smoothing),
            ignore_index=check_ignore_index(ignore_index),
            z_loss=check_nonnegative_scalar(z_loss, "z_loss"),
            reduction=check_reduction(reduction),
        )

    def for_probability_targets(self) -> CrossEntropyOptions:
        """These options for probability targets, which have no ignored rows.

        A non-negative `ignore_index` there is a `ValueError` (PyTorch refuses
        it too); a negative one, PyTorch's default ``-100``, can match no class
        and is dropped.
        """
        if self.ignore_index is None:
            return self
        if self.ignore_index >= 0:
            raise ValueError(
                f"`ignore_index`={self.ignore_index} applies to integer labels only; probability targets have no "
                "ignored rows (pass None, or a negative value)."
            )
        return CrossEntropyOptions(self.label_smoothing, None, self.z_loss, self.reduction)


def check_class_weight(class_weight, num_classes: int, name: str = "class_weight") -> np.ndarray | None:
    """`class_weight` as a float64 array of `num_classes` finite, non-negative weights (or None).

    Examples:
        >>> check_class_weight([1, 2], 2)
        array([1., 2.])
    """
    if class_weight is None:
        return None
    return check_weights(class_weight, name, (num_classes,)).astype(np.float64, copy=False)


def times(a, b) -> np.ndarray:
    """``a * b`` where a zero in `a` gives 0 even against an infinite `b` (the 0·∞ = 0 rule).

    A zero weight (or a zero target probability) means "no contribution",
    so ``0 * inf`` is taken as 0 instead of NaN, without a RuntimeWarning.

    Examples:
        >>> times(np.array([0.0, 2.0]), np.array([np.inf, 3.0]))
        array([0., 6.])
    """
    a = np.asarray(a)
    b = np.asarray(b)
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))
    np.multiply(a, b, out=out, where=a != 0)
    return out


def safe_log(x, at_zero=-np.inf) -> np.ndarray:
    """``log x`` for ``x >= 0``, with `at_zero` where ``x == 0`` and no divide-by-zero warning.

    The one "safe log" of the package: ``log 0 = -inf`` by default; callers
    that multiply by a zero mass afterwards pass ``at_zero=0`` (0·log 0 = 0).

    Examples:
        >>> safe_log(np.array([1.0, 0.0])), safe_log(np.array([0.0]), at_zero=0.0)
        (array([  0., -inf]), array([0.]))
    """
    x = np.asarray(x)
    out = np.full(x.shape, at_zero, dtype=np.result_type(x.dtype, np.float32))
    np.log(x, out=out, where=x > 0)
    return out


def mean_scale(denominator: float) -> float:
    """What a summed loss (and its gradient) is multiplied by for ``"mean"``: ``1/denominator``, or 0.

    A denominator of 0 (nothing counted) gives 0: the empty mean is 0 with a
    zero gradient, never 0/0.

    Examples:
        >>> mean_scale(4.0), mean_scale(0.0)
        (0.25, 0.0)
    """
    return 1.0 / denominator if denominator > 0 else 0.0


def in_dtype(value, dtype):
    """A float64 loss (a number or an array) in the result `dtype`: beyond its range, +-inf, as the IEEE
    cast gives (and as PyTorch returns), without NumPy's overflow warning.

    Examples:
        >>> in_dtype(6e38, np.float32), in_dtype(np.array([1.5, 1e39]), np.float32)
        (np.float32(inf), array([1.5, inf], dtype=float32))
    """
    with np.errstate(over="ignore"):
        if isinstance(value, np.ndarray):
            return value.astype(dtype, copy=False)
        return np.dtype(dtype).type(value)


def scaled_total(total: float, scale: float) -> float:
    """The summed rows times the reduction's `scale`, where a scale of 0 (the empty mean) gives 0.

    The empty mean is 0 even when a row of the sum is infinite (a masked class
    under smoothing in a row of zero weight): never ``inf * 0 = NaN``.

    Examples:
        >>> scaled_total(float("inf"), 0.0), scaled_total(3.0, 0.5)
        (0.0, 1.5)
    """
    return total * scale if scale != 0 else 0.0


def reduction_scale(reduction: str, denominator: float) -> float:
    """The factor applied to the summed rows: `mean_scale` for ``"mean"``, 1 for ``"sum"`` and ``"none"``.

    Examples:
        >>> reduction_scale("sum", 3.0), reduction_scale("mean", 2.0)
        (1.0, 0.5)
    """
    return mean_scale(denominator) if reduction == "mean" else 1.0


def integer_label_denominator(labels: np.ndarray, kept: np.ndarray, class_weight) -> float:
    """The ``"mean"`` denominator for integer labels: the kept rows' target weights summed (their count).

    `labels` must be valid indices on the kept rows (anything elsewhere).

    Examples:
        >>> integer_label_denominator(np.array([0, 1, 1]), np.array([True, True, False]), np.array([2.0, 3.0]))
        5.0
    """
    if class_weight is None:
        return float(np.count_nonzero(kept))
    safe = np.where(kept, labels, 0)
    return float(np.sum(np.where(kept, np.asarray(class_weight, dtype=np.float64)[safe], 0.0), dtype=np.float64))
