r"""The language-model head: ``cross_entropy(hidden @ weight.T + bias, target)`` without the ``N x V`` logits.

:func:`linear_cross_entropy` visits the logits in blocks of (up to 4096
tokens) x (a tile of classes), with plain torch ops on any device.  Forward
keeps, per row, the running maximum :math:`m` and :math:`\log\sum_c e^{x_c - m}`;
when a tile raises the maximum, the sums so far are moved into the new frame
(``S *= exp(m_old - m_new)``, ``sum(x - m) -= k (m_new - m_old)``), so every
difference is taken in the frame of the running maximum and a large common
offset of the logits cancels exactly.  Backward recomputes each block and
turns it in place into the block of the logit gradient.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from crossent._rules import CrossEntropyOptions

from . import _checks, _plain

__all__ = ["linear_cross_entropy", "default_chunk_size"]

# Blocks of (up to 4096 tokens) x (a tile of classes), one block of softmax-dtype logits
# being about 8 MiB: the products are still wide enough to run near the machine's
# matrix-multiply peak (16 MiB blocks were 3-5% faster but left the process high-water
# mark at 0.09-0.12x that of F.linear + F.cross_entropy at (N, D, V) = (1024, 2048,
# 128256); 8 MiB gives 0.05x).
_MAX_CHUNK_TOKENS = 4096
_TILE_BYTES = 8 * 2**20


def default_chunk_size(num_tokens: int) -> int:
    """Tokens per chunk in :func:`linear_cross_entropy`: all of them up to 4096.

    A larger batch is split into the fewest chunks of at most 4096 tokens, of
    equal length up to rounding (the last one is shorter by fewer tokens than
    there are chunks), so that no chunk is a small remainder.

    Examples:
        >>> default_chunk_size(1024), default_chunk_size(4096), default_chunk_size(5000)
        (1024, 4096, 2500)
    """
    num_tokens = max(int(num_tokens), 1)
    num_chunks = -(-num_tokens // _MAX_CHUNK_TOKENS)
    return -(-num_tokens // num_chunks)


def _default_vocab_tile(chunk_tokens, num_classes, element_size):
    """Classes per tile: ``chunk_tokens x tile`` softmax-dtype logits of about 8 MiB, a multiple of 128."""
    classes = _TILE_BYTES // (max(chunk_tokens, 1) * element_size)
    return min(max(128, classes - classes % 128), num_classes)


def _spans(total, step):
    return [(start, min(start + step, total)) for start in range(0, total, step)]


class _TileWorkspace:
    """The reused tile buffers of one pass: the product's dtype and, for float16/bfloat16, a float32 one.

    Both are flat, so that a ``rows x cols`` view of their beginning is contiguous
    for every tile, the short last ones included (``out=`` then writes in place).
    """

    def __init__(self, hidden, chunk_size, vocab_tile):
        rows = min(chunk_size, hidden.shape[0])
        self.product_dtype = hidden.dtype
        self.softmax_dtype = _checks.compute_dtype(hidden.dtype)
        size = rows * vocab_tile
        self.product = torch.empty(size, dtype=self.product_dtype, device=hidden.device)
        self.softmax = (self.product if self.softmax_dtype == self.product_dtype
                        else torch.empty(size, dtype=self.softmax_dtype, device=hidden.device))

    def logits(self, h, weight, bias, lo, hi):
        """``h @ weight[lo:hi].T + bias[lo:hi]`` in the product's dtype, returned as a softmax-dtype view."""
        shape = (h.shape[0], hi - lo)
        out = self.product[: shape[0] * shape[1]].view(shape)
        if bias is None:
            torch.mm(h, weight[lo:hi].t(), out=out)
        else:
            torch.addmm(bias[lo:hi], h, weight[lo:hi].t(), out=out)
        if self.softmax is self.product:
            return out
        return self.softmax[: out.numel()].view(shape).copy_(out)

    def for_product(self, tile):
        """The tile in the product's dtype (a copy into the product buffer for float16/bfloat16)."""
        if tile.dtype == self.product_dtype:
            return tile
        return self.product[: tile.numel()].view(tile.shape).copy_(tile)


