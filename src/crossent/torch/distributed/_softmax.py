r"""The softmax cross-entropy rules over a sharded vocabulary: the row losses, their gradient, the reduction.

For a kept row with global statistics (the frame :math:`m`, :math:`\log S`,
:math:`x_y - m` and :math:`\sum_c \kappa_c (x_c/2 - m/2)`, see
:mod:`._comm`), with :math:`\kappa_c = \varepsilon w_c / V` (the smoothing
coefficient of class :math:`c` over the **global** vocabulary :math:`V`) and
:math:`K = \sum_c \kappa_c`:

.. math::

    L = (1-\varepsilon) w_y (\log S - (x_y - m)) + K \log S - 2\sum_c \kappa_c (x_c/2 - m/2)
        + \zeta (m + \log S)^2,

    \frac{\partial L}{\partial x_c} = ((1-\varepsilon) w_y + K + 2\zeta\ell)\, p_c
        - (1-\varepsilon) w_y [c = y] - \kappa_c,

which is :mod:`crossent._rules` term by term (a weight of 0 against an
infinite :math:`\log S - (x_y - m)` counts 0).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from crossent._rules import CrossEntropyOptions

from .. import _checks
from ._comm import Combined


class Setup(NamedTuple):
    """The options of one call resolved for this rank's shard (compute dtype, on the inputs' device)."""

    options: CrossEntropyOptions
    class_weight: torch.Tensor | None  # (V,), the whole vocabulary's
    coef: torch.Tensor | None  # (V_r,) smoothing coefficients of this rank's classes, None without smoothing
    coef_total: float | torch.Tensor  # K, over the whole vocabulary
    local_coef_sum: float | torch.Tensor  # the sum of this rank's coef


def setup(options, class_weight, layout, dtype, device) -> Setup:
    eps = options.label_smoothing
    weight = None if class_weight is None else class_weight.to(device=device, dtype=dtype)
    if not eps:
        return Setup(options, weight, None, 0.0, 0.0)
    per_class = eps / layout.vocab_size
    if weight is None:
        coef = torch.full((layout.stop - layout.start,), per_class, dtype=dtype, device=device)
        return Setup(options, None, coef, eps, per_class * (layout.stop - layout.start))
    coef = per_class * weight[layout.start:layout.stop]
    return Setup(options, weight, coef, per_class * weight.sum(), coef.sum())


def row_weight(labels, kept, weight, dtype):
    """The target's class weight on kept rows (1 without weights), 0 on ignored rows."""
    if weight is None:
        return kept.to(dtype)
    return torch.where(kept, weight[torch.where(kept, labels, 0)], 0.0)


def loss_rows(stats: Combined, weights, kept, s: Setup):
    """Per-row losses (0 on ignored rows)."""
    eps, z_loss = s.options.label_smoothing, s.options.z_loss
    target_mass = (1 - eps) * weights
    rows = torch.where(target_mass != 0, target_mass * (stats.log_sum - stats.target), 0.0)
    if s.coef is not None:
        rows = rows + (s.coef_total * stats.log_sum - 2.0 * stats.smooth)
    if z_loss:
        rows = rows + z_loss * (stats.frame + stats.log_sum).square()
    return torch.where(kept, rows, 0.0)


def logit_grad(x, frame, log_sum, coefficient, weights, labels, kept, start, s: Setup, out=None):
    """The gradient of ``sum_i c_i L_i`` with respect to a block of logits ``x`` (rows x this rank's classes).

    Into `out` (or a new tensor): ``p = exp((x - m) - log S) <= 1`` (no overflow), then
    ``c (A p - q)``.  ``coefficient`` is ``c``, 0 on ignored rows.
    """
    eps, z_loss = s.options.label_smoothing, s.options.z_loss
    v = x.shape[1]
    grad = torch.sub(x, frame[:, None], out=out).sub_(log_sum[:, None]).exp_()
    a = (1 - eps) * weights + s.coef_total
    if z_loss:
        a = a + 2 * z_loss * (frame + log_sum)
    grad.mul_((coefficient * a)[:, None])
    if s.coef is not None:
        grad.addr_(coefficient, s.coef, alpha=-1)
    mine = kept & (labels >= start) & (labels < start + v)
    if v:
        grad.scatter_add_(1, (labels - start).clamp(0, v - 1)[:, None],
                          torch.where(mine, -(1 - eps) * weights * coefficient, 0.0)[:, None])
    return grad


# --------------------------------------------------------------------------- reduction


def check_global_denominator(value, reduction: str):
    """None, a finite number >= 0, or a 0-d floating tensor (values checked where the loss is formed)."""
    if value is None:
        return None
    if reduction != "mean":
        raise ValueError(f"`global_denominator` applies to reduction='mean' only, got reduction={reduction!r}.")
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or not value.is_floating_point():
            raise ValueError(f"`global_denominator` must be a number or a 0-d floating tensor, got a tensor of "
                             f"shape {tuple(value.shape)} and dtype {value.dtype}.")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (value >= 0 and value < float("inf")):
        raise ValueError(f"`global_denominator` must be a finite number >= 0, got {value!r}.")
    return float(value)


def denominator(weights, global_denominator, dtype):
    """The mean's denominator: `global_denominator` if given (checked finite and >= 0), else this batch's weights."""
    if global_denominator is None:
        return weights.sum()
    d = torch.as_tensor(global_denominator, dtype=dtype, device=weights.device)
    if isinstance(global_denominator, torch.Tensor) and not bool(_checks.values(d >= 0) & d.isfinite()):
        raise ValueError(f"`global_denominator` must be finite and >= 0, got {float(d)!r}.")
    return d


def row_coefficients(grad_out, d, reduction: str, kept, n: int, dtype):
    """``c_i``: the upstream gradient of row i's loss (times 1/d for the mean; 0 for ignored rows)."""
    c = grad_out.to(dtype)
    if reduction == "mean":
        positive = d > 0
        c = torch.where(positive, c / torch.where(positive, d, 1.0), 0.0)
    return torch.where(kept, c.expand(n) if c.ndim == 0 else c.reshape(n), 0.0)
