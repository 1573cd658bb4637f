from .logits import vocab_parallel_cross_entropy

__all__ = ["vocab_parallel_cross_entropy"]
