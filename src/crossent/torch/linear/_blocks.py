r"""Blocks of the language-model head: one chunk of tokens against a range of classes, tile by tile.

The pieces here know nothing of losses.  :func:`scan_chunk` computes a chunk's
logits tile by tile and keeps, per token and per tile, a few partial sums in
the frame of that tile's own maximum :math:`m_k`; :func:`combine_partials`
merges partials of any number of tiles (or of vocabulary shards on other
processes, which is why it takes them stacked on a leading axis) into one
frame.  :func:`tile_gradient` turns a tile of shifted logits into the tile of
the logit gradient, and :class:`Gradients` multiplies it into the gradients of
``hidden``, ``weight`` and ``bias``.

Numerics: within a tile every difference is taken against the tile maximum
(``z - m_k <= 0``: ``exp`` never overflows, and a large common offset cancels
exactly); the partials then move into the common frame with a factor
``exp(m_k - m) <= 1``.  The sum of ``exp(z - m_k)`` is kept in two parts, the
terms equal to 1 (the maxima, counted) and the rest, so that ``log S`` can be
taken as ``log1p`` of the rest plus the extra ties, and a confident token keeps
the digits of its tiny loss.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .. import _checks

# A chunk's logits are held whole (chunk x V) while its gradient is formed in the forward pass: at most
# 512 tokens and at most three sixteenths of the batch (at least 64), so that the block (chunk/2N of it)
# stays below a tenth of what F.linear + F.cross_entropy hold (two N x V arrays), while its products keep
# as many rows as that allows: each product streams the whole weight once per chunk, so fewer, taller
# chunks run faster (measured here: at 1024 x 1024 x 32768, 171-token chunks take 0.84x the time of the
# three products of 128-token ones; at 2048 x 128256, 384-token chunks 0.93x that of 256-token ones);
# fewer when V is large (a block of at most 512 MiB), 16 at least.  Tiles of about 2 MiB (this machine's
# L2 cache per core) keep the element-wise passes in cache between the products.
_MAX_CHUNK_TOKENS = 512
_MIN_CHUNK_TOKENS = 16
_BLOCK_BYTES = 512 * 2**20
_TILE_BYTES = 2 * 2**20


def default_chunk_size(num_tokens: int, num_classes: int = 1, element_size: int = 4) -> int:
    """Tokens per chunk: at most 512 and three sixteenths of the batch (64 at least), in equal chunks.

    Fewer when ``chunk x num_classes`` logits would pass 512 MiB (16 at
    least).  The batch is split into the fewest chunks of at most that many
    tokens, of equal length up to rounding, so that no chunk is a small remainder.

    Examples:
        >>> default_chunk_size(1024, 32768), default_chunk_size(4096, 32768), default_chunk_size(4096, 1_000_000)
        (171, 512, 128)
    """
    num_tokens = max(int(num_tokens), 1)
    share = 3 * num_tokens // 16
    cap = min(_MAX_CHUNK_TOKENS, max(64, share - share % 16))
    block_cap = _BLOCK_BYTES // (max(int(num_classes), 1) * element_size)
    cap = max(_MIN_CHUNK_TOKENS, min(cap, block_cap - block_cap % 16))
    num_chunks = -(-num_tokens // cap)
    return -(-num_tokens // num_chunks)


def default_vocab_tile(chunk_tokens: int, num_classes: int, element_size: int) -> int:
    """Classes per tile: ``chunk_tokens x tile`` logits of about 2 MiB, a multiple of 128 (at least 128, at most V).

    Examples:
        >>> default_vocab_tile(128, 32768, 4), default_vocab_tile(256, 1000, 4)
        (4096, 1000)
    """
    classes = _TILE_BYTES // (max(chunk_tokens, 1) * element_size)
    return min(max(128, classes - classes % 128), num_classes)


def spans(total: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, total)) for start in range(0, total, step)]


def products_in_float32(device: torch.device) -> bool:
    """float16/bfloat16 products in float32 on the CPU (its low-precision matrix products are slow), native elsewhere."""
    return device.type == "cpu"


# --------------------------------------------------------------------------- the logits of one tile


class Workspace:
    """The reused buffers of one call: a tile of logits, a second tile, two more tiles, and the optional chunk block.

    Buffers are flat, so that a ``rows x cols`` view of their beginning is
    contiguous for every tile, the short last ones included (``out=`` then
    writes in place).  The block holds a chunk's shifted logits tile after
    tile, each tile contiguous.  float16/bfloat16 products run in float32 on
    the CPU (the hidden chunk and each weight tile are converted once per use)
    and natively elsewhere, the softmax always in float32.
    """

    def __init__(self, hidden, weight, bias, chunk_size, vocab_tile, *, block=False, tiles=True):
        self.dtype = _checks.compute_dtype(hidden.dtype)
        self.low_precision = self.dtype != hidden.dtype
        self.convert = self.low_precision and products_in_float32(hidden.device)
        rows, width = min(chunk_size, hidden.shape[0]), hidden.shape[1]
        device = hidden.device
        # With a block, the logits live there: no separate tile of them.
        self.tile = None if block else torch.empty(rows * vocab_tile, dtype=self.dtype, device=device)
        # (tiles=False: the whole-row block alone, see scan_rows)
        self.aux = torch.empty(rows * vocab_tile if tiles else 0, dtype=self.dtype, device=device)
        self.ones = torch.empty(rows * vocab_tile if tiles else 0, dtype=self.dtype, device=device)  # exp(z-m_k)==1
        self.block = torch.empty(rows * weight.shape[0], dtype=self.dtype, device=device) if block else None
        self.weight = weight
        self.bias = None if bias is None else bias.to(self.dtype if self.convert or not self.low_precision
                                                      else hidden.dtype)
        if self.convert:
            self.hidden32 = torch.empty(rows, width, dtype=torch.float32, device=device)
            self.weight32 = torch.empty(vocab_tile * width, dtype=torch.float32, device=device)
        elif self.low_precision:
            self.product = torch.empty(rows * vocab_tile, dtype=hidden.dtype, device=device)
        self.h = None

    def view(self, buffer, rows, lo, hi, start=0):
        return buffer[start: start + rows * (hi - lo)].view(rows, hi - lo)

    def begin_chunk(self, h):
        """The chunk's hidden rows as the products take them (float32 copies of float16/bfloat16 on the CPU)."""
        self.h = self.hidden32[: h.shape[0]].copy_(h) if self.convert else h

    def weight_tile(self, lo, hi):
        w = self.weight[lo:hi]
        if self.convert:
            return self.weight32[: w.numel()].view(w.shape).copy_(w)
        return w

    def logits(self, w, lo, hi, out, scale):
        """``scale * (h @ w.T + bias[lo:hi])`` into `out` (compute dtype); beta=0 ignores out's old contents."""
        b = None if self.bias is None else self.bias[lo:hi]
        target = out if not self.low_precision or self.convert else self.product[: out.numel()].view(out.shape)
        if b is None:
            torch.addmm(target, self.h, w.t(), beta=0, alpha=scale, out=target)
        else:
            torch.addmm(b, self.h, w.t(), beta=scale, alpha=scale, out=target)
        if target is not out:
            out.copy_(target)
        return out


