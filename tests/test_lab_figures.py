"""The lab's figure helpers: the house style's fixed title position, and its fallback."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from crossent.lab import figures  # noqa: E402


def _title_heights(tmp_path, scale):
    with figures.house_style():
        fig, axes = figures.new_figure(2)
        for ax, factor in zip(axes, (1.0, scale)):
            ax.plot([0, 1], np.array([0, 1]) * factor)
            ax.set_title("a title wide enough to reach over the left edge of the axes " * 2)
        figures.save(fig, tmp_path, "f")
    return [ax.title.get_position()[1] for ax in axes]


def test_titles_sit_at_the_top_edge_without_measuring_the_axes(tmp_path):
    assert _title_heights(tmp_path, 1.0) == [1.0, 1.0]
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_a_title_that_would_meet_an_offset_text_is_lifted(tmp_path):
    # y values of order 1e-7: the y axis writes "1e-7" above its top, where the title would be
    plain, lifted = _title_heights(tmp_path, 1e-7)
    assert plain == 1.0 and lifted > 1.0


def test_log_axes_are_labelled_in_plain_unicode_without_mathtext(tmp_path):
    import matplotlib.mathtext

    parses = []
    original = matplotlib.mathtext.MathTextParser.parse
    matplotlib.mathtext.MathTextParser.parse = lambda self, s, *a, **k: parses.append(s) or original(self, s, *a, **k)
    try:
        with figures.house_style():
            fig, (wide, narrow) = figures.new_figure(2)
            wide.semilogy([1, 2], [1e-6, 1.0])  # decades only
            narrow.semilogy([1, 2], [0.15, 0.6])  # less than a decade: labelled minor ticks too
            figures.save(fig, tmp_path, "log")
        labels = {ax: [t.get_text() for t in ax.get_yticklabels(minor=minor) if t.get_text()]
                  for ax, minor in ((wide, False), (narrow, True))}
    finally:
        matplotlib.mathtext.MathTextParser.parse = original
    assert parses == []
    assert "10⁻⁶" in labels[wide] and "10⁰" in labels[wide] and all("$" not in t for t in labels[wide])
    assert labels[narrow] and all("×10⁻¹" in t for t in labels[narrow])
    assert figures._superscript_label(r"$\mathdefault{2\times10^{-1}}$") == "2×10⁻¹"
    assert figures._superscript_label("0.5") == "0.5"
