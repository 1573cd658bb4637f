"""Hypothesis profiles for the property tests.

``make test`` (and CI) uses the "gate" profile: the examples come from a fixed
derandomised seed, so the same commit gives the same verdict on every run.
``make fuzz`` uses "explore": fresh random examples and many more of them, to
hunt for new counter-examples (subnormals, ties, extreme logits) before they
are frozen into a test.
"""

from hypothesis import settings

settings.register_profile("gate", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile("gate")
