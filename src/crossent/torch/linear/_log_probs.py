r"""``linear_log_probs_and_entropy``: per-token log-probabilities of the targets and entropies, differentiable."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from crossent._rules import check_ignore_index

from .. import _checks
from . import _blocks, _head


class _Config(NamedTuple):
    ignore_index: int | None
    head: _head.HeadOptions
    return_entropy: bool
    chunk_size: int
    vocab_tile: int


def _forward(hidden, weight, bias, labels, kept, config: _Config):
    """Per token: log p_y, the entropy (or None), and the frame and log S that backward needs."""
    n = hidden.shape[0]
    dtype = _checks.compute_dtype(hidden.dtype)
    ws = _blocks.Workspace(hidden, weight, bias, config.chunk_size, config.vocab_tile)
    empty = dict(dtype=dtype, device=hidden.device)
    log_probs, frame, log_sum = torch.empty(n, **empty), torch.empty(n, **empty), torch.empty(n, **empty)
    entropy = torch.empty(n, **empty) if config.return_entropy else None
    bad = torch.zeros(n, dtype=torch.bool, device=hidden.device)
    for start, stop in _blocks.spans(n, config.chunk_size):
        y = labels[start:stop]
        p = _blocks.scan_chunk(ws, hidden[start:stop], y, scale=1.0 / config.head.temperature,
                               softcap=config.head.softcap, vocab_tile=config.vocab_tile,
                               entropy=config.return_entropy)
        stats = _blocks.combine_partials(p)
        target = _blocks.target_logits(p, y, config.vocab_tile)
        frame[start:stop], log_sum[start:stop] = stats.frame, stats.log_sum
        # (z_y - m) <= 0 exactly (m is the maximum of the very values z_y was read from; halved: no overflow)
        # and log S = log1p(rest + ties - 1) >= 0 (ties >= 1: the maximum itself), so log p_y <= 0 as computed;
        # the clamp changes nothing and only states it.
        log_probs[start:stop] = (2.0 * (target * 0.5 - stats.frame * 0.5) - stats.log_sum).clamp_(max=0.0)
        if entropy is not None:
            # H = log S - sum_c p_c (z_c - m) with sum_c e^(z_c-m) (z_c - m) <= 0: H >= 0 as computed.
            positive = stats.sum_exp > 0
            mean_gap = stats.entropy / torch.where(positive, stats.sum_exp, 1.0)
            entropy[start:stop] = (stats.log_sum - mean_gap).clamp_(min=0.0)
        bad[start:stop] = ~(stats.top < math.inf) | ((stats.sum_exp == 0) & kept[start:stop])
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        logits = _head.full_logits(hidden[row: row + 1].detach(), weight.detach(),
                                   None if bias is None else bias.detach(), config.head)
        _head.raise_bad_row(row, float(logits.amax()), bool(kept[row]))
    log_probs = torch.where(kept, log_probs, 0.0)
    if entropy is not None:
        entropy = torch.where(kept, entropy, 0.0)
    return log_probs, entropy, frame, log_sum


def log_prob_entropy_gradient(log_p, p, entropy, g_h, g_lp):
    """``-(g_lp + g_H (log p + H)) p`` (the logits' gradient of per-token log-probs and entropies), in `log_p`.

    Where ``p = 0`` (a masked class: ``log p = -inf``, or one below the
    exponential's range) the term is 0: ``log p`` is set to 0 there first, so
    no ``-inf * 0`` (or an overflow times 0) makes a NaN.  `entropy`, `g_h`
    and `g_lp` are per row.
    """
    log_p.masked_fill_(p == 0, 0.0)
    return log_p.add_(entropy[:, None]).mul_(g_h[:, None]).add_(g_lp[:, None]).mul_(p).neg_()


def _backward(hidden, weight, bias, labels, kept, frame, log_sum, entropy, grad_lp, grad_h, config, needs):
    r"""``G = chain/T (p (-(g_lp + g_H (z - lse + H))) + g_lp [j = y])``, recomputing each tile of logits."""
    n = hidden.shape[0]
    head = config.head
    ws = _blocks.Workspace(hidden, weight, bias, config.chunk_size, config.vocab_tile)
    grads = _blocks.Gradients(ws, hidden, weight, bias, needs, min(config.chunk_size, n))
    inv_t = 1.0 / head.temperature
    dtype = ws.dtype
    zero = torch.zeros(n, dtype=dtype, device=hidden.device)
    g_lp = torch.where(kept, grad_lp.to(dtype) * inv_t, 0.0) if grad_lp is not None else zero
    g_h = torch.where(kept, grad_h.to(dtype) * inv_t, 0.0) if grad_h is not None else None
    prob = torch.empty_like(ws.aux) if g_h is not None else None
    for number, (start, stop) in enumerate(_blocks.spans(n, config.chunk_size)):
        rows = stop - start
        ws.begin_chunk(hidden[start:stop])
        y, lp_c = labels[start:stop], g_lp[start:stop]
        for lo, hi in _blocks.spans(weight.shape[0], config.vocab_tile):
            x = ws.view(ws.tile, rows, lo, hi)
            w = ws.weight_tile(lo, hi)
            chain = None
            if head.softcap is None:
                ws.logits(w, lo, hi, x, inv_t)
            else:
                t = ws.logits(w, lo, hi, x, 1.0 / head.softcap).tanh_()
                chain = torch.addcmul(torch.ones((), dtype=dtype, device=t.device), t, t, value=-1,
                                      out=ws.view(ws.aux, rows, lo, hi))
                t.mul_(head.softcap * inv_t)
            x.sub_(frame[start:stop, None])  # z - m, exact
            in_tile = kept[start:stop] & (y >= lo) & (y < hi)
            index = (y - lo).clamp(0, hi - lo - 1)
            if g_h is None:
                g = _blocks.tile_gradient(x, log_sum[start:stop], -lp_c, onehot=torch.where(in_tile, lp_c, 0.0),
                                          index=index, chain=chain)
            else:
                x.sub_(log_sum[start:stop, None])  # d = z - lse <= 0
                p = torch.exp(x, out=prob[: x.numel()].view(x.shape))
                g = log_prob_entropy_gradient(x, p, entropy[start:stop], g_h[start:stop], lp_c)
                g.scatter_add_(1, index[:, None], torch.where(in_tile, lp_c, 0.0)[:, None])
                if chain is not None:
                    g.mul_(chain)
            grads.add_tile(g, w, lo, hi, start, stop, number == 0)
        grads.end_chunk(start, stop)
    return grads.result()


class _LogProbsFunction(torch.autograd.Function):
    """Forward: log p_y and H per token (two numbers per token kept).  Backward: recompute the logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, config, needs):
        kept = _head.kept_rows(labels, config.ignore_index)
        log_probs, entropy, frame, log_sum = _forward(hidden, weight, bias, labels, kept, config)
        ctx.save_for_backward(hidden, weight, bias, labels, frame, log_sum, entropy)
        ctx.config, ctx.needs = config, needs
        ctx.set_materialize_grads(False)
        return log_probs, entropy

    @staticmethod
    def backward(ctx, grad_lp, grad_h):
        hidden, weight, bias, labels, frame, log_sum, entropy = ctx.saved_tensors
        config = ctx.config
        if grad_lp is None and grad_h is None:
            return (None,) * 6
        if torch.is_grad_enabled():  # create_graph=True: differentiate the full logits
            kept = _head.kept_rows(labels, config.ignore_index)
            outputs = _head.plain_log_probs_and_entropy(hidden, weight, bias, labels, kept, config.head,
                                                        config.return_entropy)
            pairs = [(o, g) for o, g in zip(outputs, (grad_lp, grad_h)) if o is not None and g is not None]
            wanted = [t for t, need in zip((hidden, weight, bias), ctx.needs_input_grad) if need]
            grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                             create_graph=True))
            return (*(next(grads) if need else None for need in ctx.needs_input_grad[:3]),) + (None,) * 3
        kept = _head.kept_rows(labels, config.ignore_index)
        grads = _backward(hidden, weight, bias, labels, kept, frame, log_sum, entropy, grad_lp, grad_h, config,
                          ctx.needs_input_grad[:3])
        return (*grads,) + (None,) * 3