# --------------------------------------------------------------------------- per-tile partial sums


class Partials(NamedTuple):
    r"""Per tile (leading axis) and token: sums over the tile's classes in the frame of the tile maximum.

    ``top``: the tile maximum (NaN/``+inf`` pass through, ``-inf`` for a tile
    of masked classes); ``frame``: ``top`` where finite, else 0; ``rest`` and
    ``ties``: :math:`\sum_c e^{z_c - m_k}` without and with only the terms
    equal to 1; ``smooth``: :math:`\sum_c a_c (z_c - m_k)` for the smoothing
    coefficients :math:`a` (or None); ``entropy``:
    :math:`\sum_c e^{z_c - m_k}(z_c - m_k)` (or None); ``picked``: the logit
    at the clamped target index of the tile; ``coef_sum``: :math:`\sum_c a_c`
    over the tile (or None).
    """

    top: torch.Tensor
    frame: torch.Tensor
    rest: torch.Tensor
    ties: torch.Tensor
    smooth: torch.Tensor | None
    entropy: torch.Tensor | None
    picked: torch.Tensor
    coef_sum: torch.Tensor | None


class RowStats(NamedTuple):
    """Per token, over all classes, in the common frame ``m`` (the row maximum where finite, else 0)."""

    top: torch.Tensor
    frame: torch.Tensor
    log_sum: torch.Tensor  # log sum_c exp(z_c - m) (0 for a token without a finite logit)
    sum_exp: torch.Tensor  # sum_c exp(z_c - m)
    smooth: torch.Tensor | None  # sum_c a_c (z_c - m)
    entropy: torch.Tensor | None  # sum_c exp(z_c - m) (z_c - m)

    @property
    def lse(self):
        return self.frame + self.log_sum


