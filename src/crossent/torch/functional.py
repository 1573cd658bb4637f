"""Drop-ins for ``torch.nn.functional.cross_entropy`` and ``binary_cross_entropy_with_logits``.

Each function checks its options once (a :class:`crossent._rules.CrossEntropyOptions`
for softmax cross-entropy) and its tensors' types and shapes, then takes one
path: the fused CPU operator of :mod:`crossent.torch._ops`, or plain torch ops
(:mod:`crossent.torch._plain`) on other devices, when the target or a weight
requires grad, and inside ``torch.func`` transforms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossent import _rules, _validate
from crossent._rules import CrossEntropyOptions

from . import _checks, _ops, _plain

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits"]


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
    ``mean`` divides by :math:`\sum_i w_{y_i}` over the kept targets (0 if that
    is 0).  Probability targets :math:`t` use
    :math:`L_i = \sum_c q_{ic}(\ell_i - x_{ic}) + z\ell_i^2` with
    :math:`q = w((1-\varepsilon)t + \varepsilon/C)`, and ``mean`` divides by the
    number of rows.  Every :math:`\ell_i - x_{ic}` is computed in the shifted
    frame, :math:`\log\sum_k e^{x_{ik} - m_i} - (x_{ic} - m_i)` with the row
    maximum :math:`m_i`: exp never overflows, and a large common offset
    cancels exactly (``[[1e30, 1e30]]`` costs :math:`\ln 2`).  ``-inf`` logits
    mask classes; a weight or target mass of 0 on a masked class counts 0.

    Args:
        input: logits of shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)`` (class dim 1).
        target: integer class indices of shape ``()``, ``(N,)`` or ``(N, d1, ...)``, or
            probabilities of the input's shape.
        weight: optional ``(C,)`` non-negative class weights.
        size_average, reduce: deprecated, as in torch.
        ignore_index: integer target value that contributes nothing (not a bool; with
            probability targets only a negative value, which matches nothing, is allowed).
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        label_smoothing: in ``[0, 1]``.
        z_loss: non-negative coefficient of the ``logsumexp**2`` auxiliary loss.
        inplace_backward: opt-in (as Liger-Kernel does on GPUs): on the fused
            CPU path, write the gradient into `input`'s own memory during the
            forward pass, so that no ``N x C`` array is allocated at all.  Only
            for logits that nothing reads after the loss (e.g. the output of a
            final ``nn.Linear``, whose backward needs its input and weight, not
            its output): afterwards `input` holds the gradient, and autograd
            raises if another node saved it.  A leaf that requires grad (a
            parameter) is a `ValueError`, as torch refuses in-place ops on it.  No second derivatives; ignored
            under ``torch.compile`` and ``torch.func`` transforms.

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
    options = CrossEntropyOptions.check(
        label_smoothing=label_smoothing, ignore_index=ignore_index, z_loss=z_loss,
        reduction=_checks.reduction_from_legacy(size_average, reduce, reduction))
    return cross_entropy_with_options(input, target, weight, options, inplace_backward=inplace_backward)


def cross_entropy_with_options(input, target, weight, options: CrossEntropyOptions, *, inplace_backward=False):
    """:func:`cross_entropy` with options already checked (by the function or by a module)."""
    if inplace_backward and isinstance(input, torch.Tensor) and input.is_leaf and input.requires_grad \
            and torch.is_grad_enabled():
        # torch refuses an in-place op on such a leaf too: it would overwrite a parameter with its gradient
        raise ValueError("`inplace_backward=True` would write the gradient into `input`, a leaf tensor that requires "
                         "grad (a parameter?); pass the output of the layer that makes the logits, or leave it False.")
    inputs = _checks.softmax_inputs(input, target, weight)
    if inputs.probability_targets:
        options = options.for_probability_targets()
    if not _fused(inputs):
        return _plain.plain_cross_entropy(inputs, options)
    loss = _ops.softmax_cross_entropy(inputs, options, inplace_backward)
    return _plain.finish(loss, inputs, options.reduction)


def _fused(inputs: _checks.SoftmaxInputs) -> bool:
    """The fused kernels serve CPU logits of any float dtype, unless autograd must reach target or weight."""
    weight = inputs.weight
    return (inputs.logits.device.type == "cpu" and inputs.rows.shape[0] > 0
            and _checks.compute_dtype(inputs.logits.dtype) in _checks.KERNEL_DTYPES
            and not inputs.target.requires_grad and not (weight is not None and weight.requires_grad)
            and not _checks.under_transform())


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
    reduction = _rules.check_reduction(_checks.reduction_from_legacy(size_average, reduce, reduction))
    _checks.check_float_tensor(input, "input")
    _checks.check_float_tensor(target, "target")
    _validate.check_same_shape(target, input, "target", "input")
    _checks.check_weight(weight, "weight", broadcast_to=input.shape)
    _checks.check_weight(pos_weight, "pos_weight", broadcast_to=input.shape)
    extras_need_grad = target.requires_grad or any(w is not None and w.requires_grad for w in (weight, pos_weight))
    fused = (input.device.type == "cpu" and input.numel() > 0 and not extras_need_grad
             and _checks.compute_dtype(input.dtype) in _checks.KERNEL_DTYPES and not _checks.under_transform())
    if fused:
        return _ops.sigmoid_binary_cross_entropy(input, target, pos_weight, weight, reduction).to(input.dtype)
    _checks.check_finite_logits(input, "input")
    _checks.check_unit_interval_targets(target)
    _checks.check_weight_values(weight, "weight")
    _checks.check_weight_values(pos_weight, "pos_weight")
    # in the input's dtype, as the fused path (torch would promote to a float64 target's dtype)
    loss = F.binary_cross_entropy_with_logits(input, target.to(input.dtype), weight, reduction=reduction,
                                              pos_weight=pos_weight).to(input.dtype)
    if input.numel() == 0 and reduction == "mean":
        loss = loss.nan_to_num(0.0)  # an empty batch: 0, as for cross_entropy
    return loss
