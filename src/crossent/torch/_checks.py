"""Tensor checks of :mod:`crossent.torch`, and the layout of the softmax inputs.

The option checks (`reduction`, `label_smoothing`, `ignore_index`, `z_loss`)
live in :mod:`crossent._rules`; this module checks tensors.  Two kinds:

* metadata checks (types, dtypes, shapes), made once at the public boundary;
  they read no values, so ``torch.compile`` traces them without a graph break;
* value checks (label ranges, probability rows, weights), made once by the
  path that computes: inside the fused operators (on real tensors, also under
  ``torch.compile``) or before the plain-torch computation.  Under
  ``torch.func`` transforms they read the values underneath the wrappers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from crossent import _validate

LOW_PRECISION = (torch.float16, torch.bfloat16)
KERNEL_DTYPES = (torch.float32, torch.float64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32; float32/float64 as they are."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def reduction_from_legacy(size_average, reduce, reduction):
    """torch's deprecated `size_average`/`reduce` mapped onto `reduction` (with torch's warning)."""
    if size_average is not None or reduce is not None:
        return torch.nn._reduction.legacy_get_string(size_average, reduce)
    return reduction


def under_transform() -> bool:
    """True inside ``torch.func`` transforms (grad, vmap, ...), whose wrapped tensors have no NumPy view."""
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None


def values(tensor: torch.Tensor) -> torch.Tensor:
    """The plain tensor under any ``torch.func`` wrappers, to read values from (detached).

    Under ``vmap`` that is every batch entry at once, in the physical layout:
    reduce along a logical dim first, then take the values.
    """
    tensor = tensor.detach()
    while torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        tensor = torch._C._functorch.get_unwrapped(tensor)
    return tensor


def check_float_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}.")


def check_weight(weight, name: str, shape=None, broadcast_to=None):
    """Metadata of an optional weight: a float tensor of an exact `shape`, or broadcastable to `broadcast_to`."""
    if weight is None:
        return None
    check_float_tensor(weight, name)
    if shape is not None and weight.shape != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(weight.shape)}.")
    if broadcast_to is not None:
        try:
            fits = torch.broadcast_shapes(weight.shape, broadcast_to) == broadcast_to
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"`{name}` of shape {tuple(weight.shape)} does not broadcast to "
                             f"`input` of shape {tuple(broadcast_to)}.")
    return weight


def check_weight_values(weight, name: str) -> None:
    """Weights must be finite and non-negative (one pass; NaN fails ``>= 0``)."""
    if weight is None:
        return
    weight = values(weight)
    bad = ~(weight >= 0) | (weight == math.inf)
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"`{name}` must be non-negative and finite, got {float(weight[idx])!r} at index {idx}.")


def check_class_labels(labels: torch.Tensor, num_classes: int, ignore_index) -> None:
    """Integer labels in ``[0, num_classes)`` or equal to `ignore_index` (O(N), NumPy on CPU)."""
    if labels.device.type == "cpu" and not under_transform():
        _validate.check_integer_labels(labels.numpy(), num_classes, "target", ignore_index)
        return
    labels = values(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        raise ValueError(f"`target` must lie in [0, {num_classes}) (or equal to ignore_index={ignore_index}), "
                         f"got {int(labels[bad][0])}.")


def check_probability_targets(target: torch.Tensor, given_dtype: torch.dtype | None = None) -> None:
    """Rows of a 2-D float target must be distributions (two cheap reductions: min and row sums).

    The sum is judged by the precision of `given_dtype` (default: the target's
    own), with the rule of :func:`crossent._validate.sum_tolerance`: a float16 or
    bfloat16 target, computed in float32, keeps the tolerance of the type it came in.
    """
    if target.numel() == 0:
        return
    low = float(values(target).min())
    if not low >= 0:  # also catches NaN
        raise ValueError(f"`target` probabilities must be non-negative and finite, got a minimum of {low!r}.")
    sums = values(target.sum(-1, dtype=torch.float64))
    tol = _validate.epsilon_sum_tolerance(torch.finfo(given_dtype or target.dtype).eps)
    off = (sums - 1).abs() > tol
    if bool(off.any()):
        row = int(torch.nonzero(off.reshape(-1))[0, 0])
        raise ValueError(f"`target` rows must sum to 1 (tolerance {tol:.1e}); "
                         f"row {row} sums to {float(sums.reshape(-1)[row])!r}.")
    if not bool(sums.isfinite().all()):
        raise ValueError("`target` probabilities must be finite.")


def check_finite_logits(input: torch.Tensor, name: str = "input") -> None:
    """NaN or infinite logits are a `ValueError` (one pass, one sync)."""
    if input.numel() and not bool(torch.isfinite(values(input)).all()):
        bad = values(input)
        idx = tuple(int(i) for i in torch.nonzero(~torch.isfinite(bad))[0])
        raise ValueError(f"`{name}` must be finite logits, got {float(bad[idx])!r} at index {idx}.")


def check_unit_interval_targets(target: torch.Tensor) -> None:
    """BCE targets in [0, 1] (NumPy min/max on CPU: no torch thread pool wakes up for two numbers)."""
    if target.numel() == 0:
        return
    if target.device.type == "cpu" and target.dtype in KERNEL_DTYPES and not under_transform():
        array = target.detach().numpy()
        low, high = array.min(), array.max()
    else:
        low, high = torch.aminmax(values(target))
    if not (float(low) >= 0 and float(high) <= 1):  # NaN fails both comparisons
        raise ValueError(f"`target` must lie in [0, 1], got values in [{float(low)!r}, {float(high)!r}].")


def raise_for_bad_rows(bad: torch.Tensor, masked: torch.Tensor, what: str = "`input`") -> None:
    """One sync: `bad` rows hold NaN or ``+inf``, `masked` (kept) rows are ``-inf`` everywhere (all_masked)."""
    problem = values(bad | masked)
    if bool(problem.any()):
        row = int(torch.nonzero(problem.reshape(-1))[0, 0])
        if bool(values(bad).reshape(-1)[row]):
            raise ValueError(f"{what} must not contain NaN or +inf logits (found in row {row}).")
        raise ValueError(f"{what} row {row} is -inf for every class (all_masked) but its target is kept; "
                         "ignore it or unmask a class.")


# --------------------------------------------------------------------------- softmax inputs


class SoftmaxInputs(NamedTuple):
    """The arguments of one softmax cross-entropy call, checked and laid out as rows.

    ``logits`` are the caller's tensor (any float dtype, class dim 1);
    ``rows`` the same as ``(R, C)`` with the class dim last (a view when
    possible); ``target`` is ``(R,)`` int64 labels or ``(R, C)`` probabilities
    in the compute dtype, contiguous; ``loss_shape`` the shape of the
    per-row losses (``reduction="none"``).
    """

    logits: torch.Tensor
    rows: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None
    probability_targets: bool
    loss_shape: tuple

    @property
    def num_classes(self) -> int:
        return self.rows.shape[1]


def class_last_rows(x: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C); (N, C, d1, ...) -> (N*d1*..., C) with the class dim last (a view when possible)."""
    return x.reshape(1, -1) if x.ndim == 1 else x.movedim(1, -1).reshape(-1, x.shape[1])


