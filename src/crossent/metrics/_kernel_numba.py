"""Numba backend of the one-pass metric kernel: each row of logits is read from memory once.

The row is walked in chunks of ``CHUNK`` classes (they stay in L1).  Per chunk:
its maximum (one read from memory), then, against the running maximum
:math:`M` (the online log-sum-exp), the exponentials :math:`e_c = e^{x_c - M}`
and four sums, all of non-negative terms:

* ``ties``: how many logits equal :math:`M`; ``below``: :math:`\\sum_{x_c < M} e_c`,
  so :math:`S = \\text{ties} + \\text{below}` and :math:`S - 1` is formed without
  cancelling (``log1p`` then keeps the digits of a confident row's tiny NLL);
* ``below_sq``: :math:`\\sum_{x_c < M} e_c^2` (for the Brier score);
* ``spread``: :math:`\\sum_c e_c (M - x_c)` (for the entropy);
* ``above``: how many logits exceed the label's (the rank, for top-k).

When the running maximum grows by :math:`g`, every sum is rescaled:
``below <- r (below + ties)``, ``below_sq <- r^2 (below_sq + ties)``,
``spread <- r (spread + g (below + ties))`` with :math:`r = e^{-g}`; every
term stays non-negative.  float32 logits use the vectorised polynomial ``exp``
of :mod:`crossent.kernels.numba_fused` (relative error < 3e-7) on the
difference rounded to float32, corrected to first order for that rounding, and
float64 accumulators; float64 logits use ``math.exp``.  The row's statistics are then
formed by :func:`finish_row`, compiled without fast-math so that LLVM may not
reassociate ``(ties - 1) + below`` into a cancelling ``(ties + below) - 1``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ..kernels.numba_fused import FASTMATH, exp_nonpositive

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
    """(below, below_sq, spread, ties, above) of one float32 chunk against the shift (see the module docstring).

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
def row_stats_rows(x, labels, kept, lo, hi, nll, entropy, confidence, brier, rank, correct):
    """Rows [lo, hi): fill the per-row outputs; return -1, or the first row with NaN / +inf, or kept and all -inf."""
    V = x.shape[1]
    n_chunks = (V + CHUNK - 1) // CHUNK
    for i in range(lo, hi):
        xi = x[i]
        y = labels[i]
        label_logit = xi[y]
        top = -np.inf
        ties = 0.0
        below = 0.0
        below_sq = 0.0
        spread = 0.0
        above = 0.0
        before = 0  # logits equal to the label's at a smaller index: the first maximum is the prediction
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
                    spread = r * (spread + gap * (below + ties))
                    below = r * (below + ties)
                    below_sq = r * r * (below_sq + ties)
                    ties = 0.0
                top = float(m)
            shift = 0.0 if top == -np.inf else top
            s, sq, sp, t, a = chunk_sums(xc, shift, label_logit)
            if not (s == s):
                return i
            below += s
            below_sq += sq
            spread += sp
            ties += t
            above += a
            start = c * CHUNK
            if start < y:
                for j in range(min(width, y - start)):
                    before += 1 if xc[j] == label_logit else 0
        if top == -np.inf:  # every class masked
            if kept[i]:
                return i
            nll[i] = entropy[i] = confidence[i] = brier[i] = 0.0
            rank[i] = 0
            correct[i] = False
            continue
        nll[i], entropy[i], confidence[i], brier[i] = finish_row(top, float(label_logit), ties, below, below_sq,
                                                                 spread)
        rank[i] = int(above)
        correct[i] = above == 0.0 and before == 0
    return -1


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
