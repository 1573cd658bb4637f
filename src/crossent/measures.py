"""Information measures (placeholder until written)."""
__all__: list[str] = []
