"""Numba backend: one fused, vectorised loop per row for float32 logits with integer targets.

Why not NumPy alone: NumPy's float32 ``exp`` runs at ~3 G elements/s per core
here, which by itself takes longer than reading the logits and writing the
gradient at memory speed.  This module computes ``exp`` with a polynomial
that LLVM vectorises (AVX2/AVX-512), and reads each row from memory once:

* the row is walked in chunks of ``CHUNK`` classes that stay in L1; per chunk
  the running maximum ``M`` is updated, ``exp(x - M)`` is written to the
  gradient buffer and summed (the "online softmax": the sum so far is
  rescaled by ``exp(M_old - M_new)`` when the maximum grows);
* a second pass over the row, now in L2, scales each chunk by
  ``exp(M_chunk - M) / S`` times the loss coefficient, subtracts the
  label-smoothing term and fixes the target entry.

The functions are compiled on first use and cached on disk (``cache=True``);
they release the GIL (``nogil=True``) and run on the thread pool of
:mod:`crossent.kernels.numpy_blocked`, one block of rows per call.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Safe fast-math: reassociation (vectorised sums) and contraction (FMA), but
# no "no NaNs / no infs" promises, so NaN still propagates to the row sum.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CHUNK = 2048  # classes per chunk: 8 KiB of logits + 8 KiB of gradient stay in L1

F32 = np.float32
LOG2E = F32(1.4426950408889634)
LN2_HI = F32(0.693359375)  # ln 2 split in two so that k * LN2_HI is exact
LN2_LO = F32(-2.12194440e-4)


@intrinsic
def _int_bits_as_float32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _maxnum32(typingctx, a, b):
    # llvm.maxnum vectorises as a reduction where a compare-and-select does
    # not; it ignores NaN, which the row sum catches instead.
    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f]), "llvm.maxnum.f32")
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32), codegen


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def exp_in_range(t):
    """exp(t) for float32 t in [-87, 0] (relative error < 3e-7), with no range test: the caller clamps.

    t = k ln2 + f with |f| <= ln2/2, exp(f) by a degree-7 polynomial (Cephes
    expf coefficients), 2^k built directly in the exponent bits.  NaN stays
    NaN (k is clamped before it becomes an integer).
    """
    k = np.floor(t * LOG2E + F32(0.5))
    f = t - k * LN2_HI
    f = f - k * LN2_LO
    p = F32(1.9875691500e-4)
    p = p * f + F32(1.3981999507e-3)
    p = p * f + F32(8.3334519073e-3)
    p = p * f + F32(4.1665795894e-2)
    p = p * f + F32(1.6666665459e-1)
    p = p * f + F32(5.0000001201e-1)
    p = p * f * f + f + F32(1.0)
    k = k if k > F32(-126.0) else F32(-126.0)
    return p * _int_bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def exp_nonpositive(t):
    """exp(t) for t <= 0 in float32 (relative error < 3e-7); 0 below -87; NaN stays NaN."""
    return F32(0.0) if t < F32(-87.0) else exp_in_range(t)


@njit(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
def softmax_int_rows(x, g, xw, labels, kept, weight, chunk_weight, has_weight, label_smoothing, z_loss,
                     weight_total, scale, lo, hi, row_loss, chunk_shift, chunk_max):
    """Rows [lo, hi) of the fused softmax cross-entropy.

    The gradient goes to `g`; in place, `g` and `xw` are the logits again.
    Passing ``xw=None`` otherwise lets Numba drop the in-place branch at
    compile time, so read-only logits type-check.  `chunk_weight`
    holds the class weights summed per chunk.

    Returns -1, or the first row with a NaN or +inf logit, or that is counted
    but -inf everywhere (the caller raises).

    `chunk_shift` and `chunk_max` are scratch of at least ceil(V / CHUNK)
    float64: the shift each chunk's exponentials were taken against, and the
    chunk's own maximum.  See
    :func:`crossent.kernels.softmax_cross_entropy_fused` for the formulas.
    """
    V = x.shape[1]
    n_chunks = (V + CHUNK - 1) // CHUNK
    eps = label_smoothing
    for i in range(lo, hi):
        xi = x[i]
        y = labels[i]
        target_logit = np.float64(xi[y])  # read before the row (maybe xi itself) is overwritten
        running_max = -np.inf
        total = 0.0  # sum of exp(x - running_max), float64 across chunks
        shifted_sum = 0.0  # sum_c w_c (x_c - chunk max), per chunk, rebased to the row max at the end
        for c in range(n_chunks):
            # Chunk views index from 0, so LLVM sees no negative index and vectorises.
            xc = xi[c * CHUNK : (c + 1) * CHUNK]
            width = xc.shape[0]
            m = F32(-np.inf)
            for j in range(width):
                m = _maxnum32(m, xc[j])
            if m == np.inf:
                return i
            if eps > 0.0:
                # In the chunk's own frame (terms <= 0): no large offset enters the sum; in
                # float64, where x - m cannot overflow (x = -0.9 max, m = 0.9 max in float32).
                acc = 0.0
                m64 = np.float64(m)  # numba: float() of a float32 stays float32
                if m == -np.inf:  # a fully masked chunk: -inf where a masked class has weight
                    acc = -np.inf if chunk_weight[c] > 0.0 else 0.0
                elif has_weight:
                    wc = weight[c * CHUNK : (c + 1) * CHUNK]
                    for j in range(width):
                        # 0 * -inf counts as 0
                        acc += np.float64(wc[j]) * (np.float64(xc[j]) - m64) if wc[j] > F32(0.0) else 0.0
                else:
                    for j in range(width):
                        acc += np.float64(xc[j]) - m64
                shifted_sum += acc
            if m > running_max:
                total *= math.exp(running_max - m) if running_max > -np.inf else 0.0
                running_max = m
            shift = F32(running_max) if running_max > -np.inf else F32(0.0)
            s = F32(0.0)
            if xw is not None:  # one array: LLVM's overlap check would refuse to vectorise x -> g
                xwc = xw[i][c * CHUNK : (c + 1) * CHUNK]
                for j in range(width):
                    e = exp_nonpositive(xwc[j] - shift)
                    xwc[j] = e
                    s += e
            else:
                gc = g[i][c * CHUNK : (c + 1) * CHUNK]
                for j in range(width):
                    e = exp_nonpositive(xc[j] - shift)
                    gc[j] = e
                    s += e
            if not (s == s):
                return i
            total += s
            chunk_shift[c] = running_max
            chunk_max[c] = m

        is_kept = kept[i]
        all_masked = running_max == -np.inf
        w_target = (float(weight[y]) if has_weight else 1.0) if is_kept else 0.0
        target_coef = (1.0 - eps) * w_target
        loss = 0.0
        p_coef = target_coef
        smooth = 0.0
        if all_masked:
            if is_kept:
                return i  # no class is possible: the caller raises
            p_coef = 0.0  # an ignored row with no finite logit: loss 0, gradient 0
        else:
            # The shifted frame: -log p_c = log S - (x_c - M), with S = sum exp(x - M).
            log_total = math.log(total)
            # A confident row, or an lse near 0 (m + log S cancels) in a row whose z-loss term outweighs
            # its cross-entropy mass (see numpy_blocked.z_loss_rows): log1p of S - 1 summed in float64
            # without the maxima's 1, from the exponentials in the gradient buffer.
            if total < 2.0 or (z_loss > 0.0 and is_kept and target_coef + eps / V * weight_total < z_loss
                               and abs(running_max + log_total) < 1.0):
                log_total = _log_sum_confident(xw[i] if xw is not None else g[i], chunk_shift, running_max)
            lse = running_max + log_total
            if target_coef != 0.0:  # a zero coefficient times a masked target's +inf counts 0
                loss = target_coef * (log_total - (target_logit - running_max))
            if is_kept and eps > 0.0:
                rebased = shifted_sum
                for c in range(n_chunks):  # sum_c w_c (x_c - M) from the chunks' own frames
                    if chunk_max[c] > -np.inf:
                        rebased += chunk_weight[c] * (chunk_max[c] - running_max)
                loss += eps / V * (weight_total * log_total - rebased)
                p_coef += eps / V * weight_total
                smooth = scale * eps / V
            if is_kept and z_loss > 0.0:
                loss += z_loss * lse * lse
                p_coef += 2.0 * z_loss * lse
        row_loss[i] = loss

        # d loss_i / d x_j = p_coef p_j - (1 - eps) w_y [j = y] - (eps/V) w_j
        gi = xw[i] if xw is not None else g[i]
        for c in range(n_chunks):
            gc = gi[c * CHUNK : (c + 1) * CHUNK]
            width = gc.shape[0]
            # Chunk c's exponentials were taken against the running max of that moment.
            factor = F32(0.0) if all_masked else F32(scale * p_coef * math.exp(chunk_shift[c] - running_max) / total)
            if smooth == 0.0:
                for j in range(width):
                    gc[j] *= factor
            elif has_weight:
                sm = F32(smooth)
                wc = weight[c * CHUNK : (c + 1) * CHUNK]
                for j in range(width):
                    gc[j] = gc[j] * factor - sm * wc[j]
            else:
                sm = F32(smooth)
                for j in range(width):
                    gc[j] = gc[j] * factor - sm
        gi[y] -= F32(scale * target_coef)
    return -1


@njit(fastmath=FASTMATH, nogil=True, inline="always", error_model="numpy")
def _log_sum_confident(ei, chunk_shift, running_max):
    """log S, precisely, for a row whose exponentials (chunk c against chunk_shift[c]) sum to S.

    ``log1p(S - 1)``, with ``S - 1`` summed in float64 from the non-maximal
    terms and the count of maxima minus one: no ``1 + tiny`` is ever rounded,
    so a loss of 1e-10 keeps its digits (S < 2), and the float32 sum's error
    does not reach an lse near 0 (z_loss).  An exponential that rounds to
    exactly 1 counts as a maximum (it is within an ulp of 1, which only
    matters where S - 1 >= ~1).
    """
    rest = 0.0
    ties = 0.0
    for c in range(chunk_shift.shape[0]):
        ec = ei[c * CHUNK : (c + 1) * CHUNK]
        if chunk_shift[c] == running_max:
            acc = 0.0
            for j in range(ec.shape[0]):  # two loops of selects: each vectorises (one loop with both did not)
                acc += np.float64(F32(0.0) if ec[j] == F32(1.0) else ec[j])
            count = F32(0.0)  # exact: at most CHUNK
            for j in range(ec.shape[0]):
                count += F32(1.0) if ec[j] == F32(1.0) else F32(0.0)
            rest += acc
            ties += count
        elif chunk_shift[c] > -np.inf:
            acc = 0.0
            for j in range(ec.shape[0]):
                acc += np.float64(ec[j])
            rest += acc * math.exp(chunk_shift[c] - running_max)
    return math.log1p(rest + (ties - 1))


JIT_BLOCK_BYTES = 1 << 25  # rows are walked inside: big blocks, few dispatches


def softmax_int_block(x, grad, lo, hi, opt, row_loss):
    """Block worker with the signature of :func:`numpy_blocked.softmax_int_block`."""
    n_chunks = -(-x.shape[1] // CHUNK)
    weight = opt.class_weight if opt.class_weight is not None else _NO_WEIGHT
    if opt.class_weight is not None:
        chunk_weight = np.add.reduceat(opt.class_weight.astype(np.float64), np.arange(0, x.shape[1], CHUNK))
    else:
        chunk_weight = np.minimum(CHUNK, x.shape[1] - np.arange(0, x.shape[1], CHUNK)).astype(np.float64)
    scratch = np.empty((2, n_chunks), dtype=np.float64)
    inplace = grad is x
    bad_row = softmax_int_rows(
        x, grad, x if inplace else None, opt.labels, opt.kept, weight, chunk_weight,
        opt.class_weight is not None, opt.label_smoothing, opt.z_loss, opt.weight_total, opt.scale, lo, hi,
        row_loss, scratch[0], scratch[1],
    )
    if bad_row >= 0:
        _raise_non_finite(x, bad_row)


softmax_int_block.block_bytes = JIT_BLOCK_BYTES
_NO_WEIGHT = np.ones(1, dtype=np.float32)


def _raise_non_finite(x, row):
    """Name the problem in `row` (in place mode the row may already hold exp values; NaN stays NaN)."""
    from .numpy_blocked import check_row_maxima, raise_dead_row

    row_max = np.max(x[row : row + 1], axis=1)
    check_row_maxima(row_max, x[row : row + 1], row)
    raise_dead_row(row)


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def log1p_unit(e):
    """log(1 + e) for e in [0, 1], float32, relative error < 1e-7.

    With s = e / (2 + e) in [0, 1/3], log(1 + e) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...);
    forming s never computes 1 + e, so a tiny e keeps all its digits.
    """
    s = e / (F32(2.0) + e)
    s2 = s * s
    p = F32(1.0 / 15.0)
    p = p * s2 + F32(1.0 / 13.0)
    p = p * s2 + F32(1.0 / 11.0)
    p = p * s2 + F32(1.0 / 9.0)
    p = p * s2 + F32(1.0 / 7.0)
    p = p * s2 + F32(1.0 / 5.0)
    p = p * s2 + F32(1.0 / 3.0)
    p = p * s2 + F32(1.0)
    return F32(2.0) * s * p


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def bce_point(xj, yj, p, w, scale):
    """(loss, d loss / dx) of one element; see :func:`crossent.kernels.sigmoid_binary_cross_entropy_fused`."""
    e = exp_nonpositive(-abs(xj))  # exp(-|x|) in (0, 1]: never overflows
    log1p_e = log1p_unit(e)
    py = p * yj
    ny = F32(1.0) - yj
    coef = py + ny  # 1 + (p - 1) y
    # p y softplus(-x) + (1 - y) softplus(x), with softplus(+-x) = log1p(e) + max(+-x, 0): every
    # term is >= 0, so nothing cancels (the form (1 - y) x + coef softplus(-x) loses all its
    # digits at x = -104, y = 1e-8, where the loss is 1.04e-6).
    loss = w * (coef * log1p_e + py * max(-xj, F32(0.0)) + ny * max(xj, F32(0.0)))
    sig = (F32(1.0) if xj >= F32(0.0) else e) / (F32(1.0) + e)
    return loss, scale * w * (coef * sig - py)


@njit(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
def sigmoid_bce_flat(x, y, g, xw, losses, pos_weight, pos_full, sample_weight, sample_full, label_smoothing, scale):
    """BCE of one block of flat arrays; weights are length-1 (scalar) or the block's own slice.

    Writes the gradient to `g` (in place, `g` and `xw` are the logits again;
    otherwise ``xw=None`` lets read-only logits type-check), and the
    elementwise losses.  Returns their sum (float32 over chunks of CHUNK
    elements, added in float64), which is not finite if a logit is not, a
    label lies outside [0, 1] (or is NaN), or a loss overflows; and the
    number of non-finite logits.
    """
    keep = F32(1.0 - label_smoothing)
    half_eps = F32(label_smoothing / 2.0)
    sc = F32(scale)
    p0 = pos_weight[0]
    w0 = sample_weight[0]
    n = x.shape[0]
    total = 0.0
    bad_logits = 0.0
    for c0 in range(0, n, CHUNK):
        c1 = min(c0 + CHUNK, n)
        # Views indexed from 0, so LLVM sees no negative index and vectorises.
        xc, yc, lc = x[c0:c1], y[c0:c1], losses[c0:c1]
        pc = pos_weight[c0:c1] if pos_full else pos_weight
        wc = sample_weight[c0:c1] if sample_full else sample_weight
        acc = F32(0.0)
        bad = F32(0.0)
        if xw is not None:  # one array: LLVM's overlap check would refuse to vectorise x -> g
            xwc = xw[c0:c1]
            for j in range(c1 - c0):
                p = pc[j] if pos_full else p0
                w = wc[j] if sample_full else w0
                yj = yc[j]
                loss, grad = bce_point(xwc[j], yj * keep + half_eps, p, w, sc)
                bad += F32(0.0) if abs(xwc[j]) <= F32(3.4028235e38) else F32(1.0)
                xwc[j] = grad
                loss = loss if (yj >= F32(0.0) and yj <= F32(1.0)) else F32(np.nan)
                lc[j] = loss
                acc += loss
        else:
            gc = g[c0:c1]
            for j in range(c1 - c0):
                p = pc[j] if pos_full else p0
                w = wc[j] if sample_full else w0
                yj = yc[j]
                loss, grad = bce_point(xc[j], yj * keep + half_eps, p, w, sc)
                bad += F32(0.0) if abs(xc[j]) <= F32(3.4028235e38) else F32(1.0)
                gc[j] = grad
                loss = loss if (yj >= F32(0.0) and yj <= F32(1.0)) else F32(np.nan)
                lc[j] = loss
                acc += loss
        total += acc
        bad_logits += bad
    return total, bad_logits
