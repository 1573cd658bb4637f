r"""``linear_cross_entropy``: the loss of the language-model head, with its gradients formed in the forward pass."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from crossent._rules import CrossEntropyOptions

from .. import _checks, _plain
from . import _blocks, _head


class _Config(NamedTuple):
    options: CrossEntropyOptions
    head: _head.HeadOptions
    chunk_size: int
    vocab_tile: int
    product_tile: int  # classes per product in the whole-row fast path (all of them unless vocab_tile is given)


class _Rules(NamedTuple):
    """The per-call constants of the rules, as tensors of the compute dtype on the hidden's device."""

    kept: torch.Tensor
    row_weight: torch.Tensor  # w_y on kept rows (1 without class weights), 0 on ignored ones
    denominator: torch.Tensor
    coef: torch.Tensor | None  # the smoothing coefficients eps/V w_c (None without smoothing)
    coef_sum: torch.Tensor | None  # their sums per tile
    weight_total: float | torch.Tensor  # sum_c w_c (V without class weights)
    class_weight: torch.Tensor | None
    clamp: bool  # masked classes (-inf bias) under smoothing
    masked_positive: bool  # ... one of which has a positive smoothing coefficient: the loss is +inf


def _rules(labels, bias, class_weight, options, dtype, num_classes, vocab_tile, softcap=None) -> _Rules:
    kept = _head.kept_rows(labels, options.ignore_index)
    cw = None if class_weight is None else class_weight.detach().to(dtype)
    if cw is None:
        row_weight = kept.to(dtype)
    else:
        row_weight = torch.where(kept, cw[torch.where(kept, labels, 0)], 0.0)
    eps = options.label_smoothing
    coef = coef_sum = None
    clamp = masked_positive = False
    if eps:
        coef = (cw if cw is not None else torch.ones(num_classes, dtype=dtype, device=labels.device)) * (
            eps / num_classes)
        coef_sum = torch.stack([coef[lo:hi].sum() for lo, hi in _blocks.spans(num_classes, vocab_tile)])
        if bias is not None and softcap is None:  # softcap maps a -inf bias to the finite logit -cap: no mask
            masked = bias.detach() == -math.inf
            clamp = bool(masked.any())
            masked_positive = clamp and bool((coef[masked] > 0).any())
    weight_total = float(num_classes) if cw is None else cw.sum()
    return _Rules(kept, row_weight, row_weight.sum(), coef, coef_sum, weight_total, cw, clamp, masked_positive)


def _row_scale(rules: _Rules, reduction):
    """What each kept row's loss is multiplied by in the reduction: 1, or 1/denominator (0 for the empty mean)."""
    if reduction != "mean":
        return rules.kept.to(rules.row_weight.dtype)
    positive = rules.denominator > 0
    scale = torch.where(positive, 1.0 / torch.where(positive, rules.denominator, 1.0), 0.0)
    return torch.where(rules.kept, scale, 0.0)


def _row_losses(stats: _blocks.RowStats, target, rules: _Rules, kept, row_weight, options):
    r"""``(1-eps) w_y (log S - (z_y - m)) + eps/V (W log S - sum_c w_c (z_c - m)) + zeta lse^2`` on kept rows.

    The target term is formed coefficient first and halved, ``c log S - 2 (c (z_y/2 - m/2))``, so that
    neither the difference nor its product overflows near the dtype's maximum; a zero coefficient
    counts 0 even against a masked (-inf) target.
    """
    eps = options.label_smoothing
    c1 = (1 - eps) * row_weight
    log_sum = stats.log_sum
    half_gap = target * 0.5 - stats.frame * 0.5
    rows = torch.where(c1 != 0, c1 * log_sum - 2.0 * (c1 * half_gap), 0.0)
    if eps:
        rows = rows + (eps / rules.coef.numel()) * rules.weight_total * log_sum - stats.smooth
        if rules.masked_positive:
            rows = rows + math.inf
    lse = stats.lse
    if options.z_loss:
        rows = rows + options.z_loss * lse.square()
    return torch.where(kept, rows, 0.0), c1