def combine_partials(p: Partials) -> RowStats:
    """Merge partials stacked on axis 0 (tiles, or vocabulary shards) into one frame per token.

    The common frame is the largest finite maximum; each partial moves into it
    with ``f = exp(m_k - m) <= 1`` (a partial with nothing in it, ``S_k = 0``,
    adds nothing, even where ``f`` would overflow).  The terms equal to 1 stay
    ties only in the partials whose frame is the common one.
    """
    top = p.top.amax(0)
    frame = torch.nan_to_num(top, nan=0.0, posinf=0.0, neginf=0.0)
    shift = frame - p.frame  # >= 0 where the partial holds anything
    part_sum = p.rest + p.ties
    nonempty = part_sum > 0
    factor = torch.where(nonempty, torch.exp(-shift), 0.0)
    same = (shift == 0) & nonempty
    rest = torch.where(same, p.rest, factor * part_sum).sum(0)
    ties = torch.where(same, p.ties, 0.0).sum(0)
    sum_exp = rest + ties
    # log1p(rest + ties - 1): no 1 + tiny rounded away (S >= 1 wherever a finite logit exists).
    log_sum = torch.where(sum_exp > 0, torch.log1p(rest + (ties - 1)), 0.0)
    smooth = entropy = None
    if p.smooth is not None:
        # sum_c a_c (z_c - m) = smooth_k - A_k (m - m_k), coefficient first and halved: no overflow near the max.
        smooth = (p.smooth - 2.0 * (p.coef_sum[:, None] * (frame * 0.5 - p.frame * 0.5))).sum(0)
    if p.entropy is not None:
        # sum e^(z-m)(z-m) = f (entropy_k - (m - m_k) S_k); a partial that vanishes in the frame adds 0.
        moved = factor * part_sum
        entropy = torch.where(nonempty, factor * p.entropy - torch.where(moved > 0, moved * shift, 0.0), 0.0).sum(0)
    return RowStats(top, frame, log_sum, sum_exp, smooth, entropy)


