"""The report's words: one table of strings per language (``i18n/en.json``, ``i18n/zh.json``).

A string may name a term of the shared glossary (``i18n/glossary.json``) as
``[[key]]``; it is replaced by the term in the string's language when the
table loads, so a term is spelled one way on every page.  ``{name}``
placeholders are filled by :meth:`Strings.__call__` (``str.format``).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

LANGUAGES = ("en", "zh")
_TERM = re.compile(r"\[\[([a-z0-9_]+)\]\]")


def _read(name):
    return json.loads(resources.files("crossent.lab").joinpath("i18n", name).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def glossary():
    """The shared glossary: term key -> {"en": ..., "zh": ...} (without its ``_about`` note)."""
    return {key: value for key, value in _read("glossary.json").items() if not key.startswith("_")}


@lru_cache(maxsize=None)
def table(lang):
    """The strings of `lang` with the glossary terms filled in: key -> text.

    Examples:
        >>> table("zh")["head.softmax_ce"]
        'softmax + 交叉熵'
    """
    if lang not in LANGUAGES:
        raise ValueError(f"`lang` must be one of {LANGUAGES}, got {lang!r}.")
    terms = glossary()

    def term(match):
        return terms[match.group(1)][lang]

    return {key: _TERM.sub(term, text) for key, text in _read(f"{lang}.json").items() if not key.startswith("_")}


class Strings:
    """``strings(key, **values)``: the text of `key` in one language, placeholders filled.

    Examples:
        >>> Strings("en")("unit.epochs", n=3), Strings("zh")("unit.epochs", n=3)
        ('3 epochs', '3 个轮次')
    """

    def __init__(self, lang="en"):
        self.lang = lang
        self.table = table(lang)

    def __call__(self, key, **values):
        return self.table[key].format(**values) if values else self.table[key]