def _logit_coefficients(lse, c1, scale, rules: _Rules, options, head):
    """Per row: alpha (times p), the one-hot value and the smoothing beta of ``dL/dx`` (the 1/T folded in)."""
    eps = options.label_smoothing
    inv_t = 1.0 / head.temperature
    a = c1 + (eps / (rules.coef.numel() if eps else 1)) * rules.weight_total
    if options.z_loss:
        a = a + 2.0 * options.z_loss * lse
    alpha = scale * a * inv_t
    onehot = -(scale * c1) * inv_t
    beta = scale * inv_t if eps else None
    return alpha, onehot, beta


def _smoothing(beta, rules: _Rules, options, lo, hi):
    if beta is None:
        return None
    if rules.class_weight is None:
        return beta * (options.label_smoothing / rules.coef.numel()), None
    return beta, rules.coef[lo:hi]


def _tile_onehot(labels, kept, onehot, lo, hi):
    in_tile = kept & (labels >= lo) & (labels < hi)
    return (labels - lo).clamp(0, hi - lo - 1), torch.where(in_tile, onehot, 0.0)


def _backprop_block(ws, grads, p, labels, kept, frame, log_sum, alpha, onehot, beta, rules, config, start, stop,
                    first_chunk):
    """The gradient of one chunk from its kept block of shifted logits ``z - m_k`` (no new products of h W^T)."""
    rows, head = stop - start, config.head
    for k, (lo, hi) in enumerate(_blocks.spans(ws.weight.shape[0], config.vocab_tile)):
        x = ws.view(ws.block, rows, lo, hi, start=rows * lo)
        chain = None
        if head.softcap is not None:
            z = torch.add(x, p.frame[k][:, None], out=ws.view(ws.aux, rows, lo, hi))
            chain = _blocks.softcap_chain(z, z, head.softcap, 1.0 / head.temperature)
        index, values = _tile_onehot(labels, kept, onehot, lo, hi)
        # (m - m_k) + log S, never lse - m_k: lse = m + log S rounds at a large offset
        g = _blocks.tile_gradient(x, (frame - p.frame[k]) + log_sum, alpha, onehot=values, index=index,
                                  smoothing=_smoothing(beta, rules, config.options, lo, hi), chain=chain)
        grads.add_tile(g, ws.weight_tile(lo, hi), lo, hi, start, stop, first_chunk)
    grads.end_chunk(start, stop)


def _backprop_recompute(ws, grads, h, labels, kept, frame, log_sum, alpha, onehot, beta, rules, config, start,
                        stop, first_chunk):
    """The gradient of one chunk, recomputing each tile of logits (reduction="none", or a second backward)."""
    rows, head = stop - start, config.head
    ws.begin_chunk(h)
    for lo, hi in _blocks.spans(ws.weight.shape[0], config.vocab_tile):
        x = ws.view(ws.tile, rows, lo, hi)
        w = ws.weight_tile(lo, hi)
        chain = None
        if head.softcap is None:
            ws.logits(w, lo, hi, x, 1.0 / head.temperature)
        else:
            t = ws.logits(w, lo, hi, x, 1.0 / head.softcap).tanh_()
            chain = torch.addcmul(torch.ones((), dtype=t.dtype, device=t.device), t, t, value=-1,
                                  out=ws.view(ws.aux, rows, lo, hi))
            t.mul_(head.softcap / head.temperature)
        index, values = _tile_onehot(labels, kept, onehot, lo, hi)
        x.sub_(frame[:, None])  # z - m is exact; then exp(z - m - log S)
        g = _blocks.tile_gradient(x, log_sum, alpha, onehot=values, index=index,
                                  smoothing=_smoothing(beta, rules, config.options, lo, hi), chain=chain)
        grads.add_tile(g, w, lo, hi, start, stop, first_chunk)
    grads.end_chunk(start, stop)


