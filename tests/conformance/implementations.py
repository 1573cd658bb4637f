"""Every implementation of softmax cross-entropy, one line each: a name, an adapter, what it does not support.

An adapter takes a :class:`cases.Case` and returns ``(loss, grad)`` as NumPy
arrays in the dtype the implementation returns (bfloat16 as ``ml_dtypes``),
``grad`` the (N, C) gradient of the reduced loss with respect to the logits
(of the sum of the rows, for ``"none"``).  It passes every option the case
sets, so that an unsupported one reaches the implementation and must be
refused there.

A ``loss_only`` implementation computes per-row values, no gradient and no
reduction (the metric kernel): its adapter returns ``(nll, entropy)``, (N,)
arrays compared row by row with the reference (NLL on the kept rows, entropy
on rows with a finite logit), whatever the case's `reduction`.  Options it
has no parameter for are declared in ``not_taken``: those cases are skipped,
with the reason in the test report, not run without the option.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import torch

import crossent.kernels
import crossent.torch
from crossent import losses
from crossent.metrics.kernel import logit_row_stats
from crossent.torch._plain import cross_entropy_plain
from crossent.torch._plain import reduce as _plain_reduce

_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64,
                 "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Implementation:
    name: str
    run: Callable  # case -> (loss, grad)
    unsupported: frozenset = frozenset()  # case features it must refuse with a ValueError/TypeError
    loss_only: bool = False  # per-row (nll, entropy) instead of (loss, grad)
    not_taken: frozenset = frozenset()  # case features it has no parameter for: not applicable, skipped

    def __repr__(self):
        return self.name


# --------------------------------------------------------------------------- NumPy


def _losses(case, backend, axis=-1):
    logits, labels = case.logits, case.labels
    if axis == 0:  # the class axis first: a transposed (non-contiguous) view
        logits, labels = logits.T, labels.T if case.probability_targets else labels
    loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, axis=axis, backend=backend, **case.options)
    return np.asarray(loss), grad.T if axis == 0 else grad


def _kernel(case, backend, inplace):
    logits = np.array(case.logits) if inplace else case.logits  # in place: on a (writeable) copy
    loss, grad = crossent.kernels.softmax_cross_entropy_fused(logits, case.labels, inplace=inplace, backend=backend,
                                                              **case.options)
    if inplace:
        assert grad is logits, "inplace=True must return the logits' own buffer"
    return np.asarray(loss), grad


def _metric_kernel(case, backend):
    """The one-pass metric kernel: per-row NLL and entropy (ignore_index as its `kept` rows)."""
    labels, kept = case.labels, None
    if case.ignore_index is not None and labels.dtype.kind in "iu":
        kept = labels != case.ignore_index
        labels = np.where(kept, labels, 0)  # the kernel reads a label in range on every row
    stats = logit_row_stats(case.logits, labels, kept, backend=backend)
    return stats.nll, stats.entropy


# --------------------------------------------------------------------------- torch


def _to_torch(a, dtype_name=None):
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    tensor = torch.from_numpy(np.array(a))  # a copy: torch tensors are writeable
    return tensor if dtype_name is None else tensor.to(_TORCH_DTYPES[dtype_name])


def _to_numpy(t):
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.float().numpy().astype(ml_dtypes.bfloat16)
    return t.numpy()


def _torch_options(case):
    weight = None if case.class_weight is None else _to_torch(case.class_weight, case.dtype_name)
    ignore_index = -100 if case.ignore_index is None else case.ignore_index  # torch's default ignores nothing here
    return dict(weight=weight, ignore_index=ignore_index, label_smoothing=case.label_smoothing,
                reduction=case.reduction)


def _backward(loss, logits):
    (loss.sum() if loss.ndim else loss).backward()
    return _to_numpy(loss), _to_numpy(logits.grad)


def _torch_cross_entropy(case, **keywords):
    logits = _to_torch(case.logits).requires_grad_(True)
    z_loss = dict(z_loss=case.z_loss) if case.z_loss else {}
    # inplace_backward writes into its input: a layer's output, never a leaf that requires grad (refused)
    given = logits.clone() if keywords.get("inplace_backward") else logits
    loss = crossent.torch.cross_entropy(given, _to_torch(case.labels), **_torch_options(case), **z_loss, **keywords)
    return _backward(loss, logits)


def _torch_cross_entropy_plain(case):
    logits = _to_torch(case.logits).requires_grad_(True)
    z_loss = dict(z_loss=case.z_loss) if case.z_loss else {}
    loss = cross_entropy_plain(logits, _to_torch(case.labels), **_torch_options(case), **z_loss)
    return _backward(loss, logits)


def _linear_cross_entropy(case):
    """``hidden @ I.T``: the identity weight makes the hidden's gradient the logits' gradient."""
    hidden = _to_torch(case.logits).requires_grad_(True)
    options = _torch_options(case)
    class_weight = options.pop("weight")
    identity = torch.eye(hidden.shape[1], dtype=hidden.dtype)
    loss = crossent.torch.linear_cross_entropy(hidden, identity, _to_torch(case.labels), chunk_size=2, vocab_tile=3,
                                               class_weight=class_weight, z_loss=case.z_loss, **options)
    return _backward(loss, hidden)


def _linear_log_probs(case):
    """The loss as ``-log_probs`` of ``linear_log_probs_and_entropy``, reduced by the torch rules' reduce.

    It has no smoothing, class weights or z-loss: those options are passed on, to be refused.
    """
    hidden = _to_torch(case.logits).requires_grad_(True)
    options = _torch_options(case)
    reduction = options.pop("reduction")
    extra = {k: v for k, v in (("label_smoothing", case.label_smoothing), ("class_weight", options.pop("weight")),
                               ("z_loss", case.z_loss)) if v is not None and not (isinstance(v, float) and v == 0)}
    options.pop("label_smoothing")
    labels = _to_torch(case.labels)
    identity = torch.eye(hidden.shape[1], dtype=hidden.dtype)
    log_probs, entropy = crossent.torch.linear_log_probs_and_entropy(
        hidden, identity, labels, return_entropy=False, chunk_size=2, vocab_tile=3, **options, **extra)
    assert entropy is None
    kept = labels != options["ignore_index"]
    loss = _plain_reduce(-log_probs, kept.sum().to(log_probs.dtype), reduction).to(hidden.dtype)
    return _backward(loss, hidden)


def _vocab_parallel_cross_entropy(case):
    """``crossent.torch.distributed`` in a world of one process (gloo), made once per test session.

    tests/test_torch_distributed.py runs the same cases with the vocabulary split over 2 and 3 processes.
    """
    import torch.distributed as dist

    from crossent.torch.distributed import vocab_parallel_cross_entropy

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    logits = _to_torch(case.logits).requires_grad_(True)
    weight = None if case.class_weight is None else _to_torch(case.class_weight, case.dtype_name)
    loss = vocab_parallel_cross_entropy(logits, _to_torch(case.labels), class_weight=weight,
                                        ignore_index=case.ignore_index, label_smoothing=case.label_smoothing,
                                        z_loss=case.z_loss, reduction=case.reduction)
    return _backward(loss, logits)


# --------------------------------------------------------------------------- the table

LOW_PRECISION = frozenset({"float16", "bfloat16"})
METRIC_NOT_TAKEN = frozenset({"class_weight", "label_smoothing", "z_loss"})  # a metric of the model's own p
IMPLEMENTATIONS = [
    Implementation("losses.reference", lambda case: _losses(case, "reference")),
    Implementation("losses.auto", lambda case: _losses(case, "auto")),
    Implementation("losses.auto.axis0", lambda case: _losses(case, "auto", axis=0)),
    Implementation("kernels.numpy", lambda case: _kernel(case, "numpy", False), LOW_PRECISION),
    Implementation("kernels.numpy.inplace", lambda case: _kernel(case, "numpy", True), LOW_PRECISION),
    Implementation("kernels.numba", lambda case: _kernel(case, "numba", False),
                   LOW_PRECISION | {"float64", "probability_targets"}),
    Implementation("kernels.numba.inplace", lambda case: _kernel(case, "numba", True),
                   LOW_PRECISION | {"float64", "probability_targets"}),
    # The metric kernel: float32/float64 logits, integer labels, ignore_index; no class weights, smoothing or z_loss.
    Implementation("metrics.kernel.numpy", lambda case: _metric_kernel(case, "numpy"),
                   LOW_PRECISION | {"probability_targets"}, loss_only=True, not_taken=METRIC_NOT_TAKEN),
    Implementation("metrics.kernel.numba", lambda case: _metric_kernel(case, "numba"),
                   LOW_PRECISION | {"probability_targets"}, loss_only=True, not_taken=METRIC_NOT_TAKEN),
    Implementation("torch.fused", lambda case: _torch_cross_entropy(case)),
    Implementation("torch.fused.inplace_backward", lambda case: _torch_cross_entropy(case, inplace_backward=True)),
    Implementation("torch.plain", _torch_cross_entropy_plain),
    # -inf logits cannot pass the identity product (0 * -inf = NaN): "masked" stays out of reach.
    Implementation("torch.linear", _linear_cross_entropy, frozenset({"probability_targets", "masked"})),
    Implementation("torch.linear.log_probs", _linear_log_probs,
                   frozenset({"probability_targets", "masked", "class_weight", "z_loss", "label_smoothing"})),
    Implementation("torch.vocab_parallel", _vocab_parallel_cross_entropy, frozenset({"probability_targets"})),
]
