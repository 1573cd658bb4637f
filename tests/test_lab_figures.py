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
