"""Tests of crossent.lab.strings: both languages have every string, with the same placeholders and known terms."""

import json
import re
import string
from importlib import resources

import pytest

from crossent.lab import strings


def _raw(name):
    return json.loads(resources.files("crossent.lab").joinpath("i18n", name).read_text(encoding="utf-8"))


def _fields(text):
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_in_both_languages_with_the_same_placeholders():
    en, zh = _raw("en.json"), _raw("zh.json")
    assert set(en) == set(zh) and len(en) > 150
    for key in en:
        assert _fields(en[key]) == _fields(zh[key]), key


def test_every_glossary_term_used_exists_and_is_filled_in():
    terms = strings.glossary()
    for lang in strings.LANGUAGES:
        raw = _raw(f"{lang}.json")
        used = {t for key, text in raw.items() if not key.startswith("_") for t in re.findall(r"\[\[([a-z0-9_]+)\]\]", text)}
        assert used <= set(terms), used - set(terms)
        assert not any("[[" in text for text in strings.table(lang).values())
    assert strings.table("zh")["e9.title"] == "9. 校准与温度缩放"


def test_chinese_strings_are_chinese():
    zh = strings.table("zh")
    prose = [k for k in zh if k.startswith(("e", "page.", "answer.")) and k.split(".")[1] in ("text", "title", "headline", "h1")]
    assert prose and all(re.search(r"[\u4e00-\u9fff]", zh[k]) for k in prose)


def test_strings_fill_placeholders_and_refuse_unknown_languages():
    assert strings.Strings("en")("col.moved", steps=10) == "moved in 10 steps"
    with pytest.raises(ValueError, match="`lang`"):
        strings.table("fr")
