r"""The language-model head with the weight split along the vocabulary across tensor-parallel ranks.

Rank :math:`r` holds the rows :math:`[s_r, s_r + V_r)` of the projection
(and of the bias); the hidden states are the same on every rank.  Each rank
computes its logits in chunks of tokens (``chunk_size x V_r`` at a time, never
the ``N x V_r`` block), keeps per token the statistics of its classes in the
frame of its own maximum, and the ranks combine them with the same three
collectives as :func:`~crossent.torch.distributed.vocab_parallel_cross_entropy`
(once per call, not per chunk).  Backward recomputes each chunk of logits (so
``8 N D V`` flops in all, not 6), needs no communication for the weight and
bias gradients, and all-reduces the hidden states' gradient over the group (the
partial products ``G_r W_r`` add up to ``G W``), as Megatron-LM's
``copy_to_tensor_model_parallel_region`` does; pass
``all_reduce_hidden_grad=False`` where the model already does that.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from crossent._rules import CrossEntropyOptions, check_ignore_index, check_nonnegative_scalar

from .. import _checks, _plain
from ..linear import _head
from ..linear._log_probs import log_prob_entropy_gradient
from . import _comm, _softmax
from .logits import check_class_weight, check_targets, signature

__all__ = ["vocab_parallel_linear_cross_entropy", "vocab_parallel_linear_log_probs_and_entropy"]

def _logits(h, weight, bias, dtype, temperature=1.0):
    """``(h W_r^T + b_r) / T`` in the compute dtype (the product in the inputs' dtype, as ``F.linear``)."""
    x = (h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())).to(dtype)
    return x.div_(temperature) if temperature != 1.0 else x


def _local_pass(hidden, weight, bias, labels, kept, layout, chunk, dtype, coef=None, moment=False, temperature=1.0):
    def block(a, b):
        return _logits(hidden[a:b], weight, bias, dtype, temperature)

    return _comm.chunked_stats(block, hidden.shape[0], chunk, labels, kept, layout.start, coef, moment,
                               layout.zero_weight)


