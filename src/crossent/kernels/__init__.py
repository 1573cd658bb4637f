"""Fused cross-entropy kernels: the loss and its gradient in one pass over the logits.

These are the fast paths behind :mod:`crossent.losses` and :mod:`crossent.torch`.
They take NumPy arrays that the caller has already shaped (2-D C-contiguous
logits, labels range-checked), compute the loss and the gradient of the
reduced loss together, and can write the gradient into the logits buffer
(``inplace=True``) so that no N x V array is allocated at all.  They find NaN
and ``+inf`` logits during the pass they make anyway, so callers need no
separate O(N V) scan.

Backends (chosen per call, nothing compiled at install time):

* :mod:`crossent.kernels.numba_fused` for float32 logits (softmax with integer
  targets, and sigmoid BCE with scalar or full-shape weights): one vectorised
  loop per row with a polynomial ``exp``, JIT-compiled on first use and cached
  on disk (about 1.5 s once per machine, then about 0.2 s to load per process).
  Used only where ``numba`` is installed.
* :mod:`crossent.kernels.numpy_blocked` for everything else (float64,
  probability targets, other weight layouts, or no numba): NumPy on row
  blocks that stay in the L2 cache.

Both run on a thread pool over rows (``num_threads``, default ``os.cpu_count()``).

Accuracy against the float64 reference (:mod:`crossent._softmax_ce`): float64
inputs agree to ~1e-12 relative.  float32 inputs keep the row statistics
(log-sum-exp, per-row losses, the reduction) in float64, from float32
exponentials (relative error < 3e-7) and float32 partial sums; they agree to
``atol=2e-6, rtol=2e-5`` (gradients: ``atol`` times the largest entry).

Gradient buffers: a new N x V gradient is fresh memory whose first touch costs
a page fault per 4 KiB, about a quarter of the kernel's time at 512 MiB.  So
the kernels keep up to ``max_cached_buffers`` (default 2) gradient buffers of
1 MiB or more and hand one out again once nothing else references it (any
view or ``torch.from_numpy`` tensor of it counts as a reference).  In a
training loop this means steady-state steps allocate nothing; the price is
that up to two gradient-sized blocks stay allocated after the last call, until
:func:`empty_cache`, or the next call after ``max_cached_buffers = 0``.
Without ``sys.getrefcount`` (PyPy) nothing is reused.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from .._rules import check_label_smoothing, check_nonnegative_scalar, check_reduction
from .._validate import (
    check_weights,
    show,
)
from . import _buffers
from . import numpy_blocked as _backend

__all__ = [
    "softmax_cross_entropy_fused",
    "sigmoid_binary_cross_entropy_fused",
    "supports_softmax",
    "empty_cache",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

#: Use the Numba backend where it applies (float32 logits, integer targets).
#: Set to False to force the NumPy backend (tests compare the two).
use_numba = True

#: How many gradient buffers (>= 1 MiB) are kept for reuse; 0 turns reuse off.
max_cached_buffers = 2


def empty_cache() -> int:
    """Release the cached gradient buffers; return how many bytes the cache held.

    Buffers still in use stay valid (their users keep them alive); the others
    are freed at once.

    Examples:
        >>> import numpy as np
        >>> from crossent.kernels import empty_cache, softmax_cross_entropy_fused
        >>> _ = empty_cache()
        >>> loss, grad = softmax_cross_entropy_fused(np.zeros((512, 1024), np.float32), np.zeros(512, np.int64))
        >>> del grad  # dropped, but its 2 MiB stay cached for the next call
        >>> empty_cache()
        2097152
        >>> empty_cache()
        0
    """
    return _buffers.clear()


def _numba_int_block():
    """The Numba block worker, or None where Numba is not installed."""
    global use_numba
    if not use_numba:
        return None
    try:
        from . import numba_fused
    except ImportError:  # numba is optional: fall back to NumPy
        use_numba = False
        return None
    return numba_fused.softmax_int_block


def _numba_bce():
    if not use_numba or _numba_int_block() is None:
        return None
    from . import numba_fused

    return numba_fused.sigmoid_bce_flat


def supports_softmax(logits, labels) -> bool:
    """True when :func:`softmax_cross_entropy_fused` handles these arrays as they are.

    That is: `logits` a 2-D C-contiguous float32/float64 ndarray, and `labels`
    either integer class indices of shape ``(N,)`` or probability targets of
    the logits' shape and dtype.

    Examples:
        >>> import numpy as np
        >>> supports_softmax(np.zeros((2, 3), np.float32), np.array([0, 2]))
        True
        >>> supports_softmax(np.zeros((2, 3), np.float16), np.array([0, 2]))
        False
    """
    if not (isinstance(logits, np.ndarray) and isinstance(labels, np.ndarray)):
        return False
    if logits.ndim != 2 or logits.dtype not in _FLOATS or not logits.flags.c_contiguous:
        return False
    if labels.dtype.kind in "iu":
        return labels.shape == logits.shape[:1]
    return labels.dtype == logits.dtype and labels.shape == logits.shape


def _check_threads(num_threads) -> int:
    if num_threads is None:
        return _backend.default_threads()
    if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral) or num_threads < 1:
        raise ValueError(f"`num_threads` must be a positive integer or None, got {num_threads!r}.")
    return int(num_threads)


def _check_logits(logits, ndim: int | None) -> np.ndarray:
    if not isinstance(logits, np.ndarray) or logits.dtype not in _FLOATS:
        got = logits.dtype if isinstance(logits, np.ndarray) else type(logits).__name__
        raise TypeError(f"`logits` must be a float32 or float64 NumPy array, got {got}.")
    if ndim is not None and logits.ndim != ndim:
        raise ValueError(f"`logits` must be 2-D (N, V), got shape {logits.shape}.")
    if not logits.flags.c_contiguous:
        raise ValueError("`logits` must be C-contiguous; pass np.ascontiguousarray(logits).")
    return logits


def _output(logits: np.ndarray, inplace: bool) -> np.ndarray:
    if inplace:
        if not logits.flags.writeable:
            raise ValueError("`inplace=True` needs a writeable `logits` array.")
        return logits
    return _buffers.empty(logits.shape, logits.dtype, max_cached_buffers)


def _reduce(row_loss: np.ndarray, reduction: str, scale: float, dtype):
    if reduction == "none":
        return row_loss.astype(dtype)
    # Sum in float64 (pairwise), so the reduction adds no float32 rounding.
    return dtype.type(row_loss.sum() * scale)


def softmax_cross_entropy_fused(
    logits,
    labels,
    *,
    class_weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
    inplace=False,
    num_threads=None,
):
    r"""Softmax cross-entropy of (N, V) logits and its gradient, in one fused pass.

    For integer targets :math:`y_i`, class weights :math:`w` (all 1 by
    default), smoothing :math:`\varepsilon` and :math:`\ell_i = \log\sum_c e^{x_{ic}}`:

    .. math::

        L_i = (1-\varepsilon)\, w_{y_i} (\ell_i - x_{i y_i})
              + \frac{\varepsilon}{V} \sum_c w_c (\ell_i - x_{ic}) + z\, \ell_i^2,
        \qquad
        \frac{\partial L_i}{\partial x_{ij}} = \big((1-\varepsilon) w_{y_i}
              + \tfrac{\varepsilon}{V}\textstyle\sum_c w_c + 2 z \ell_i\big) p_{ij}
              - (1-\varepsilon) w_{y_i} [j = y_i] - \tfrac{\varepsilon}{V} w_j .

    ``"mean"`` divides by :math:`\sum_i w_{y_i}` over the non-ignored rows
    (PyTorch's weighted mean).  For probability targets :math:`q` the same
    formulas hold with :math:`(1-\varepsilon) q_{ic} + \varepsilon/V` in place of the
    one-hot target, ``ignore_index`` does not apply (as in PyTorch), and
    ``"mean"`` divides by N.

    Args:
        logits: (N, V) C-contiguous float32 or float64 array.  ``-inf``
            entries are masked classes (zero gradient); NaN or ``+inf`` raise
            ValueError, and so does a counted row that is ``-inf`` everywhere.
        labels: (N,) integer class indices (range-checked; may equal
            `ignore_index`), or (N, V) probability targets of the logits' dtype.
        class_weight: optional (V,) non-negative weights.
        ignore_index: class index whose rows contribute no loss and no gradient.
        label_smoothing: :math:`\varepsilon` in [0, 1].
        z_loss: coefficient of :math:`\ell_i^2` (PaLM's auxiliary loss).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        inplace: write the gradient into `logits` and return that array
            (if a ValueError is raised, the buffer may be partly overwritten).
        num_threads: worker threads (None: ``os.cpu_count()``).

    Returns:
        ``(loss, grad)``: a scalar of the logits' dtype (an (N,) array for
        ``"none"``), and the gradient of the reduced loss (of the sum, for
        ``"none"``), shaped like `logits`.  A batch with no counted target (all
        ignored, or N = 0) has loss 0.0 and a zero gradient.

    Examples:
        Uniform logits over 4 classes cost :math:`\log 4` nats, and the
        gradient is :math:`p - \text{onehot}`:

        >>> import numpy as np
        >>> loss, grad = softmax_cross_entropy_fused(np.zeros((1, 4)), np.array([2]))
        >>> round(float(loss), 6) == round(float(np.log(4)), 6)
        True
        >>> grad
        array([[ 0.25,  0.25, -0.75,  0.25]])
    """
    logits = _check_logits(logits, 2)
    n, num_classes = logits.shape
    dtype = logits.dtype
    reduction = check_reduction(reduction)
    smoothing = check_label_smoothing(label_smoothing)
    z_loss = check_nonnegative_scalar(z_loss, "z_loss")
    threads = _check_threads(num_threads)
    if num_classes == 0:
        raise ValueError(f"`logits` must have at least one class, got shape {logits.shape}.")
    w = None
    if class_weight is not None:
        w = check_weights(class_weight, "class_weight", (num_classes,)).astype(dtype)
    weight_total = float(w.sum(dtype=np.float64)) if w is not None else float(num_classes)

    labels = np.asarray(labels)
    opt = _backend.SoftmaxOptions(w, weight_total, smoothing, z_loss, 1.0)
    if labels.dtype.kind in "iu":
        if labels.shape != (n,):
            raise ValueError(f"integer `labels` must have shape ({n},), got {labels.shape}.")
        kept = np.ones(n, dtype=bool)
        if ignore_index is not None:
            try:
                ignore_index = operator.index(ignore_index)
            except TypeError:
                raise TypeError(f"`ignore_index` must be an integer or None, got {ignore_index!r}.") from None
            kept = labels != ignore_index
        safe = np.where(kept, labels, 0).astype(np.int64)
        if n and (safe.min() < 0 or safe.max() >= num_classes):
            bad = int(safe[(safe < 0) | (safe >= num_classes)][0])
            raise ValueError(f"`labels` must lie in [0, {num_classes}) or equal ignore_index, got {bad}.")
        opt.labels, opt.kept = safe, kept
        denominator = float(w[safe][kept].sum(dtype=np.float64)) if w is not None else float(kept.sum())
    elif labels.dtype.kind == "f":
        if labels.shape != logits.shape:
            raise ValueError(f"probability `labels` must have the logits' shape {logits.shape}, got {labels.shape}.")
        opt.targets = np.ascontiguousarray(labels, dtype=dtype)
        denominator = float(n)
    else:
        raise TypeError(f"`labels` must be integer indices or float probabilities, got dtype {labels.dtype} ({show(labels)}).")

    if reduction == "mean":
        # No counted target at all: loss 0 and zero gradient (PyTorch gives NaN).
        opt.scale = 1.0 / denominator if denominator > 0 else 0.0
    block = None
    if opt.targets is None and dtype == np.float32:
        block = _numba_int_block()
    grad = _output(logits, inplace)
    row_loss = _backend.softmax_cross_entropy(logits, grad, opt, threads, block)
    return _reduce(row_loss, reduction, opt.scale, dtype), grad


def sigmoid_binary_cross_entropy_fused(
    logits,
    labels,
    *,
    pos_weight=None,
    sample_weight=None,
    label_smoothing=0.0,
    reduction="mean",
    inplace=False,
    num_threads=None,
):
    r"""Sigmoid binary cross-entropy from logits and its gradient, elementwise and multi-threaded.

    With :math:`\tilde y = y(1-\varepsilon) + \varepsilon/2`, `pos_weight`
    :math:`p` and `sample_weight` :math:`s` (both broadcast like PyTorch's
    ``BCEWithLogitsLoss``):

    .. math::

        L = s\,\big[(1-\tilde y)\,x + (1 + (p-1)\tilde y)\,\mathrm{softplus}(-x)\big],
        \qquad
        \frac{\partial L}{\partial x} = s\,\big[(1 + (p-1)\tilde y)\,\sigma(x) - p\,\tilde y\big].

    ``"mean"`` divides by the number of elements (as PyTorch does, whatever the weights).

    Args:
        logits: C-contiguous float32/float64 array of any shape; must be finite.
        labels: targets in [0, 1], the logits' shape.
        pos_weight, sample_weight: optional arrays broadcastable to the logits.
        label_smoothing: :math:`\varepsilon` in [0, 1].
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        inplace: write the gradient into `logits` and return that array
            (if a ValueError is raised, the buffer may be partly overwritten).
        num_threads: worker threads (None: ``os.cpu_count()``).

    Returns:
        ``(loss, grad)``: a scalar of the logits' dtype (an array shaped like
        `logits` for ``"none"``) and the gradient of the reduced loss.

    Examples:
        A logit of 0 is a coin flip: :math:`\log 2` nats whatever the label,
        and the gradient :math:`\sigma(0) - y`:

        >>> import numpy as np
        >>> loss, grad = sigmoid_binary_cross_entropy_fused(np.zeros(2), np.array([1.0, 0.0]), reduction="sum")
        >>> round(float(loss), 6) == round(2 * float(np.log(2)), 6)
        True
        >>> grad
        array([-0.5,  0.5])
    """
    logits = _check_logits(logits, None)
    reduction = check_reduction(reduction)
    smoothing = check_label_smoothing(label_smoothing)
    threads = _check_threads(num_threads)
    labels = np.asarray(labels)
    if labels.shape != logits.shape:
        raise ValueError(f"`labels` must have the logits' shape {logits.shape}, got {labels.shape}.")
    if labels.dtype.kind not in "biuf":
        raise TypeError(f"`labels` must be numeric, got dtype {labels.dtype}.")
    labels = np.ascontiguousarray(labels)
    for name, value in (("pos_weight", pos_weight), ("sample_weight", sample_weight)):
        if value is not None:
            value = check_weights(value, name)
            try:
                np.broadcast_shapes(value.shape, logits.shape)
            except ValueError:
                raise ValueError(f"`{name}` of shape {value.shape} does not broadcast to the logits' shape {logits.shape}.") from None
            if np.broadcast_shapes(value.shape, logits.shape) != logits.shape:
                raise ValueError(f"`{name}` of shape {value.shape} would enlarge the logits' shape {logits.shape}.")
    scale = 1.0 / logits.size if reduction == "mean" and logits.size else 1.0
    grad = _output(logits, inplace)
    losses = _backend.sigmoid_bce(
        logits, labels, grad, pos_weight=pos_weight, sample_weight=sample_weight,
        smoothing=smoothing, scale=scale, num_threads=threads, keep_losses=reduction == "none",
        numba_bce=_numba_bce(),
    )
    if reduction == "none":
        return losses.reshape(logits.shape), grad
    return logits.dtype.type(losses * scale), grad
