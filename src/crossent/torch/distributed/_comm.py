"""The communication of the vocabulary-parallel losses, and the checks that every rank makes alike.

A check that fails on one rank only would leave the others waiting in the
next collective (a hang, not an error).  So every value check of
:mod:`crossent.torch.distributed` is decided from numbers that all ranks
hold after a collective: the table of :func:`exchange_layout` (shard sizes,
token counts, a checksum of the labels and of the options, the labels'
range) and the flag that :func:`max_all_reduce` carries beside the row
maxima.  Every rank then raises the same error at the same point.

Tensors stay on the inputs' device: on NCCL the collectives run on the GPU,
and the only host synchronisations are the two reads of these tables per
forward pass (and one per :func:`crossent.torch.distributed.global_denominator`).
"""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import torch
import torch.distributed as dist

# the labels' checksum: sum_i ((y_i + 1) M_i mod P) with pseudo-random multipliers M_i = (a i + c) mod P, so
# that no simple difference (a swap, y and y' with equal weighted sums under small weights) cancels out
_PRIME, _MULTIPLIER, _OFFSET = 2**31 - 1, 48271, 12345
_NO_LABEL = 2**62  # the range of an empty set of kept labels: [_NO_LABEL, -1]


def rank_and_size(group) -> tuple[int, int]:
    """This process's rank in `group` (None: the default group) and the group's size; errors name what is wrong."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("crossent.torch.distributed needs an initialised process group: call "
                           "torch.distributed.init_process_group first (a world of one process works too).")
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"`group` must be a torch.distributed.ProcessGroup or None, got {type(group).__name__}.")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of `group`.")
    return rank, dist.get_world_size(group)


def options_signature(*options) -> int:
    """A checksum of the options (a deterministic CRC of their repr), compared across ranks."""
    return zlib.crc32(repr(options).encode()) & 0x7FFFFFFF


class ShardLayout(NamedTuple):
    """Where this rank's slice of the vocabulary lies: classes ``[start, stop)`` of ``vocab_size``."""

    start: int
    stop: int
    vocab_size: int
    sizes: tuple
    rank: int
    zero_weight: bool  # some class weight is 0 (a masked class of weight 0 must count 0, not 0 * -inf)


def exchange_layout(local_classes: int, labels: torch.Tensor, kept: torch.Tensor, signature: int, group,
                    device, class_weight=None) -> ShardLayout:
    """One all-gather of eight integers per rank, then the checks every rank makes alike.

    Each rank sends its number of classes, its number of tokens, a checksum of
    its labels, `signature` (its options), the range of its kept labels and
    whether its `class_weight` holds a negative or non-finite value, and whether it holds a 0.
    The offsets are the cumulative shard sizes in rank order, so the shards may
    be of any (also zero) sizes; the vocabulary is their sum.
    """
    rank, size = rank_and_size(group)
    n = labels.numel()
    multiplier = (torch.arange(n, device=labels.device) * _MULTIPLIER + _OFFSET) % _PRIME
    checksum = torch.remainder((labels + 1) % _PRIME * multiplier, _PRIME).sum()  # each term < 2**31: no overflow
    meta = torch.stack([
        torch.tensor(local_classes, device=labels.device), torch.tensor(n, device=labels.device),
        checksum, torch.tensor(signature, device=labels.device),
        torch.where(kept, labels, _NO_LABEL).amin() if n else torch.tensor(_NO_LABEL, device=labels.device),
        torch.where(kept, labels, -1).amax() if n else torch.tensor(-1, device=labels.device),
        torch.tensor(0, device=labels.device) if class_weight is None
        else (~(class_weight >= 0) | (class_weight == math.inf)).any().to(device=labels.device),
        torch.tensor(0, device=labels.device) if class_weight is None
        else (class_weight == 0).any().to(device=labels.device),
    ]).to(device=device, dtype=torch.int64)
    gathered = [torch.empty_like(meta) for _ in range(size)]
    dist.all_gather(gathered, meta, group=group)
    table = torch.stack(gathered).tolist()  # the one synchronisation of this step
    sizes = tuple(row[0] for row in table)
    for r, row in enumerate(table):
        if row[1] != table[0][1]:
            raise ValueError(f"`target` holds {row[1]} tokens on rank {r} but {table[0][1]} on rank 0: every rank "
                             "of the tensor-parallel group must pass the same tokens.")
        if row[3] != table[0][3]:
            raise ValueError(f"the options (label_smoothing, ignore_index, z_loss, reduction, the dtype, ...) on rank {r} "
                             "differ from those on rank 0: every rank must pass the same.")
        if row[2] != table[0][2]:
            raise ValueError(f"`target` on rank {r} differs from `target` on rank 0: every rank of the "
                             "tensor-parallel group must pass the same labels.")
    for r, row in enumerate(table):
        if row[6]:
            raise ValueError(f"`class_weight` must be non-negative and finite (rank {r} holds a value that is not).")
    vocab_size = sum(sizes)
    if vocab_size == 0:
        raise ValueError("the vocabulary is empty: every rank's shard has 0 classes.")
    low, high = table[0][4], table[0][5]
    if class_weight is not None and class_weight.shape != (vocab_size,):
        raise ValueError(f"`class_weight` must have one weight per class of the whole vocabulary, shape "
                         f"({vocab_size},), got {tuple(class_weight.shape)}.")
    if low <= high and (low < 0 or high >= vocab_size):
        bad = low if low < 0 else high
        raise ValueError(f"`target` must lie in [0, {vocab_size}) (or equal to ignore_index), got {bad}.")
    start = sum(sizes[:rank])
    return ShardLayout(start, start + local_classes, vocab_size, sizes, rank, bool(table[0][7]))


