r"""The one-pass metric kernel: per-row statistics of (N, V) logits, read once, no N x V temporary.

For a row of logits :math:`x` with label :math:`y`, maximum :math:`M` and
:math:`S = \sum_c e^{x_c - M}` (the shifted frame of :mod:`crossent._rules`):

.. math::

    \mathrm{nll} = (M - x_y) + \log S, \quad
    H = \log S + \frac{1}{S}\sum_c e^{x_c - M}(M - x_c), \quad
    \mathrm{conf} = \frac{1}{S}, \quad
    \mathrm{brier} = \sum_c (p_c - [c = y])^2,

``rank`` = how many classes score strictly higher than :math:`y` (top-k holds
when rank < k) and ``correct`` = :math:`y` is the first maximum (rank 0 and no
equal logit before it).  Every statistic is a sum of non-negative terms (see
:mod:`crossent.metrics._kernel_numba`), so nothing cancels: a confident row's
NLL of 1e-12 keeps its digits.  A row's values depend on that row alone, never
on the block or thread that computed it, which the exact accumulator needs.

Backends: Numba (float32 and float64; each row read from memory once, in
chunks that stay in L1, in one fused loop per chunk as the loss kernel's; a
confident row, S < 2, is walked a second time from cache for its exact
S - 1) where it is installed, else NumPy on row blocks that stay in L2.  Both run on the thread pool of
:func:`crossent.kernels._pool.run_in_blocks`.  NaN and ``+inf`` logits
are a `ValueError` naming the row and column, as is a counted row that is
``-inf`` everywhere; read-only arrays (``np.memmap``) are read, never written.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels._pool import BLOCK_BYTES, run_in_blocks
from ..kernels.api import BACKENDS, _check_threads, _numba_module
from ..kernels.numpy_blocked import check_row_maxima, raise_dead_row


class RowStats(NamedTuple):
    """Per-row statistics (float64, except `rank` int64 and `correct` bool); ignored rows hold zeros."""

    nll: np.ndarray
    entropy: np.ndarray
    confidence: np.ndarray
    brier: np.ndarray
    rank: np.ndarray
    correct: np.ndarray

    @classmethod
    def empty(cls, n: int) -> RowStats:
        f = [np.zeros(n, dtype=np.float64) for _ in range(4)]
        return cls(*f, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool))


def _numba_kernel():
    """The compiled row kernel, or None where Numba is not installed."""
    if _numba_module() is None:
        return None
    from . import _kernel_numba

    return _kernel_numba


def select_backend(backend) -> str:
    """``"numba"`` or ``"numpy"`` for `backend` in ``("auto", "numba", "numpy")``."""
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
    if backend == "numpy":
        return "numpy"
    if _numba_kernel() is None:
        if backend == "numba":
            raise ValueError("`backend`='numba' needs the numba package: pip install 'crossent[fast]'.")
        return "numpy"
    return "numba"


def logit_row_stats(logits, labels, kept=None, *, num_threads=None, backend="auto") -> RowStats:
    r"""Per-row NLL, entropy, confidence, Brier score, rank of the label and argmax hit, in one pass.

    Args:
        logits: (N, V) C-contiguous float32 or float64 array (read-only is fine).
        labels: (N,) integer labels in ``[0, V)`` on the kept rows (anything in
            range elsewhere).
        kept: optional (N,) bool; a row that is not kept may be ``-inf``
            everywhere (its statistics are 0).
        num_threads: worker threads (None: ``os.cpu_count()``).
        backend: ``"auto"``, ``"numba"`` or ``"numpy"``.

    Returns:
        A :class:`RowStats` of (N,) arrays.

    Examples:
        Two equal logits: the label costs :math:`\log 2`, the entropy is
        :math:`\log 2`, the first class is the prediction:

        >>> s = logit_row_stats(np.zeros((1, 2)), np.array([1]), backend="numpy")
        >>> float(s.nll[0]) == float(np.log(2)), float(s.brier[0]), int(s.rank[0]), bool(s.correct[0])
        (True, 0.5, 0, False)
    """
    if not (isinstance(logits, np.ndarray) and logits.ndim == 2 and logits.dtype in (np.float32, np.float64)
            and logits.flags.c_contiguous):
        raise TypeError("`logits` must be a 2-D C-contiguous float32/float64 NumPy array, got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)} of shape {getattr(logits, 'shape', '?')}.")
    n, num_classes = logits.shape
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},), got {labels.shape}.")
    kept = np.ones(n, dtype=bool) if kept is None else np.ascontiguousarray(kept, dtype=bool)
    if n and num_classes == 0:
        raise ValueError(f"`logits` must have at least one class, got shape {logits.shape}.")
    threads = _check_threads(num_threads)
    out = RowStats.empty(n)
    if select_backend(backend) == "numba":
        kernel = _numba_kernel()

        def work(lo, hi):
            bad = kernel.row_stats_rows(logits, labels, kept, lo, hi, *out)
            if bad >= 0:
                _raise_bad_row(logits, bad)

        block_bytes = kernel.JIT_BLOCK_BYTES
    else:

        def work(lo, hi):
            numpy_rows(logits, labels, kept, lo, hi, out)

        block_bytes = BLOCK_BYTES
    run_in_blocks(work, n, logits.strides[0] or 1, threads, block_bytes=block_bytes)
    return out


def _raise_bad_row(x: np.ndarray, row: int):
    """Name the NaN or +inf in `row`, or else say that the counted row is -inf everywhere."""
    check_row_maxima(np.max(x[row : row + 1], axis=1), x[row : row + 1], row)
    raise_dead_row(row)


def numpy_rows(x, labels, kept, lo, hi, out: RowStats) -> None:
    """The NumPy backend on rows [lo, hi): the same sums as the Numba kernel, with the exact row maximum."""
    xb = x[lo:hi]
    n, num_classes = xb.shape
    y = labels[lo:hi]
    top = np.max(xb, axis=1)
    check_row_maxima(top, xb, lo)
    all_masked = top == -np.inf
    if (all_masked & kept[lo:hi]).any():
        raise_dead_row(lo + int(np.argmax(all_masked & kept[lo:hi])))
    shift = np.where(all_masked, 0, top).astype(np.float64)
    # In float64: x - M is exact there for float32 logits (in float32 its rounding would
    # cost up to 88 * 2**-24 relative in exp); the shifted frame keeps every exponent <= 0.
    z = xb.astype(np.float64) - shift[:, None]
    e = np.exp(z)
    tie = z == 0  # exact: two different floats never subtract to 0
    ties = np.count_nonzero(tie, axis=1).astype(np.float64)
    e_below = np.where(tie, 0, e)
    below = e_below.sum(axis=1, dtype=np.float64)
    below_sq = np.einsum("ij,ij->i", e_below, e_below)
    with np.errstate(invalid="ignore"):
        spread = np.where(e > 0, e * -z, 0).sum(axis=1, dtype=np.float64)  # a masked class adds 0, not 0 * inf
    label_logit = xb[np.arange(n), y]
    above = np.count_nonzero(xb > label_logit[:, None], axis=1)
    before = np.count_nonzero((xb == label_logit[:, None]) & (np.arange(num_classes) < y[:, None]), axis=1)
    live = ~all_masked
    stats = finish_rows(shift[live], label_logit[live].astype(np.float64), ties[live], below[live],
                        below_sq[live], spread[live])
    for target, value in zip(out[:4], stats):
        target[lo:hi][live] = value
    out.rank[lo:hi] = np.where(live, above, 0)
    out.correct[lo:hi] = live & (above == 0) & (before == 0)


def finish_rows(top, label_logit, ties, below, below_sq, spread):
    """Vectorised :func:`crossent.metrics._kernel_numba.finish_row` (same formulas, same reasons)."""
    excess = (ties - 1.0) + below
    total = ties + below
    log_total = np.log1p(excess)
    at_top = label_logit == top
    with np.errstate(over="ignore"):
        gap = np.where(at_top, 0.0, top - label_logit)
    e_y = np.exp(-gap)
    nll = gap + log_total
    other = np.where(at_top, excess, total - e_y)
    other_sq = np.where(at_top, (ties - 1.0) + below_sq, (ties + below_sq) - e_y * e_y)
    inv = 1.0 / total
    brier = (other * inv) ** 2 + other_sq * inv * inv
    return nll, log_total + spread * inv, inv, brier
