"""Root pytest configuration: skip modules whose optional dependency is absent; `np` in doctests."""

import importlib.util

import numpy as np
import pytest

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("src/crossent/torch")
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore.append("src/crossent/lab")


@pytest.fixture(autouse=True)
def _numpy_in_doctests(doctest_namespace):
    """Doctests may write `np` without importing it (as the README's examples do)."""
    doctest_namespace["np"] = np
