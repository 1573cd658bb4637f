"""PyTorch drop-ins backed by crossent's fused CPU kernels.

This is the only package of crossent that imports :mod:`torch`; import it
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
  ``cross_entropy(softcap(hidden @ weight.T + bias) / T, target)`` with class
  weights, smoothing, z-loss and per-token stats, computed in chunks of (up to
  256 tokens) x (tiles of classes) with plain torch ops on any device, so that
  the full ``N x V`` logits never exist; for ``sum``/``mean`` the gradients are
  formed in the forward pass (6 ``N D V`` flops), holding one chunk of logits.
* :func:`linear_log_probs_and_entropy`: per-token log-probabilities of the
  targets and entropies of the same head, differentiable (policy-gradient losses).

Modules: :mod:`~crossent.torch.functional` (the functions),
:mod:`~crossent.torch.modules` (the ``nn.Module`` classes),
:mod:`~crossent.torch.linear` (the language-model head, a package), ``_ops`` (the fused
custom operators), ``_plain`` (plain differentiable torch ops), ``_checks``
(tensor checks).  The options follow :mod:`crossent._rules`.

Intentional differences from torch (everything else matches)
-------------------------------------------------------------
* A ``mean`` with nothing to divide by (all targets ignored, zero total weight,
  an empty batch) is ``0`` with a zero gradient; torch returns NaN.
* Bad input is a ``ValueError``/``TypeError`` naming the parameter: integer
  targets outside ``[0, C)`` (torch: an opaque error), probability targets that
  are not distributions or BCE targets outside ``[0, 1]`` (torch accepts them
  silently), negative or non-finite class weights, NaN or ``+inf`` logits, a
  kept row that is ``-inf`` everywhere, a bool `ignore_index`.
* A class weight or target mass of 0 on a ``-inf`` (masked) logit counts 0
  (torch: NaN); every ``lse - x`` is computed in the shifted frame, so logits
  with a large common offset keep their accuracy (``[[1e30, 1e30]]``: ln 2).
* Integer targets may have any integer dtype (torch requires int64).
* :func:`cross_entropy` takes an extra keyword ``z_loss`` (the PaLM auxiliary
  loss ``z_loss * logsumexp(x)**2`` per kept example, not multiplied by the
  class weight; ``mean`` divides it by the same denominator as the loss);
  :class:`CrossEntropyLoss` takes it too (shown in its ``repr`` when non-zero).
* No gradient flows to ``weight``/``pos_weight`` on the fused path; if the
  target or a weight requires grad, plain torch ops are used instead (same
  numbers, full autograd), and so inside ``torch.func`` transforms.
  Second derivatives (``create_graph=True``) are exact: backward then
  differentiates plain torch ops on the saved logits (the in-place mode raises).
  Each ``torch.autograd.grad`` call through a retained graph returns its own
  tensor; a saved gradient that an earlier backward handed on without a copy
  and that was then modified (the third ``loss.backward(retain_graph=True)``
  on a leaf) makes backward raise a ``RuntimeError``, never return a wrong number.
* Under ``torch.compile`` the fused functions are the custom operators
  ``crossent::softmax_cross_entropy`` and ``crossent::sigmoid_binary_cross_entropy``
  (one graph node each); ``inplace_backward`` is then ignored.
* float16/bfloat16 inputs are computed in float32; the loss and the input
  gradient come back in the input's dtype.
* :func:`linear_cross_entropy` follows ``F.linear(hidden, weight, bias)`` +
  ``F.cross_entropy`` (torch 2.13's ``F.linear_cross_entropy`` gives the same
  numbers; there the bias is the keyword ``linear_bias`` and ``weight`` means
  class weights, ours ``class_weight``).  It has no probability targets.
* On non-CPU devices the label and NaN checks synchronise with the device once
  per call (:func:`linear_cross_entropy`: twice in forward, none in backward).

Memory
------
The fused functions save the input gradient (one ``N x C`` array) in forward
instead of the softmax that torch saves, and keep a reference to the logits
(for second derivatives).  When the logits had to be copied anyway (class dim
not last, float16/bfloat16), the kernel writes the gradient into that copy, so
no further ``N x C`` array is allocated; ``inplace_backward=True`` writes it
into the logits themselves.  The first unit upstream gradient
(``loss.backward()``) hands the saved gradient on without a copy (a leaf adopts
it as its ``.grad``); any other scale, and any later backward through a
retained graph, allocates.  :func:`linear_cross_entropy` holds one chunk of
logits at a time (``chunk_size x V`` while it forms the gradients in forward,
else ``chunk_size x vocab_tile``; see its docstring); between forward and
backward it keeps its inputs, two numbers per row and, for ``sum``/``mean``,
the gradients it formed, which the first backward scales in place and hands on.

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

import torch  # noqa: F401  (``crossent.torch.torch`` is the real torch)

from .functional import binary_cross_entropy_with_logits, cross_entropy
from .linear import default_chunk_size, linear_cross_entropy, linear_log_probs_and_entropy
from .modules import BCEWithLogitsLoss, CrossEntropyLoss

__all__ = [
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "linear_cross_entropy",
    "linear_log_probs_and_entropy",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "default_chunk_size",
]

# The distributed losses (crossent.torch.distributed), imported on first use.
_DISTRIBUTED = ("vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy",
                "vocab_parallel_linear_log_probs_and_entropy", "global_denominator")
__all__ += list(_DISTRIBUTED)


def __getattr__(name):
    if name in _DISTRIBUTED:
        from . import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
