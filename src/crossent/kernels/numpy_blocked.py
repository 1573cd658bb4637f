"""NumPy backend: row blocks that stay in the L2 cache, spread over a thread pool.

Each block of rows is read from memory once (for the row maximum); every later
step (subtract, exp, row sums, scaling) runs on the block already written to
the gradient buffer while it is still cache resident, with ``out=`` everywhere,
so the memory traffic is close to "read the logits once, write the gradient
once".  NumPy releases the GIL inside its loops, so two threads run two blocks
at the same time (on the pool of :mod:`crossent.kernels._pool`).

Nothing here validates its input: the public functions in
:mod:`crossent.kernels` do that and pass a :class:`SoftmaxOptions`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from .._rules import times
from ._pool import BLOCK_BYTES, run_in_blocks


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


def row_shifts(xb: np.ndarray, first_row: int):
    """The row maxima m (float64; 0 for a row whose logits are all -inf) and the all-masked rows.

    Subtracting m is the shifted frame: every exponent is <= 0, so ``exp``
    never overflows and the row sum is >= 1 (the maximum contributes
    exp(0) = 1), so its log is safe; and every difference ``lse - x`` is
    formed as ``log S - (x - m)``, which keeps its digits under a large common
    offset.  An all-masked row (allowed only where it is ignored) has
    exponentials 0.
    """
    row_max = np.max(xb, axis=1)
    check_row_maxima(row_max, xb, first_row)
    all_masked = row_max == -np.inf
    shift = np.where(all_masked, 0.0, row_max) if all_masked.any() else row_max
    return shift.astype(np.float64), all_masked


def exp_rows(gb: np.ndarray, all_masked: np.ndarray, shift: np.ndarray | None = None, z_rows=None):
    """Exponentiate the shifted block in place; return the row sums and their logs (float64).

    An all-masked row has sum 0; its log is taken as 0 (the row costs nothing).
    A confident row (S < 2) takes ``log S = log1p(S - 1)`` with ``S - 1`` summed
    in float64 without the maxima's ``exp(0) = 1``, so a loss of 1e-12 keeps its
    digits where ``log`` of the rounded sum would not.  An entry whose exponential
    rounds to exactly 1 counts as a maximum: it is within an ulp of 1, and
    only matters where ``S - 1`` is at least about 1.

    With ``z_loss``: a row of `z_rows` (where the z-loss term outweighs the
    row's cross-entropy mass, see :func:`z_loss_rows`) whose ``lse = m + log S``
    (`shift` holds m) lies within 1 of 0 takes the same float64 sum: there
    ``lse`` cancels, and the float32 sum's error (~1e-7 of S) would be 2e-6 of
    ``z_loss * lse**2`` at ``lse = 0.1``.
    """
    np.exp(gb, out=gb)
    row_sum = _row_sums(gb).astype(np.float64)
    if all_masked.any():
        row_sum = np.where(all_masked, 1.0, row_sum)
    log_sum = np.log(row_sum)
    refine = row_sum < 2.0
    if z_rows is not None:
        refine |= z_rows & (np.abs(shift + log_sum) < 1.0)
    confident = np.flatnonzero(refine & ~all_masked)
    if confident.size:
        rows = gb[confident]
        ones = rows == 1
        rest = rows.sum(axis=1, where=~ones, dtype=np.float64) + (ones.sum(axis=1) - 1)
        log_sum[confident] = np.log1p(rest)
    return row_sum, log_sum


def shifted_dots(xb: np.ndarray, shift: np.ndarray, weights, coef: float) -> np.ndarray:
    """``coef * sum_c weights_c (x_c - m)`` per row, float64, without overflow.

    `weights` is None (plain row sums), a (V,) vector or a block-shaped array.
    ``x - m`` can exceed the dtype's range (x = -0.9 max, m = 0.9 max): it is
    formed in float64 for float32 logits, and as ``2 (x/2 - m/2)`` with `coef`
    applied before the doubling for float64 ones, so the result overflows only
    where the true value does.  A zero weight against a masked (-inf) logit
    counts 0, not NaN.  Read from the logits before they are overwritten.
    """
    half = xb.dtype == np.float64
    d = xb * 0.5 if half else xb.astype(np.float64)
    d -= (shift * 0.5 if half else shift)[:, None]
    # coef multiplies before the sum, so the sum stays in range wherever the result does
    scaled = coef * (np.ones(1) if weights is None else weights.astype(np.float64))
    with np.errstate(invalid="ignore"):
        if scaled.ndim == 1:
            dots = d @ np.broadcast_to(scaled, d.shape[1:])
        else:
            dots = np.einsum("ij,ij->i", d, scaled)
        if np.isnan(dots).any():  # 0 * -inf: a masked class of no weight counts 0
            dots = np.where(scaled > 0, d * scaled, 0).sum(axis=1)
    return 2.0 * dots if half else dots


@dataclass
class SoftmaxOptions:
    """Checked options of one call; the per-row arrays are indexed by global row."""

    class_weight: np.ndarray | None  # (V,) in the logits' dtype
    weight_total: float  # sum of class weights (V without weights)
    label_smoothing: float
    z_loss: float
    scale: float  # 1 for sum/none, 1/denominator for mean (0 when nothing counts)
    labels: np.ndarray | None = None  # int64 (N,), ignored rows set to 0
    kept: np.ndarray | None = None  # bool (N,), False where ignored
    targets: np.ndarray | None = None  # (N, V) probability targets


def z_loss_rows(ce_mass, kept, z_loss: float):
    """Rows whose z-loss term may outweigh their cross-entropy: mass (the coefficient of log S) below z_loss.

    Elsewhere the row's loss is at least ~0.7 times its mass (S >= 2) and the
    error of log S reaches ``z_loss * lse**2`` at most in the same proportion, so
    the float32 sum suffices; here ``lse`` near 0 needs the float64 one.
    """
    return (kept & (ce_mass < z_loss)) if z_loss else None


def softmax_int_block(x, grad, lo, hi, opt: SoftmaxOptions, row_loss):
    """Loss and gradient of rows [lo, hi) with integer targets (see the package docs for the formula)."""
    xb, gb = x[lo:hi], grad[lo:hi]
    n, num_classes = xb.shape
    eps, w = opt.label_smoothing, opt.class_weight  # eps: label_smoothing in the formulas
    labels, kept = opt.labels[lo:hi], opt.kept[lo:hi]
    flat = np.arange(n) * num_classes + labels
    # Read before `gb` (which may be the logits buffer, in place mode) is overwritten.
    target_logit = xb.reshape(-1)[flat].astype(np.float64)
    shift, all_masked = row_shifts(xb, lo)
    if (all_masked & kept).any():
        raise_dead_row(lo + int(np.argmax(all_masked & kept)))
    if eps:
        smooth_dot = shifted_dots(xb, shift, w, eps / num_classes)  # (eps/V) sum_c w_c (x_c - m)
    w_target = (w[labels].astype(np.float64) if w is not None else np.ones(n)) * kept
    target_coef = (1 - eps) * w_target  # 0 on ignored rows
    z_rows = z_loss_rows(target_coef + eps / num_classes * opt.weight_total, kept, opt.z_loss)
    with np.errstate(over="ignore"):  # x - m below the float range is -inf: exp gives its 0 exactly
        np.subtract(xb, shift.astype(xb.dtype)[:, None], out=gb)
    row_sum, log_sum = exp_rows(gb, all_masked, shift, z_rows)

    # -log p_y = log S - (x_y - m): +inf for a masked target, which a zero coefficient turns into 0.
    loss = times(target_coef, log_sum - (target_logit - shift))
    p_coef = target_coef  # multiplies p_j in the gradient
    if eps:
        # (eps/V) sum_c w_c (log S - (x_c - m)): the smoothing term, weighted per class like PyTorch.
        loss += np.where(kept, eps / num_classes * opt.weight_total * log_sum - smooth_dot, 0.0)
        p_coef = p_coef + kept * (eps / num_classes * opt.weight_total)
    if opt.z_loss:
        lse = shift + log_sum
        loss += np.where(kept, opt.z_loss * lse**2, 0.0)
        p_coef = p_coef + np.where(kept, 2 * opt.z_loss * lse, 0.0)
    row_loss[lo:hi] = loss

    # d loss_i / d x_j = p_coef_i * p_j - (1 - eps) w_y delta_jy - (eps/V) w_j
    np.multiply(gb, (opt.scale * p_coef / row_sum).astype(gb.dtype)[:, None], out=gb)
    if eps:
        smooth = (opt.scale * eps / num_classes * kept).astype(gb.dtype)
        if w is not None:
            gb -= smooth[:, None] * w
        else:
            gb -= smooth[:, None]
    gb.reshape(-1)[flat] -= (opt.scale * target_coef).astype(gb.dtype)


def softmax_prob_block(x, grad, lo, hi, opt: SoftmaxOptions, row_loss):
    """Loss and gradient of rows [lo, hi) with probability targets q (smoothed: (1-eps) q + eps/V)."""
    xb, gb, qb = x[lo:hi], grad[lo:hi], opt.targets[lo:hi]
    num_classes = xb.shape[1]
    eps, w = opt.label_smoothing, opt.class_weight  # eps: label_smoothing in the formulas
    wq = qb * w if w is not None else qb.copy()  # block-sized scratch, reused for the gradient
    wq_total = _row_sums(wq).astype(np.float64)
    shift, all_masked = row_shifts(xb, lo)
    if all_masked.any():  # probability targets have no ignored rows
        raise_dead_row(lo + int(np.argmax(all_masked)))
    # sum_c w_c q'_c (x_c - m), read before `gb` (maybe the logits) is overwritten; eps = 1 counts 0
    dot = shifted_dots(xb, shift, wq, 1 - eps) if eps < 1 else 0.0
    if eps:
        dot = dot + shifted_dots(xb, shift, w, eps / num_classes)
    # loss_i = sum_c w_c q'_c (log S_i - (x_c - m_i)) = A_i log S_i - B_i
    mass = (1 - eps) * wq_total + (eps / num_classes * opt.weight_total if eps else 0.0)
    with np.errstate(over="ignore"):  # x - m below the float range is -inf: exp gives its 0 exactly
        np.subtract(xb, shift.astype(xb.dtype)[:, None], out=gb)
    row_sum, log_sum = exp_rows(gb, all_masked, shift, z_loss_rows(mass, True, opt.z_loss))

    loss = mass * log_sum - dot
    p_coef = mass
    if opt.z_loss:
        lse = shift + log_sum
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


def _run_numba_bce(kernel, xf, yf, gf, pw, sw, label_smoothing, scale, num_threads, shape, inplace, losses):
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
        total, bad_logits = kernel(
            xf[lo:hi], yf[lo:hi], gf[lo:hi], xf[lo:hi] if inplace else None, lb,
            pos[lo:hi] if pos_full else pos, pos_full, sample[lo:hi] if sample_full else sample, sample_full,
            label_smoothing, scale)
        if not math.isfinite(total):
            if np.isfinite(lb).all():  # only the float32 partial sums overflowed: add in float64
                total = float(lb.sum(dtype=np.float64))
            else:  # in place, the logit is already overwritten; the kernel counted the non-finite ones
                raise_bad_bce(xf, yf, lb, lo, shape, logits_lost=inplace, bad_logits=bad_logits)
        block_sums[lo] = total

    run_in_blocks(work, xf.size, 4, num_threads, align=per_block, block_bytes=4 * per_block)
    return math.fsum(block_sums.values())


def raise_bad_bce(xf, yf, lb, lo, shape, *, logits_lost=False, bad_logits=None):
    """Name why the loss of a block is not finite: a bad label, a bad logit, or an overflow."""
    bad = np.flatnonzero(~np.isfinite(lb))
    k = lo + int(bad[0]) if bad.size else lo

    def where(i):
        return tuple(int(j) for j in np.unravel_index(i, shape))

    labels = yf[lo : lo + lb.size]
    if not (labels.min() >= 0 and labels.max() <= 1):  # NaN fails both
        i = lo + int(np.flatnonzero(~((labels >= 0) & (labels <= 1)))[0])
        raise ValueError(f"`labels` must lie in [0, 1], got {float(yf[i])!r} at index {where(i)}.")
    if logits_lost:
        if bad_logits:
            raise ValueError(f"`logits` contains NaN or an infinity (first loss affected at index {where(k)}); "
                             "logits must be finite.")
    elif not np.isfinite(xf[k]):
        what = "NaN" if np.isnan(xf[k]) else "an infinity"
        raise ValueError(f"`logits` contains {what} at index {where(k)}; logits must be finite.")
    raise ValueError(f"the loss overflows {xf.dtype} at index {where(k)} (pos_weight or sample_weight too large); "
                     "pass float64 logits or smaller weights.")


def sigmoid_bce(x, y, grad, *, pos_weight, sample_weight, label_smoothing, scale, num_threads, keep_losses,
                numba_bce=None, force=False):
    """Elementwise BCE from logits on flattened arrays; fills `grad`.

    Returns the flat elementwise losses if `keep_losses`, else their sum (float64).
    `numba_bce` is the Numba kernel where that backend was chosen; `force`
    makes it serve weights that repeat along trailing axes too (materialised).

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
    if align * dtype.itemsize > 64 * BLOCK_BYTES or (force and align > 1):  # materialise instead of tiling
        pw = pw if pw is None or pw[0] != "periodic" else ("full", np.broadcast_to(pos_weight, shape).astype(dtype).reshape(-1), 1)
        sw = sw if sw is None or sw[0] != "periodic" else ("full", np.broadcast_to(sample_weight, shape).astype(dtype).reshape(-1), 1)
        align = 1
    if numba_bce is not None and align == 1:
        yf = yf if yf.dtype == np.float32 else yf.astype(np.float32)
        losses = np.empty(n, dtype=dtype) if keep_losses else None
        total = _run_numba_bce(numba_bce, xf, yf, gf, pw, sw, label_smoothing, scale, num_threads, shape,
                               grad is x, losses)
        return losses if keep_losses else total
    losses = np.empty(n, dtype=dtype)
    one = dtype.type(1)

    def work(lo, hi):
        # Infinite logits make NaN here on purpose: the check below reports them.
        with np.errstate(invalid="ignore", over="ignore"):
            block(lo, hi)

    def block(lo, hi):
        xb, gb, lb = xf[lo:hi], gf[lo:hi], losses[lo:hi]
        yb = yf[lo:hi].astype(dtype, copy=False)
        if label_smoothing:
            yb = yb * dtype.type(1 - label_smoothing) + dtype.type(label_smoothing / 2)
        e = np.abs(xb)
        np.negative(e, out=e)
        np.exp(e, out=e)  # exp(-|x|) in (0, 1]
        log1p_e = np.log1p(e)
        # coef = 1 + (p - 1) y = p y + (1 - y); with p = 1 it is 1
        ny = one - yb
        if pw is not None:
            p = _operand_block(pw, lo, hi)
            py = p * yb
            coef = py + ny
        else:
            py, coef = yb, one
        # p y softplus(-x) + (1 - y) softplus(x), softplus(+-x) = log1p(e) + max(+-x, 0): every term
        # is >= 0, so nothing cancels (unlike (1 - y) x + coef softplus(-x) at x = -104, y = 1e-8).
        np.multiply(coef, log1p_e, out=lb)
        lb += py * np.maximum(-xb, 0)
        lb += ny * np.maximum(xb, 0)
        if sw is not None:
            s = _operand_block(sw, lo, hi)
            lb *= s
        # A bad label, a NaN or infinite logit, or an overflow makes a loss non-finite:
        # found here, before `gb` (maybe the logits buffer) is overwritten.
        labels = yf[lo:hi]
        if not (np.isfinite(lb.sum(dtype=np.float64)) and labels.min() >= 0 and labels.max() <= 1):
            raise_bad_bce(xf, yf, lb, lo, shape)
        # sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) for x < 0
        np.add(e, one, out=log1p_e)
        np.divide(np.where(xb >= 0, one, e), log1p_e, out=gb)
        gb *= coef
        gb -= py
        if sw is not None:
            gb *= s
        if scale != 1:
            gb *= dtype.type(scale)

    run_in_blocks(work, n, dtype.itemsize * 8, num_threads, align=align)
    return losses if keep_losses else float(losses.sum(dtype=np.float64))