def _linear_ce_forward(hidden, weight, bias, labels, kept, options, chunk_size, vocab_tile):
    r"""Pass 1: per row the frame :math:`m`, :math:`\log\sum_c e^{x_c - m}` and the loss, block by block.

    ``row_i = (1 - ε) (log_sum_i - (x_{i,y_i} - m_i)) + ε (log_sum_i - sum_c (x_ic - m_i) / V)``
    (0 for ignored rows).
    """
    n, num_classes = hidden.shape[0], weight.shape[0]
    work = _TileWorkspace(hidden, chunk_size, vocab_tile)
    dtype, device = work.softmax_dtype, hidden.device
    label_smoothing = options.label_smoothing
    running = torch.full((n,), -math.inf, dtype=dtype, device=device)  # the maximum so far
    frame = torch.zeros(n, dtype=dtype, device=device)  # the running maximum where finite, else 0
    sum_exp = torch.zeros(n, dtype=dtype, device=device)  # sum_c exp(x_c - frame) over the classes seen
    # The same sum without the terms that are exactly 1 (the maxima), and their count: log S is then
    # log1p(rest + ties - 1), so a confident row (S = 1 + 1e-10) keeps the digits of its tiny loss.
    rest = torch.zeros(n, dtype=dtype, device=device)
    ties = torch.zeros(n, dtype=dtype, device=device)
    shifted_sum = torch.zeros(n, dtype=dtype, device=device) if label_smoothing else None  # sum_c (x_c - frame)
    target_logit = torch.zeros(n, dtype=dtype, device=device)
    for start, stop in _spans(n, chunk_size):
        h, y, kept_chunk = hidden[start:stop], labels[start:stop], kept[start:stop]
        top, old, new = running[start:stop], frame[start:stop].clone(), frame[start:stop]
        s = sum_exp[start:stop]
        for lo, hi in _spans(num_classes, vocab_tile):
            x = work.logits(h, weight, bias, lo, hi)
            in_tile = kept_chunk & (y >= lo) & (y < hi)
            picked = x.gather(1, (y - lo).clamp_(0, hi - lo - 1)[:, None]).squeeze(1)
            target_logit[start:stop] += torch.where(in_tile, picked, 0.0)
            torch.maximum(top, x.amax(1), out=top)  # NaN propagates, and is reported below
            torch.nan_to_num(top, nan=0.0, posinf=0.0, neginf=0.0, out=new)  # finite maximum, else 0
            # Into the new frame: exp(old - new) <= 1 wherever s > 0 (old was then a real maximum).
            s.copy_(torch.where(s > 0, s * (old - new).exp(), 0.0))
            # The old maxima are not maxima any more where the frame moved up: they join the rest.
            moved = torch.where(s > 0, (old - new).exp(), 0.0)
            r, t = rest[start:stop], ties[start:stop]
            r.copy_(torch.where(new > old, (r + t) * moved, r))
            t.copy_(torch.where(new > old, 0.0, t))
            if shifted_sum is not None:
                shifted_sum[start:stop] -= lo * (new - old)
                shifted_sum[start:stop] += x.sub_(new[:, None]).sum(1)
            else:
                x.sub_(new[:, None])
            # x - m <= 0: exp never overflows; the differences are exact at any common offset.
            s += x.exp_().sum(1)
            at_max = x == 1
            r += torch.where(at_max, 0.0, x).sum(1)
            t += at_max.sum(1)
            old.copy_(new)
    bad = ~(running < math.inf)  # NaN or +inf
    _checks.raise_for_bad_rows(bad, (sum_exp == 0) & kept, "`hidden @ weight.T + bias`")
    # Rows without a finite logit (ignored all_masked ones) get log_sum 0, so backward stays finite.
    log_sum = torch.where(sum_exp > 0, torch.log1p(rest + (ties - 1)), 0.0)  # no 1 + tiny rounded
    rows = torch.zeros(n, dtype=dtype, device=device)
    if label_smoothing < 1:  # (1 - ε) * inf would be NaN at ε = 1 for a masked target
        rows += (1 - label_smoothing) * (log_sum - (target_logit - frame))
    if shifted_sum is not None:
        rows += label_smoothing * (log_sum - shifted_sum / num_classes)
    return torch.where(kept, rows, 0.0), frame, log_sum