def scan_chunk(ws: Workspace, h, labels, *, scale, softcap, vocab_tile, coef=None, coef_sum=None, entropy=False,
               keep=False, clamp=False) -> Partials:
    r"""The logits of one chunk, tile by tile, reduced to per-tile :class:`Partials`.

    ``z = scale * softcap(h W^T + b)`` (``scale = 1/T``).  With `keep`, each
    tile's shifted logits ``z - m_k`` stay in ``ws.block`` for the gradient
    (:func:`tile_gradient`).  `coef` (``(V,)`` smoothing coefficients, or
    None) asks for ``smooth``: the tile is then formed at half scale, so that
    ``(z - m_k) / 2`` never overflows, and the coefficients multiply before
    the sum (``torch.mv``), so that neither a difference nor the sum overflows
    near the dtype's maximum.  `clamp` (masked classes present) lifts ``-inf``
    to the lowest finite value before a product, so that a zero coefficient
    times a masked class counts 0.
    """
    rows, num_classes = h.shape[0], ws.weight.shape[0]
    tiles = spans(num_classes, vocab_tile)
    dtype, device = ws.dtype, h.device
    shape = (len(tiles), rows)
    top = torch.empty(shape, dtype=dtype, device=device)
    frame = torch.empty(shape, dtype=dtype, device=device)
    rest = torch.empty(shape, dtype=dtype, device=device)
    ties = torch.empty(shape, dtype=dtype, device=device)
    picked = torch.empty(shape, dtype=dtype, device=device)
    smooth = torch.empty(shape, dtype=dtype, device=device) if coef is not None else None
    ent = torch.empty(shape, dtype=dtype, device=device) if entropy else None
    half = coef is not None
    lowest = torch.finfo(dtype).min
    ws.begin_chunk(h)
    for k, (lo, hi) in enumerate(tiles):
        x = ws.view(ws.block if keep else ws.tile, rows, lo, hi, start=rows * lo if keep else 0)
        w = ws.weight_tile(lo, hi)
        if softcap is None:
            ws.logits(w, lo, hi, x, scale * (0.5 if half else 1.0))
        else:  # z = (cap / T) tanh(x / cap)
            ws.logits(w, lo, hi, x, 1.0 / softcap).tanh_().mul_(softcap * scale * (0.5 if half else 1.0))
        torch.amax(x, 1, out=top[k])
        torch.gather(x, 1, (labels - lo).clamp(0, hi - lo - 1)[:, None], out=picked[k][:, None])
        if half:
            top[k].mul_(2.0)
            picked[k].mul_(2.0)
        torch.nan_to_num(top[k], nan=0.0, posinf=0.0, neginf=0.0, out=frame[k])
        x.sub_((frame[k] * 0.5 if half else frame[k])[:, None])  # z - m_k <= 0 (halved: never overflows)
        if half:
            if clamp:
                x.clamp_(min=lowest)
            torch.mv(x, coef[lo:hi], out=smooth[k])
            smooth[k].mul_(2.0)
            x.mul_(2.0)  # z - m_k (an overflow here is -inf, whose exp is the right 0)
        if entropy:  # -inf (masked, or beyond the dtype's range) times exp(-inf) = 0 must count 0
            x.clamp_(min=lowest)
        e = torch.exp(x, out=ws.view(ws.aux, rows, lo, hi))
        # The terms equal to 1 apart (float ops: a bool mask costs several times more here), so that the
        # rest is summed without them and keeps its digits.
        ones = torch.eq(e, 1.0, out=ws.view(ws.ones, rows, lo, hi))
        torch.sum(ones, 1, out=ties[k])
        torch.sum(e.sub_(ones), 1, out=rest[k])
        if entropy:
            torch.sum(e.mul_(x), 1, out=ent[k])  # the maxima contribute 1 * 0
    return Partials(top, frame, rest, ties, smooth, ent, picked, coef_sum)


