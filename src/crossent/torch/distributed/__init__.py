from .data import global_denominator
from .linear import vocab_parallel_linear_cross_entropy, vocab_parallel_linear_log_probs_and_entropy
from .logits import vocab_parallel_cross_entropy

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy",
           "vocab_parallel_linear_log_probs_and_entropy", "global_denominator"]