def linear_log_probs_and_entropy(hidden, weight, target, bias=None, *, temperature=1.0, ignore_index=-100,
                                 return_entropy=True, chunk_size=None, softcap=None, vocab_tile=None):
    r"""Per-token ``log softmax(z)[target]`` and entropy of ``z = softcap(h W^T + b) / T``, without the N x V logits.

    .. math::

        \log p_{iy_i} = (z_{iy_i} - m_i) - \log S_i, \qquad
        H_i = \log S_i - \textstyle\sum_c p_{ic}(z_{ic} - m_i), \qquad
        S_i = \textstyle\sum_c e^{z_{ic} - m_i},

        \frac{\partial \log p_{iy}}{\partial z_{ij}} = [j = y] - p_{ij}, \qquad
        \frac{\partial H_i}{\partial z_{ij}} = p_{ij}(\ell_i - z_{ij} - H_i),

    with :math:`m_i` the row maximum and :math:`\ell_i` the log-sum-exp; the
    gradients reach ``hidden``, ``weight`` and ``bias`` through
    :math:`\partial z/\partial x` (``1/T``, times ``1 - tanh^2(x/c)`` with a softcap).

    This is what a policy-gradient loss (PPO, GRPO) takes for the new policy's
    log-probabilities and an entropy bonus.  Both outputs are differentiable;
    the entropy is computed only when `return_entropy` is true (None
    otherwise).  Ignored tokens (``target == ignore_index``) give 0 and 0 with
    a zero gradient.  ``log_probs <= 0`` always: the target's shifted logit
    ``z_y - m`` is at most 0 exactly (``m`` is the maximum of the very values
    ``z_y`` is read from), and ``log S`` is ``log1p`` of a non-negative sum, so
    their difference cannot round above 0 (a clamp at 0 states it and changes
    nothing); likewise ``entropy >= 0``.

    Forward computes the logits in chunks and tiles as
    :func:`linear_cross_entropy` does and keeps two numbers per token;
    backward recomputes them (the upstream gradients are per token and known
    only then).  Outputs are in the compute dtype (float32 for
    float16/bfloat16 inputs: a bfloat16 log-probability has 3 significant
    digits, too few for a PPO ratio).

    Args:
        hidden: ``(N, D)`` or ``(B, T, D)`` features.
        weight: ``(V, D)`` projection; bias: optional ``(V,)``.
        target: integer classes of shape ``hidden.shape[:-1]``.
        temperature: ``T``, the logits are divided by it (sampling temperature).
        ignore_index: the target value of tokens to skip (None: none).
        return_entropy: compute and return the entropy.
        chunk_size, vocab_tile: block sizes, as in :func:`linear_cross_entropy`.
        softcap: ``c`` of ``c tanh(x / c)`` applied before the temperature, or None.

    Returns:
        ``(log_probs, entropy)``, each of the target's shape (entropy None unless asked for).

    Examples:
        >>> import torch
        >>> from crossent.torch import linear_log_probs_and_entropy
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
        >>> w = torch.randn(6, 3, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([0, 5, -100, 2])
        >>> log_probs, entropy = linear_log_probs_and_entropy(h, w, y, temperature=0.7)
        >>> ref = torch.log_softmax(h @ w.T / 0.7, 1).gather(1, y.clamp(min=0)[:, None]).squeeze(1)
        >>> torch.allclose(log_probs, torch.where(y != -100, ref, 0.0)), bool((log_probs <= 0).all())
        (True, True)
        >>> (log_probs.sum() + 0.01 * entropy.sum()).backward()  # a policy-gradient step
    """
    ignore_index = check_ignore_index(ignore_index)
    head = _head.HeadOptions.check(softcap, temperature)
    _head.check_linear_arguments(hidden, weight, target, bias, chunk_size, vocab_tile)
    head.check_range(_checks.compute_dtype(hidden.dtype))
    if not isinstance(return_entropy, bool):
        raise TypeError(f"`return_entropy` must be a bool, got {return_entropy!r}.")
    num_classes = weight.shape[0]
    hidden2d = hidden.reshape(-1, hidden.shape[-1])
    labels = _checks.class_indices(target)
    _checks.check_class_labels(labels, num_classes, ignore_index)
    kept = _head.kept_rows(labels, ignore_index)
    if _checks.under_transform():
        log_probs, entropy = _head.plain_log_probs_and_entropy(hidden2d, weight, bias, labels, kept, head,
                                                               return_entropy)
    else:
        chunk, tile = _head.block_sizes(hidden2d, num_classes, chunk_size, vocab_tile)
        config = _Config(ignore_index, head, return_entropy, chunk, tile)
        grad_on = torch.is_grad_enabled()
        needs = tuple(bool(grad_on and t is not None and t.requires_grad) for t in (hidden2d, weight, bias))
        if any(needs):
            log_probs, entropy = _LogProbsFunction.apply(hidden2d, weight, bias, labels, config, needs)
        else:
            log_probs, entropy, _, _ = _forward(hidden2d, weight, bias, labels, kept, config)
    log_probs = log_probs.reshape(target.shape)
    return log_probs, None if entropy is None else entropy.reshape(target.shape)
