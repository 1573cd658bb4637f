r"""The fused CPU paths as torch operators: one node in autograd, and one in ``torch.compile`` graphs.

``crossent::softmax_cross_entropy`` and ``crossent::sigmoid_binary_cross_entropy``
are ``torch.library`` custom operators: Dynamo does not trace into them (it
would meet NumPy and Numba), their fake implementations give the output shapes,
and ``register_autograd`` gives the backward.  Each returns ``(loss, grad)``:
the kernel computes the input gradient during the forward pass, and backward
only scales it (the chain rule :math:`\partial L/\partial x \cdot g`).  Eager
calls run the very same forward, ``setup_context`` and backward functions as
a plain ``torch.autograd.Function``, which skips the operator dispatch (about
0.2 ms a call); under ``torch.compile`` the operators are called.

Backward hands the saved gradient on without a copy where that is safe: the
first backward of a graph with a unit upstream gradient (``loss.backward()``
adopts it as the leaf's ``.grad``).  Every later backward through a retained
graph allocates its own tensor, and a saved gradient that was modified in
place after the hand-off makes backward raise instead of return a wrong number.

Second derivatives: when backward runs with ``create_graph=True``, the
gradient is recomputed from the saved logits with the differentiable ops of
:mod:`crossent.torch._plain` (exact double backward).  The in-place mode
(``inplace_backward=True``, eager only) has overwritten its logits and raises.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from crossent import kernels
from crossent._rules import CrossEntropyOptions

from . import _checks, _plain

# --------------------------------------------------------------------------- the kernel calls


def _softmax_kernel(rows: Tensor, target: Tensor, weight, options: CrossEntropyOptions, inplace: bool):
    """Loss and gradient of 2-D C-contiguous CPU `rows` from the fused kernel (the one call site).

    The kernel's core trusts its inputs: the options are checked, the labels and
    weights were checked by the caller, so nothing is validated twice.
    """
    x = rows.numpy()
    loss, grad = kernels.softmax_cross_entropy_core(
        x, target.numpy(), None if weight is None else weight.numpy(), options, inplace=inplace,
        num_threads=torch.get_num_threads())
    return torch.from_numpy(np.asarray(loss, dtype=x.dtype)), torch.from_numpy(np.asarray(grad))


def _private_copy(x: Tensor, like: Tensor) -> bool:
    """True when `x` is a copy of `like` made here, which the kernel may overwrite with the gradient."""
    return x.untyped_storage().data_ptr() != like.untyped_storage().data_ptr()


# --------------------------------------------------------------------------- backward helpers


def _saved(ctx):
    try:
        return ctx.saved_tensors
    except RuntimeError as error:
        if "modified by an inplace operation" not in str(error):
            raise
        raise RuntimeError(
            "crossent.torch: the logits or the gradient saved by this loss were modified in place after the "
            "forward pass (e.g. the gradient handed to an earlier backward without a copy was accumulated into "
            "a leaf's .grad); run backward through this graph once, or use torch.autograd.grad(...) for "
            "repeated backward passes.") from error


def _is_one(grad_loss: Tensor) -> bool:
    """A unit upstream gradient, read only from a real CPU tensor outside any tracing (compile, make_fx)."""
    traced = (type(grad_loss) is not torch.Tensor or torch.compiler.is_compiling()
              or torch._C._len_torch_dispatch_stack() > 0)
    return not traced and grad_loss.numel() == 1 and grad_loss.device.type == "cpu" and float(grad_loss) == 1.0


def _chain(ctx, grad: Tensor, grad_loss: Tensor, reduction: str, per_row: bool) -> Tensor:
    """The saved gradient times the upstream gradient; the first unit one gets the saved memory itself.

    ``grad.view_as(grad)`` is a fresh tensor on the same memory, so that autograd
    can adopt it as a leaf's ``.grad`` (no copy).  Later calls through a
    retained graph allocate, so that two calls never return the same memory;
    if the handed-on memory was modified meanwhile, :func:`_saved` raised.
    For ``reduction="none"`` the upstream gradient is per row (`per_row`) or
    per element (BCE, the input's shape).
    """
    if reduction == "none":
        return grad * (grad_loss[:, None] if per_row else grad_loss)
    if ctx.handed or not _is_one(grad_loss):
        return grad * grad_loss
    ctx.handed = True
    return grad.view_as(grad)


def _create_graph_gradient(loss: Tensor, logits: Tensor, grad_loss: Tensor) -> Tensor:
    """d(loss)/d(logits) times `grad_loss` as a differentiable graph (backward with ``create_graph=True``)."""
    (grad,) = torch.autograd.grad(loss, logits, grad_loss, create_graph=True)
    return grad


# --------------------------------------------------------------------------- softmax cross-entropy


def _softmax_forward(input: Tensor, target: Tensor, weight: Optional[Tensor], label_smoothing: float,
                     ignore_index: Optional[int], z_loss: float, reduction: str,
                     want_grad: bool) -> tuple[Tensor, Tensor]:
    """Fused loss and ``(R, C)`` gradient rows of class-dim-1 logits (the body of the softmax operator).

    Arguments are checked by the caller.

    `target` and `weight` are laid out by ``_checks.softmax_inputs`` (rows, the
    compute dtype); the option values come from a checked
    :class:`CrossEntropyOptions` and are not checked again.
    """
    options = CrossEntropyOptions(label_smoothing, ignore_index, z_loss, reduction)
    rows = _checks.class_last_rows(input.detach()).to(_checks.compute_dtype(input.dtype)).contiguous()
    _checks.check_softmax_values(target, weight, rows.shape[1], options, input.dtype)
    # A private copy (class dim not last, float16/bfloat16) takes the gradient in place.
    loss, grad = _softmax_kernel(rows, target, weight, options, inplace=_private_copy(rows, input))
    return loss, grad if want_grad else rows.new_empty((0, rows.shape[1]))


softmax_cross_entropy_op = torch.library.custom_op("crossent::softmax_cross_entropy", _softmax_forward,
                                                   mutates_args=())


@softmax_cross_entropy_op.register_fake
def _(input, target, weight, label_smoothing, ignore_index, z_loss, reduction, want_grad):
    num_classes = input.shape[0 if input.ndim == 1 else 1]
    num_rows = input.numel() // num_classes
    dtype = _checks.compute_dtype(input.dtype)
    loss = input.new_empty((num_rows,) if reduction == "none" else (), dtype=dtype)
    return loss, input.new_empty((num_rows if want_grad else 0, num_classes), dtype=dtype)


def _softmax_setup_context(ctx, inputs, output):
    input, target, weight, label_smoothing, ignore_index, z_loss, reduction, _ = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no N x C zeros for the gradient output's own (absent) gradient
    # The logits are kept (a reference, not a copy) for second derivatives only.
    ctx.save_for_backward(input, target, weight, output[1])
    ctx.options = CrossEntropyOptions(label_smoothing, ignore_index, z_loss, reduction)
    ctx.handed = False


def _softmax_backward(ctx, grad_loss, _grad_of_grad):
    if grad_loss is None:  # no gradient reached the loss (grads are not materialised)
        return (None,) * 8
    input, target, weight, grad = _saved(ctx)
    if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
        rows = _checks.class_last_rows(input).to(_checks.compute_dtype(input.dtype))
        row_loss, denominator = _plain.softmax_cross_entropy_rows(rows, target, weight, ctx.options)
        loss = _plain.reduce(row_loss, denominator, ctx.options.reduction)
        grad_input = _create_graph_gradient(loss, input, grad_loss)
    else:
        grad_input = _checks.rows_to_logits_layout(
            _chain(ctx, grad, grad_loss, ctx.options.reduction, per_row=True), input)
    return grad_input, None, None, None, None, None, None, None


softmax_cross_entropy_op.register_autograd(_softmax_backward, setup_context=_softmax_setup_context)


class _SoftmaxCrossEntropyFunction(torch.autograd.Function):
    """The operator's forward and backward as a plain autograd Function, for eager mode.

    The custom operator's dispatch costs about 0.2 ms per call; eager calls skip it
    and run the very same functions (``torch.compile`` sees the operator).
    """

    forward = staticmethod(_softmax_forward)
    setup_context = staticmethod(_softmax_setup_context)
    backward = staticmethod(_softmax_backward)


class InplaceSoftmaxCrossEntropy(torch.autograd.Function):
    """The fused loss with the gradient written over the logits' own memory (``inplace_backward=True``).

    Eager only; the logits are 1-D or 2-D, C-contiguous, float32 or float64.
    """

    @staticmethod
    def forward(ctx, input, target, weight, options: CrossEntropyOptions):
        rows = _checks.class_last_rows(input.detach())  # a view of the caller's memory
        _checks.check_softmax_values(target, weight, rows.shape[1], options)
        loss, _ = _softmax_kernel(rows, target, weight, options, inplace=True)
        # The logits now hold the gradient.  As after torch's own in-place ops, bump
        # their version, so that a node that saved them raises instead of using it.
        torch.autograd.graph.increment_version(input)
        ctx.save_for_backward(rows)
        ctx.input_shape = input.shape
        ctx.options = options
        ctx.handed = False
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "crossent.torch.cross_entropy(..., inplace_backward=True) overwrote the logits with the gradient, "
                "so second derivatives (create_graph=True) are impossible; use inplace_backward=False.")
        (grad,) = _saved(ctx)
        grad_input = _chain(ctx, grad, grad_loss, ctx.options.reduction, per_row=True).reshape(ctx.input_shape)
        return grad_input, None, None, None


def _writes_in_place(logits: Tensor) -> bool:
    """Whether the kernel can take the caller's logits as its gradient buffer (no layout or dtype copy)."""
    return logits.ndim <= 2 and logits.dtype in _checks.KERNEL_DTYPES and logits.is_contiguous()


def softmax_cross_entropy(inputs: _checks.SoftmaxInputs, options: CrossEntropyOptions, inplace_backward: bool):
    """The fused loss of checked inputs on CPU: the compute dtype, ``(R,)`` rows for ``"none"``."""
    dtype = _checks.compute_dtype(inputs.logits.dtype)
    weight = None if inputs.weight is None else inputs.weight.detach().to(dtype).contiguous()
    target = inputs.target.detach()
    want_grad = torch.is_grad_enabled() and inputs.logits.requires_grad
    if inplace_backward and want_grad and not torch.compiler.is_compiling() and _writes_in_place(inputs.logits):
        loss = InplaceSoftmaxCrossEntropy.apply(inputs.logits, target, weight, options)
        return loss.reshape(-1) if options.reduction == "none" else loss
    operator = softmax_cross_entropy_op if torch.compiler.is_compiling() else _SoftmaxCrossEntropyFunction.apply
    loss, _ = operator(inputs.logits, target, weight, options.label_smoothing, options.ignore_index, options.z_loss,
                       options.reduction, want_grad)
    return loss


# --------------------------------------------------------------------------- sigmoid binary cross-entropy


def _bce_forward(input: Tensor, target: Tensor, pos_weight: Optional[Tensor], weight: Optional[Tensor],
                 reduction: str, want_grad: bool) -> tuple[Tensor, Tensor]:
    """Fused loss and gradient of sigmoid BCE; `target` and the weights are contiguous in the compute dtype."""
    x = input.detach().to(_checks.compute_dtype(input.dtype)).contiguous()
    _checks.check_unit_interval_targets(target)
    _checks.check_weight_values(weight, "weight")
    _checks.check_weight_values(pos_weight, "pos_weight")
    loss, grad = kernels.sigmoid_binary_cross_entropy_fused(
        x.numpy(), target.numpy(), pos_weight=None if pos_weight is None else pos_weight.numpy(),
        sample_weight=None if weight is None else weight.numpy(), reduction=reduction,
        inplace=_private_copy(x, input), num_threads=torch.get_num_threads())
    loss = torch.from_numpy(np.asarray(loss, dtype=x.numpy().dtype)).reshape(x.shape if reduction == "none" else ())
    return loss, torch.from_numpy(np.asarray(grad)) if want_grad else x.new_empty((0,))


sigmoid_binary_cross_entropy_op = torch.library.custom_op("crossent::sigmoid_binary_cross_entropy", _bce_forward,
                                                          mutates_args=())


@sigmoid_binary_cross_entropy_op.register_fake
def _(input, target, pos_weight, weight, reduction, want_grad):
    dtype = _checks.compute_dtype(input.dtype)
    loss = input.new_empty(input.shape if reduction == "none" else (), dtype=dtype)
    return loss, input.new_empty(input.shape if want_grad else (0,), dtype=dtype)


def _bce_setup_context(ctx, inputs, output):
    input, target, pos_weight, weight, reduction, _ = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, target, pos_weight, weight, output[1])
    ctx.reduction = reduction
    ctx.handed = False


