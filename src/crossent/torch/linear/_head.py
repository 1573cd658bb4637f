"""The head's options and checks, and its plain-torch reference (the full logits, any order of derivative).

The logits of the head are ``z = softcap(h W^T + b) / T`` with
``softcap(x) = c tanh(x / c)`` (Gemma 2/3; None: the identity) and the
temperature ``T`` (1: none).  The cross-entropy rules themselves live in
:mod:`crossent._rules`; this module only checks the head's own arguments.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import _checks, _plain
from . import _blocks


class HeadOptions(NamedTuple):
    softcap: float | None = None
    temperature: float = 1.0

    @classmethod
    def check(cls, softcap=None, temperature=1.0) -> HeadOptions:
        """Validate `softcap` (None or a finite number > 0) and `temperature` (a finite number > 0).

        Examples:
            >>> HeadOptions.check(softcap=30.0)
            HeadOptions(softcap=30.0, temperature=1.0)
        """
        for name, value, optional in (("softcap", softcap, True), ("temperature", temperature, False)):
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value)
                                                                                       and value > 0):
                allowed = "None or a finite number > 0" if optional else "a finite number > 0"
                raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")
        return cls(None if softcap is None else float(softcap), float(temperature))

    def check_range(self, dtype: torch.dtype) -> None:
        """`softcap` and `temperature` within what the compute `dtype` holds, with their reciprocals
        (which scale the logits): in ``[1/max, max]`` of the dtype, else a `ValueError` naming them.

        Examples:
            >>> HeadOptions.check(temperature=1e-39).check_range(torch.float32)
            Traceback (most recent call last):
            ...
            ValueError: `temperature` must lie in [2.94e-39, 3.4e+38] for torch.float32 computations (it and its reciprocal scale the logits), got 1e-39.
        """
        top = torch.finfo(dtype).max
        for name, value in (("softcap", self.softcap), ("temperature", self.temperature)):
            if value is not None and not 1.0 / top <= value <= top:
                raise ValueError(f"`{name}` must lie in [{1.0 / top:.3g}, {top:.3g}] for {dtype} computations (it and "
                                 f"its reciprocal scale the logits), got {value!r}.")

    def apply(self, logits):
        """``softcap(logits) / T`` with differentiable torch ops (the reference path)."""
        if self.softcap is not None:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits / self.temperature if self.temperature != 1.0 else logits


def check_projection(hidden, weight, bias, *, weight_name="weight", bias_name="bias", rows="V", min_rows=1):
    """Check the operands of ``hidden @ weight.T + bias``: float tensors, ``(rows, D)`` weights with at least
    `min_rows` rows, ``D`` features at the end of `hidden`, a ``(rows,)`` bias, one dtype and device.

    The names are those of the caller's parameters (the vocabulary-parallel head checks a shard, which may be empty).
    """
    for name, tensor in (("hidden", hidden), (weight_name, weight)):
        _checks.check_float_tensor(tensor, name)
    if weight.ndim != 2 or weight.shape[0] < min_rows:
        least = f" with {rows} >= {min_rows}" if min_rows else ""
        raise ValueError(f"`{weight_name}` must have shape ({rows}, D){least}, got {tuple(weight.shape)}.")
    if hidden.ndim < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"`hidden` must end with D={weight.shape[1]} features, got shape {tuple(hidden.shape)}.")
    if bias is not None:
        _checks.check_float_tensor(bias, bias_name)
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"`{bias_name}` must have shape ({weight.shape[0]},), got {tuple(bias.shape)}.")
    for name, tensor in ((weight_name, weight), (bias_name, bias)):
        if tensor is not None and (tensor.dtype != hidden.dtype or tensor.device != hidden.device):
            raise TypeError(f"`{name}` must have the dtype and device of `hidden` ({hidden.dtype}, {hidden.device}),"
                            f" got {tensor.dtype}, {tensor.device}.")


def check_block_knob(name, value):
    """A tuning knob (``chunk_size``, ``vocab_tile``): None or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")


def check_linear_arguments(hidden, weight, target, bias, chunk_size, vocab_tile) -> None:
    check_projection(hidden, weight, bias)
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        got = getattr(target, "dtype", type(target).__name__)
        raise TypeError(f"`target` must be an integer tensor of class indices, got {got}.")
    if target.shape != hidden.shape[:-1]:
        raise ValueError(f"`target` must have shape {tuple(hidden.shape[:-1])}, got {tuple(target.shape)}.")
    if target.device != hidden.device:
        raise TypeError(f"`target` must be on the device of `hidden` ({hidden.device}), got {target.device}.")
    for name, value in (("chunk_size", chunk_size), ("vocab_tile", vocab_tile)):
        check_block_knob(name, value)


def check_class_weight(class_weight, hidden, num_classes):
    """Metadata and values of `class_weight` ((V,), finite, >= 0, on the hidden's device); None passes."""
    if class_weight is None:
        return None
    _checks.check_weight(class_weight, "class_weight", shape=(num_classes,))
    if class_weight.device != hidden.device:
        raise TypeError(f"`class_weight` must be on the device of `hidden` ({hidden.device}), got "
                        f"{class_weight.device}.")
    _checks.check_weight_values(class_weight, "class_weight")
    return class_weight


