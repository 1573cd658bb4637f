r"""Data parallelism: the mean over every token of a step, not the mean of the ranks' means."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from crossent._rules import check_ignore_index

from .. import _checks
from . import _comm
from .logits import check_class_weight

__all__ = ["global_denominator"]


def global_denominator(target, *, ignore_index=-100, class_weight=None, group=None, dtype=None):
    r"""The ``"mean"`` denominator of one optimiser step: summed over micro-batches and the ranks of `group`.

    .. math::

        D = \sum_{\text{ranks}} \sum_{\text{micro-batches}} \sum_{i\ \text{kept}} w_{y_i}

    (the number of kept tokens without class weights; with them, the sum of the
    kept targets' weights, ``F.cross_entropy``'s weighted mean).  Dividing each
    micro-batch's summed loss by :math:`D` makes the gradients of the step add up
    to the gradient of the mean over all its tokens, whatever the number of tokens
    on each rank.  The mean of the ranks' own means weights the tokens of a rank
    with few of them more (transformers #34191, torchtitan): that is a different,
    biased loss.  :class:`~torch.nn.parallel.DistributedDataParallel` *averages*
    the gradients over its ranks, so multiply the loss by the group's size there
    (``loss * world_size``), or sum the gradients yourself.

    One all-reduce of two numbers (kept in float64); bad labels or weights on any
    rank raise the same ``ValueError`` on every rank.

    Args:
        target: integer labels (any shape), or a sequence of them (the micro-batches of a step).
        ignore_index: labels that do not count.
        class_weight: optional ``(C,)`` class weights: the denominator is the kept targets' weights.
        group: the data-parallel process group (None: the default group).
        dtype: of the result (default: the class weights', else torch's default dtype).

    Returns:
        A 0-d tensor on the labels' device, the same on every rank; pass it as
        ``global_denominator=`` or divide a ``reduction="sum"`` loss by it.

    Examples:
        >>> import torch, torch.distributed as dist
        >>> from crossent.torch.distributed import global_denominator
        >>> if not dist.is_initialized():  # a world of one process
        ...     dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> micro_batches = [torch.tensor([3, 1, -100]), torch.tensor([0, 0])]
        >>> float(global_denominator(micro_batches))
        4.0
        >>> float(global_denominator(micro_batches, class_weight=torch.tensor([0.5, 1.0, 1.0, 2.0])))
        4.0
    """
    targets = [target] if isinstance(target, torch.Tensor) else list(target)
    if not targets:
        raise ValueError("`target` must be a tensor or a non-empty sequence of tensors.")
    ignore_index = check_ignore_index(ignore_index)
    for t in targets:
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            got = getattr(t, "dtype", type(t).__name__)
            raise TypeError(f"`target` must hold integer tensors of class indices, got {got}.")
    device = targets[0].device
    weight = check_class_weight(class_weight, device)
    if dtype is None:
        dtype = torch.get_default_dtype() if weight is None else weight.dtype
    _comm.rank_and_size(group)
    total = torch.zeros((), dtype=torch.float64, device=device)
    bad = torch.zeros((), dtype=torch.float64, device=device)
    if weight is not None:
        bad += (~(weight >= 0) | (weight == math.inf)).any()
    for t in targets:
        labels = t.reshape(-1).to(device=device, dtype=torch.int64)
        kept = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
        if weight is None:
            bad += (kept & (labels < 0)).sum()
            total += kept.sum()
        else:
            valid = (labels >= 0) & (labels < weight.shape[0])
            bad += (kept & ~valid).sum()
            total += torch.where(kept & valid, weight.to(torch.float64)[labels.clamp(0, weight.shape[0] - 1)],
                                 0.0).sum()
    both = torch.stack([total, bad])
    dist.all_reduce(both, group=group)
    if bool(_checks.values(both[1]) > 0):
        what = "[0, C)" if weight is None else f"[0, {weight.shape[0]})"
        raise ValueError(f"`target` labels must lie in {what} (or equal ignore_index={ignore_index}) and "
                         "`class_weight` must be non-negative and finite, on every rank; some rank's are not.")
    return both[0].to(dtype)
