r"""Softmax cross-entropy in plain, differentiable torch ops: any device, any order of derivative.

This is the path :func:`crossent.torch.cross_entropy` takes off the CPU, when
the target or the class weights require grad, inside ``torch.func``
transforms, and for second derivatives of the fused path.  It follows the
rules of :mod:`crossent._rules` term by term, in the **shifted frame**: with
the row maximum :math:`m` (a constant for autograd, as in ``log_softmax``),

.. math::

    \ell - x_c = \log\sum_k e^{x_k - m} - (x_c - m),

never ``lse - x``: at a large common offset (``[1e30, 1e30]`` in float32)
``lse = 1e30 + log 2`` rounds to ``1e30`` and ``lse - x`` to 0, while
``x_k - m`` is exact and the sum lies in ``[1, C]``.

:func:`cross_entropy_plain` is the fixed private entry point that the
conformance tests call: the same semantics and checks as ``cross_entropy``,
always computed here.
"""

from __future__ import annotations

import math

import torch

from crossent._rules import CrossEntropyOptions

from ._checks import (
    SoftmaxInputs,
    check_softmax_values,
    compute_dtype,
    raise_for_bad_rows,
    softmax_inputs,
)


def softmax_cross_entropy_rows(logits, target, weight, options: CrossEntropyOptions):
    r"""Per-row losses of ``(R, C)`` logits and the ``"mean"`` denominator, differentiably.

    Integer labels: :math:`L_i = (1-\varepsilon) w_{y_i}(\ell_i - x_{iy_i})
    + \frac{\varepsilon}{C}\sum_c w_c(\ell_i - x_{ic}) + \zeta\ell_i^2` on kept
    rows (0 on ignored ones), denominator :math:`\sum_{\text{kept}} w_{y_i}`;
    probability targets: :math:`L_i = \sum_c q_{ic}(\ell_i - x_{ic}) + \zeta\ell_i^2`
    with :math:`q = w((1-\varepsilon)t + \varepsilon/C)`, denominator :math:`R`.
    A coefficient of 0 times an infinite :math:`\ell - x_c` (a masked class)
    counts 0: the infinity is replaced *before* the product (``torch.where``),
    so neither the loss nor any gradient (logits, target, weight) sees 0 * inf.
    """
    num_classes = logits.shape[1]
    dtype = logits.dtype
    integer_labels = not target.is_floating_point()
    if integer_labels and options.ignore_index is not None:
        kept = target != options.ignore_index
    else:
        kept = torch.ones(target.shape[:1], dtype=torch.bool, device=logits.device)
    top = logits.detach().amax(-1, keepdim=True)
    all_masked = top == -math.inf
    raise_for_bad_rows(~(top < math.inf).squeeze(1), all_masked.squeeze(1) & kept)
    # x - m <= 0: exp never overflows and the sum lies in [1, C].  An all_masked
    # row (ignored, or the check above raised) is set to 0 and cut from the graph,
    # so that -inf - (-inf) never reaches a gradient.
    shifted = torch.where(all_masked, 0.0, logits - top)
    exps = shifted.exp()
    log_sum = exps.sum(-1, keepdim=True).log()
    # The value of log S as log1p(S - 1), with S - 1 summed without the maxima's exp(0) = 1, so that a
    # confident row's loss of 1e-10 keeps its digits; the gradient (p) still flows through log S.
    at_max = (shifted == 0).detach()
    rest = torch.where(at_max, 0.0, exps.detach()).sum(-1, keepdim=True) + (at_max.sum(-1, keepdim=True) - 1)
    log_sum = log_sum + (torch.log1p(rest) - log_sum).detach()
    w = None if weight is None else weight.to(dtype)
    label_smoothing = options.label_smoothing

    if integer_labels:
        safe = torch.where(kept, target, 0)
        row_weight = kept.to(dtype) if w is None else torch.where(kept, w[safe], 0.0)
        denominator = row_weight.sum()
        target_mass = (1 - label_smoothing) * row_weight
        target_nll = (log_sum - shifted.gather(1, safe[:, None])).squeeze(1)
        rows = target_mass * torch.where(target_mass != 0, target_nll, 0.0)
        if label_smoothing:
            class_mass = kept[:, None] if w is None else kept[:, None] & (w != 0)
            coef = label_smoothing / num_classes * (torch.ones(num_classes, dtype=dtype, device=logits.device)
                                                    if w is None else w)
            rows = rows + _mass_times_nll(torch.where(class_mass, coef, 0.0), log_sum, logits, top, all_masked)
    else:
        mass = target.to(dtype)
        if label_smoothing:
            mass = (1 - label_smoothing) * mass + label_smoothing / num_classes
        if w is not None:
            mass = mass * w
        rows = _mass_times_nll(mass, log_sum, logits, top, all_masked)
        denominator = torch.tensor(float(target.shape[0]), dtype=dtype, device=logits.device)
    if options.z_loss:
        lse = (top + log_sum).squeeze(1)  # finite on kept rows
        rows = rows + torch.where(kept, options.z_loss * lse.square(), 0.0)
    return torch.where(kept, rows, 0.0), denominator


