"""Fused cross-entropy kernels: the loss and its gradient in one pass over the logits.

These are the fast paths behind :mod:`crossent.losses` and :mod:`crossent.torch`.
They take NumPy arrays that the caller has already shaped (2-D C-contiguous
logits, labels range-checked), compute the loss and the gradient of the
reduced loss together, and can write the gradient into the logits buffer
(``inplace=True``) so that no N x V array is allocated at all.  They find NaN
and ``+inf`` logits during the pass they make anyway, so callers need no
separate O(N V) scan.

Backends (chosen per call by ``backend=``, from the table
:data:`crossent.kernels.api.BACKENDS`; nothing compiled at install time):

* :mod:`crossent.kernels.numba_fused` for float32 logits (softmax with integer
  targets, and sigmoid BCE with scalar or full-shape weights): one vectorised
  loop per row with a polynomial ``exp``, JIT-compiled on first use and cached
  on disk (about 1.5 s once per machine, then about 0.2 s to load per process).
  Used only where ``numba`` is installed.
* :mod:`crossent.kernels.numpy_blocked` for everything else (float64,
  probability targets, other weight layouts, or no numba): NumPy on row
  blocks that stay in the L2 cache.

Both run on a thread pool over rows (``num_threads``, default ``os.cpu_count()``).

Accuracy against the float64 reference (:mod:`crossent._softmax_ce`): float64
inputs agree to ~1e-12 relative.  float32 inputs keep the row statistics
(log-sum-exp, per-row losses, the reduction) in float64, from float32
exponentials (relative error < 3e-7) and float32 partial sums; they agree to
``atol=2e-6, rtol=2e-5`` (gradients: ``atol`` times the largest entry).

Gradient buffers: a new N x V gradient is fresh memory whose first touch costs
a page fault per 4 KiB, about a quarter of the kernel's time at 512 MiB.  So
the kernels keep up to ``max_cached_buffers`` (default 2) gradient buffers of
1 MiB or more and hand one out again once nothing else references it (any
view or ``torch.from_numpy`` tensor of it counts as a reference).  In a
training loop this means steady-state steps allocate nothing; the price is
that up to two gradient-sized blocks stay allocated after the last call, until
:func:`empty_cache`, or the next call after ``max_cached_buffers = 0``.
Without ``sys.getrefcount`` (PyPy) nothing is reused.
"""

from __future__ import annotations

from .api import (
    BACKENDS,
    empty_cache,
    sigmoid_binary_cross_entropy_fused,
    softmax_cross_entropy_core,
    softmax_cross_entropy_fused,
    supports_softmax,
)

__all__ = [
    "softmax_cross_entropy_fused",
    "sigmoid_binary_cross_entropy_fused",
    "supports_softmax",
    "empty_cache",
    "BACKENDS",
    "softmax_cross_entropy_core",  # for callers that have checked their inputs (crossent.losses, crossent.torch)
]

#: How many gradient buffers (>= 1 MiB) are kept for reuse; 0 turns reuse off.
max_cached_buffers = 2