def _backward_pass(ctx, hidden, weight, bias, block_grad, needs):
    """Recompute each chunk of logits, turn it into its gradient ``G`` with `block_grad(x, a, b)`, accumulate."""
    grad_hidden = torch.empty_like(hidden) if needs[0] else None
    grad_weight = torch.zeros_like(weight) if needs[1] else None
    grad_bias = torch.zeros(weight.shape[0], dtype=ctx.dtype, device=hidden.device) if needs[2] else None
    for a, b in _comm.spans(hidden.shape[0], ctx.chunk):
        g = block_grad(_logits(hidden[a:b], weight, bias, ctx.dtype, ctx.temperature), a, b)
        if grad_bias is not None:
            grad_bias += g.sum(0)
        g = g.to(hidden.dtype)
        if grad_hidden is not None:
            torch.mm(g, weight, out=grad_hidden[a:b])
        if grad_weight is not None:
            grad_weight.addmm_(g.t(), hidden[a:b])
    if grad_hidden is not None and ctx.all_reduce_hidden_grad:
        dist.all_reduce(grad_hidden, group=ctx.group)  # sum_r G_r W_r: the gradient of the whole head
    return grad_hidden, grad_weight, None if grad_bias is None else grad_bias.to(bias.dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, class_weight, options, group, global_denominator, chunk_size,
                all_reduce_hidden_grad):
        dtype = _checks.compute_dtype(hidden.dtype)
        kept = labels != options.ignore_index if options.ignore_index is not None else torch.ones_like(labels, dtype=bool)
        layout = _comm.exchange_layout(weight.shape[0], labels, kept,
                                       signature(options, class_weight, global_denominator, "linear", str(dtype)), group,
                                       hidden.device, class_weight)
        s = _softmax.setup(options, class_weight, layout, dtype, hidden.device)
        chunk = _comm.chunk_rows(chunk_size, hidden.shape[0], weight.shape[0], dtype)
        stats = _local_pass(hidden, weight, bias, labels, kept, layout, chunk, dtype, s.coef)
        top = _comm.max_all_reduce(stats, kept, layout, group)
        combined = _comm.sum_all_reduce(stats, top, kept, s.local_coef_sum, group)
        weights = _softmax.row_weight(labels, kept, s.class_weight, dtype)
        rows = _softmax.loss_rows(combined, weights, kept, s)
        d = _softmax.denominator(weights, global_denominator, dtype)
        ctx.save_for_backward(hidden, weight, bias, labels, kept, combined.frame, combined.log_sum, weights, d)
        ctx.setup, ctx.start, ctx.dtype, ctx.chunk, ctx.temperature = s, layout.start, dtype, chunk, 1.0
        ctx.group, ctx.all_reduce_hidden_grad = group, all_reduce_hidden_grad
        return _plain.reduce(rows, d, options.reduction).to(hidden.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        hidden, weight, bias, labels, kept, frame, log_sum, weights, d = ctx.saved_tensors
        s = ctx.setup
        c = _softmax.row_coefficients(grad_out, d, s.options.reduction, kept, hidden.shape[0], ctx.dtype)

        def block_grad(x, a, b):
            return _softmax.logit_grad(x, frame[a:b], log_sum[a:b], c[a:b], weights[a:b], labels[a:b], kept[a:b],
                                       ctx.start, s)

        grads = _backward_pass(ctx, hidden, weight, bias, block_grad, ctx.needs_input_grad[:3])
        return (*grads,) + (None,) * 7


class _LinearLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ignore_index, temperature, want_entropy, group, chunk_size,
                all_reduce_hidden_grad):
        dtype = _checks.compute_dtype(hidden.dtype)
        kept = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=bool)
        sig = _comm.options_signature("log_probs", ignore_index, temperature, want_entropy, str(dtype))
        layout = _comm.exchange_layout(weight.shape[0], labels, kept, sig, group, hidden.device)
        chunk = _comm.chunk_rows(chunk_size, hidden.shape[0], weight.shape[0], dtype)
        stats = _local_pass(hidden, weight, bias, labels, kept, layout, chunk, dtype, moment=want_entropy,
                            temperature=temperature)
        top = _comm.max_all_reduce(stats, kept, layout, group)
        combined = _comm.sum_all_reduce(stats, top, kept, 0.0, group)
        # (z_y - m) <= 0 and log S >= 0 (the maximum's own term is 1): log_probs <= 0 by construction.
        log_probs = torch.where(kept, combined.target - combined.log_sum, 0.0)
        entropy = None
        if want_entropy:  # H = log S - sum_c p_c (z_c - m), the second sum of terms <= 0: H >= 0
            entropy = torch.where(kept, combined.log_sum - combined.moment / combined.total, 0.0)
        ctx.save_for_backward(hidden, weight, bias, labels, kept, combined.frame, combined.log_sum,
                              entropy if want_entropy else combined.log_sum)
        ctx.start, ctx.dtype, ctx.chunk, ctx.temperature, ctx.want_entropy = layout.start, dtype, chunk, \
            temperature, want_entropy
        ctx.group, ctx.all_reduce_hidden_grad = group, all_reduce_hidden_grad
        if want_entropy:
            return log_probs.to(hidden.dtype), entropy.to(hidden.dtype)
        return log_probs.to(hidden.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_log_probs, grad_entropy=None):
        r"""``dz_c = g ([c = y] - p_c) - h p_c (log p_c + H)``, then ``/ T`` for the logits before the temperature."""
        hidden, weight, bias, labels, kept, frame, log_sum, entropy = ctx.saved_tensors
        g = torch.where(kept, grad_log_probs.to(ctx.dtype), 0.0)
        h = torch.where(kept, grad_entropy.to(ctx.dtype), 0.0) if ctx.want_entropy and grad_entropy is not None \
            else None
        v = weight.shape[0]

        def block_grad(z, a, b):
            log_p = z.sub_(frame[a:b, None]).sub_(log_sum[a:b, None])  # <= 0
            p = log_p.exp()
            if h is None:
                grad = p.mul_(-g[a:b, None])
            else:  # -p (g + h (log p + H)), 0 where p = 0
                grad = log_prob_entropy_gradient(log_p, p, entropy[a:b], h[a:b], g[a:b])
            y = labels[a:b]
            mine = kept[a:b] & (y >= ctx.start) & (y < ctx.start + v)
            if v:
                grad.scatter_add_(1, (y - ctx.start).clamp(0, v - 1)[:, None], torch.where(mine, g[a:b], 0.0)[:, None])
            return grad.div_(ctx.temperature) if ctx.temperature != 1.0 else grad

        grads = _backward_pass(ctx, hidden, weight, bias, block_grad, ctx.needs_input_grad[:3])
        return (*grads,) + (None,) * 7