def _mass_times_nll(coef, log_sum, logits, top, all_masked):
    """``sum_c coef_c (log S - (x_c - m))`` per row, where a zero coefficient counts 0 (and so does its gradient).

    ``x - m`` can exceed the dtype's range (x = -0.9 max, m = 0.9 max) where the
    smoothing term, scaled by its coefficient first, does not: it is formed as
    ``2 (coef (x/2 - m/2))``.  A masked (-inf) logit is replaced before any product
    where its coefficient is 0, so no 0 * inf reaches the value or a gradient.
    """
    half = torch.where(all_masked, 0.0, logits * 0.5 - top * 0.5)
    counted = coef != 0
    safe_half = torch.where(counted, half, 0.0)
    return torch.where(counted, coef * log_sum - 2.0 * (coef * safe_half), 0.0).sum(-1)


def reduce(rows, denominator, reduction: str):
    """Sum or mean of the rows; the empty mean (denominator 0) is 0 with a zero gradient (``_rules.mean_scale``)."""
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    positive = denominator > 0
    # Divide by 1 where the denominator is 0, so that no 0/0 enters the graph.
    return torch.where(positive, total / torch.where(positive, denominator, 1.0), 0.0)


def finish(loss, inputs: SoftmaxInputs, reduction: str):
    """The loss in the logits' dtype, per-row losses in the target's layout."""
    if reduction == "none":
        loss = loss.reshape(inputs.loss_shape)
    return loss.to(inputs.logits.dtype)


def plain_cross_entropy(inputs: SoftmaxInputs, options: CrossEntropyOptions):
    """Value checks, then the loss of checked inputs with plain torch ops."""
    check_softmax_values(inputs.target, inputs.weight, inputs.num_classes, options, inputs.logits.dtype)
    logits = inputs.rows.to(compute_dtype(inputs.logits.dtype))
    rows, denominator = softmax_cross_entropy_rows(logits, inputs.target, inputs.weight, options)
    return finish(reduce(rows, denominator, options.reduction), inputs, options.reduction)


def cross_entropy_plain(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *,
                        z_loss=0.0):
    """:func:`crossent.torch.cross_entropy` always computed with plain torch ops (same semantics and checks).

    Examples:
        >>> import torch
        >>> x = torch.tensor([[1e30, 1e30]])  # the shifted frame: ln 2, not 0
        >>> round(cross_entropy_plain(x, torch.tensor([0])).item(), 6)
        0.693147
    """
    options = CrossEntropyOptions.check(
        label_smoothing=label_smoothing, ignore_index=ignore_index, z_loss=z_loss, reduction=reduction)
    inputs = softmax_inputs(input, target, weight)
    if inputs.probability_targets:
        options = options.for_probability_targets()
    return plain_cross_entropy(inputs, options)