def _linear_ce_backward(hidden, weight, bias, labels, kept, frame, log_sum, coefficient, options, chunk_size,
                        vocab_tile, needs):
    r"""Pass 2: recompute each tile of logits and turn it in place into the logit gradient.

    ``d_ij = c_i (exp((x_ij - m_i) - log_sum_i) - (1 - ε) [j = y_i] - ε/V)`` (the softmax in
    the shifted frame, as in forward), then ``grad_hidden += d W_t``, ``grad_weight[t] += d.T h``,
    ``grad_bias[t] += d.sum(0)``.  ``c`` (0 for ignored rows) is the upstream gradient of each row.
    """
    n, num_classes = hidden.shape[0], weight.shape[0]
    work = _TileWorkspace(hidden, chunk_size, vocab_tile)
    dtype, device = work.softmax_dtype, hidden.device
    label_smoothing = options.label_smoothing
    grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=device) if needs[0] else None
    # Written (not accumulated) by the first chunk; zeros only if there is no chunk at all.
    grad_weight = None
    if needs[1]:
        grad_weight = (torch.empty if n else torch.zeros)(weight.shape, dtype=weight.dtype, device=device)
    grad_bias = torch.zeros(num_classes, dtype=dtype, device=device) if needs[2] and bias is not None else None
    coefficient = torch.where(kept, coefficient.to(dtype), 0.0)
    onehot_value = -(1 - label_smoothing) * coefficient
    uniform_value = label_smoothing / num_classes * coefficient
    for start, stop in _spans(n, chunk_size):
        h, y, kept_chunk = hidden[start:stop], labels[start:stop], kept[start:stop]
        frame_chunk, log_sum_chunk = frame[start:stop, None], log_sum[start:stop, None]
        coefficient_chunk = coefficient[start:stop, None]
        for lo, hi in _spans(num_classes, vocab_tile):
            d = work.logits(h, weight, bias, lo, hi)
            # exp((x - m) - log_sum) <= 1: the softmax without overflow, then times c.
            d.sub_(frame_chunk).sub_(log_sum_chunk).exp_().mul_(coefficient_chunk)
            if label_smoothing:
                d.sub_(uniform_value[start:stop, None])
            in_tile = kept_chunk & (y >= lo) & (y < hi)
            d.scatter_add_(1, (y - lo).clamp_(0, hi - lo - 1)[:, None],
                           torch.where(in_tile, onehot_value[start:stop], 0.0)[:, None])
            if grad_bias is not None:
                grad_bias[lo:hi] += d.sum(0)
            d = work.for_product(d)
            if grad_hidden is not None:  # beta=0: the uninitialised rows are ignored, not multiplied
                grad_hidden[start:stop].addmm_(d, weight[lo:hi], beta=0 if lo == 0 else 1)
            if grad_weight is not None:
                if start == 0:
                    torch.mm(d.t(), h, out=grad_weight[lo:hi])
                else:
                    grad_weight[lo:hi].addmm_(d.t(), h)
    return grad_hidden, grad_weight, None if grad_bias is None else grad_bias.to(bias.dtype)


def _plain_linear_cross_entropy(hidden, weight, bias, labels, options):
    """The same loss through the full logits and plain differentiable ops (second derivatives, torch.func)."""
    logits = F.linear(hidden, weight, bias).to(_checks.compute_dtype(hidden.dtype))
    rows, denominator = _plain.softmax_cross_entropy_rows(logits, labels, None, options)
    return _plain.reduce(rows, denominator, options.reduction)


def _kept(labels, options):
    return torch.ones_like(labels, dtype=torch.bool) if options.ignore_index is None else labels != options.ignore_index


