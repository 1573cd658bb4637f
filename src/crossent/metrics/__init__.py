"""Streaming, mergeable, exact cross-entropy metrics, and the one-pass metric kernel.

* :class:`Accumulator`: ``update`` with batches of logits or probabilities,
  ``merge`` partial states (exactly: any split and merge order gives the same
  bits), ``result`` (nll, perplexity, accuracy, top-k accuracy, entropy,
  Brier, ECE/MCE and the reliability bins), ``to_dict``/``from_dict`` (JSON);
* :func:`evaluate`: one accumulator over one set of predictions;
* :func:`logit_row_stats`: the kernel, per-row statistics of (N, V) logits
  in one pass (Numba, or NumPy blocks).
"""

from .accumulator import Accumulator, evaluate
from .kernel import RowStats, logit_row_stats

__all__ = ["Accumulator", "evaluate", "logit_row_stats", "RowStats"]