def _check_linear(hidden, weight_shard, target, bias_shard, chunk_size):
    _head.check_projection(hidden, weight_shard, bias_shard, weight_name="weight_shard", bias_name="bias_shard",
                           rows="V_r", min_rows=0)  # a shard may hold no class
    _head.check_block_knob("chunk_size", chunk_size)
    labels = check_targets(target, hidden.shape[:-1]).to(hidden.device)
    return hidden.reshape(-1, hidden.shape[-1]), labels


def vocab_parallel_linear_cross_entropy(hidden, weight_shard, target, bias_shard=None, *, group=None,
                                        class_weight=None, label_smoothing=0.0, ignore_index=-100, z_loss=0.0,
                                        reduction="mean", global_denominator=None, chunk_size=None,
                                        all_reduce_hidden_grad=True):
    r"""``vocab_parallel_cross_entropy(hidden @ weight_shard.T + bias_shard, target)`` without the logits.

    The loss and its gradient are those of
    :func:`~crossent.torch.distributed.vocab_parallel_cross_entropy` (and so of
    ``F.cross_entropy(F.linear(hidden, W, b), target)`` with the full ``W``):
    :math:`\partial L/\partial W_r = G_r^\top h`, :math:`\partial L/\partial b_r = \sum_i G_{r,i}`
    on rank :math:`r`, and :math:`\partial L/\partial h = \sum_r G_r W_r` (all-reduced over
    `group`), with :math:`G_r` the logit gradient of the rank's classes.  The logits
    exist one chunk of ``chunk_size`` tokens at a time (default: a chunk of about
    8 MiB, at most 4096 tokens); forward keeps two numbers per token.

    Args:
        hidden: ``(*, D)`` features, the same on every rank.
        weight_shard: ``(V_r, D)`` rows of the projection held by this rank (the ``nn.Linear``
            layout), ``V_r`` possibly different on each rank.
        target: integer classes of shape ``hidden.shape[:-1]``, the same on every rank.
        bias_shard: optional ``(V_r,)``.
        group, class_weight, label_smoothing, ignore_index, z_loss, reduction, global_denominator:
            as in :func:`~crossent.torch.distributed.vocab_parallel_cross_entropy`.
        chunk_size: tokens per chunk of logits.
        all_reduce_hidden_grad: sum the hidden gradient over `group` in backward (default).

    Examples:
        >>> import torch, torch.distributed as dist
        >>> from crossent.torch.distributed import vocab_parallel_linear_cross_entropy
        >>> if not dist.is_initialized():  # a world of one process
        ...     dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> h, w = torch.randn(6, 4), torch.randn(10, 4)
        >>> y = torch.tensor([1, 9, 0, -100, 3, 3])
        >>> loss = vocab_parallel_linear_cross_entropy(h, w, y, chunk_size=4)
        >>> torch.allclose(loss, torch.nn.functional.cross_entropy(h @ w.T, y), atol=1e-6)
        True
    """
    options = CrossEntropyOptions.check(label_smoothing=label_smoothing, ignore_index=ignore_index, z_loss=z_loss,
                                        reduction=reduction)
    hidden2d, labels = _check_linear(hidden, weight_shard, target, bias_shard, chunk_size)
    global_denominator = _softmax.check_global_denominator(global_denominator, options.reduction)
    class_weight = check_class_weight(class_weight, hidden.device)
    loss = _LinearCrossEntropy.apply(hidden2d, weight_shard, bias_shard, labels, class_weight, options, group,
                                     global_denominator, chunk_size, bool(all_reduce_hidden_grad))
    return loss.reshape(target.shape) if options.reduction == "none" else loss