def _bce_backward(ctx, grad_loss, _grad_of_grad):
    if grad_loss is None:
        return (None,) * 6
    input, target, pos_weight, weight, grad = _saved(ctx)
    if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
        loss = F.binary_cross_entropy_with_logits(input.to(target.dtype), target, weight, reduction=ctx.reduction,
                                                  pos_weight=pos_weight)
        grad_input = _create_graph_gradient(loss, input, grad_loss)
    else:
        grad_input = _chain(ctx, grad, grad_loss, ctx.reduction, per_row=False).to(input.dtype)
    return grad_input, None, None, None, None, None


sigmoid_binary_cross_entropy_op.register_autograd(_bce_backward, setup_context=_bce_setup_context)


class _SigmoidBinaryCrossEntropyFunction(torch.autograd.Function):
    """The BCE operator's forward and backward as a plain autograd Function, for eager mode."""

    forward = staticmethod(_bce_forward)
    setup_context = staticmethod(_bce_setup_context)
    backward = staticmethod(_bce_backward)


def sigmoid_binary_cross_entropy(input, target, pos_weight, weight, reduction: str):
    """The fused BCE loss of checked CPU tensors, in the compute dtype."""
    dtype = _checks.compute_dtype(input.dtype)
    target, pos_weight, weight = (None if t is None else t.detach().to(dtype).contiguous()
                                  for t in (target, pos_weight, weight))
    want_grad = torch.is_grad_enabled() and input.requires_grad
    operator = sigmoid_binary_cross_entropy_op if torch.compiler.is_compiling() else \
        _SigmoidBinaryCrossEntropyFunction.apply
    loss, _ = operator(input, target, pos_weight, weight, reduction, want_grad)
    return loss
