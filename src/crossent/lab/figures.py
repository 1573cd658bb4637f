"""Matplotlib set-up for the lab: the Agg backend, one house style, PNG output.

The backend is chosen here, inside the lab, before pyplot is first imported,
never at ``import crossent``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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
LOSS_LABELS = {"mse": "MSE  ½(a−y)²", "cross_entropy": "cross-entropy"}

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
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
}


def new_figure(ncols=1, nrows=1, *, width=10.0, height=3.8, **kwargs):
    """A figure with the house style and its axes (``plt.subplots`` arguments)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)
    return fig, axes


def save(fig, out_dir, name):
    """Write `fig` as ``out_dir/name.png`` (tight layout), close it, and return the file name."""
    with plt.rc_context(STYLE):
        fig.tight_layout()
        filename = f"{name}.png"
        fig.savefig(Path(out_dir) / filename, metadata={"Software": None})
    plt.close(fig)
    return filename


def integer_epochs(*axes):
    """Integer ticks on the x axes (epochs)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def house_style():
    """Context manager: the house style for everything drawn inside it (experiments run in it)."""
    return plt.rc_context(STYLE)