def vocab_parallel_linear_log_probs_and_entropy(hidden, weight_shard, target, bias_shard=None, *, group=None,
                                                temperature=1.0, ignore_index=-100, return_entropy=True,
                                                chunk_size=None, all_reduce_hidden_grad=True):
    r"""Per-token ``log softmax(z)[target]`` and the entropy of ``softmax(z)``, ``z = (h W^T + b) / T``, vocab-parallel.

    .. math::

        \log p_{y} = (z_y - m) - \log S, \qquad
        H = -\sum_c p_c \log p_c = \log S - \sum_c p_c (z_c - m),

        \frac{\partial \log p_y}{\partial z_c} = [c = y] - p_c, \qquad
        \frac{\partial H}{\partial z_c} = -p_c (\log p_c + H),

    with :math:`m` the global maximum and :math:`S = \sum_c e^{z_c - m}` combined
    across the ranks of `group` (the same three collectives as the loss), and the
    chain rule through :math:`z = (hW^\top + b)/T` for the three gradients (the
    hidden one all-reduced over `group`).  Stable: ``z_y - m <= 0`` and
    ``log S >= 0`` (the maximum contributes 1), so ``log_probs <= 0`` exactly, and
    ``H`` is a sum of non-negative terms, so ``H >= 0``.  The entropy is computed
    only when asked for.  Ignored tokens give 0 and 0, with a zero gradient.
    These are what PPO/GRPO losses (log-probs) and entropy bonuses use.

    Returns:
        ``(log_probs, entropy)`` of the shape of `target` in the hidden's dtype; ``entropy``
        is None when ``return_entropy=False``.

    Examples:
        >>> import torch, torch.distributed as dist
        >>> from crossent.torch.distributed import vocab_parallel_linear_log_probs_and_entropy
        >>> if not dist.is_initialized():  # a world of one process
        ...     dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> h, w, y = torch.randn(5, 4), torch.randn(9, 4), torch.tensor([0, 8, 2, -100, 4])
        >>> log_probs, entropy = vocab_parallel_linear_log_probs_and_entropy(h, w, y, temperature=0.7)
        >>> ref = torch.log_softmax(h @ w.T / 0.7, -1)
        >>> torch.allclose(log_probs[:3], ref[[0, 1, 2], [0, 8, 2]], atol=1e-6), float(log_probs[3])
        (True, 0.0)
        >>> torch.allclose(entropy[4], -(ref[4].exp() * ref[4]).sum(), atol=1e-6), bool((log_probs <= 0).all())
        (True, True)
    """
    ignore_index = check_ignore_index(ignore_index)
    temperature = check_nonnegative_scalar(temperature, "temperature")
    if not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"`temperature` must be a finite positive number, got {temperature!r}.")
    hidden2d, labels = _check_linear(hidden, weight_shard, target, bias_shard, chunk_size)
    out = _LinearLogProbs.apply(hidden2d, weight_shard, bias_shard, labels, ignore_index, temperature,
                                bool(return_entropy), group, chunk_size, bool(all_reduce_hidden_grad))
    if return_entropy:
        return out[0].reshape(target.shape), out[1].reshape(target.shape)
    return out.reshape(target.shape), None