def _forward(hidden, weight, bias, labels, class_weight, config: _Config, needs):
    """Row losses, per-row lse/z-loss/correct, the rules, and the gradients when `needs` asks for them.

    For ``"sum"``/``"mean"`` with a gradient wanted, each chunk's block of
    logits is kept while its gradient is formed right after its lse is known:
    the products ``h W^T``, ``G W`` and ``G^T h`` once each (6 N D V flops).
    """
    options, head, chunk_size, vocab_tile, product_tile = config
    n, num_classes = hidden.shape[0], weight.shape[0]
    dtype = _checks.compute_dtype(hidden.dtype)
    rules = _rules(labels, bias, class_weight, options, dtype, num_classes, vocab_tile, head.softcap)
    precompute = options.reduction != "none" and any(needs)
    fast = precompute and dtype == hidden.dtype and head.softcap is None and not options.label_smoothing
    ws = _blocks.Workspace(hidden, weight, bias, chunk_size, vocab_tile, block=precompute, tiles=not fast)
    grads = _blocks.Gradients(ws, hidden, weight, bias, needs, min(chunk_size, n)) if precompute else None
    scale = _row_scale(rules, options.reduction) if precompute else None
    rows = torch.empty(n, dtype=dtype, device=hidden.device)
    frame = torch.empty(n, dtype=dtype, device=hidden.device)
    log_sum = torch.empty(n, dtype=dtype, device=hidden.device)
    correct = torch.empty(n, dtype=torch.bool, device=hidden.device)
    bad = torch.zeros(n, dtype=torch.bool, device=hidden.device)
    for number, (start, stop) in enumerate(_blocks.spans(n, chunk_size)):
        h, y, kept = hidden[start:stop], labels[start:stop], rules.kept[start:stop]
        if fast:
            stats, target = _blocks.scan_rows(ws, h, y, scale=1.0 / head.temperature, product_tile=product_tile)
        else:
            p = _blocks.scan_chunk(ws, h, y, scale=1.0 / head.temperature, softcap=head.softcap,
                                   vocab_tile=vocab_tile, coef=rules.coef, coef_sum=rules.coef_sum, keep=precompute,
                                   clamp=rules.clamp)
            stats = _blocks.combine_partials(p)
            target = _blocks.target_logits(p, y, vocab_tile)
        rows[start:stop], c1 = _row_losses(stats, target, rules, kept, rules.row_weight[start:stop], options)
        frame[start:stop], log_sum[start:stop] = stats.frame, stats.log_sum
        correct[start:stop] = kept & (target == stats.frame) & (stats.sum_exp > 0)
        bad[start:stop] = ~(stats.top < math.inf) | ((stats.sum_exp == 0) & kept)
        if fast:
            alpha, onehot, _ = _logit_coefficients(stats.lse, c1, scale[start:stop], rules, options, head)
            _blocks.rows_gradient(ws, grads, stop - start, stats.log_sum, alpha, y.clamp(0, num_classes - 1),
                                  torch.where(kept, onehot, 0.0), product_tile=product_tile, start=start, stop=stop,
                                  first_chunk=number == 0)
        elif precompute:
            alpha, onehot, beta = _logit_coefficients(stats.lse, c1, scale[start:stop], rules, options, head)
            _backprop_block(ws, grads, p, y, kept, stats.frame, stats.log_sum, alpha, onehot, beta, rules, config,
                            start, stop, number == 0)
    if bool(bad.any()):  # one sync: NaN/+inf logits, or a kept row masked everywhere
        _raise_bad(hidden, weight, bias, rules.kept, head, bad)
    return rows, frame, log_sum, correct, rules, None if grads is None else grads.result()


def _raise_bad(hidden, weight, bias, kept, head, bad):
    """Name the first bad row and its defect (rare: recomputes that row's logits)."""
    row = int(torch.nonzero(bad)[0, 0])
    logits = _head.full_logits(hidden[row: row + 1].detach(), weight.detach(),
                               None if bias is None else bias.detach(), head)
    _head.raise_bad_row(row, float(logits.amax()), bool(kept[row]))


