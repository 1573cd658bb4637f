"""The public kernel API: checks at the boundary, one table of backends, and the trusted cores.

:func:`softmax_cross_entropy_fused` and :func:`sigmoid_binary_cross_entropy_fused`
check their inputs once and call the cores.  :func:`softmax_cross_entropy_core`
is the entry point for callers that have checked everything already
(:mod:`crossent.losses`, :mod:`crossent.torch`): it takes a
:class:`crossent._rules.CrossEntropyOptions` and never checks again.
"""

from __future__ import annotations

import numbers
import sys

import numpy as np

from .._rules import (
    CrossEntropyOptions,
    check_class_weight,
    check_label_smoothing,
    check_reduction,
    in_dtype,
    integer_label_denominator,
    reduction_scale,
    scaled_total,
)
from .._validate import check_integer_labels, check_weights, show
from . import _buffers
from . import numpy_blocked as _numpy
from ._pool import default_threads

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

#: The backends, by name.  ``"auto"`` picks Numba where it applies (float32
#: logits; integer labels for softmax) and where it is installed, else NumPy.
BACKENDS = ("auto", "numba", "numpy")


def _numba_module():
    """:mod:`crossent.kernels.numba_fused`, or None where Numba is not installed (the optional ``fast`` extra)."""
    try:
        from . import numba_fused
    except ImportError:
        return None
    return numba_fused


