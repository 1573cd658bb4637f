r"""Cross-entropy across processes: the vocabulary split over tensor-parallel ranks, the mean over data-parallel ones.

* :func:`vocab_parallel_cross_entropy`: logits whose last (class) dimension is
  split into contiguous slices, one per rank of a process group, of any sizes
  (also uneven, also 0): the loss of the whole vocabulary on every rank, and
  on each rank the gradient of its own slice.
* :func:`vocab_parallel_linear_cross_entropy`: the same for the language-model
  head with the projection split along the vocabulary, in chunks of tokens
  (the ``N x V_r`` logits never exist); :func:`vocab_parallel_linear_log_probs_and_entropy`:
  per-token log-probabilities and entropies for reinforcement learning.
* :func:`global_denominator`: the mean's denominator of one optimiser step over
  the ranks of a data-parallel group and its micro-batches (a count of tokens,
  or with class weights the sum of the targets' weights), for
  ``global_denominator=`` or to divide a summed loss by.

The rules are those of :mod:`crossent._rules` (the conformance table runs
:func:`vocab_parallel_cross_entropy` in a world of one process;
``tests/test_torch_distributed.py`` runs it, the linear head and the
denominator in real gloo worlds of 2 and 3 processes against the single
process).  Label smoothing uses the global vocabulary size and the mean over
the whole vocabulary (Megatron-LM #737 uses the shard's).

Communication (per forward call, whatever the number of chunks)
---------------------------------------------------------------
1. an all-gather of eight integers per rank: shard sizes (so offsets and the
   vocabulary size are learnt, not assumed), token counts, checksums of the
   labels and of the options, the labels' range, bad-weight and zero-weight flags;
2. an all-reduce (max) of the ``N`` row maxima and a NaN flag;
3. an all-reduce (sum) of 3-4 rows of ``N`` numbers (the sum of exponentials
   without the maxima, the number of maxima, the target logit, and the
   smoothing sum or the entropy's moment).

Backward communicates nothing for the logits, the projection or the bias; the
linear head's hidden gradient is all-reduced once (unless
``all_reduce_hidden_grad=False``).  A bad value on any rank (labels, logits,
weights, a target or options that differ between ranks) raises the same
``ValueError`` on every rank, after the collective that told them all (never a
hang).  Bad arguments (types, shapes, option values) are refused before any
communication, on the rank that passed them: if only some ranks pass them, the
others wait in the first collective until the process group's timeout.
:func:`global_denominator` is one all-reduce of two numbers.

Devices and backends
--------------------
Every tensor stays on the inputs' device; nothing assumes the CPU.  The tests
run on gloo (CPU).  On NCCL (CUDA tensors) the same collectives run on the GPU
(all_gather of int64, all_reduce max/sum of float32/float64, all supported by
NCCL); the host waits for the device twice per forward call (reading the
layout table, and the NaN / all_masked flags) and once per
:func:`global_denominator` call, as the label checks of :mod:`crossent.torch`
already do; NCCL is not tested here (no GPU).  Every rank of the group must
call these functions in the same order with the same target and options,
and the groups must be made with ``torch.distributed.new_group`` as usual.

float16/bfloat16 are computed in float32 (the linear head's products in the
input dtype, as ``F.linear``).  Second derivatives are not supported
(``once_differentiable``).
"""

from .data import global_denominator
from .linear import vocab_parallel_linear_cross_entropy, vocab_parallel_linear_log_probs_and_entropy
from .logits import vocab_parallel_cross_entropy

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy",
           "vocab_parallel_linear_log_probs_and_entropy", "global_denominator"]
