r"""The language-model head: losses and per-token quantities of ``softcap(hidden @ weight.T + bias) / T``.

Nothing here holds the ``N x V`` logits.  :func:`linear_cross_entropy` is the
training loss (with label smoothing, class weights, z-loss, softcap,
temperature and per-token statistics); :func:`linear_log_probs_and_entropy`
gives the per-token log-probability of the target and the entropy, both
differentiable, for policy-gradient losses (PPO/GRPO) and entropy bonuses.

Modules: ``_blocks`` (chunks of tokens against tiles of classes: the partial
sums of one tile, their merge into one frame, the gradient of one tile; free of
loss semantics, and shaped so that a vocabulary split across processes can
merge its shards with the same function), ``_head`` (the head's options and
argument checks, and the full-logits reference used for second derivatives
and ``torch.func``), ``_loss`` and ``_log_probs`` (the two autograd Functions).
"""

from ._blocks import default_chunk_size
from ._log_probs import linear_log_probs_and_entropy
from ._loss import linear_cross_entropy

__all__ = ["linear_cross_entropy", "linear_log_probs_and_entropy", "default_chunk_size"]
