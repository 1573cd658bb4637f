"""Matplotlib set-up for the lab: the Agg backend, one house style, PNG output, a CJK font for Chinese labels.

The backend is chosen here, inside the lab, before pyplot is first imported,
never at ``import crossent``.  Each figure has a fixed layout (its margins,
read once from matplotlib's constrained layout of the English and Chinese
figures and written down), so saving a figure draws it once: no
``tight_layout`` or constrained-layout pass that measures every text first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation  # noqa: E402

#: line colours per loss / head, used by every figure
COLORS = {
    "mse": "#d62728",
    "cross_entropy": "#1f77b4",
    "softmax_ce": "#1f77b4",
    "sigmoid_bce": "#2ca02c",
    "softmax_mse": "#ff7f0e",
    "sigmoid_mse": "#d62728",
    "linear_mse": "#9467bd",
}

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.8,
    "svg.hashsalt": "crossent",
    # titles at the top edge: the automatic position measures every y tick label of the axes at each
    # draw (a third of some figures' time); save() restores it where a title could meet an offset text
    "axes.titley": 1.0,
}

#: CJK fonts looked for, best first (Debian: fonts-wqy-microhei, fonts-wqy-zenhei, fonts-noto-cjk)
CJK_FONTS = ("WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
             "Source Han Sans CN", "Droid Sans Fallback", "AR PL UMing CN")
_CJK_FILES = ("wqy-microhei.ttc", "wqy-zenhei.ttc", "NotoSansCJK-Regular.ttc", "DroidSansFallbackFull.ttf")


@lru_cache(maxsize=None)
def cjk_font():
    """The family name of an installed font with Chinese glyphs, or None.

    Looks in matplotlib's font list first; a font installed after that list
    was cached is found by its file name under the system font folders and added.
    """
    from matplotlib import font_manager

    known = {font.name for font in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in known:
            return name
    for folder in ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts")):
        for filename in _CJK_FILES:
            for path in sorted(Path(folder).rglob(filename)) if Path(folder).is_dir() else ():
                font_manager.fontManager.addfont(str(path))
                name = font_manager.FontProperties(fname=str(path)).get_name()
                if name:
                    return name
    return None


def style(lang="en"):
    """The house style; for Chinese labels DejaVu Sans first (Latin, Greek, math signs), then the CJK font."""
    if lang == "en":
        return STYLE
    return {**STYLE, "font.family": ["DejaVu Sans", cjk_font()]}


def new_figure(ncols=1, nrows=1, *, width=10.0, height=3.8, layout=None, **kwargs):
    """A figure and its axes (``plt.subplots`` arguments) in the style of the context it is made in.

    `layout`: the subplot margins and spacing (``left``, ``right``, ``bottom``, ``top``, ``wspace``,
    as fractions of the figure; see ``Figure.subplots_adjust``).
    """
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)
    if layout:
        fig.subplots_adjust(**layout)
    return fig, axes


def save(fig, out_dir, name):
    """Write `fig` as ``out_dir/name.png``, close it, and return the file name."""
    filename = f"{name}.png"
    _drop_dense_minor_ticks(fig)
    _unicode_log_labels(fig)
    # zlib level 3 instead of PIL's 6: a quarter less encoding time, files within 2% of the size
    options = {"metadata": {"Software": None}, "pil_kwargs": {"compress_level": 3}}
    fig.savefig(Path(out_dir) / filename, **options)
    crowded = [ax for ax in fig.axes if any(ax.get_title(loc) for loc in ("left", "center", "right"))
               and (ax.yaxis.offsetText.get_text() or ax.xaxis.get_label_position() == "top")]
    if crowded:  # an offset text ("1e-5") or labels above the axes: let matplotlib lift these titles, and draw again
        for ax in crowded:
            ax._autotitlepos = True
        fig.savefig(Path(out_dir) / filename, **options)
    plt.close(fig)
    return filename


_SUPERSCRIPTS = str.maketrans("-−0123456789", "⁻⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _unicode_log_labels(fig):
    """Log-axis tick labels as plain text, ``10⁻³`` and ``2×10⁻¹``, instead of matplotlib's mathtext.

    The same labels, but no mathtext parser, which costs about 0.2 s to build
    in every process that draws a log axis.
    """
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            for old, setter in ((axis.get_major_formatter(), axis.set_major_formatter),
                                (axis.get_minor_formatter(), axis.set_minor_formatter)):
                if type(old) is LogFormatterSciNotation:
                    formatter = UnicodeLogFormatter()
                    formatter.__dict__.update(old.__dict__)  # the same settings (base, which ticks get labels)
                    setter(formatter)


def _superscript_label(text):
    """``$\\mathdefault{2\\times10^{-1}}$`` as ``2×10⁻¹``; other text unchanged."""
    import re

    match = re.fullmatch(r"\$\\mathdefault\{(?:([^{}]+?)\\times)?(\d+)\^\{([-−\d]+)\}\}\$", text)
    if not match:
        return text
    coefficient, base, exponent = match.groups()
    return f"{coefficient + '×' if coefficient else ''}{base}{exponent.translate(_SUPERSCRIPTS)}"


class UnicodeLogFormatter(LogFormatterSciNotation):
    """:class:`~matplotlib.ticker.LogFormatterSciNotation` with its labels as plain Unicode text (``10⁻³``)."""

    def __call__(self, x, pos=None):
        return _superscript_label(super().__call__(x, pos))


def _drop_dense_minor_ticks(fig, decades=3):
    """No minor ticks on log axes spanning more than `decades` decades.

    There they are a blur of hundreds of tick objects, each with its own
    markers, and took a quarter of such a figure's drawing time.
    """
    from matplotlib.ticker import NullLocator

    for ax in fig.axes:
        for axis, scale, limits in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()), (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
            low, high = sorted(limits)
            if scale == "log" and low > 0 and high / low > 10.0**decades:
                axis.set_minor_locator(NullLocator())


def integer_epochs(*axes):
    """Integer ticks on the x axes (epochs)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def house_style(lang="en"):
    """Context manager: the house style (for labels in `lang`) for everything drawn inside it."""
    return plt.rc_context(style(lang))
