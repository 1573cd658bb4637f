"""What every experiment shares: the run context, rounding, and the section record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

#: significant digits kept for every number written to results.json and the page
DIGITS = 6


def serial_map(function, items):
    """``[function(item) for item in items]``: the map of a run without a process pool."""
    return [function(item) for item in items]


@dataclass
class Context:
    """How an experiment runs: where figures go, quick or full sizes, the seed, and a ``map``.

    `map` is ``map(function, items) -> list``; the report passes a process-pool
    map for ``--jobs N``.  Each item carries its own seed, so the results do not
    depend on which process ran it.  `runs` keeps the networks trained so far
    (by their spec), so that an experiment can reuse another's networks.
    """

    out_dir: Path
    quick: bool = False
    seed: int = 0
    map: Callable = serial_map
    runs: dict = field(default_factory=dict)
    jobs: int = 1  # processes behind `map`: the networks of an experiment are cut into this many stacks
    lang: str = "en"
    figure_lang: str = "en"  # English where no CJK font was found for a Chinese report

    @property
    def t(self):
        """The page's words: ``ctx.t(key, **values)`` (:class:`~crossent.lab.strings.Strings`)."""
        from .strings import Strings

        return Strings(self.lang)

    @property
    def tf(self):
        """The figures' words (the page's language, or English without a CJK font)."""
        from .strings import Strings

        return Strings(self.figure_lang)


def tidy(value):
    """Round every float (recursively) to :data:`DIGITS` significant digits; NumPy -> Python.

    Non-finite floats become None (JSON has no NaN).

    Examples:
        >>> tidy({"a": np.float64(2) / 3, "b": [1, np.nan], "c": (np.int64(3),)})
        {'a': 0.666667, 'b': [1, None], 'c': [3]}
    """
    if isinstance(value, dict):
        return {str(key): tidy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [tidy(item) for item in value]
    if isinstance(value, np.ndarray):
        return tidy(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return float(f"{value:.{DIGITS}g}")
    return value


def fmt(value, digits=3, never="never"):
    """A number for a sentence: `digits` significant digits (`never` for None)."""
    if value is None:
        return never
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}g}"


def pct(value, digits=1):
    """A fraction in [0, 1] as a percentage for a sentence."""
    return f"{100.0 * float(value):.{digits}f}%"


def table(caption, columns, rows):
    """A table record for the page: `rows` are lists of numbers or short strings."""
    return {"caption": caption, "columns": list(columns), "rows": [list(row) for row in rows]}


def section(key, title, *, figures, text, tables, numbers, headline):
    """One experiment's record; every number passes through :func:`tidy`."""
    return tidy(
        {
            "id": key,
            "title": title,
            "figures": list(figures),
            "text": text,
            "headline": headline,
            "tables": tables,
            "numbers": numbers,
        }
    )
