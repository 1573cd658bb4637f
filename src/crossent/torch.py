"""PyTorch drop-ins backed by crossent's fused CPU kernels.

This is the only module of the package that imports :mod:`torch`; import it
explicitly (``import crossent.torch``), ``import crossent`` never loads torch.

Which one to use
----------------
* :func:`cross_entropy` / :class:`CrossEntropyLoss`: replace
  ``torch.nn.functional.cross_entropy`` / ``torch.nn.CrossEntropyLoss`` (same
  signatures, same defaults, same ``state_dict`` keys and ``repr``).  On CPU
  tensors the loss and its gradient come from one fused pass of
  ``crossent.kernels`` (the gradient is computed during the forward pass and
  only scaled in backward); elsewhere plain torch ops compute the same numbers.
* :func:`binary_cross_entropy_with_logits` / :class:`BCEWithLogitsLoss`: the
  same for ``torch.nn.functional.binary_cross_entropy_with_logits``.
* :func:`linear_cross_entropy`: the last layer of a language model,
  ``cross_entropy(hidden @ weight.T + bias, target)``, computed in blocks of
  (up to 4096 tokens) x (a tile of classes) with plain torch ops on any device,
  so that the full ``N x V`` logits never exist; use it when ``V`` is large (its
  extra memory is one block of logits, about 8 MiB by default; it recomputes
  the logits in backward, 8 instead of 6 ``N D V`` flops).

Intentional differences from torch (everything else matches)
-------------------------------------------------------------
* A ``mean`` over a batch whose targets are all ignored (or an empty batch) is
  ``0`` with a zero gradient; torch returns NaN.
* Bad input is a ``ValueError``/``TypeError`` naming the parameter: integer
  targets outside ``[0, C)`` (torch: an opaque error), probability targets that
  are not distributions or BCE targets outside ``[0, 1]`` (torch accepts them
  silently), negative or non-finite class weights, NaN or ``+inf`` logits.
* Integer targets may have any integer dtype (torch requires int64).
* :func:`cross_entropy` takes an extra keyword ``z_loss`` (the PaLM auxiliary
  loss ``z_loss * logsumexp(x)**2`` per non-ignored example, not multiplied by
  the class weight; ``mean`` divides it by the same denominator as the loss);
  :class:`CrossEntropyLoss` takes it too (shown in its ``repr`` when non-zero).
* No gradient flows to ``weight``/``pos_weight`` on the fused path; if the
  target or a weight requires grad, plain torch ops are used instead (same
  numbers, full autograd).  Double backward is not supported
  (``once_differentiable``).  Repeated ``torch.autograd.grad`` calls through a
  retained graph work; a retained graph whose saved gradient was meanwhile
  accumulated into in place (the third ``loss.backward(retain_graph=True)`` on
  a leaf) raises a ``RuntimeError`` rather than return a wrong gradient.
* float16/bfloat16 inputs are computed in float32; the loss and the input
  gradient come back in the input's dtype.
* :func:`linear_cross_entropy` follows ``F.linear(hidden, weight, bias)`` +
  ``F.cross_entropy`` (torch 2.13's ``F.linear_cross_entropy`` gives the same
  numbers; there the bias is the keyword ``linear_bias`` and ``weight`` means
  class weights).  It has no class weights nor probability targets.
* On non-CPU devices the label and NaN checks synchronise with the device once
  per call (:func:`linear_cross_entropy`: twice in forward, none in backward).

Memory
------
The fused functions save the input gradient (one ``N x C`` array) in forward
instead of the softmax that torch saves.  When the logits had to be copied
anyway (class dim not last, float16/bfloat16), the kernel writes the gradient
into that copy, so no further ``N x C`` array is allocated.  A unit upstream
gradient (``loss.backward()``) hands the saved gradient on without a copy (a
leaf adopts it as its ``.grad``); any other scale allocates the scaled gradient.  :func:`linear_cross_entropy` holds one block
of logits at a time (``chunk_size x vocab_tile``, see its docstring); between
forward and backward it keeps only its inputs and ``N`` log-sum-exps, and its
backward allocates nothing beyond that block and the gradients of its inputs.

Examples
--------
>>> import torch
>>> import crossent.torch as ct
>>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], requires_grad=True)
>>> target = torch.tensor([0, 2])
>>> loss = ct.cross_entropy(logits, target)
>>> loss.backward()
>>> torch.allclose(loss, torch.nn.functional.cross_entropy(logits, target))
True
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from crossent import _rules, _validate

__all__ = [
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "linear_cross_entropy",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "default_chunk_size",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# linear_cross_entropy visits the logits in blocks of (up to 4096 tokens) x (a tile of
# classes), one block of softmax-dtype logits being about 8 MiB: the products are still
# wide enough to run near the machine's matrix-multiply peak (16 MiB blocks were 3-5%
# faster but left the process high-water mark at 0.09-0.12x that of F.linear +
# F.cross_entropy at (N, D, V) = (1024, 2048, 128256); 8 MiB gives 0.05x).
_MAX_CHUNK_TOKENS = 4096
_TILE_BYTES = 8 * 2**20


# --------------------------------------------------------------------------- backends


def _kernels():
    """``crossent.kernels`` if it is available, else ``None`` (then the NumPy reference serves)."""
    try:
        from crossent import kernels
    except ImportError:
        return None
    return kernels if hasattr(kernels, "softmax_cross_entropy_fused") else None


def _reference_losses():
    from crossent import losses

    return losses


def _softmax_ce_numpy(x, y, w, ignore_index, label_smoothing, z_loss, reduction, inplace):
    """Loss and gradient of the reduced loss for a 2-D C-contiguous NumPy ``x`` (the one internal call)."""
    kernels = _kernels()
    if kernels is not None and kernels.supports_softmax(x, y):
        return kernels.softmax_cross_entropy_fused(
            x, y, class_weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing,
            z_loss=z_loss, reduction=reduction, inplace=inplace, num_threads=torch.get_num_threads())
    # Without the kernels, the NumPy reference (same semantics, slower, allocates its own grad).
    return _reference_losses().softmax_cross_entropy_with_grad(
        x, y, axis=-1, class_weight=w, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction)


def _sigmoid_bce_numpy(x, y, pos_weight, sample_weight, reduction, inplace):
    kernels = _kernels()
    if kernels is not None and hasattr(kernels, "sigmoid_binary_cross_entropy_fused"):
        return kernels.sigmoid_binary_cross_entropy_fused(
            x, y, pos_weight=pos_weight, sample_weight=sample_weight, reduction=reduction,
            inplace=inplace, num_threads=torch.get_num_threads())
    return _reference_losses().sigmoid_binary_cross_entropy_with_grad(
        x, y, pos_weight=pos_weight, sample_weight=sample_weight, reduction=reduction)


def _softmax_ce_rows_torch(logits, target, class_weight, ignore_index, label_smoothing, z_loss):
    """Per-row losses and the mean's denominator with plain (differentiable) torch ops.

    Integer targets (``w`` the class weights, ``eps`` the smoothing, ``C`` classes):
    ``row_i = w[y_i] * (1 - eps) * nll_i + eps/C * sum_c w_c * nll_ic + z * lse_i**2``
    for non-ignored rows, 0 for ignored ones; the mean divides by ``sum_i w[y_i]``.
    Probability targets: ``row_i = -sum_c w_c t'_ic log p_ic + z * lse_i**2`` with
    ``t' = (1 - eps) t + eps/C``; the mean divides by the number of rows.
    """
    n, c = logits.shape
    # logsumexp subtracts the row maximum first, so exp never overflows.
    lse = torch.logsumexp(logits, dim=-1)
    bad = torch.isnan(lse) | (lse == math.inf)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"`input` must not contain NaN or +inf logits (found in row {row}).")
    log_probs = logits - lse[:, None]
    weights = None if class_weight is None else class_weight.to(logits.dtype)
    if target.is_floating_point():
        soft = target.to(logits.dtype)
        if label_smoothing:
            soft = (1 - label_smoothing) * soft + label_smoothing / c
        weighted = soft if weights is None else soft * weights
        # 0 * log 0 := 0, so masked (-inf) classes with no target mass contribute nothing.
        rows = -torch.where(weighted != 0, weighted * log_probs, 0.0).sum(-1)
        if z_loss:
            rows = rows + z_loss * torch.where(lse.isfinite(), lse, 0.0) ** 2
        return rows, torch.tensor(float(n), dtype=logits.dtype, device=logits.device)
    valid = target != ignore_index
    safe_target = torch.where(valid, target, 0)
    nll = -log_probs.gather(1, safe_target[:, None]).squeeze(1)
    row_weight = valid.to(logits.dtype) if weights is None else weights[safe_target] * valid
    per_example = row_weight * (1 - label_smoothing) * nll
    if z_loss:
        per_example = per_example + z_loss * lse**2
    if label_smoothing:
        # A masked (-inf) class of weight 0 contributes 0, not 0 * inf.
        weighted = log_probs if weights is None else torch.where(weights > 0, log_probs * weights, 0.0)
        per_example = per_example - label_smoothing / c * weighted.sum(-1)
    rows = torch.where(valid, per_example, 0.0)
    return rows, row_weight.sum()


def _reduce(rows, denom, reduction):
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    # An all-ignored (or empty) batch has total 0: return 0, not 0/0 = NaN.
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


# --------------------------------------------------------------------------- validation helpers


def _reduction_from_legacy(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    return _rules.check_reduction(reduction)


def _check_float_tensor(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}.")


def _check_ignore_index(ignore_index):
    try:
        return operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"`ignore_index` must be an integer, got {ignore_index!r}.") from None


def _check_class_labels(labels, num_classes, ignore_index):
    """O(N) range check; labels is a 1-D integer tensor."""
    if labels.device.type == "cpu":
        _validate.check_integer_labels(labels.numpy(), num_classes, "target", ignore_index)
        return
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(f"`target` must lie in [0, {num_classes}) (or equal to ignore_index={ignore_index}), "
                         f"got {value}.")


def _check_probability_targets(target):
    """Rows of a 2-D float target must be distributions (two cheap reductions: min and row sums)."""
    if target.numel() == 0:
        return
    target = target.detach()
    low = float(target.min())
    if not low >= 0:  # also catches NaN
        raise ValueError(f"`target` probabilities must be non-negative and finite, got a minimum of {low!r}.")
    sums = target.sum(-1, dtype=torch.float64)
    tol = _validate.sum_tolerance(np.float32 if target.dtype != torch.float64 else np.float64)
    off = (sums - 1).abs() > tol
    if bool(off.any()):  # a NaN or inf sum also lands here via the next check
        row = int(torch.nonzero(off)[0, 0])
        raise ValueError(f"`target` rows must sum to 1 (tolerance {tol:.1e}); "
                         f"row {row} sums to {float(sums[row])!r}.")
    if not bool(sums.isfinite().all()):
        raise ValueError("`target` probabilities must be finite.")


def _check_weight(weight, name, shape=None, broadcast_to=None):
    """Finite non-negative weights of an exact `shape`, or broadcastable to `broadcast_to` (one pass)."""
    if weight is None:
        return None
    _check_float_tensor(weight, name)
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
    bad = ~(weight.detach() >= 0) | (weight.detach() == math.inf)  # NaN fails `>= 0`
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"`{name}` must be non-negative and finite, got {float(weight[idx])!r} at index {idx}.")
    return weight


def _fused_device(tensor) -> bool:
    """Whether the fused NumPy kernels can serve this tensor (CPU only; tests patch this)."""
    return tensor.device.type == "cpu"


def _owns_storage(tensor, original):
    """True when `tensor` is a fresh copy, so the kernel may overwrite it with the gradient."""
    return tensor.untyped_storage().data_ptr() != original.untyped_storage().data_ptr()


def _is_one(grad_output):
    return grad_output.numel() == 1 and grad_output.device.type == "cpu" and float(grad_output) == 1.0


# --------------------------------------------------------------------------- softmax cross-entropy


class _SoftmaxCrossEntropyFunction(torch.autograd.Function):
    """Fused CPU cross-entropy on a 2-D contiguous float32/float64 tensor: loss now, gradient saved."""

    @staticmethod
    def forward(ctx, logits, target, class_weight, ignore_index, label_smoothing, z_loss, reduction,
                want_grad, inplace):
        weight_np = None if class_weight is None else class_weight.detach().to(logits.dtype).numpy()
        x = logits.detach().numpy()
        loss, grad = _softmax_ce_numpy(
            x, target.detach().numpy(), weight_np,
            None if target.is_floating_point() else ignore_index,
            label_smoothing, z_loss, reduction, inplace)
        ctx.reduction = reduction
        ctx.grad = torch.from_numpy(np.asarray(grad)) if want_grad else None
        return torch.from_numpy(np.asarray(loss, dtype=x.dtype))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        return (_scale_saved_grad(ctx, grad_loss),) + (None,) * 8


def _class_last_rows(x):
    """(C,) -> (1, C); (N, C, d1, ...) -> (N*d1*..., C) with the class dim last (a view when possible)."""
    return x.reshape(1, -1) if x.ndim == 1 else x.movedim(1, -1).reshape(-1, x.shape[1])


def _scale_saved_grad(ctx, grad_loss, per_row=True):
    """Chain rule: the gradient saved in forward (``ctx.grad``) times the upstream gradient.

    A unit upstream gradient (``loss.backward()``) hands the saved gradient on
    without a copy, as a fresh view, so that autograd can adopt it as a leaf's
    ``.grad``.  Autograd may then accumulate later gradients into that memory
    in place; every backward first checks the saved tensor's version counter,
    so a retained graph whose saved gradient was modified that way raises
    instead of returning a wrong number.  Other upstream gradients allocate
    the scaled gradient.  For ``reduction="none"`` the upstream gradient is
    per row (`per_row`; per element for BCE, where it has the input's shape).
    """
    grad = ctx.grad
    handed = getattr(ctx, "handed_version", None)
    if handed is not None and grad._version != handed:
        raise RuntimeError(
            "crossent.torch: the gradient saved by this loss was handed to an earlier backward without a copy "
            "and has since been modified in place (e.g. accumulated into a leaf's .grad); run backward through "
            "this graph only once, or use torch.autograd.grad(...) for repeated backward passes.")
    if ctx.reduction == "none":
        scale = grad_loss.to(grad.dtype)
        return grad * (scale[:, None] if per_row else scale)
    if _is_one(grad_loss):
        ctx.handed_version = grad._version
        return grad.view_as(grad)
    return grad * grad_loss.to(grad.dtype)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0, *, z_loss=0.0, inplace_backward=False):
    r"""Softmax cross-entropy from logits, a drop-in for ``torch.nn.functional.cross_entropy``.

    For integer targets :math:`y_i` with class weights :math:`w`, smoothing
    :math:`\varepsilon`, :math:`C` classes and :math:`\ell_i = \operatorname{logsumexp}(x_i)`:

    .. math::

        L_i = (1-\varepsilon)\,w_{y_i}(\ell_i - x_{i y_i})
              + \frac{\varepsilon}{C}\sum_c w_c (\ell_i - x_{ic}) + z\,\ell_i^2,
        \qquad \frac{\partial L_i}{\partial x_{ic}} =
              (1-\varepsilon)\,w_{y_i}(p_{ic} - [c = y_i])
              + \frac{\varepsilon}{C}\Big(p_{ic}\sum_k w_k - w_c\Big) + 2 z \ell_i p_{ic},

    with :math:`p_i = \operatorname{softmax}(x_i)`; ignored targets give 0 and
    ``mean`` divides by :math:`\sum_i w_{y_i}` over the non-ignored targets (0 if
    there are none).  Probability targets :math:`t` use
    :math:`L_i = -\sum_c w_c t'_{ic}\log p_{ic} + z\ell_i^2` with
    :math:`t' = (1-\varepsilon)t + \varepsilon/C`, and ``mean`` divides by the
    number of rows.  The kernels subtract each row's maximum before ``exp``, so
    any finite logits (and ``-inf`` masks) are safe.

    Args:
        input: logits of shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)`` (class dim 1).
        target: integer class indices of shape ``()``, ``(N,)`` or ``(N, d1, ...)``, or
            probabilities of the input's shape.
        weight: optional ``(C,)`` non-negative class weights.
        size_average, reduce: deprecated, as in torch.
        ignore_index: integer target value that contributes nothing.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        label_smoothing: in ``[0, 1]``.
        z_loss: non-negative coefficient of the ``logsumexp**2`` auxiliary loss.
        inplace_backward: opt-in (as Liger-Kernel does on GPUs): on the fused
            CPU path, write the gradient into `input`'s own memory during the
            forward pass, so that no ``N x C`` array is allocated at all.  Only
            for logits that nothing reads after the loss (e.g. the output of a
            final ``nn.Linear``, whose backward needs its input and weight, not
            its output): afterwards `input` holds the gradient, not the logits.

    Returns:
        The loss in the input's dtype: a scalar, or the target's shape for ``"none"``.

    Examples:
        >>> import torch
        >>> from crossent.torch import cross_entropy
        >>> x = torch.zeros(2, 4, requires_grad=True)  # uniform: loss ln 4 per row
        >>> loss = cross_entropy(x, torch.tensor([1, 3]))
        >>> round(loss.item(), 6) == round(float(torch.log(torch.tensor(4.0))), 6)
        True
        >>> loss.backward(); x.grad[0]
        tensor([ 0.1250, -0.3750,  0.1250,  0.1250])
        >>> cross_entropy(x, torch.tensor([-100, -100])).item()  # torch: nan
        0.0
    """
    reduction = _reduction_from_legacy(size_average, reduce, reduction)
    _check_float_tensor(input, "input")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"`target` must be a torch.Tensor, got {type(target).__name__}.")
    label_smoothing = _rules.check_label_smoothing(label_smoothing)
    z_loss = _rules.check_nonnegative_scalar(z_loss, "z_loss")
    ignore_index = _check_ignore_index(ignore_index)
    if input.ndim == 0:
        raise ValueError("`input` must have a class dimension, got a 0-d tensor.")
    class_dim = 0 if input.ndim == 1 else 1
    num_classes = input.shape[class_dim]
    probability_targets = target.is_floating_point()
    if probability_targets:
        _validate.check_same_shape(target, input, "target", "input")
    else:
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(f"`target` must hold integer class indices or float probabilities, got {target.dtype}.")
        expected = input.shape[:class_dim] + input.shape[class_dim + 1:]
        if target.shape != expected:
            raise ValueError(f"`target` must have shape {tuple(expected)} for `input` of shape "
                             f"{tuple(input.shape)}, got {tuple(target.shape)}.")
    weight = _check_weight(weight, "weight", shape=(num_classes,))

    # Class dim last, rows flattened.  For (N, C, d1, ...) this is one copy of the
    # logits (read + write N*C*d bytes once), and autograd turns the gradient back
    # with a free permuted view; (N, C) and (C,) inputs are used as they are.
    logits2d = _class_last_rows(input)
    if probability_targets:
        target2d = _class_last_rows(target)
    else:
        target2d = target.reshape(-1)
        if target2d.dtype != torch.int64:
            target2d = target2d.to(torch.int64)
    compute_dtype = torch.float32 if input.dtype in _LOW_PRECISION else input.dtype
    logits2d = logits2d.to(compute_dtype).contiguous()
    if probability_targets:
        target2d = target2d.to(compute_dtype).contiguous()
        _check_probability_targets(target2d)
    else:
        target2d = target2d.contiguous()
        _check_class_labels(target2d, num_classes, ignore_index)

    fused = (_fused_device(input) and compute_dtype in (torch.float32, torch.float64)
             and not target.requires_grad and not (weight is not None and weight.requires_grad))
    if fused and logits2d.shape[0] > 0:
        want_grad = torch.is_grad_enabled() and input.requires_grad
        loss = _SoftmaxCrossEntropyFunction.apply(
            logits2d, target2d.detach(), None if weight is None else weight.detach(), ignore_index,
            label_smoothing, z_loss, reduction, want_grad,
            _owns_storage(logits2d, input) or (inplace_backward and want_grad))
    else:
        rows, denom = _softmax_ce_rows_torch(logits2d, target2d, weight, ignore_index, label_smoothing, z_loss)
        loss = _reduce(rows, denom, reduction)
    if reduction == "none":
        loss = loss.reshape(target.shape if not probability_targets else
                            input.shape[:class_dim] + input.shape[class_dim + 1:])
    return loss.to(input.dtype)


# --------------------------------------------------------------------------- sigmoid binary cross-entropy


class _SigmoidBCEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, pos_weight, sample_weight, reduction, want_grad, inplace):
        x = logits.detach().numpy()
        loss, grad = _sigmoid_bce_numpy(
            x, target.numpy(), None if pos_weight is None else pos_weight.numpy(),
            None if sample_weight is None else sample_weight.numpy(), reduction, inplace)
        ctx.reduction = reduction
        ctx.grad = torch.from_numpy(np.asarray(grad)) if want_grad else None
        return torch.from_numpy(np.asarray(loss, dtype=x.dtype)).reshape(logits.shape if reduction == "none" else ())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        return (_scale_saved_grad(ctx, grad_loss, per_row=False),) + (None,) * 6


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    r"""Sigmoid binary cross-entropy from logits, a drop-in for torch's function of the same name.

    With sample weight :math:`w`, positive-class weight :math:`p` and
    :math:`\log\sigma(-x) = \log(1-\sigma(x))`:

    .. math::

        L = -w\,[\,p\,y \log\sigma(x) + (1-y)\log\sigma(-x)\,],
        \qquad \frac{\partial L}{\partial x} = w\,[\,(p y + 1 - y)\,\sigma(x) - p y\,].

    Both logs are evaluated as ``-softplus(-x)`` / ``-softplus(x)``, which never
    overflow, so any finite logit gives a finite loss.  ``mean`` divides by the
    number of elements (the weights are not normalised), as torch does.

    Args:
        input: logits of any shape.
        target: targets in ``[0, 1]``, same shape as `input`.
        weight: optional non-negative sample weights broadcastable to `input`.
        size_average, reduce: deprecated, as in torch.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        pos_weight: optional non-negative weights of positive examples, broadcastable to
            `input` (usually one per class, along the last dimension).

    Returns:
        The loss in the input's dtype (the input's shape for ``"none"``).

    Examples:
        >>> import torch
        >>> from crossent.torch import binary_cross_entropy_with_logits
        >>> x = torch.zeros(3, requires_grad=True)  # sigma(0) = 1/2: ln 2 each
        >>> loss = binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0, 1.0]))
        >>> round(loss.item(), 6)
        0.693147
        >>> loss.backward(); x.grad
        tensor([-0.1667,  0.1667, -0.1667])
    """
    reduction = _reduction_from_legacy(size_average, reduce, reduction)
    _check_float_tensor(input, "input")
    _check_float_tensor(target, "target")
    _validate.check_same_shape(target, input, "target", "input")
    _check_weight(weight, "weight", broadcast_to=input.shape)
    _check_weight(pos_weight, "pos_weight", broadcast_to=input.shape)
    if target.numel():
        if target.device.type == "cpu" and target.dtype in (torch.float32, torch.float64):
            # NumPy, single-threaded: a torch op here would leave torch's OpenMP
            # workers spinning while the kernel's own threads start (measured:
            # 2.4x slower end to end on 2 cores).
            values = target.detach().numpy()
            low, high = values.min(), values.max()
        else:
            low, high = torch.aminmax(target.detach())
        if not (float(low) >= 0 and float(high) <= 1):  # NaN fails both comparisons
            raise ValueError(f"`target` must lie in [0, 1], got values in [{float(low)!r}, {float(high)!r}].")

    needs_autograd_through_extras = target.requires_grad or any(
        w is not None and w.requires_grad for w in (weight, pos_weight))
    if not _fused_device(input) or needs_autograd_through_extras or input.numel() == 0:
        loss = F.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction, pos_weight=pos_weight)
        if input.numel() == 0 and reduction == "mean":
            loss = loss.nan_to_num(0.0)  # an empty batch: 0, as for cross_entropy
        return loss

    compute_dtype = torch.float32 if input.dtype in _LOW_PRECISION else input.dtype
    logits = input.to(compute_dtype).contiguous()
    # The weights keep their own (broadcastable) shapes: the kernel repeats a
    # per-column pos_weight instead of materialising it.
    pos, sample = (None if w is None else w.detach().to(compute_dtype).contiguous() for w in (pos_weight, weight))
    want_grad = torch.is_grad_enabled() and input.requires_grad
    loss = _SigmoidBCEFunction.apply(logits, target.detach().to(compute_dtype).contiguous(), pos, sample,
                                     reduction, want_grad, _owns_storage(logits, input))
    return loss.to(input.dtype)


# --------------------------------------------------------------------------- linear + cross-entropy


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
        self.softmax_dtype = torch.float32 if hidden.dtype in _LOW_PRECISION else hidden.dtype
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


def _linear_ce_forward(hidden, weight, bias, labels, valid, label_smoothing, chunk_size, vocab_tile):
    """Pass 1: the per-row ``logsumexp`` and losses, one ``chunk x tile`` block of logits at a time.

    ``row_i = lse_i - (1 - eps) x_{i, y_i} - eps/V sum_c x_ic`` (0 for ignored rows).
    """
    n, num_classes = hidden.shape[0], weight.shape[0]
    work = _TileWorkspace(hidden, chunk_size, vocab_tile)
    dtype = work.softmax_dtype
    lse = torch.empty(n, dtype=dtype, device=hidden.device)
    target_logit = torch.zeros(n, dtype=dtype, device=hidden.device)
    logit_sum = torch.zeros(n, dtype=dtype, device=hidden.device) if label_smoothing else None
    for start, stop in _spans(n, chunk_size):
        h, y = hidden[start:stop], labels[start:stop]
        lse_chunk, valid_chunk = lse[start:stop], valid[start:stop]
        for lo, hi in _spans(num_classes, vocab_tile):
            x = work.logits(h, weight, bias, lo, hi)
            in_tile = valid_chunk & (y >= lo) & (y < hi)
            picked = x.gather(1, (y - lo).clamp_(0, hi - lo - 1)[:, None]).squeeze(1)
            target_logit[start:stop] += torch.where(in_tile, picked, 0.0)
            if logit_sum is not None:
                logit_sum[start:stop] += x.sum(1)
            # logsumexp of the tile, in place: subtracting the row maximum first keeps
            # every exp in (0, 1], so nothing overflows; tiles are merged by logaddexp,
            # which does the same for two numbers.  A non-finite maximum is replaced by
            # 0 so that -inf rows give -inf (not NaN) and +inf/NaN show up in `lse`.
            top = x.amax(1)
            top = torch.where(top.isfinite(), top, 0.0)
            tile_lse = x.sub_(top[:, None]).exp_().sum(1).log_().add_(top)
            if lo == 0:
                lse_chunk.copy_(tile_lse)
            else:
                torch.logaddexp(lse_chunk, tile_lse, out=lse_chunk)
    bad = torch.isnan(lse) | (lse == math.inf)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"`hidden @ weight.T + bias` must not contain NaN or +inf logits (found in row {row}).")
    rows = lse - (1 - label_smoothing) * target_logit
    if logit_sum is not None:
        rows -= label_smoothing / num_classes * logit_sum
    return torch.where(valid, rows, 0.0), lse


def _linear_ce_backward(hidden, weight, bias, labels, valid, lse, coefficient, label_smoothing, chunk_size,
                        vocab_tile, needs):
    """Pass 2: recompute each tile of logits and turn it in place into the logit gradient

    ``d_ij = c_i (softmax_ij - (1 - eps) [j = y_i] - eps/V)``, then ``grad_hidden += d W_t``,
    ``grad_weight[t] += d.T h``, ``grad_bias[t] += d.sum(0)``.  ``c`` (0 for ignored rows)
    is the upstream gradient of each row's loss.
    """
    n, num_classes = hidden.shape[0], weight.shape[0]
    work = _TileWorkspace(hidden, chunk_size, vocab_tile)
    dtype, device = work.softmax_dtype, hidden.device
    grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=device) if needs[0] else None
    # Written (not accumulated) by the first chunk; zeros only if there is no chunk at all.
    grad_weight = None
    if needs[1]:
        grad_weight = (torch.empty if n else torch.zeros)(weight.shape, dtype=weight.dtype, device=device)
    grad_bias = torch.zeros(num_classes, dtype=dtype, device=device) if needs[2] and bias is not None else None
    coefficient = torch.where(valid, coefficient.to(dtype), 0.0)
    onehot_value = -(1 - label_smoothing) * coefficient
    uniform_value = label_smoothing / num_classes * coefficient
    for start, stop in _spans(n, chunk_size):
        h, y, valid_chunk = hidden[start:stop], labels[start:stop], valid[start:stop]
        lse_chunk, coefficient_chunk = lse[start:stop, None], coefficient[start:stop, None]
        for lo, hi in _spans(num_classes, vocab_tile):
            d = work.logits(h, weight, bias, lo, hi)
            # exp(x - lse) <= 1 (lse >= max x): the softmax without overflow, then times c.
            d.sub_(lse_chunk).exp_().mul_(coefficient_chunk)
            if label_smoothing:
                d.sub_(uniform_value[start:stop, None])
            in_tile = valid_chunk & (y >= lo) & (y < hi)
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


class _LinearCrossEntropyFunction(torch.autograd.Function):
    """Forward: losses and ``lse`` (N numbers) only.  Backward: the gradients, recomputing the logits.

    Nothing of size ``N x V`` nor any gradient is held between the two, and backward
    modifies nothing it saved, so a retained graph can be run again.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ignore_index, label_smoothing, reduction, chunk_size,
                vocab_tile):
        valid = labels != ignore_index
        rows, lse = _linear_ce_forward(hidden, weight, bias, labels, valid, label_smoothing, chunk_size, vocab_tile)
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.options = (ignore_index, label_smoothing, reduction, chunk_size, vocab_tile)
        if reduction == "none":
            return rows.to(hidden.dtype)
        total = rows.sum()
        if reduction == "mean":
            # An all-ignored (or empty) batch has total 0: return 0, not 0/0 = NaN.
            total = total / valid.sum().clamp(min=1)
        return total.to(hidden.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        ignore_index, label_smoothing, reduction, chunk_size, vocab_tile = ctx.options
        valid = labels != ignore_index
        coefficient = grad_loss.to(lse.dtype)
        if reduction == "mean":
            coefficient = coefficient / valid.sum().clamp(min=1)
        coefficient = coefficient.expand(hidden.shape[0])
        grads = _linear_ce_backward(hidden, weight, bias, labels, valid, lse, coefficient, label_smoothing,
                                    chunk_size, vocab_tile, ctx.needs_input_grad[:3])
        return (*grads,) + (None,) * 6


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
    classes.  The forward pass computes each block of logits once, merges its
    ``logsumexp`` into a running one and keeps only the loss and ``lse`` (``N``
    numbers); the backward pass recomputes each block (so ``8 N D V`` flops in
    all instead of ``6 N D V``) and turns it in place into the block of :math:`G`
    that feeds the three gradients.  The extra memory is one block,

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

    Args:
        hidden: ``(N, D)`` or ``(B, T, D)`` features.
        weight: ``(V, D)`` projection (the ``nn.Linear`` layout).
        target: integer classes of shape ``hidden.shape[:-1]``.
        bias: optional ``(V,)``.
        ignore_index, label_smoothing, reduction: as in :func:`cross_entropy`.
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
    reduction = _rules.check_reduction(reduction)
    for name, tensor in (("hidden", hidden), ("weight", weight)):
        _check_float_tensor(tensor, name)
    label_smoothing = _rules.check_label_smoothing(label_smoothing)
    ignore_index = _check_ignore_index(ignore_index)
    if weight.ndim != 2 or weight.shape[0] == 0:
        raise ValueError(f"`weight` must have shape (V, D) with V >= 1, got {tuple(weight.shape)}.")
    if hidden.ndim < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"`hidden` must end with D={weight.shape[1]} features, got shape {tuple(hidden.shape)}.")
    if bias is not None:
        _check_float_tensor(bias, "bias")
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

    hidden2d = hidden.reshape(-1, hidden.shape[-1])
    labels = target.reshape(-1).to(torch.int64).contiguous()
    _check_class_labels(labels, weight.shape[0], ignore_index)
    chunk_size = default_chunk_size(hidden2d.shape[0]) if chunk_size is None else int(chunk_size)
    if vocab_tile is None:
        softmax_bytes = 4 if hidden.dtype in _LOW_PRECISION else hidden.element_size()
        vocab_tile = _default_vocab_tile(min(chunk_size, hidden2d.shape[0]), weight.shape[0], softmax_bytes)
    loss = _LinearCrossEntropyFunction.apply(hidden2d, weight, bias, labels, ignore_index, label_smoothing,
                                             reduction, chunk_size, min(int(vocab_tile), weight.shape[0]))
    return loss.reshape(target.shape) if reduction == "none" else loss


