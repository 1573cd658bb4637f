"""NumPy backend: row blocks that stay in the L2 cache, spread over a thread pool.

Each block of rows is read from memory once (for the row maximum); every later
step (subtract, exp, row sums, scaling) runs on the block already written to
the gradient buffer while it is still cache resident, with ``out=`` everywhere,
so the memory traffic is close to "read the logits once, write the gradient
once".  NumPy releases the GIL inside its loops, so two threads run two blocks
at the same time.

Nothing here validates its input: the public functions in
:mod:`crossent.kernels` do that and pass a :class:`SoftmaxOptions`.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

# Bytes of logits per block.  Measured on a 2 MiB-L2 core: the logits block and
# the gradient block (1 MiB together) stay in L2 between the ufunc passes,
# while the per-block Python overhead (~20 ufunc calls) stays small.
BLOCK_BYTES = 1 << 19
# Below this many bytes a single thread is faster than waking the pool.
SINGLE_THREAD_BYTES = 1 << 20

# One pool per process, whatever `num_threads` callers ask for: its size is
# the number of usable cores (threads start only as work needs them), and a
# request for more threads queues its runs on those.  A pool inherited across
# os.fork() has no threads in the child, so the child forgets it (see _reset_pool).
_shared_pool: ThreadPoolExecutor | None = None
_pools_lock = threading.Lock()


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _pool() -> ThreadPoolExecutor:
    global _shared_pool
    with _pools_lock:
        if _shared_pool is None:
            _shared_pool = ThreadPoolExecutor(default_threads(), thread_name_prefix="crossent")
        return _shared_pool


def _reset_pool() -> None:
    """In a forked child: drop the parent's pool (its threads do not exist here) and its lock."""
    global _shared_pool, _pools_lock
    _shared_pool, _pools_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool)


