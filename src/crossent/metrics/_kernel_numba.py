"""Numba backend of the one-pass metric kernel: each row of logits is read from memory once.

The loss kernel's structure (:mod:`crossent.kernels.numba_fused`): the row is
walked in chunks of ``CHUNK`` classes that stay in L1; per chunk, its maximum
(the one read from memory), then, against the running maximum :math:`M` (the
online log-sum-exp), the exponentials :math:`e_c = e^{x_c - M}` by the
vectorised polynomial and, in the same loop (:func:`fast_sums`), four sums:
:math:`S = \\sum e_c`, :math:`\\sum e_c^2` (Brier), :math:`\\sum e_c (M - x_c)`
(entropy: :math:`H = \\log S + \\sum e_c (M - x_c) / S`, no division or
logarithm per element) and ``above``, how many logits exceed the label's (its
rank, for top-k: a compare and a masked add).  When the running maximum grows
by :math:`g` the sums so far are rescaled by :math:`r = e^{-g}` (the third
becomes :math:`r(\\cdot + g S)`); every term stays non-negative.

float32 partial sums run over ``SUB`` classes (at most 32 terms per vector
lane) before going to float64: a longer float32 run of equal terms drifts by
1e-6.  The difference :math:`x - M` is rounded to float32 there, which costs at most
:math:`|x - M| 2^{-24}` relative in a term; with :math:`S \\ge 2` (at least
half the mass away from the maximum) that stays below 1e-6 in every statistic.
A confident row (:math:`S < 2`, where :math:`\\log S` is small and each digit
counts) takes a second pass over the row, still in L2, with :func:`chunk_sums`
against the final maximum: float64 differences corrected to first order,
the maxima counted apart (``ties``) so that :math:`S - 1` is summed without
the 1s and ``log1p`` keeps the digits of a loss of 1e-10, and the squares
scaled out of float32's underflow.  float64 logits take ``math.exp`` and
float64 sums in both passes.  The row's statistics are then formed by
:func:`finish_row`, compiled without fast-math so that LLVM may not
reassociate ``(ties - 1) + below`` into a cancelling ``(ties + below) - 1``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ..kernels.numba_fused import FASTMATH, exp_in_range, exp_nonpositive

CHUNK = 2048  # classes per chunk: 8 KiB of float32 logits stay in L1 between the max and the sums
JIT_BLOCK_BYTES = 1 << 25  # rows per thread-pool call: big blocks, few dispatches


@intrinsic
def _maxnum(typingctx, a, b):
    # llvm.maxnum vectorises as a reduction where a compare-and-select does not;
    # it ignores NaN, which the sum of exponentials catches instead.
    def codegen(context, builder, signature, args):
        f = ir.FloatType() if signature.args[0] == types.float32 else ir.DoubleType()
        name = "llvm.maxnum.f32" if signature.args[0] == types.float32 else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f]), name)
        return builder.call(fn, args)

    if isinstance(a, types.Float) and a == b:
        return a(a, a), codegen
    return None


SUB = 256  # float32 partial sums run over at most this many classes before going to float64
SQ_SCALE = np.float32(2.0**60)  # e * 2**60 squared neither overflows (e < 1) nor underflows (e >= 2**-126)


@njit(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
def chunk_sums32(xc, shift, label_logit):
    """(below, below_sq, spread, ties, above) of one float32 chunk against the final maximum: a confident row's sums.

    ``ties`` counts the logits equal to the maximum and ``below`` sums the other
    exponentials, so :math:`S - 1 = (\\text{ties} - 1) + \\text{below}` never
    cancels; ``below_sq`` sums their squares.

    ``v - shift`` is exact in float64, not in float32, where its rounding would
    cost up to 88 * 2**-24 = 5e-6 relative in exp; the polynomial gets the
    rounded difference and the rounding error is put back to first order,
    exp(z + d) = exp(z)(1 + d).  Partial sums stay in float32 over ``SUB``
    classes (8 lanes of 32 terms: error < 2e-6, typically 1e-7), then go to float64.
    """
    shift32 = np.float32(shift)
    width = xc.shape[0]
    below = below_sq = spread = ties = above = 0.0
    for lo in range(0, width, SUB):
        s = sq = sp = t = a = np.float32(0.0)
        for j in range(lo, min(lo + SUB, width)):
            v = xc[j]
            z64 = float(v) - shift
            z = np.float32(z64)
            p = exp_nonpositive(z)  # the shifted frame: z <= 0, exp never overflows
            e = p + p * np.float32(z64 - float(z)) if p != 0 else np.float32(0.0)  # NaN stays NaN
            tie = v == shift32
            lt = np.float32(0.0) if tie else e  # NaN is not a tie: it reaches `s`
            s += lt
            scaled = lt * SQ_SCALE
            sq += scaled * scaled
            sp += e * -z if e > 0 else np.float32(0.0)  # a masked class adds 0, not 0 * inf
            t += np.float32(1.0) if tie else np.float32(0.0)
            a += np.float32(1.0) if v > label_logit else np.float32(0.0)
        below += s
        below_sq += float(sq) * 2.0**-120
        spread += sp
        ties += t
        above += a
    return below, below_sq, spread, ties, above


@njit(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
def chunk_sums64(xc, shift, label_logit):
    """:func:`chunk_sums32` for float64 logits: ``math.exp`` and float64 sums."""
    below = below_sq = spread = ties = above = 0.0
    for j in range(xc.shape[0]):
        v = xc[j]
        z = v - shift
        e = math.exp(z)
        tie = v == shift
        lt = 0.0 if tie else e
        below += lt
        below_sq += lt * lt
        spread += e * -z if e > 0 else 0.0
        ties += 1.0 if tie else 0.0
        above += 1.0 if v > label_logit else 0.0
    return below, below_sq, spread, ties, above


def chunk_sums(xc, shift, label_logit):
    """:func:`chunk_sums32` or :func:`chunk_sums64` by dtype (a Numba overload)."""


@overload(chunk_sums)
def _chunk_sums_overload(xc, shift, label_logit):
    if xc.dtype == types.float32:
        return lambda xc, shift, label_logit: chunk_sums32(xc, shift, label_logit)
    return lambda xc, shift, label_logit: chunk_sums64(xc, shift, label_logit)


@njit(nogil=True, cache=True, error_model="numpy")
def finish_row(top, label_logit, ties, below, below_sq, spread):
    """(nll, entropy, confidence, brier) of one row from its sums (see the module docstring).

    With :math:`S = \\text{ties} + \\text{below}` (the maximum contributes 1 per tie):
    :math:`-\\log p_y = (M - x_y) + \\log S`, both terms >= 0 (``log1p(S - 1)``
    when the label is a maximum); :math:`H = \\log S + \\text{spread}/S`, both >= 0;
    confidence :math:`1/S`; Brier :math:`((S - e_y)/S)^2 + (\\sum_c e_c^2 - e_y^2)/S^2`,
    where a label at the maximum takes ``S - 1`` and ``ties - 1 + below_sq`` directly
    (the subtraction would cancel) and any other label subtracts at most 1 from
    sums of at least ``ties`` >= 1 (no cancellation).
    """
    excess = (ties - 1.0) + below  # S - 1 >= 0
    total = ties + below
    log_total = math.log1p(excess)
    if label_logit == top:
        nll = log_total
        other = excess  # S - e_y with e_y = 1
        other_sq = (ties - 1.0) + below_sq
    else:
        gap = top - label_logit  # > 0; +inf for a masked label
        nll = gap + log_total
        e_y = math.exp(-gap)
        other = total - e_y
        other_sq = (ties + below_sq) - e_y * e_y
    inv = 1.0 / total
    brier = (other * inv) * (other * inv) + other_sq * inv * inv
    return nll, log_total + spread * inv, inv, brier


@njit(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
def fast_sums32(xc, shift, label_logit):
    """(total, total_sq, spread, above) of one float32 chunk against the shift: the first pass's sums.

    The loss kernel's loop with three more sums: :math:`\\sum e`, :math:`\\sum e^2`,
    :math:`\\sum e (M - x)` and the count of logits above the label's, in float32
    lanes over ``SUB`` classes, then float64.  No float64 difference, no tie
    test, no division: the confident rows, where those matter, are recomputed
    by :func:`chunk_sums32`.
    """
    shift32 = np.float32(shift)
    width = xc.shape[0]
    total = total_sq = spread = above = 0.0
    for lo in range(0, width, SUB):
        s = sq = sp = a = np.float32(0.0)
        xs = xc[lo : lo + SUB]  # a view from 0: LLVM sees no negative index and vectorises
        for j in range(xs.shape[0]):
            v = xs[j]
            z = v - shift32
            # Clamped at -87 (NaN stays NaN): a masked class adds e^-87 ~ 1.6e-38 to S >= 1, not 0 * inf.
            z = np.float32(-87.0) if z < np.float32(-87.0) else z
            e = exp_in_range(z)
            s += e
            sq += e * e
            sp -= e * z
            a += np.float32(1.0) if v > label_logit else np.float32(0.0)
        total += s
        total_sq += sq
        spread += sp
        above += a
    return total, total_sq, spread, above


@njit(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
def fast_sums64(xc, shift, label_logit):
    """:func:`fast_sums32` for float64 logits: ``math.exp`` and float64 sums."""
    s = sq = sp = a = 0.0
    for j in range(xc.shape[0]):
        v = xc[j]
        z = v - shift
        e = math.exp(z)
        s += e
        sq += e * e
        sp -= e * max(z, -746.0)
        a += 1.0 if v > label_logit else 0.0
    return s, sq, sp, a


def fast_sums(xc, shift, label_logit):
    """:func:`fast_sums32` or :func:`fast_sums64` by dtype (a Numba overload)."""


@overload(fast_sums)
def _fast_sums_overload(xc, shift, label_logit):
    if xc.dtype == types.float32:
        return lambda xc, shift, label_logit: fast_sums32(xc, shift, label_logit)
    return lambda xc, shift, label_logit: fast_sums64(xc, shift, label_logit)


@njit(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
def row_stats_rows(x, labels, kept, lo, hi, nll, entropy, confidence, brier, rank, correct):
    """Rows [lo, hi): fill the per-row outputs; return -1, or the first row with NaN / +inf, or kept and all -inf.

    First pass (each row read from memory once, chunk by chunk): the chunk's
    maximum, then :func:`fast_sums` against the running maximum, rescaled when
    it grows.  A confident row (:math:`S < 2`) then takes a second pass, over
    the row still in cache, with :func:`chunk_sums` against the final maximum:
    there the ties and the float64 differences keep the digits of :math:`S - 1`.
    Elsewhere :math:`S - 1 \\ge 1` and :math:`\\sum e^2 - 1` lose nothing.
    """
    V = x.shape[1]
    n_chunks = (V + CHUNK - 1) // CHUNK
    for i in range(lo, hi):
        xi = x[i]
        y = labels[i]
        label_logit = xi[y]
        top = -np.inf
        total = 0.0
        total_sq = 0.0
        spread = 0.0
        above = 0.0
        for c in range(n_chunks):
            # Chunk views index from 0, so LLVM sees no negative index and vectorises.
            xc = xi[c * CHUNK : (c + 1) * CHUNK]
            width = xc.shape[0]
            m = xc[0]
            for j in range(width):
                m = _maxnum(m, xc[j])
            if m == np.inf:
                return i
            if m > top:
                if top > -np.inf:
                    gap = float(m) - float(top)
                    r = math.exp(-gap)
                    spread = r * (spread + gap * total)
                    total *= r
                    total_sq *= r * r
                else:  # the masked chunks so far count 0
                    total = total_sq = spread = 0.0
                top = float(m)
            s, sq, sp, a = fast_sums(xc, 0.0 if top == -np.inf else top, label_logit)
            if not (s == s):
                return i
            total += s
            total_sq += sq
            spread += sp
            above += a
        if top == -np.inf:  # every class masked
            if kept[i]:
                return i
            nll[i] = entropy[i] = confidence[i] = brier[i] = 0.0
            rank[i] = 0
            correct[i] = False
            continue
        if total < 2.0:  # confident: S - 1 from the sums without the maxima (second pass, in cache)
            ties = below = below_sq = spread = 0.0
            for c in range(n_chunks):
                b, bsq, sp, t, _ = chunk_sums(xi[c * CHUNK : (c + 1) * CHUNK], top, label_logit)
                below += b
                below_sq += bsq
                spread += sp
                ties += t
        else:  # S - 1 >= 1 and sum e^2 - 1 >= 0 with S >= 2: nothing cancels
            ties = 1.0
            below = total - 1.0
            below_sq = total_sq - 1.0
        nll[i], entropy[i], confidence[i], brier[i] = finish_row(top, float(label_logit), ties, below, below_sq,
                                                                 spread)
        rank[i] = int(above)
        # The label is a maximum: it is the prediction if no equal logit comes before it (the first maximum).
        correct[i] = above == 0.0 and count_equal(xi[:y], label_logit) == 0
    return -1


@njit(fastmath=FASTMATH, nogil=True, cache=True, error_model="numpy")
def count_equal(xs, value):
    """How many entries of `xs` equal `value` (read only when the label is a maximum, from cache)."""
    n = 0.0
    for j in range(xs.shape[0]):
        n += 1.0 if xs[j] == value else 0.0
    return n


@njit(nogil=True, cache=True, error_model="numpy")
def bucket_sums(bits, groups, n_exp, high, low):
    """The exact bucket sums of :mod:`crossent.metrics._exact` in one loop (the NumPy path takes ~8 array passes).

    `bits` are finite float64 values viewed as int64; value = M * 2**(bucket - 1074) with
    M the signed 53-bit mantissa and bucket = max(E, 1) - 1.  `high` and `low` (int64, one per
    group and bucket) receive M >> 26 (|.| < 2**27) and M & (2**26 - 1): 2**35 values cannot overflow.
    """
    for i in range(bits.shape[0]):
        b = bits[i]
        biased = (b >> 52) & 0x7FF
        m = b & 0xFFFFFFFFFFFFF
        if biased != 0:
            m |= 1 << 52  # the implicit leading bit of a normal number
        if b < 0:
            m = -m
        k = groups[i] * n_exp + (biased - 1 if biased > 0 else 0)
        high[k] += m >> 26
        low[k] += m & 0x3FFFFFF
