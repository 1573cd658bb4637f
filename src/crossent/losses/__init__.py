r"""Losses and their exact gradients, side by side (the NumPy reference).

Every loss ``f`` has a twin ``f_with_grad`` that returns ``(loss, grad)``,
where ``grad`` is the derivative of the returned loss with respect to the
first argument and has its shape.  The gradient formula is written directly
below the loss formula, so both can be checked at a glance.

Conventions shared by all losses
--------------------------------
* ``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"``.  With
  ``"none"`` the per-element (per-example) losses come back, and ``grad`` is
  the gradient of their *sum*: each example's own gradient.
* Precision: the reference computes everything in float64 (it is the
  yardstick that fast kernels are checked against).  The loss and the
  gradient come back in float64 for float64 input (and for integer or boolean
  input), and in float32 for float32 and narrower floats (float16).
* Bad input is a ``ValueError``/``TypeError`` that names the parameter: NaN,
  out-of-range labels, mismatched shapes, negative weights, bad options.
"""

from .activations import log_sigmoid, log_softmax, sigmoid, sigmoid_derivative, softmax
from .binary import (
    binary_cross_entropy,
    binary_cross_entropy_with_grad,
    sigmoid_binary_cross_entropy,
    sigmoid_binary_cross_entropy_with_grad,
    sigmoid_focal_loss,
    sigmoid_focal_loss_with_grad,
)
from .regression import mean_squared_error, mean_squared_error_with_grad
from .softmax_ce import softmax_cross_entropy, softmax_cross_entropy_with_grad

__all__ = [
    "sigmoid",
    "sigmoid_derivative",
    "log_sigmoid",
    "softmax",
    "log_softmax",
    "sigmoid_binary_cross_entropy",
    "sigmoid_binary_cross_entropy_with_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_with_grad",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_grad",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_with_grad",
    "mean_squared_error",
    "mean_squared_error_with_grad",
]