def run_in_blocks(work, n_items: int, item_bytes: int, num_threads: int, align: int = 1,
                  block_bytes: int | None = None) -> None:
    """Call ``work(lo, hi)`` on consecutive blocks covering ``range(n_items)``.

    The items are split into one contiguous run per thread; each thread walks
    its run block by block.  Block bounds are multiples of `align`.  The first
    exception raised by a worker is re-raised here (after every worker ends).
    """
    if n_items == 0:
        return
    per_block = max(align, (block_bytes or BLOCK_BYTES) // max(item_bytes, 1) // align * align)
    share = -(-n_items // max(num_threads, 1))  # every thread gets at least one block
    per_block = min(per_block, -(-share // align) * align)
    n_blocks = -(-n_items // per_block)
    threads = min(num_threads, n_blocks)
    if threads <= 1 or n_items * item_bytes < SINGLE_THREAD_BYTES:
        for lo in range(0, n_items, per_block):
            work(lo, min(lo + per_block, n_items))
        return

    def run(first_block: int, last_block: int) -> None:
        for b in range(first_block, last_block):
            work(b * per_block, min((b + 1) * per_block, n_items))

    bounds = [n_blocks * t // threads for t in range(threads + 1)]
    pool = _pool()
    futures = [pool.submit(run, bounds[t], bounds[t + 1]) for t in range(threads)]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _row_sums(block: np.ndarray) -> np.ndarray:
    # einsum's SIMD reduction is ~3x faster than ndarray.sum(axis=1) here;
    # its float32 rounding error is ~2e-6 relative at V = 256000.
    return np.einsum("ij->i", block)


def _row_dots(block: np.ndarray, vector: np.ndarray) -> np.ndarray:
    return np.einsum("ij,j->i", block, vector)


def check_row_maxima(row_max: np.ndarray, block: np.ndarray, first_row: int) -> None:
    """Raise on NaN or +inf, found for free in the row maxima (NaN propagates through max)."""
    if np.isfinite(row_max).all() or not (np.isnan(row_max) | (row_max == np.inf)).any():
        return
    nan_rows = np.flatnonzero(np.isnan(row_max))
    if nan_rows.size:
        r = int(nan_rows[0])
        col = int(np.flatnonzero(np.isnan(block[r]))[0])
        raise ValueError(f"`logits` contains NaN (first at index {(first_row + r, col)}).")
    r = int(np.flatnonzero(row_max == np.inf)[0])
    col = int(np.flatnonzero(block[r] == np.inf)[0])
    raise ValueError(f"`logits` must not be +inf (found at index {(first_row + r, col)}); use -inf to mask a class out.")


def raise_dead_row(row: int):
    """A counted row whose every logit is -inf has no distribution (same rule as the reference)."""
    raise ValueError(f"`logits` are -inf for every class in row {row}: no class is possible.")


def exp_shifted_rows(xb: np.ndarray, gb: np.ndarray, first_row: int):
    """Write ``exp(x - max_row)`` into `gb`; return the row maxima and row sums (float64).

    Shifting by the row maximum is what makes the softmax stable: every
    exponent is <= 0, so nothing overflows, and the row sum is >= 1 (the
    maximum contributes exp(0) = 1), so its log is safe.  A row whose logits
    are all -inf gets maximum -inf and sum 0 (allowed only where the row is ignored).
    """
    row_max = np.max(xb, axis=1)
    check_row_maxima(row_max, xb, first_row)
    all_masked = row_max == -np.inf
    shift = row_max
    if all_masked.any():
        shift = np.where(all_masked, 0.0, row_max).astype(xb.dtype)
    np.subtract(xb, shift[:, None], out=gb)
    np.exp(gb, out=gb)
    return row_max.astype(np.float64), _row_sums(gb).astype(np.float64)


@dataclass
class SoftmaxOptions:
    """Validated options; the per-row arrays are indexed by global row."""

    class_weight: np.ndarray | None  # (V,) in the logits' dtype
    weight_total: float  # sum of class weights (V without weights)
    smoothing: float
    z_loss: float
    scale: float  # 1 for sum/none, 1/denominator for mean
    labels: np.ndarray | None = None  # int64 (N,), ignored rows set to 0
    kept: np.ndarray | None = None  # bool (N,), False where ignored
    targets: np.ndarray | None = None  # (N, V) probability targets


def _lse(row_max, row_sum, all_masked):
    if all_masked.any():
        safe = np.where(all_masked, 1.0, row_sum)
        return np.where(all_masked, -np.inf, row_max + np.log(safe)), safe
    return row_max + np.log(row_sum), row_sum


def softmax_int_block(x, grad, lo, hi, opt: SoftmaxOptions, row_loss):
    """Loss and gradient of rows [lo, hi) with integer targets (see the package docs for the formula)."""
    xb, gb = x[lo:hi], grad[lo:hi]
    n, num_classes = xb.shape
    eps, w = opt.smoothing, opt.class_weight
    labels, kept = opt.labels[lo:hi], opt.kept[lo:hi]
    flat = np.arange(n) * num_classes + labels
    # Everything that needs the logits themselves is read before `gb` (which
    # may be the logits buffer, in place mode) is overwritten.
    target_logit = xb.reshape(-1)[flat].astype(np.float64)
    if eps:
        with np.errstate(invalid="ignore"):
            weighted_sum = (_row_dots(xb, w) if w is not None else _row_sums(xb)).astype(np.float64)
        if w is not None and np.isnan(weighted_sum).any():  # 0 * -inf: a masked class of weight 0
            with np.errstate(invalid="ignore"):
                weighted_sum = np.where(w > 0, xb * w, 0).sum(axis=1, dtype=np.float64)
    row_max, row_sum = exp_shifted_rows(xb, gb, lo)
    all_masked = row_max == -np.inf
    if (all_masked & kept).any():
        raise_dead_row(lo + int(np.argmax(all_masked & kept)))
    lse, row_sum = _lse(row_max, row_sum, all_masked)

    w_target = (w[labels].astype(np.float64) if w is not None else np.ones(n)) * kept
    with np.errstate(invalid="ignore"):  # -inf - -inf on all-masked rows, fixed below
        nll = lse - target_logit
    loss = np.where(kept, (1 - eps) * w_target * nll, 0.0)
    p_coef = (1 - eps) * w_target  # multiplies p_j in the gradient
    if eps:
        # (eps/V) sum_c w_c (lse - x_c): the smoothing term, weighted per class like PyTorch.
        with np.errstate(invalid="ignore"):  # -inf - -inf on all-masked rows, fixed below
            loss += np.where(kept, eps / num_classes * (opt.weight_total * lse - weighted_sum), 0.0)
        p_coef = p_coef + kept * (eps / num_classes * opt.weight_total)
    if opt.z_loss:
        loss += np.where(kept, opt.z_loss * lse**2, 0.0)
        p_coef = p_coef + np.where(kept, 2 * opt.z_loss * lse, 0.0)
    if all_masked.any():  # ignored rows with no finite logit: loss 0, gradient 0
        loss = np.where(all_masked, 0.0, loss)
        p_coef = np.where(all_masked, 0.0, p_coef)
    row_loss[lo:hi] = loss

    # d loss_i / d x_j = p_coef_i * p_j - (1 - eps) w_y delta_jy - (eps/V) w_j
    np.multiply(gb, (opt.scale * p_coef / row_sum).astype(gb.dtype)[:, None], out=gb)
    if eps:
        smooth = (opt.scale * eps / num_classes * kept).astype(gb.dtype)
        if w is not None:
            gb -= smooth[:, None] * w
        else:
            gb -= smooth[:, None]
    gb.reshape(-1)[flat] -= (opt.scale * (1 - eps) * w_target).astype(gb.dtype)


def softmax_prob_block(x, grad, lo, hi, opt: SoftmaxOptions, row_loss):
    """Loss and gradient of rows [lo, hi) with probability targets q (smoothed: (1-eps) q + eps/V)."""
    xb, gb, qb = x[lo:hi], grad[lo:hi], opt.targets[lo:hi]
    num_classes = xb.shape[1]
    eps, w = opt.smoothing, opt.class_weight
    wq = qb * w if w is not None else qb.copy()  # block-sized scratch, reused for the gradient
    with np.errstate(invalid="ignore"):
        wqx = np.einsum("ij,ij->i", wq, xb).astype(np.float64)
        if eps:
            wx = (_row_dots(xb, w) if w is not None else _row_sums(xb)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        if np.isnan(wqx).any():  # 0 * -inf where a masked class has no target mass: counts as 0
            wqx = np.where(wq > 0, wq * xb, 0).sum(axis=1, dtype=np.float64)
        if eps and np.isnan(wx).any():
            wx = np.where(w > 0, xb * w, 0).sum(axis=1, dtype=np.float64)
    wq_total = _row_sums(wq).astype(np.float64)
    row_max, row_sum = exp_shifted_rows(xb, gb, lo)
    all_masked = row_max == -np.inf
    if all_masked.any():  # probability targets have no ignored rows
        raise_dead_row(lo + int(np.argmax(all_masked)))
    lse, row_sum = _lse(row_max, row_sum, all_masked)

    # loss_i = sum_c w_c q'_c (lse_i - x_c) = A_i lse_i - B_i
    mass = (1 - eps) * wq_total + (eps / num_classes * opt.weight_total if eps else 0.0)
    dot = (1 - eps) * wqx + (eps / num_classes * wx if eps else 0.0)
    with np.errstate(invalid="ignore"):
        loss = mass * lse - dot
    p_coef = mass
    if opt.z_loss:
        loss = loss + opt.z_loss * lse**2
        p_coef = p_coef + 2 * opt.z_loss * lse
    row_loss[lo:hi] = loss

    # d loss_i / d x_j = p_coef_i p_j - w_j q'_j
    np.multiply(gb, (opt.scale * p_coef / row_sum).astype(gb.dtype)[:, None], out=gb)
    np.multiply(wq, gb.dtype.type(opt.scale * (1 - eps)), out=wq)
    gb -= wq
    if eps:
        gb -= gb.dtype.type(opt.scale * eps / num_classes) * (w if w is not None else 1)


def softmax_cross_entropy(x, grad, opt: SoftmaxOptions, num_threads: int, block=None) -> np.ndarray:
    """Fill `grad` and return the per-row losses (float64, before the reduction scale).

    `block` is the per-block worker; by default this module's own.
    """
    row_loss = np.empty(x.shape[0], dtype=np.float64)
    if block is None:
        block = softmax_prob_block if opt.targets is not None else softmax_int_block
    block_bytes = getattr(block, "block_bytes", None)
    run_in_blocks(lambda lo, hi: block(x, grad, lo, hi, opt, row_loss), x.shape[0], x.strides[0], num_threads,
                  block_bytes=block_bytes)
    return row_loss


def _flat_operand(w, shape, dtype):
    """Describe how a broadcast operand repeats in the flattened array.

    Returns ``(kind, array, period)``: ``("scalar", value, 1)``, ``("full",
    flat, 1)``, or ``("periodic", tile, period)`` when `w` only varies along
    trailing axes (PyTorch's usual ``pos_weight`` of shape ``(C,)``).
    """
    w = np.asarray(w, dtype=dtype)
    if w.size == 1:
        return "scalar", dtype.type(w.reshape(-1)[0]), 1
    padded = (1,) * (len(shape) - w.ndim) + w.shape
    if padded == tuple(shape):
        return "full", np.ascontiguousarray(w).reshape(-1), 1
    k = 0
    while k < len(shape) and padded[k] == 1:
        k += 1
    if padded[k:] == tuple(shape[k:]):
        period = math.prod(shape[k:])
        return "periodic", np.ascontiguousarray(w).reshape(-1), period
    # An uncommon broadcast (e.g. weights of shape (N, 1)): materialise it.
    return "full", np.ascontiguousarray(np.broadcast_to(w, shape)).reshape(-1), 1


def _operand_block(op, lo, hi):
    kind, arr, period = op
    if kind == "scalar":
        return arr
    if kind == "full":
        return arr[lo:hi]
    return np.tile(arr, (hi - lo) // period)  # lo, hi are multiples of the period


_scratch = threading.local()


def _scratch_block(n: int) -> np.ndarray:
    """A per-thread float32 buffer of at least `n` elements, reused across calls."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < n:
        buf = _scratch.buf = np.empty(n, np.float32)
    return buf[:n]


def _run_numba_bce(kernel, xf, yf, gf, pw, sw, smoothing, scale, num_threads, shape, inplace, losses):
    """Blocks of the Numba BCE; returns the total loss (float64).  `losses` (flat) is filled when given."""

    def operand(op):
        if op is None:
            return np.ones(1, np.float32), False
        kind, arr, _ = op
        return (np.full(1, arr, np.float32), False) if kind == "scalar" else (arr, True)

    (pos, pos_full), (sample, sample_full) = operand(pw), operand(sw)
    per_block = 1 << 20  # elements: few dispatches, and a 4 MiB loss scratch per thread
    block_sums = {}

    def work(lo, hi):
        lb = losses[lo:hi] if losses is not None else _scratch_block(hi - lo)
        total = kernel(xf[lo:hi], yf[lo:hi], gf[lo:hi], lb, pos[lo:hi] if pos_full else pos, pos_full,
                       sample[lo:hi] if sample_full else sample, sample_full, smoothing, scale, inplace)
        block_sums[lo] = total
        if not math.isfinite(total):
            # A non-finite logit gives a non-finite loss (in place its logit is already
            # overwritten: a NaN leaves a NaN gradient, an infinity a finite one).
            bad = np.flatnonzero(~np.isfinite(lb))
            if bad.size:
                k = lo + int(bad[0])
                _raise_bad_bce_logit(xf, k, shape, nan=bool(np.isnan(xf[k])))

    run_in_blocks(work, xf.size, 4, num_threads, align=per_block, block_bytes=4 * per_block)
    return math.fsum(block_sums.values())


def _raise_bad_bce_logit(xf, flat_index, shape, nan=None):
    idx = tuple(int(i) for i in np.unravel_index(flat_index, shape))
    what = "NaN" if (np.isnan(xf[flat_index]) if nan is None else nan) else "an infinity"
    raise ValueError(f"`logits` contains {what} at index {idx}; logits must be finite.")


def sigmoid_bce(x, y, grad, *, pos_weight, sample_weight, smoothing, scale, num_threads, keep_losses, numba_bce=None):
    """Elementwise BCE from logits on flattened arrays; fills `grad`.

    Returns the flat elementwise losses if `keep_losses`, else their sum (float64).

    loss = w [ (1 - y) x + (1 + (p - 1) y) softplus(-x) ],   d loss/dx = w [ (1 + (p - 1) y) sigmoid(x) - p y ]
    with softplus(-x) = log1p(exp(-|x|)) + max(-x, 0): exp never sees a positive
    argument, so it cannot overflow for any finite x.
    """
    shape, dtype = x.shape, x.dtype
    xf, yf, gf = x.reshape(-1), y.reshape(-1), grad.reshape(-1)
    n = xf.size
    pw = None if pos_weight is None else _flat_operand(pos_weight, shape, dtype)
    sw = None if sample_weight is None else _flat_operand(sample_weight, shape, dtype)
    periods = [op[2] for op in (pw, sw) if op is not None]
    align = math.lcm(*periods) if periods else 1
    if align * dtype.itemsize > 64 * BLOCK_BYTES:  # a huge period: materialise instead of tiling
        pw = pw if pw is None or pw[0] != "periodic" else ("full", np.broadcast_to(pos_weight, shape).astype(dtype).reshape(-1), 1)
        sw = sw if sw is None or sw[0] != "periodic" else ("full", np.broadcast_to(sample_weight, shape).astype(dtype).reshape(-1), 1)
        align = 1
    if numba_bce is not None and dtype == np.float32 and align == 1:
        yf = yf if yf.dtype == np.float32 else yf.astype(np.float32)
        losses = np.empty(n, dtype=dtype) if keep_losses else None
        total = _run_numba_bce(numba_bce, xf, yf, gf, pw, sw, smoothing, scale, num_threads, shape, grad is x, losses)
        return losses if keep_losses else total
    losses = np.empty(n, dtype=dtype)
    one = dtype.type(1)

    def work(lo, hi):
        # Infinite logits make NaN here on purpose: the check below reports them.
        with np.errstate(invalid="ignore"):
            block(lo, hi)

    def block(lo, hi):
        xb, gb, lb = xf[lo:hi], gf[lo:hi], losses[lo:hi]
        yb = yf[lo:hi].astype(dtype, copy=False)
        if smoothing:
            yb = yb * dtype.type(1 - smoothing) + dtype.type(smoothing / 2)
        e = np.abs(xb)
        np.negative(e, out=e)
        np.exp(e, out=e)  # exp(-|x|) in (0, 1]
        softplus_neg = np.log1p(e)
        softplus_neg += np.maximum(-xb, 0)  # softplus(-x)
        # coef = 1 + (p - 1) y; with p = 1 it is 1
        if pw is not None:
            p = _operand_block(pw, lo, hi)
            py = p * yb
            coef = py + (one - yb)
        else:
            py, coef = yb, one
        np.multiply(coef, softplus_neg, out=lb)
        lb += (one - yb) * xb
        # A NaN or infinite logit makes its loss NaN: found here, before `gb`
        # (maybe the logits buffer) is overwritten.
        if not np.isfinite(lb.sum(dtype=np.float64)):
            bad = np.flatnonzero(~np.isfinite(xb))
            if bad.size:
                _raise_bad_bce_logit(xf, lo + int(bad[0]), shape)
        # sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) for x < 0
        np.add(e, one, out=softplus_neg)
        np.divide(np.where(xb >= 0, one, e), softplus_neg, out=gb)
        gb *= coef
        gb -= py
        if sw is not None:
            s = _operand_block(sw, lo, hi)
            lb *= s
            gb *= s
        if scale != 1:
            gb *= dtype.type(scale)

    run_in_blocks(work, n, dtype.itemsize * 8, num_threads, align=align)
    return losses if keep_losses else float(losses.sum(dtype=np.float64))