class LocalStats(NamedTuple):
    """Per row, over this rank's classes, in the frame of the local maximum ``top`` (0 where it is not finite).

    ``rest``: the sum of ``exp(x - top)`` without the terms at the maximum;
    ``ties``: how many classes sit at the maximum; ``target``: the raw target
    logit where this rank holds the target, else 0; ``smooth``:
    ``sum_c coef_c (x_c/2 - top/2)`` (or None); ``moment``:
    ``sum_c exp(x_c - top) (x_c - top)`` for the entropy (or None).
    """

    top: torch.Tensor
    rest: torch.Tensor
    ties: torch.Tensor
    target: torch.Tensor
    smooth: torch.Tensor | None
    moment: torch.Tensor | None


def local_stats(x, labels, kept, start: int, coef=None, moment: bool = False, zero_coef: bool = False) -> LocalStats:
    """The statistics of one block of logits ``x`` (rows x this rank's classes), read-only.

    The masks are float tensors (``ne(..., out=float)``): torch's boolean reductions and
    ``masked_fill`` cost 4-6 times a float pass on the CPU.
    """
    n, v = x.shape
    top = x.amax(1) if v else x.new_full((n,), -math.inf)
    frame = torch.where(top.isfinite(), top, 0.0)[:, None]
    # x - top <= 0: exp never overflows, and the difference is exact at any common offset.
    shifted = x - frame
    below = torch.ne(shifted, 0, out=torch.empty_like(shifted))  # 1.0 below the maximum, 0.0 at it
    ties = v - below.sum(1)
    moment_sum = None
    if moment:
        exps = shifted.exp()
        # the maxima's terms are 0 * 1; a masked (-inf) class's is exp(-inf) * -inf: counted 0, never NaN
        moment_sum = (exps * shifted.clamp(min=torch.finfo(shifted.dtype).min)).sum(1)
    else:
        exps = shifted.exp_()  # in place
    rest = below.mul_(exps).sum(1)  # the sum without the maxima: log1p keeps a confident row's digits
    mine = kept & (labels >= start) & (labels < start + v)
    target = x.new_zeros(n)
    if v:
        target = torch.where(mine, x.gather(1, (labels - start).clamp(0, v - 1)[:, None])[:, 0], 0.0)
    smooth = None
    if coef is not None:
        # Halves: x - top can exceed the dtype's range near its max (x = -0.9 max, top = 0.9 max); a
        # -inf logit of positive coefficient gives -inf (the loss is then +inf, as in torch), one of
        # coefficient 0 is set to 0 before the product (0 * inf = 0).
        half = torch.mul(x, 0.5, out=exps).sub_(frame * 0.5)  # reuses the exponentials' memory
        if zero_coef:
            half.masked_fill_(coef == 0, 0.0)
        smooth = half @ coef
    return LocalStats(top, rest, ties, target, smooth, moment_sum)


_BLOCK_BYTES = 8 * 2**20  # one chunk of compute-dtype logits; at most _MAX_CHUNK rows
_MAX_CHUNK = 4096


def spans(total, step):
    return [(start, min(start + step, total)) for start in range(0, total, step)]