def rows_to_logits_layout(rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`class_last_rows` (a view), cast to the logits' dtype (a no-op when it matches)."""
    if logits.ndim == 1:
        rows = rows.reshape(logits.shape)
    elif logits.ndim > 2:
        rows = rows.reshape(logits.movedim(1, -1).shape).movedim(-1, 1)
    return rows.to(logits.dtype)


def softmax_inputs(input, target, weight) -> SoftmaxInputs:
    """Check types and shapes (no values) and lay the arguments out as rows."""
    check_float_tensor(input, "input")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"`target` must be a torch.Tensor, got {type(target).__name__}.")
    if input.ndim == 0:
        raise ValueError("`input` must have a class dimension, got a 0-d tensor.")
    class_dim = 0 if input.ndim == 1 else 1
    num_classes = input.shape[class_dim]
    if num_classes == 0:
        raise ValueError(f"`input` must have at least one class, got shape {tuple(input.shape)}.")
    loss_shape = tuple(input.shape[:class_dim] + input.shape[class_dim + 1:])
    probability_targets = target.is_floating_point()
    if probability_targets:
        _validate.check_same_shape(target, input, "target", "input")
        target_rows = class_last_rows(target).to(compute_dtype(input.dtype)).contiguous()
    else:
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(f"`target` must hold integer class indices or float probabilities, got {target.dtype}.")
        if tuple(target.shape) != loss_shape:
            raise ValueError(f"`target` must have shape {loss_shape} for `input` of shape "
                             f"{tuple(input.shape)}, got {tuple(target.shape)}.")
        target_rows = class_indices(target)
    weight = check_weight(weight, "weight", shape=(num_classes,))
    return SoftmaxInputs(input, class_last_rows(input), target_rows, weight, probability_targets, loss_shape)


def class_indices(target: torch.Tensor, name: str = "target") -> torch.Tensor:
    """Integer class indices as a flat, contiguous int64 tensor; a uint64 index of 2**63 or more (which
    the cast would wrap to a negative number, perhaps to `ignore_index`) is a `ValueError`."""
    rows = target.reshape(-1).to(torch.int64)
    if target.dtype == getattr(torch, "uint64", None) and bool((rows < 0).any()):
        raise ValueError(f"`{name}` holds a class index of 2**63 or more, which no class has.")
    return rows.contiguous()


def check_softmax_values(target, weight, num_classes: int, options, logits_dtype: torch.dtype | None = None) -> None:
    """The value checks of one call: labels or probability rows, and class weights.

    Probability rows come in the compute dtype; they are judged by the
    precision of `logits_dtype` when it is float16/bfloat16 (the dtype they share
    with the logits in torch's API), by their own otherwise.

    The logits' own (NaN, ``+inf``, all_masked rows) are made where the row
    maxima are computed: in the kernel, or in :mod:`crossent.torch._plain`.
    """
    if target.is_floating_point():
        check_probability_targets(target, logits_dtype if logits_dtype in LOW_PRECISION else None)
    else:
        check_class_labels(target, num_classes, options.ignore_index)
    check_weight_values(weight, "weight")