# --------------------------------------------------------------------------- modules


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """Drop-in for ``torch.nn.CrossEntropyLoss`` computed by :func:`cross_entropy`.

    Same constructor, buffers (``weight``), ``state_dict`` and ``repr``; an
    ``isinstance`` check against torch's class still holds.  Extra keywords:
    ``z_loss`` and ``inplace_backward`` (see :func:`cross_entropy`).

    Examples:
        >>> import torch
        >>> from crossent.torch import CrossEntropyLoss
        >>> CrossEntropyLoss(weight=torch.ones(3)).state_dict()
        OrderedDict([('weight', tensor([1., 1., 1.]))])
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0, *, z_loss=0.0, inplace_backward=False):
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss = _rules.check_nonnegative_scalar(z_loss, "z_loss")
        self.inplace_backward = bool(inplace_backward)

    def extra_repr(self) -> str:
        extra = [f"z_loss={self.z_loss}"] * bool(self.z_loss) + ["inplace_backward=True"] * self.inplace_backward
        return ", ".join(extra)

    def forward(self, input, target):
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing, z_loss=self.z_loss,
                             inplace_backward=self.inplace_backward)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """Drop-in for ``torch.nn.BCEWithLogitsLoss`` computed by :func:`binary_cross_entropy_with_logits`.

    Same constructor, buffers (``weight``, ``pos_weight``), ``state_dict`` and ``repr``.

    Examples:
        >>> import torch
        >>> from crossent.torch import BCEWithLogitsLoss
        >>> BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))
        BCEWithLogitsLoss()
    """

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                pos_weight=self.pos_weight)