def _recompute_gradients(hidden, weight, bias, labels, class_weight, frame, log_sum, config: _Config, needs,
                         coefficient):
    """The three gradients for per-row upstream coefficients (recomputing the logits: 8 N D V flops in all)."""
    options, head, chunk_size, vocab_tile, _ = config
    n, num_classes = hidden.shape[0], weight.shape[0]
    dtype = _checks.compute_dtype(hidden.dtype)
    rules = _rules(labels, bias, class_weight, options, dtype, num_classes, vocab_tile, head.softcap)
    ws = _blocks.Workspace(hidden, weight, bias, chunk_size, vocab_tile)
    grads = _blocks.Gradients(ws, hidden, weight, bias, needs, min(chunk_size, n))
    scale = torch.where(rules.kept, coefficient.to(dtype), 0.0)
    c1 = (1 - options.label_smoothing) * rules.row_weight
    for number, (start, stop) in enumerate(_blocks.spans(n, chunk_size)):
        lse = frame[start:stop] + log_sum[start:stop]
        alpha, onehot, beta = _logit_coefficients(lse, c1[start:stop], scale[start:stop], rules, options, head)
        _backprop_recompute(ws, grads, hidden[start:stop], labels[start:stop], rules.kept[start:stop],
                            frame[start:stop], log_sum[start:stop], alpha, onehot, beta, rules, config, start, stop,
                            number == 0)
    return grads.result()


def _reduce_stats(rows, frame, log_sum, correct, rules: _Rules, options):
    """The loss and the stats, per token for "none", else reduced as the loss (sum, or over the denominator)."""
    kept, dtype = rules.kept, rows.dtype
    lse = torch.where(kept, frame + log_sum, 0.0)
    z_rows = torch.where(kept, options.z_loss * lse.square(), 0.0)
    if options.reduction == "none":
        return rows, (lse, z_rows, correct)
    loss = _plain.reduce(rows, rules.denominator, options.reduction)
    scale = _plain.reduce(torch.ones((), dtype=dtype, device=rows.device), rules.denominator, "mean") \
        if options.reduction == "mean" else 1.0
    weighted = rules.row_weight
    stats = ((weighted * lse).sum() * scale, z_rows.sum() * scale, (weighted * correct).sum() * scale)
    return loss, stats


def _is_one(grad):
    traced = type(grad) is not torch.Tensor or torch.compiler.is_compiling()
    return not traced and grad.numel() == 1 and float(grad) == 1.0