def block_sizes(hidden2d, num_classes, chunk_size, vocab_tile) -> tuple[int, int]:
    """(tokens per chunk, classes per tile): the caller's knobs, or defaults sized to the caches."""
    element = torch.empty((), dtype=_checks.compute_dtype(hidden2d.dtype)).element_size()
    chunk = (_blocks.default_chunk_size(hidden2d.shape[0], num_classes, element) if chunk_size is None
             else int(chunk_size))
    tile = (_blocks.default_vocab_tile(min(chunk, hidden2d.shape[0]), num_classes, element)
            if vocab_tile is None else min(int(vocab_tile), num_classes))
    return chunk, tile


def kept_rows(labels, ignore_index):
    return torch.ones_like(labels, dtype=torch.bool) if ignore_index is None else labels != ignore_index


# --------------------------------------------------------------------------- the reference path


def full_logits(hidden, weight, bias, head: HeadOptions):
    """``softcap(h W^T + b) / T`` in the compute dtype, differentiably (all N x V of them)."""
    return head.apply(F.linear(hidden, weight, bias).to(_checks.compute_dtype(hidden.dtype)))


def plain_cross_entropy_rows(hidden, weight, bias, labels, class_weight, options, head):
    """Row losses, the denominator and the logits of the full computation (the rules of :mod:`crossent._rules`)."""
    logits = full_logits(hidden, weight, bias, head)
    weight_c = None if class_weight is None else class_weight.to(logits.dtype)
    rows, denominator = _plain.softmax_cross_entropy_rows(logits, labels, weight_c, options)
    return rows, denominator, logits


def plain_stats(logits, labels, kept, row_weight, z_loss):
    """Per token ``lse``, ``z_loss`` and ``correct`` of full logits (detached), 0/False on ignored tokens."""
    logits = logits.detach()
    lse = torch.where(kept, torch.logsumexp(torch.where(kept[:, None], logits, 0.0), 1), 0.0)
    safe = torch.where(kept, labels, 0)
    correct = kept & (logits.gather(1, safe[:, None]).squeeze(1) == logits.amax(1))
    return lse, torch.where(kept, z_loss * lse.square(), 0.0), correct


def plain_log_probs_and_entropy(hidden, weight, bias, labels, kept, head, return_entropy):
    """``log softmax(z)[y]`` and the entropy of softmax(z) per token, differentiably (0 on ignored tokens)."""
    logits = full_logits(hidden, weight, bias, head)
    top = logits.detach().amax(1, keepdim=True)
    _checks.raise_for_bad_rows(~(top < math.inf).squeeze(1), (top == -math.inf).squeeze(1) & kept,
                               "`hidden @ weight.T + bias`")
    logits = torch.where(kept[:, None], logits, 0.0)  # ignored rows: finite, and cut from the gradient
    log_p = torch.log_softmax(logits, 1)
    safe = torch.where(kept, labels, 0)
    log_probs = torch.where(kept, log_p.gather(1, safe[:, None]).squeeze(1), 0.0)
    entropy = None
    if return_entropy:
        p = log_p.exp()
        entropy = torch.where(kept, -(p * torch.where(p > 0, log_p, 0.0)).sum(1), 0.0)
    return log_probs, entropy


def plain_loss(hidden, weight, bias, labels, class_weight, options, head):
    rows, denominator, _ = plain_cross_entropy_rows(hidden, weight, bias, labels, class_weight, options, head)
    return _plain.reduce(rows, denominator, options.reduction)


def plain_loss_and_stats(hidden, weight, bias, labels, class_weight, options, head):
    """The full-logits path (torch.func transforms, a class weight that requires grad)."""
    rows, denominator, logits = plain_cross_entropy_rows(hidden, weight, bias, labels, class_weight, options,
                                                               head)
    kept = kept_rows(labels, options.ignore_index)
    lse, z_rows, correct = plain_stats(logits, labels, kept, None, options.z_loss)
    row_weight = kept.to(rows.dtype) if class_weight is None else \
        torch.where(kept, class_weight.detach().to(rows.dtype)[torch.where(kept, labels, 0)], 0.0)
    loss = _plain.reduce(rows, denominator, options.reduction)
    if options.reduction == "none":
        return loss, (lse, z_rows, correct)
    den = denominator.detach()
    scale = _plain.reduce(torch.ones((), dtype=rows.dtype), den, "mean") if options.reduction == "mean" else 1.0
    return loss, ((row_weight * lse).sum() * scale, z_rows.sum() * scale, (row_weight * correct).sum() * scale)


def raise_bad_row(row, top, kept):
    """The boundary's message for a row whose maximum logit is NaN/``+inf``, or ``-inf`` while it is kept."""
    what = "`hidden @ weight.T + bias`"
    if not top < math.inf:
        raise ValueError(f"{what} must not contain NaN or +inf logits (found in row {row}).")
    raise ValueError(f"{what} row {row} is -inf for every class (all_masked) but its target is kept; "
                     "ignore it or unmask a class.")