def _peaks(x, width=128):
    """Row maxima of `x` (kept dim) and the column of one of them.

    ``torch.max`` with indices is a slow scalar pass (10x ``amax`` here): the
    maxima of segments of `width` classes come from one vectorised pass, and
    the column from a window of `width` classes holding the best segment.
    """
    rows, num_classes = x.shape
    width = min(width, num_classes)
    main = num_classes - num_classes % width
    tops = x[:, :main].view(rows, main // width, width).amax(2)
    if main < num_classes:
        tops = torch.cat([tops, x[:, main:].amax(1, keepdim=True)], 1)
    best = tops.argmax(1, keepdim=True)
    start = (best * width).clamp_(max=num_classes - width)
    window = x.gather(1, start + torch.arange(width, device=x.device))
    return tops.gather(1, best), start + window.argmax(1, keepdim=True)


def scan_rows(ws: Workspace, h, labels, *, scale, product_tile):
    r"""A chunk's logits as one row-major ``rows x V`` block, left as ``e = exp(z - m)`` for :func:`rows_gradient`.

    The fast path of the plain head (no softcap, no smoothing): a few
    element-wise passes over the whole block instead of a dozen per tile (on
    a loaded machine every parallel pass waits for its slowest thread).
    ``m`` is the row maximum (``z - m <= 0``: ``exp`` never overflows); one
    maximum per row is set apart (``-inf`` before ``exp``, so the rest is
    summed without it and keeps its digits, then put back as
    ``exp(top - m)``: 1, or 0 for a row of masked classes).  Returns
    ``(RowStats, z_y)``; ``z_y`` is read before the shift (``z_y <= m`` exactly).
    """
    rows, num_classes = h.shape[0], ws.weight.shape[0]
    x = ws.block[: rows * num_classes].view(rows, num_classes)
    ws.begin_chunk(h)
    for lo, hi in spans(num_classes, product_tile):  # strided views: the products write in place
        ws.logits(ws.weight[lo:hi], lo, hi, x[:, lo:hi], scale)
    top, peak_at = _peaks(x)
    target = x.gather(1, labels.clamp(0, num_classes - 1)[:, None]).squeeze(1)
    frame = torch.nan_to_num(top, nan=0.0, posinf=0.0, neginf=0.0)
    x.sub_(frame).scatter_(1, peak_at, -math.inf).exp_()
    rest = x.sum(1, keepdim=True)
    peak = torch.exp(top - frame)
    x.scatter_(1, peak_at, peak)
    top, frame, rest, peak = top.squeeze(1), frame.squeeze(1), rest.squeeze(1), peak.squeeze(1)
    sum_exp = rest + peak
    # log1p(rest + peak - 1): no 1 + tiny rounded away (peak = 1 wherever a finite logit exists).
    log_sum = torch.where(sum_exp > 0, torch.log1p(rest + (peak - 1)), 0.0)
    return RowStats(top, frame, log_sum, sum_exp, None, None), target


def rows_gradient(ws: Workspace, grads, rows, log_sum, alpha, index, onehot, *, product_tile, start, stop,
                  first_chunk):
    r"""``G = alpha_i e^{-\log S_i} e + onehot_i [j = index_i]`` in place of the block of :func:`scan_rows`, into `grads`.

    ``e^{-log S} <= 1`` and ``e <= 1``: the product never overflows.
    """
    num_classes = ws.weight.shape[0]
    g = ws.block[: rows * num_classes].view(rows, num_classes)
    g.mul_((alpha * torch.exp(-log_sum))[:, None]).scatter_add_(1, index[:, None], onehot[:, None])
    for lo, hi in spans(num_classes, product_tile):
        grads.add_tile(g[:, lo:hi], ws.weight[lo:hi], lo, hi, start, stop, first_chunk)
    grads.end_chunk(start, stop)


def target_logits(p: Partials, labels, vocab_tile) -> torch.Tensor:
    """``z_y`` per token, read from the very tile values the maxima were taken from (so ``z_y <= m`` exactly)."""
    which = torch.div(labels, vocab_tile, rounding_mode="floor").clamp_(0, p.picked.shape[0] - 1)
    return p.picked.gather(0, which[None, :]).squeeze(0)


# --------------------------------------------------------------------------- the gradient of one tile


def tile_gradient(x, shift, alpha, *, onehot=None, index=None, smoothing=None, chain=None):
    r"""Turn the shifted logits ``x = z - m_k`` into the logit gradient, in place.

    ``G = chain * (alpha_i * exp(x - shift_i) - smoothing_ij + onehot_i [j = index_i])``
    with ``exp(x - shift) = exp(z - lse) = p`` when ``shift = lse - m_k``
    (``<= 1``: no overflow).  `smoothing` is ``(beta, a)`` for
    ``beta_i a_j`` (``a`` None: ``beta_i`` alone); `onehot` values are added at
    `index` (0 where the target is in another tile).  (``alpha`` is not folded
    into the exponent as ``exp(x - shift + log alpha)``: that saves a pass but
    rounds, and a single class would no longer get its exact zero gradient.)
    """
    x.sub_(shift[:, None]).exp_().mul_(alpha[:, None])
    if smoothing is not None:
        beta, a = smoothing
        if a is None:
            x.sub_(beta[:, None])
        else:
            x.addr_(beta, a, alpha=-1)
    if onehot is not None:
        x.scatter_add_(1, index[:, None], onehot[:, None])
    if chain is not None:
        x.mul_(chain)
    return x


def softcap_chain(out, z, softcap, scale):
    r"""``d z / d x = (1 - t^2) scale`` with ``t = tanh(x / cap) = z / (cap scale)``, into `out`; `scale` folded out."""
    torch.mul(z, 1.0 / (softcap * scale), out=out)
    return torch.addcmul(torch.ones((), dtype=out.dtype, device=out.device), out, out, value=-1, out=out)


class Gradients:
    """Where the three gradients of one call accumulate, tile by tile and chunk by chunk.

    float32/float64 products accumulate in the gradients' own memory (the first
    tile or chunk writes, the next ones add).  float16/bfloat16 gradients
    accumulate in float32 (a ``V x D`` float32 buffer for the weight, a
    ``chunk x D`` one for the hidden rows) and are rounded once at the end of
    the forward pass (an upstream gradient other than 1 then scales the rounded
    values: a second rounding, exact for powers of two such as loss scales).
    """

    def __init__(self, ws: Workspace, hidden, weight, bias, needs, chunk_rows):
        self.ws = ws
        device, low = hidden.device, ws.low_precision
        self.hidden_grad = torch.empty(hidden.shape, dtype=hidden.dtype, device=device) if needs[0] else None
        self.hidden_acc = (torch.empty(chunk_rows, hidden.shape[1], dtype=torch.float32, device=device)
                           if needs[0] and low else None)
        self.weight_grad = None
        if needs[1]:
            if low:
                self.weight_grad = torch.zeros(weight.shape, dtype=torch.float32, device=device)
            else:  # written by the first chunk; zeros only if there is no chunk
                self.weight_grad = (torch.empty if hidden.shape[0] else torch.zeros)(
                    weight.shape, dtype=weight.dtype, device=device)
        self.bias_grad = torch.zeros(weight.shape[0], dtype=ws.dtype, device=device) \
            if needs[2] and bias is not None else None
        self.weight, self.bias, self.hidden = weight, bias, hidden

    def add_tile(self, g, w, lo, hi, start, stop, first_chunk):
        """``grad_hidden[start:stop] += g w``, ``grad_weight[lo:hi] += g^T h``, ``grad_bias[lo:hi] += sum_i g``."""
        ws = self.ws
        if self.bias_grad is not None:
            self.bias_grad[lo:hi] += g.sum(0)
        if self.hidden_grad is None and self.weight_grad is None:
            return
        if ws.low_precision and not ws.convert:  # native low-precision products, float32 accumulation
            gp = ws.product[: g.numel()].view(g.shape).copy_(g)
            if self.hidden_acc is not None:
                acc = self.hidden_acc[: stop - start]
                if lo == 0:
                    acc.copy_(gp @ w)
                else:
                    acc.add_(gp @ w)
            if self.weight_grad is not None:
                self.weight_grad[lo:hi].add_(gp.t() @ ws.h)
            return
        if self.hidden_acc is not None:
            self.hidden_acc[: stop - start].addmm_(g, w, beta=0 if lo == 0 else 1)
        elif self.hidden_grad is not None and lo == 0:  # the first tile writes (its rows are uninitialised)
            torch.mm(g, w, out=self.hidden_grad[start:stop])
        elif self.hidden_grad is not None:
            self.hidden_grad[start:stop].addmm_(g, w)
        if self.weight_grad is not None:
            if first_chunk and not ws.low_precision:
                torch.mm(g.t(), ws.h, out=self.weight_grad[lo:hi])
            else:
                self.weight_grad[lo:hi].addmm_(g.t(), ws.h)

    def end_chunk(self, start, stop):
        if self.hidden_acc is not None:
            self.hidden_grad[start:stop].copy_(self.hidden_acc[: stop - start])

    def result(self):
        weight_grad = None if self.weight_grad is None else self.weight_grad.to(self.weight.dtype)
        bias_grad = None if self.bias_grad is None else self.bias_grad.to(self.bias.dtype)
        return self.hidden_grad, weight_grad, bias_grad