def _select_backend(backend, *, dtype: np.dtype, integer_labels: bool = True, what: str = "softmax") -> str:
    """``"numba"`` or ``"numpy"``: the backend that serves this call.

    Numba serves float32 logits (with integer labels, for softmax); an
    explicit ``"numba"`` elsewhere, or without Numba, is a `ValueError`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
    applies = dtype == np.float32 and integer_labels
    if backend == "numpy" or (backend == "auto" and not applies):
        return "numpy"
    if _numba_module() is None:
        if backend == "numba":
            raise ValueError("`backend`='numba' needs the numba package: pip install 'crossent[fast]'.")
        return "numpy"
    if not applies:
        serves = "float32 logits with integer labels" if what == "softmax" else "float32 logits"
        got = f"{dtype} logits" + ("" if integer_labels else " with probability targets")
        raise ValueError(f"`backend`='numba' serves {serves} only, got {got}; use backend='auto' or 'numpy'.")
    return "numba"


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
        return default_threads()
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
    # The package attribute is the documented switch (crossent.kernels.max_cached_buffers = 0).
    limit = getattr(sys.modules[__package__], "max_cached_buffers", 2)
    return _buffers.empty(logits.shape, logits.dtype, limit)


def softmax_cross_entropy_core(logits, labels, class_weight, options: CrossEntropyOptions, *, inplace=False,
                               num_threads=None, backend="auto"):
    """The fused softmax cross-entropy for inputs that are already checked (no validation here).

    Args:
        logits: (N, V) C-contiguous float32/float64 ndarray.
        labels: int64 (N,) indices, range-checked on the kept rows, or (N, V)
            probability targets (checked distributions) in the logits' dtype.
        class_weight: None or (V,) checked weights.
        options: checked options (``.for_probability_targets()`` with probability targets).
        inplace, num_threads, backend: as in :func:`softmax_cross_entropy_fused`.

    Returns:
        ``(loss, grad)`` as :func:`softmax_cross_entropy_fused` does.
    """
    n, num_classes = logits.shape
    dtype = logits.dtype
    w = None if class_weight is None else np.ascontiguousarray(class_weight, dtype=dtype)
    weight_total = float(w.sum(dtype=np.float64)) if w is not None else float(num_classes)
    integer_labels = labels.dtype.kind in "iu"
    name = _select_backend(backend, dtype=dtype, integer_labels=integer_labels)
    opt = _numpy.SoftmaxOptions(w, weight_total, options.label_smoothing, options.z_loss, 1.0)
    if integer_labels:
        kept = np.ones(n, dtype=bool) if options.ignore_index is None else labels != options.ignore_index
        opt.labels = np.where(kept, labels, 0).astype(np.int64, copy=False)
        opt.kept = kept
        denominator = integer_label_denominator(opt.labels, kept, w)
    else:
        opt.targets = np.ascontiguousarray(labels, dtype=dtype)
        denominator = float(n)
    opt.scale = reduction_scale(options.reduction, denominator)
    block = _numba_module().softmax_int_block if name == "numba" else None
    grad = _output(logits, inplace)
    row_loss = _numpy.softmax_cross_entropy(logits, grad, opt, _check_threads(num_threads), block)
    if options.reduction == "none":
        return in_dtype(row_loss, dtype), grad
    # Summed in float64 (pairwise), so the reduction adds no float32 rounding.
    return in_dtype(scaled_total(float(row_loss.sum()), opt.scale), dtype), grad


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
    backend="auto",
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
    ``"mean"`` divides by N.  The rules are those of :mod:`crossent._rules`;
    every difference :math:`\ell_i - x_{ic}` is formed in the frame shifted by
    the row maximum, so a large common offset loses no digits.

    Args:
        logits: (N, V) C-contiguous float32 or float64 array (read-only is
            fine unless `inplace`).  ``-inf`` entries are masked classes (zero
            gradient); NaN or ``+inf`` raise ValueError, and so does a counted
            row that is ``-inf`` everywhere.
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
        backend: ``"auto"`` (Numba for float32 logits with integer labels
            where Numba is installed, else NumPy), ``"numba"`` or ``"numpy"``.

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
    options = CrossEntropyOptions.check(label_smoothing=label_smoothing, ignore_index=ignore_index, z_loss=z_loss,
                                        reduction=reduction)
    threads = _check_threads(num_threads)
    if num_classes == 0:
        raise ValueError(f"`logits` must have at least one class, got shape {logits.shape}.")
    class_weight = check_class_weight(class_weight, num_classes)
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        if labels.shape != (n,):
            raise ValueError(f"integer `labels` must have shape ({n},), got {labels.shape}.")
        check_integer_labels(labels, num_classes, "labels", options.ignore_index)
    elif labels.dtype.kind == "f":
        if labels.shape != logits.shape:
            raise ValueError(f"probability `labels` must have the logits' shape {logits.shape}, got {labels.shape}.")
        options = options.for_probability_targets()
        labels = np.ascontiguousarray(labels, dtype=logits.dtype)
    else:
        raise TypeError(f"`labels` must be integer indices or float probabilities, got dtype {labels.dtype} "
                        f"({show(labels)}).")
    return softmax_cross_entropy_core(logits, labels, class_weight, options, inplace=inplace, num_threads=threads,
                                      backend=backend)


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
    backend="auto",
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
        labels: targets in [0, 1] (no NaN), the logits' shape.
        pos_weight, sample_weight: optional arrays broadcastable to the logits.
        label_smoothing: :math:`\varepsilon` in [0, 1].
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        inplace: write the gradient into `logits` and return that array
            (if a ValueError is raised, the buffer may be partly overwritten).
        num_threads: worker threads (None: ``os.cpu_count()``).
        backend: ``"auto"``, ``"numba"`` (float32 only) or ``"numpy"``.

    Returns:
        ``(loss, grad)``: a scalar of the logits' dtype (an array shaped like
        `logits` for ``"none"``) and the gradient of the reduced loss.  A loss
        that overflows the logits' dtype (huge weights) is a ValueError.

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
    label_smoothing = check_label_smoothing(label_smoothing)
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
                joint = np.broadcast_shapes(value.shape, logits.shape)
            except ValueError:
                joint = None
            if joint != logits.shape:
                raise ValueError(f"`{name}` of shape {value.shape} does not broadcast to the logits' shape "
                                 f"{logits.shape} without enlarging it.")
    name = _select_backend(backend, dtype=logits.dtype, what="bce")
    scale = 1.0 / logits.size if reduction == "mean" and logits.size else 1.0
    grad = _output(logits, inplace)
    losses = _numpy.sigmoid_bce(
        logits, labels, grad, pos_weight=pos_weight, sample_weight=sample_weight,
        label_smoothing=label_smoothing, scale=scale, num_threads=threads, keep_losses=reduction == "none",
        numba_bce=_numba_module().sigmoid_bce_flat if name == "numba" else None, force=backend == "numba",
    )
    if reduction == "none":
        return losses.reshape(logits.shape), grad
    loss = in_dtype(losses * scale, logits.dtype)
    if np.isinf(loss) and np.isfinite(losses):  # as each element's loss: the documented ValueError
        raise ValueError(f"the {reduction} of the losses, {losses * scale!r}, overflows {logits.dtype}; "
                         "compute in float64 or lower the weights.")
    return loss, grad