def chunk_rows(chunk_size, n, local_classes, dtype) -> int:
    """Rows per chunk: `chunk_size`, or a block of about 8 MiB of compute-dtype logits (at most 4096 rows)."""
    if chunk_size is not None:
        return int(chunk_size)
    per_row = max(local_classes, 1) * torch.empty((), dtype=dtype).element_size()
    return max(1, min(_MAX_CHUNK, n, _BLOCK_BYTES // per_row))


def chunked_stats(block, n, chunk, labels, kept, start, coef=None, moment=False, zero_coef=False) -> LocalStats:
    """:func:`local_stats` of the blocks ``block(a, b)`` (rows a:b), joined; the temporaries are one block's."""
    parts = [local_stats(block(a, b), labels[a:b], kept[a:b], start, coef, moment, zero_coef)
             for a, b in spans(n, chunk)]
    if not parts:  # no row
        empty = labels.new_zeros(0, dtype=block(0, 0).dtype)
        return LocalStats(empty, empty, empty, empty, None if coef is None else empty, empty if moment else None)
    return LocalStats(*(None if field[0] is None else torch.cat(field) for field in zip(*parts)))


def max_all_reduce(stats: LocalStats, kept, layout: ShardLayout, group) -> torch.Tensor:
    """The global row maxima (one all-reduce), after the NaN / +inf and all_masked checks made alike on every rank."""
    flag = torch.where((~(stats.top < math.inf)).any(), float(layout.rank + 1), 0.0)  # NaN or +inf: 1 + rank
    buffer = torch.cat([stats.top, flag.to(stats.top.dtype)[None]])
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX, group=group)
    top = buffer[:-1]
    all_masked = kept & (top == -math.inf)
    bad_rank, masked_row = torch.stack([buffer[-1], all_masked.any().to(buffer.dtype)]).tolist()
    if bad_rank:
        raise ValueError(f"the logits must not contain NaN or +inf (found in the shard of rank {int(bad_rank) - 1}).")
    if masked_row:
        row = int(torch.nonzero(all_masked)[0, 0])
        raise ValueError(f"row {row} is -inf for every class on every rank (all_masked) but its target is kept; "
                         "ignore it or unmask a class.")
    return top


class Combined(NamedTuple):
    """Per row, over the whole vocabulary, in the frame of the global maximum (0 where it is not finite).

    ``log_sum`` is ``log sum_c exp(x_c - frame)`` as ``log1p`` of the sum without
    the maxima (0 on rows without a finite logit); ``target`` is
    ``x_y - frame`` (0 where the row is not kept); ``smooth`` and ``moment``
    as in :class:`LocalStats`, in the global frame; ``total`` the sum of exponentials.
    """

    frame: torch.Tensor
    log_sum: torch.Tensor
    target: torch.Tensor
    smooth: torch.Tensor | None
    moment: torch.Tensor | None
    total: torch.Tensor


def sum_all_reduce(stats: LocalStats, top, kept, local_coef_sum, group) -> Combined:
    """Move every rank's statistics into the global frame and add them up (one all-reduce of a few rows)."""
    local_finite = stats.top > -math.inf
    same = stats.top == top
    # exp(top_r - top) <= 1; 0 where this rank's row is all -inf (its sums are 0 already).
    scale = torch.where(local_finite, (stats.top - top).exp(), 0.0)
    parts = [torch.where(same, stats.rest, (stats.rest + stats.ties) * scale),  # maxima below the global one join the rest
             torch.where(same, stats.ties, 0.0),
             stats.target]
    frame = torch.where(top > -math.inf, top, 0.0)
    if stats.smooth is not None:
        local_frame = torch.where(local_finite, stats.top, 0.0)
        parts.append(stats.smooth + local_coef_sum * (local_frame * 0.5 - frame * 0.5))
    if stats.moment is not None:
        # sum e^(x - top)(x - top) = e^(top_r - top) (sum e^(x - top_r)(x - top_r) + (top_r - top) S_r)
        gap = torch.where(local_finite, stats.top - top, 0.0)
        parts.append(scale * (stats.moment + gap * (stats.rest + stats.ties)))
    packed = torch.stack(parts)
    dist.all_reduce(packed, group=group)
    rest, ties, target = packed[0], packed[1], packed[2]
    has_max = ties > 0
    log_sum = torch.where(has_max, torch.log1p(rest + (ties - 1)), 0.0)  # no 1 + tiny rounded away
    target = torch.where(kept, target - frame, 0.0)
    smooth = packed[3] if stats.smooth is not None else None
    moment = packed[-1] if stats.moment is not None else None
    return Combined(frame, log_sum, target, smooth, moment, rest + ties)
