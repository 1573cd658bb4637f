r"""Cross-entropy of logits sharded along the vocabulary: :func:`vocab_parallel_cross_entropy`."""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from crossent._rules import CrossEntropyOptions

from .. import _checks, _plain
from . import _comm, _softmax

__all__ = ["vocab_parallel_cross_entropy"]


def _rows(t):
    """``(*, V_r) -> (N, V_r)``, also for ``V_r = 0`` (a rank without classes)."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


def check_targets(target, batch_shape, name="target"):
    """Integer class indices of shape `batch_shape`, as int64 rows."""
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.is_complex() \
            or target.dtype == torch.bool:
        got = getattr(target, "dtype", type(target).__name__)
        raise TypeError(f"`{name}` must be an integer tensor of class indices, got {got}.")
    if tuple(target.shape) != tuple(batch_shape):
        raise ValueError(f"`{name}` must have shape {tuple(batch_shape)}, got {tuple(target.shape)}.")
    return _checks.class_indices(target, name)


def check_class_weight(class_weight, device):
    if class_weight is None:
        return None
    _checks.check_float_tensor(class_weight, "class_weight")
    if class_weight.ndim != 1:
        raise ValueError(f"`class_weight` must be 1-D (one weight per class), got shape {tuple(class_weight.shape)}.")
    return class_weight.to(device)


def signature(options, class_weight, global_denominator, *more):
    """What every rank must agree on, as one integer (see :func:`._comm.options_signature`)."""
    return _comm.options_signature(options, None if class_weight is None else class_weight.numel(),
                                   global_denominator is None, *more)


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Forward: three collectives (the layout, the maxima, the sums).  Backward: no communication."""

    @staticmethod
    def forward(ctx, logits_shard, labels, class_weight, options, group, global_denominator):
        dtype = _checks.compute_dtype(logits_shard.dtype)
        x = _rows(logits_shard).to(dtype)
        kept = labels != options.ignore_index if options.ignore_index is not None else torch.ones_like(labels, dtype=bool)
        layout = _comm.exchange_layout(x.shape[1], labels, kept, signature(options, class_weight, global_denominator,
                                                                         str(dtype)),
                                       group, x.device, class_weight)
        s = _softmax.setup(options, class_weight, layout, dtype, x.device)
        chunk = _comm.chunk_rows(None, x.shape[0], x.shape[1], dtype)  # the temporaries: one block of rows
        stats = _comm.chunked_stats(lambda a, b: x[a:b], x.shape[0], chunk, labels, kept, layout.start, s.coef,
                                    zero_coef=layout.zero_weight)
        top = _comm.max_all_reduce(stats, kept, layout, group)
        combined = _comm.sum_all_reduce(stats, top, kept, s.local_coef_sum, group)
        weights = _softmax.row_weight(labels, kept, s.class_weight, dtype)
        rows = _softmax.loss_rows(combined, weights, kept, s)
        d = _softmax.denominator(weights, global_denominator, dtype)
        ctx.save_for_backward(logits_shard, labels, kept, combined.frame, combined.log_sum, weights, d)
        ctx.setup, ctx.start = s, layout.start
        return _plain.reduce(rows, d, options.reduction).to(logits_shard.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        logits_shard, labels, kept, frame, log_sum, weights, d = ctx.saved_tensors
        s = ctx.setup
        x = _rows(logits_shard).to(frame.dtype)
        c = _softmax.row_coefficients(grad_out, d, s.options.reduction, kept, x.shape[0], frame.dtype)
        grad = torch.empty_like(x)
        for a, b in _comm.spans(x.shape[0], _comm.chunk_rows(None, x.shape[0], x.shape[1], x.dtype)):
            _softmax.logit_grad(x[a:b], frame[a:b], log_sum[a:b], c[a:b], weights[a:b], labels[a:b], kept[a:b],
                                ctx.start, s, out=grad[a:b])
        return grad.reshape(logits_shard.shape).to(logits_shard.dtype), None, None, None, None, None


def vocab_parallel_cross_entropy(logits_shard, target, *, group=None, class_weight=None, label_smoothing=0.0,
                                 ignore_index=-100, z_loss=0.0, reduction="mean", global_denominator=None):
    r"""Softmax cross-entropy of logits whose vocabulary is split across the ranks of `group`.

    Rank :math:`r` holds the logits of the contiguous classes
    :math:`[s_r, s_r + V_r)` (class dim last); the offsets :math:`s_r` are the
    shard sizes of the lower ranks, learnt from one all-gather, so the split
    may be uneven.  The row maximum :math:`m = \max_r m_r`, then
    :math:`S = \sum_r \sum_{c \in r} e^{x_c - m}`, the target logit and (with
    smoothing) :math:`\sum_c \kappa_c (x_c - m)` are combined with two
    all-reduces, and every rank computes the loss of the whole vocabulary:

    .. math::

        L_i = (1-\varepsilon)\, w_{y_i} (\ell_i - x_{iy_i})
              + \frac{\varepsilon}{V}\sum_{c=1}^{V} w_c (\ell_i - x_{ic}) + \zeta\ell_i^2,
        \qquad \ell_i = m_i + \log S_i,

    with :math:`V` the **global** vocabulary size (Megatron-LM's smoothing uses the
    shard's size and mean, which makes the loss depend on the rank: NVIDIA/Megatron-LM
    #737).  Each rank receives the gradient of its own shard,

    .. math::

        \frac{\partial L_i}{\partial x_{ic}} = ((1-\varepsilon) w_{y_i} + \tfrac{\varepsilon}{V}\textstyle\sum_k w_k
        + 2\zeta\ell_i)\, p_{ic} - (1-\varepsilon) w_{y_i} [c = y_i] - \tfrac{\varepsilon}{V} w_c,

    computed in backward from the saved shard, :math:`m_i` and :math:`\log S_i`
    without any communication.  Stable: every difference is taken in the frame of
    the global maximum (``exp(x - m) <= 1``; a large common offset cancels
    exactly), and :math:`\log S` is ``log1p`` of the sum without the maxima.

    The rules are those of :func:`crossent.torch.cross_entropy` (``_rules``):
    ignored rows cost 0 with a zero gradient, the empty mean is 0, ``-inf`` logits
    mask classes; NaN or ``+inf`` logits, labels outside ``[0, V)``, and a
    `target` or options that differ between the ranks are a ``ValueError`` raised
    on **every** rank (never a hang).

    Args:
        logits_shard: ``(*, V_r)`` float logits of this rank's classes (``V_r`` may differ
            between ranks, and be 0).
        target: integer class indices of shape ``*``, the same on every rank.
        group: the tensor-parallel process group (None: the default group).
        class_weight: optional ``(V,)`` weights of the whole vocabulary, the same on every rank.
        label_smoothing, ignore_index, z_loss: as in :func:`crossent.torch.cross_entropy`.
        reduction: ``"none"`` (losses of shape ``*``, the same on every rank), ``"sum"`` or ``"mean"``
            (divided by the kept rows' target weights, or by `global_denominator`).
        global_denominator: for data parallelism, the mean's denominator over all data-parallel
            ranks and micro-batches (a number or a 0-d tensor, see :func:`global_denominator`).

    Returns:
        The loss in the logits' dtype (float16/bfloat16 are computed in float32).

    Examples:
        >>> import torch, torch.distributed as dist
        >>> from crossent.torch.distributed import vocab_parallel_cross_entropy
        >>> if not dist.is_initialized():  # a world of one process, so that the example runs anywhere
        ...     dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> x = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], requires_grad=True)
        >>> y = torch.tensor([0, 2])
        >>> loss = vocab_parallel_cross_entropy(x, y, label_smoothing=0.1)
        >>> torch.allclose(loss, torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1))
        True
    """
    _checks.check_float_tensor(logits_shard, "logits_shard")
    if logits_shard.ndim == 0:
        raise ValueError("`logits_shard` must have a class dimension (the last), got a 0-d tensor.")
    options = CrossEntropyOptions.check(label_smoothing=label_smoothing, ignore_index=ignore_index, z_loss=z_loss,
                                        reduction=reduction)
    labels = check_targets(target, logits_shard.shape[:-1]).to(logits_shard.device)
    global_denominator = _softmax.check_global_denominator(global_denominator, options.reduction)
    class_weight = check_class_weight(class_weight, logits_shard.device)
    loss = _VocabParallelCrossEntropy.apply(logits_shard, labels, class_weight, options, group, global_denominator)
    return loss.reshape(target.shape) if options.reduction == "none" else loss