class _LinearCrossEntropyFunction(torch.autograd.Function):
    """Forward: the loss, the stats and (for sum/mean) the gradients.  Backward: scale them, or recompute.

    The gradients formed in forward are held by the node (not saved tensors),
    handed on by the first backward after an in-place scaling (no copy: a
    leaf adopts them as its ``.grad``), and dropped; a later backward through
    a retained graph forms them again as the forward did (the same numbers).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, class_weight, config, needs):
        rows, frame, log_sum, correct, rules, grads = _forward(hidden, weight, bias, labels, class_weight, config,
                                                               needs)
        loss, stats = _reduce_stats(rows, frame, log_sum, correct, rules, config.options)
        ctx.save_for_backward(hidden, weight, bias, labels, class_weight, frame, log_sum)
        ctx.config = config
        ctx.precomputed = grads
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*stats)
        return (loss.to(hidden.dtype), *stats)

    @staticmethod
    def backward(ctx, grad_loss, *_):
        if grad_loss is None:
            return (None,) * 7
        hidden, weight, bias, labels, class_weight, frame, log_sum = ctx.saved_tensors
        config = ctx.config
        options = config.options
        if torch.is_grad_enabled():  # create_graph=True: differentiate the full logits
            wanted = [t for t, need in zip((hidden, weight, bias), ctx.needs_input_grad) if need]
            loss = _head.plain_loss(hidden, weight, bias, labels, class_weight, options, config.head)
            grads = iter(torch.autograd.grad(loss, wanted, grad_loss, create_graph=True))
            return (*(next(grads) if need else None for need in ctx.needs_input_grad[:3]),) + (None,) * 4
        if options.reduction == "none":
            grads = _recompute_gradients(hidden, weight, bias, labels, class_weight, frame, log_sum, config,
                                         ctx.needs_input_grad[:3], grad_loss.reshape(-1).to(frame.dtype))
            return (*grads,) + (None,) * 4
        if ctx.precomputed is not None:
            grads, ctx.precomputed = ctx.precomputed, None
        else:  # a second backward through a retained graph: the forward's own computation again, so the same
            # numbers as the first backward's (autograd's gradcheck asks for that)
            grads = _forward(hidden, weight, bias, labels, class_weight, config, ctx.needs_input_grad[:3])[5]
        if not _is_one(grad_loss):
            for g in grads:
                if g is not None:
                    g.mul_(grad_loss.to(g.dtype))
        return (*grads,) + (None,) * 4


def linear_cross_entropy(hidden, weight, target, bias=None, *, ignore_index=-100, label_smoothing=0.0,
                         class_weight=None, z_loss=0.0, softcap=None, temperature=1.0, reduction="mean",
                         return_stats=False, chunk_size=None, vocab_tile=None):
    r"""Cross-entropy of the language-model head ``softcap(h W^T + b) / T``, without the ``N x V`` logits.

    .. math::

        z = \operatorname{softcap}(h W^\top + b) / T, \qquad
        L_i = (1-\varepsilon) w_{y_i}(\ell_i - z_{iy_i})
              + \tfrac{\varepsilon}{V}\textstyle\sum_c w_c(\ell_i - z_{ic}) + \zeta \ell_i^2,

        \frac{\partial L}{\partial h} = G W,\quad
        \frac{\partial L}{\partial W} = G^\top h,\quad
        \frac{\partial L}{\partial b} = \textstyle\sum_i G_i,\quad
        G_{ij} = s_i \frac{\partial z_{ij}}{\partial x_{ij}}
        \big(A_i p_{ij} - (1-\varepsilon) w_{y_i}[j = y_i] - \tfrac{\varepsilon}{V} w_j\big),

    with :math:`\ell_i` the log-sum-exp of row :math:`i`, :math:`p = \operatorname{softmax}(z)`,
    :math:`A_i = (1-\varepsilon) w_{y_i} + \tfrac{\varepsilon}{V}\sum_c w_c + 2\zeta\ell_i`,
    :math:`\partial z/\partial x = (1 - \tanh^2(x/c))/T` (``softcap=c``; ``1/T`` without),
    and :math:`s_i` the reduction's scale times the upstream gradient (0 for an
    ignored row).  The rules (smoothing mass, class weights and the ``"mean"``
    denominator :math:`\sum_i w_{y_i}` of ``F.cross_entropy``, ``z_loss``
    :math:`\zeta\ell^2` per kept token, not class-weighted, empty mean = 0) are
    those of :mod:`crossent._rules`.

    How: the tokens are taken in chunks (``chunk_size``, default
    :func:`default_chunk_size`: at most 512 and three sixteenths of the batch) and each chunk's logits in tiles
    of ``vocab_tile`` classes (default: about 2 MiB).  Each tile's logits are
    shifted by the tile maximum (``z - m_k <= 0``: ``exp`` never overflows; a
    large common offset cancels exactly) and reduced to a few sums per token,
    which then merge into the row's frame.  For ``"sum"``/``"mean"`` with a
    gradient wanted, the chunk's block of shifted logits (``chunk_size x V``)
    is kept until its lse is known and then turned, tile by tile, into the
    logit gradient and multiplied into the three gradients during the forward
    pass (the products ``h W^T``, ``G W``, ``G^T h`` once each: 6 N D V
    flops); backward only scales them by the upstream gradient.  Without
    softcap and smoothing (float32/float64) that block is handled whole
    (:func:`~crossent.torch.linear._blocks.scan_rows`): one product per chunk
    (per ``vocab_tile`` if given) and a few passes over the block, so that a
    loaded machine does not wait on hundreds of small parallel calls.
    ``"none"`` cannot know its per-token upstream gradients in forward: its
    backward recomputes the logits (8 N D V flops in all), and so is exact for
    any per-token upstream gradient.  Under ``torch.no_grad()`` (or when no
    input requires grad) only the forward products run.  float16/bfloat16
    inputs are computed in float32 (the softmax and every accumulation across
    tiles and chunks; on the CPU the products too, as bfloat16 matrix products
    are slow there), their gradients rounded once at the end of the forward
    pass (and again when scaled by an upstream gradient that is not a power of two).

    Memory: one ``chunk_size x V`` block in the compute dtype while gradients
    are formed in forward (21 MiB for 1024 tokens at V = 32768), otherwise two
    ``chunk_size x vocab_tile`` tiles; plus vectors of length N and V, and for
    float16/bfloat16 a float32 ``V x D`` accumulator of the weight gradient.

    Args:
        hidden: ``(N, D)`` or ``(B, T, D)`` features.
        weight: ``(V, D)`` projection (the ``nn.Linear`` layout).
        target: integer classes of shape ``hidden.shape[:-1]``.
        bias: optional ``(V,)`` (``-inf`` masks a class).
        ignore_index, label_smoothing, reduction: as in ``F.cross_entropy``.
        class_weight: optional ``(V,)`` class weights (``F.cross_entropy``'s
            ``weight``); a class weight that requires grad takes the full-logits path.
        z_loss: :math:`\zeta`, the coefficient of :math:`\ell^2` (PaLM).
        softcap: ``c`` of ``c tanh(x / c)`` applied to the logits (Gemma 2/3), or None.
        temperature: ``T``: the logits are divided by it (after the softcap).
        return_stats: also return ``{"lse", "z_loss", "correct"}`` (detached):
            per token for ``"none"`` (``correct`` is bool: the target's logit is
            the largest, ties counting as correct; 0/False on ignored tokens),
            otherwise reduced like the loss: ``"lse"`` and ``"correct"`` summed
            with the target's class weight and divided by the loss's
            denominator (plain means over kept tokens without class weights:
            ``correct`` is the token accuracy), ``"z_loss"`` exactly the
            z-loss term included in the loss.  Computed in the compute dtype.
        chunk_size: tokens per chunk (default :func:`default_chunk_size`).
        vocab_tile: classes per tile (default: a tile of about 2 MiB).

    Returns:
        The loss in the hidden's dtype (shape of `target` for ``"none"``), or
        ``(loss, stats)`` with `return_stats`.

    An all-ignored batch gives 0 for ``mean`` (torch: NaN), with zero gradients.
    Second derivatives (``create_graph=True``) and ``torch.func`` transforms go
    through the full logits with plain torch ops.

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
        >>> loss, stats = linear_cross_entropy(h, w, y, z_loss=1e-4, return_stats=True)
        >>> sorted(stats), bool(0 <= stats["correct"] <= 1)
        (['correct', 'lse', 'z_loss'], True)
    """
    options = CrossEntropyOptions.check(label_smoothing=label_smoothing, ignore_index=ignore_index, z_loss=z_loss,
                                        reduction=reduction)
    head = _head.HeadOptions.check(softcap, temperature)
    _head.check_linear_arguments(hidden, weight, target, bias, chunk_size, vocab_tile)
    head.check_range(_checks.compute_dtype(hidden.dtype))
    if not isinstance(return_stats, bool):
        raise TypeError(f"`return_stats` must be a bool, got {return_stats!r}.")
    num_classes = weight.shape[0]
    class_weight = _head.check_class_weight(class_weight, hidden, num_classes)
    hidden2d = hidden.reshape(-1, hidden.shape[-1])
    labels = _checks.class_indices(target)
    _checks.check_class_labels(labels, num_classes, options.ignore_index)
    if _checks.under_transform() or (class_weight is not None and class_weight.requires_grad):
        loss, stats = _head.plain_loss_and_stats(hidden2d, weight, bias, labels, class_weight, options, head)
        loss = loss.to(hidden.dtype)
    else:
        chunk, tile = _head.block_sizes(hidden2d, num_classes, chunk_size, vocab_tile)
        config = _Config(options, head, chunk, tile, num_classes if vocab_tile is None else tile)
        grad_on = torch.is_grad_enabled()
        needs = tuple(bool(grad_on and t is not None and t.requires_grad) for t in (hidden2d, weight, bias))
        if any(needs):
            loss, *stats = _LinearCrossEntropyFunction.apply(hidden2d, weight, bias, labels, class_weight, config,
                                                             needs)
        else:
            rows, frame, log_sum, correct, rules, _ = _forward(hidden2d, weight, bias, labels, class_weight, config,
                                                               needs)
            loss, stats = _reduce_stats(rows, frame, log_sum, correct, rules, options)
            loss = loss.to(hidden.dtype)
    if options.reduction == "none":
        loss = loss.reshape(target.shape)
        stats = tuple(s.reshape(target.shape) for s in stats)
    if not return_stats:
        return loss
    return loss, dict(zip(("lse", "z_loss", "correct"), stats))