class _LinearCrossEntropyFunction(torch.autograd.Function):
    """Forward: losses and two numbers per row only.  Backward: the gradients, recomputing the logits.

    Nothing of size ``N x V`` nor any gradient is held between the two, and backward
    modifies nothing it saved, so a retained graph can be run again.  With
    ``create_graph=True`` backward differentiates the full logits instead.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, options, chunk_size, vocab_tile):
        kept = _kept(labels, options)
        rows, frame, log_sum = _linear_ce_forward(hidden, weight, bias, labels, kept, options, chunk_size,
                                                  vocab_tile)
        ctx.save_for_backward(hidden, weight, bias, labels, frame, log_sum)
        ctx.blocks = (options, chunk_size, vocab_tile)
        return _plain.reduce(rows, kept.sum().to(rows.dtype), options.reduction).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, labels, frame, log_sum = ctx.saved_tensors
        options, chunk_size, vocab_tile = ctx.blocks
        if torch.is_grad_enabled():  # create_graph=True: differentiate plain ops
            wanted = [t for t, need in zip((hidden, weight, bias), ctx.needs_input_grad) if need]
            grads = iter(torch.autograd.grad(_plain_linear_cross_entropy(hidden, weight, bias, labels, options),
                                             wanted, grad_loss, create_graph=True))
            return (*(next(grads) if need else None for need in ctx.needs_input_grad[:3]),) + (None,) * 4
        kept = _kept(labels, options)
        coefficient = grad_loss.to(log_sum.dtype)
        if options.reduction == "mean":  # the empty mean: a zero gradient
            count = kept.sum()
            coefficient = torch.where(count > 0, coefficient / count.clamp(min=1), 0.0)
        coefficient = coefficient.expand(hidden.shape[0])
        grads = _linear_ce_backward(hidden, weight, bias, labels, kept, frame, log_sum, coefficient, options,
                                    chunk_size, vocab_tile, ctx.needs_input_grad[:3])
        return (*grads,) + (None,) * 4


def _check_linear_arguments(hidden, weight, target, bias, chunk_size, vocab_tile) -> None:
    for name, tensor in (("hidden", hidden), ("weight", weight)):
        _checks.check_float_tensor(tensor, name)
    if weight.ndim != 2 or weight.shape[0] == 0:
        raise ValueError(f"`weight` must have shape (V, D) with V >= 1, got {tuple(weight.shape)}.")
    if hidden.ndim < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"`hidden` must end with D={weight.shape[1]} features, got shape {tuple(hidden.shape)}.")
    if bias is not None:
        _checks.check_float_tensor(bias, "bias")
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"`bias` must have shape ({weight.shape[0]},), got {tuple(bias.shape)}.")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and (tensor.dtype != hidden.dtype or tensor.device != hidden.device):
            raise TypeError(f"`{name}` must have the dtype and device of `hidden` ({hidden.dtype}, {hidden.device}),"
                            f" got {tensor.dtype}, {tensor.device}.")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        got = getattr(target, "dtype", type(target).__name__)
        raise TypeError(f"`target` must be an integer tensor of class indices, got {got}.")
    if target.shape != hidden.shape[:-1]:
        raise ValueError(f"`target` must have shape {tuple(hidden.shape[:-1])}, got {tuple(target.shape)}.")
    for name, value in (("chunk_size", chunk_size), ("vocab_tile", vocab_tile)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")


def linear_cross_entropy(hidden, weight, target, bias=None, *, ignore_index=-100, label_smoothing=0.0,
                         reduction="mean", chunk_size=None, vocab_tile=None):
    r"""Cross-entropy of a linear projection, computed tile by tile without the full logits.

    .. math::

        L = \operatorname{CE}(h W^\top + b,\ y), \qquad
        \frac{\partial L}{\partial h} = G W,\quad
        \frac{\partial L}{\partial W} = G^\top h,\quad
        \frac{\partial L}{\partial b} = \textstyle\sum_i G_i,

    with :math:`G_{ij} = c_i\,(\operatorname{softmax}(x_i)_j - (1-\varepsilon)[j = y_i]
    - \varepsilon/V)`, :math:`c_i` the upstream gradient of row :math:`i`'s loss
    (0 for an ignored row).  The logits are visited in blocks: an outer loop over
    chunks of ``chunk_size`` tokens, an inner one over tiles of ``vocab_tile``
    classes.  The forward pass computes each block of logits once, merges it
    into each row's running maximum :math:`m` and :math:`\log\sum_j e^{x_j - m}`
    (the shifted frame: exact at any common offset of the logits) and keeps
    only the loss and those two numbers per row; the backward pass recomputes
    each block (so ``8 N D V`` flops in all instead of ``6 N D V``) and turns it
    in place into the block of :math:`G` that feeds the three gradients.  The
    extra memory is one block,

    ``chunk_size x vocab_tile x (4 bytes for float32/float16/bfloat16, 8 for float64)``

    plus, for float16/bfloat16, the same block in the input's dtype (the products
    run in the input's dtype like ``F.linear``, the softmax in float32; the two
    conversions per block cost two extra passes over it), plus vectors of length
    ``N`` and ``V``.  By default ``chunk_size`` is all tokens up to 4096 (see
    :func:`default_chunk_size`) and ``vocab_tile`` the multiple of 128 (at least
    128, at most ``V``) that makes the block about 8 MiB, e.g. 2048 classes for
    1024 float32 tokens.  Long, thin products run far below the machine's
    matrix-multiply peak, so fewer, larger blocks are faster.

    Matches ``F.cross_entropy(F.linear(hidden, weight, bias), target, ...)``,
    and ``torch.nn.functional.linear_cross_entropy(hidden, weight, target,
    linear_bias=bias, ...)`` (ours has no class weights nor probability targets).
    An all-ignored batch gives 0 for ``mean`` (torch: NaN), with zero gradients.
    Second derivatives (``create_graph=True``) and ``torch.func`` transforms go
    through the full logits with plain torch ops.

    Args:
        hidden: ``(N, D)`` or ``(B, T, D)`` features.
        weight: ``(V, D)`` projection (the ``nn.Linear`` layout).
        target: integer classes of shape ``hidden.shape[:-1]``.
        bias: optional ``(V,)``.
        ignore_index, label_smoothing, reduction: as in :func:`crossent.torch.cross_entropy`.
        chunk_size: tokens per chunk (default :func:`default_chunk_size`).
        vocab_tile: classes per tile (default: a block of about 8 MiB, as above).

    Returns:
        The loss in the hidden's dtype (shape of `target` for ``"none"``).

    Examples:
        >>> import torch
        >>> from crossent.torch import linear_cross_entropy
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
        >>> w = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
        >>> y = torch.tensor([0, 6, 2, -100, 3])
        >>> loss = linear_cross_entropy(h, w, y, chunk_size=2, vocab_tile=3)
        >>> ref = torch.nn.functional.cross_entropy(h @ w.T, y)
        >>> torch.allclose(loss, ref)
        True
        >>> loss.backward(); torch.allclose(w.grad, torch.autograd.grad(ref, w)[0])
        True
    """
    options = CrossEntropyOptions.check(label_smoothing=label_smoothing, ignore_index=ignore_index,
                                        reduction=reduction)
    _check_linear_arguments(hidden, weight, target, bias, chunk_size, vocab_tile)
    hidden2d = hidden.reshape(-1, hidden.shape[-1])
    labels = target.reshape(-1).to(torch.int64).contiguous()
    _checks.check_class_labels(labels, weight.shape[0], options.ignore_index)
    if _checks.under_transform():
        loss = _plain_linear_cross_entropy(hidden2d, weight, bias, labels, options).to(hidden.dtype)
    else:
        chunk_size = default_chunk_size(hidden2d.shape[0]) if chunk_size is None else int(chunk_size)
        if vocab_tile is None:
            softmax_bytes = torch.empty((), dtype=_checks.compute_dtype(hidden.dtype)).element_size()
            vocab_tile = _default_vocab_tile(min(chunk_size, hidden2d.shape[0]), weight.shape[0], softmax_bytes)
        loss = _LinearCrossEntropyFunction.apply(hidden2d, weight, bias, labels, options, chunk_size,
                                                 min(int(vocab_tile), weight.shape[0]))
    return loss.reshape(target.shape) if options.reduction == "none" else loss
