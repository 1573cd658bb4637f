"""Root pytest configuration: skip modules whose optional dependency is absent."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("src/crossent/torch")
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore.append("src/crossent/lab")
