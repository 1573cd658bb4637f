"""``crossent eval``: exact metrics of predictions in files larger than memory.

Registered by :mod:`crossent.cli` (``add_eval_parser`` in its SUBCOMMANDS);
it follows that module's pattern: the parser sets ``run=run_eval``, which
returns an ``Output`` (text for people, a dict for ``--json``), and bad input
is a `ValueError` that the command turns into one line and exit status 2.
Files are read in bounded batches (:mod:`crossent.metrics.io`) into one
:class:`crossent.metrics.Accumulator`; the reliability diagram is written to a
temporary file and renamed into place only when everything succeeded.  With
``--dask``, each piece of a file (rows of a ``.npy``, row groups of a Parquet
file, a CSV file) is a task with its own accumulator, merged exactly by
:mod:`crossent.dask` (the only module that imports Dask): the same output.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

BATCH_BYTES = 32 << 20  # the default batch: 32 MiB of float64 predictions, far below the 512 MiB budget
# The memory bound: a run adds at most PEAK_BATCHES batches (as float64, CSV: CSV_VALUE_BYTES a value and
# CSV_ROW_BYTES a row) plus
# PEAK_SLACK_BYTES to the resident memory of the interpreter that has loaded crossent (and numba),
# whatever the file size (tests/test_metrics_cli.py measures it).  At the default batch: 128 MiB.
PEAK_BATCHES = 3
PEAK_SLACK_BYTES = 32 << 20
#: a CSV row in memory: 32 bytes a value (a Python float and its list slot) and 64 for the row's own list
CSV_VALUE_BYTES, CSV_ROW_BYTES = 32, 64
MAX_BINS = 100_000


def _positive(text: str, most: int = 2**31 - 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(f"must be from 1 to {most:,}, got {value}")
    return value


def _bins(text: str) -> int:
    return _positive(text, MAX_BINS)


def add_eval_parser(subparsers):
    """Add ``crossent eval`` to the ``crossent`` command's subparsers."""
    help = "exact metrics (NLL, perplexity, accuracy, calibration) of predictions in .npy, Parquet or CSV files"
    parser = subparsers.add_parser(
        "eval", help=help, description=help[:1].upper() + help[1:] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  crossent eval logits.npy --labels labels.npy\n"
               "  crossent eval part-*.parquet --column logits --labels label --json\n"
               "  crossent eval preds.csv --probs --labels y --reliability-plot reliability.png\n"
               "  crossent eval part-*.parquet --column logits --labels label --dask local:2\n",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help=".npy, .parquet or .csv files of predictions")
    parser.add_argument("--labels", action="append", required=True, metavar="FILE_OR_COLUMN",
                        help="a .npy of integer labels per .npy FILE (repeat it per file), or the label column")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--logits", dest="kind", action="store_const", const="logits",
                      help="the predictions are logits (default for .npy and Parquet)")
    kind.add_argument("--probs", dest="kind", action="store_const", const="probs",
                      help="the predictions are probabilities (default for CSV)")
    parser.add_argument("--column", action="append", metavar="NAME",
                        help="Parquet: the list column of predictions; CSV: a prediction column (repeat; "
                             "default: every column but the labels)")
    parser.add_argument("--ignore-index", type=int, default=None, metavar="N", help="label of rows that do not count")
    parser.add_argument("--bins", type=_bins, default=15, help=f"confidence bins of ECE/MCE (default 15, at most {MAX_BINS:,})")
    parser.add_argument("--top-k", type=_positive, default=None, metavar="K",
                        help="k of the top-k accuracy (default 5, or the number of classes if fewer)")
    parser.add_argument("--batch-rows", type=_positive, default=None, metavar="N",
                        help="rows read per batch (default: 32 MiB of predictions as float64); memory: the "
                             f"run adds at most {PEAK_BATCHES} batches + {PEAK_SLACK_BYTES >> 20} MiB to the "
                             "interpreter's (~160 MiB), whatever the file size (.npy, CSV; Parquet adds pyarrow's read "
                             "buffers); lower N to use less")
    parser.add_argument("--base", type=float, default=None, metavar="B", help="also report the NLL in log-B units")
    parser.add_argument("--normalize", action="store_true",
                        help="divide each row of probabilities by its sum (otherwise rows must sum to 1)")
    parser.add_argument("--reliability-plot", metavar="PNG", help="write the reliability diagram (needs matplotlib)")
    parser.add_argument("--dask", metavar="ADDRESS",
                        help="run on a Dask cluster: a scheduler address (tcp://HOST:PORT), or local:N to start "
                             "N local worker processes (needs the dask extra); the same numbers as one process")
    parser.add_argument("--partition-rows", type=_positive, default=None, metavar="N",
                        help="with --dask: rows per task (default: 4 batches; Parquet: whole row groups)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=run_eval)


def _label_sources(args) -> list[str]:
    npy = [f for f in args.files if f.lower().endswith(".npy")]
    if npy and len(npy) != len(args.files):
        raise ValueError("mix of .npy and other files: evaluate them in separate runs")
    if npy:
        if len(args.labels) != len(npy):
            raise ValueError(f"{len(npy)} .npy file(s) need as many --labels .npy files, got {len(args.labels)}")
        return list(args.labels)
    if len(args.labels) != 1:
        raise ValueError("--labels names one label column for Parquet and CSV files")
    return args.labels * len(args.files)


def _normalized(path, lo, pred):
    totals = pred.sum(axis=-1, keepdims=True, dtype=np.float64)
    if pred.ndim != 2:
        raise ValueError(f"{path}: --normalize needs rows of probabilities, not binary ones")
    if (pred < 0).any() or not np.isfinite(pred).all() or (totals <= 0).any():
        row = int(np.argmax((pred < 0).any(axis=1) | ~np.isfinite(pred).all(axis=1) | (totals[:, 0] <= 0)))
        raise ValueError(f"{path}: row {lo + row}: --normalize needs finite non-negative values with a positive sum")
    return pred / totals


class _Progress:
    """``\\r<rows> rows, <rate> rows/s`` on stderr, when it is a terminal and not turned off."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.start = self.last = time.perf_counter()

    def show(self, rows: int, final: bool = False):
        now = time.perf_counter()
        if self.enabled and (final or now - self.last > 0.2):
            self.last = now
            rate = rows / max(now - self.start, 1e-9)
            print(f"\r{rows:,} rows, {rate:,.0f} rows/s", end="\n" if final else "", file=sys.stderr, flush=True)


def run_eval(args):
    """Read every file in batches into one accumulator (or one per partition, on Dask); return the cli's Output."""
    from .cli import Output
    from .metrics import Accumulator
    from .metrics import io as readers

    sources = _label_sources(args)
    options = _accumulator_options(args)
    progress = _Progress(not args.no_progress)
    if args.partition_rows and args.dask is None:
        raise ValueError("--partition-rows sets the rows of a Dask task; it needs --dask")
    if args.reliability_plot:
        _check_reliability_plot(args.reliability_plot)
    if args.dask is not None:  # an empty address is refused there, not silently run on one process
        acc = _run_on_dask(args, sources, options, progress)
    else:
        acc = Accumulator(**options)
        rows = 0
        for path, labels in zip(args.files, sources):
            batch_rows = args.batch_rows or _default_batch_rows(path, args.column)
            batches = readers.batches(path, labels=labels, column=args.column, batch_rows=batch_rows)
            rows += _feed(acc, path, batches, _kind(args, path), args.normalize,
                          lambda n, done=rows: progress.show(done + n))
        progress.show(rows, final=True)
    result = {**acc.result(), "top_k": acc.top_k_used}
    if args.reliability_plot:
        _write_reliability_plot(result, args.reliability_plot)
    return Output(_text(result, args, len(args.files)), _json(result))


def _accumulator_options(args) -> dict:
    options = {"bins": args.bins, "ignore_index": args.ignore_index, "base": args.base}
    return options if args.top_k is None else {**options, "top_k": args.top_k}


def _kind(args, path: str) -> str:
    return args.kind or ("probs" if path.lower().endswith(".csv") else "logits")


def _feed(acc, path, batches, kind: str, normalize: bool, on_batch=None) -> int:
    """Update `acc` with every batch of one file (or part of one); errors name the file and row. Rows read."""
    from .metrics.accumulator import shift_rows_in_message

    rows = 0
    for lo, pred, lab in batches:
        if normalize and kind == "probs":
            pred = _normalized(path, lo, pred)
        try:
            acc.update(labels=lab, **{kind: pred})
        except (ValueError, TypeError) as exc:
            hint = "; --normalize divides each row by its sum" if "`probs`" in str(exc) and pred.ndim == 2 and \
                not normalize else ""
            raise type(exc)(f"{path}: {shift_rows_in_message(str(exc), lo)}{hint}") from None
        rows += len(lab)
        if on_batch:
            on_batch(rows)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


# ------------------------------------------------------------------ --dask


def _run_on_dask(args, sources, options, progress):
    """One task per partition (rows of a .npy, row groups of a Parquet file, a CSV file), merged in a tree."""
    from .metrics import Accumulator

    try:
        from . import dask as on_dask
    except ImportError:
        raise ValueError("--dask needs Dask: pip install 'crossent[dask]'") from None
    options = on_dask.pin_backend({**options, "num_threads": on_dask.local_threads(args.dask)})
    # The workers may run elsewhere (another cwd, another machine on a shared file system): absolute paths.
    tasks = [(partition_state, options, _kind(args, path), args.normalize, batch_rows, path, os.path.abspath(path),
              labels if path.lower().endswith((".parquet", ".pq", ".csv")) else os.path.abspath(labels),
              args.column, part)
             for path, labels in zip(args.files, sources)
             for batch_rows in [args.batch_rows or _default_batch_rows(path, args.column)]
             for part in _partitions(path, labels, args.column, args.partition_rows or 4 * batch_rows)]
    rows = 0

    def done(state):
        nonlocal rows
        rows += state["count"] + state["ignored"]
        progress.show(rows)

    with on_dask.cluster_client(args.dask) as client:
        state = on_dask.run_tasks(client, tasks, options=options, on_done=done if progress.enabled else None)
    acc = Accumulator.from_dict(state)
    progress.show(acc.count + acc.ignored, final=True)
    return acc


def _partitions(path: str, labels: str, column, partition_rows: int) -> list[tuple]:
    """The pieces of one file that tasks read: (reader, where) with where a row range or row groups."""
    from .metrics import io as readers

    lower = path.lower()
    if lower.endswith(".npy"):
        n = readers.npy_rows(path, labels)
        if not n:
            raise ValueError(f"{path}: no rows")
        return [("npy", (lo, min(lo + partition_rows, n))) for lo in range(0, n, partition_rows)]
    if lower.endswith((".parquet", ".pq")):
        if not column or len(column) != 1:
            raise ValueError(f"{path}: Parquet needs --column NAME, the list column of predictions")
        sizes = readers.parquet_row_group_rows(path)
        if not sum(sizes):
            raise ValueError(f"{path}: no rows")
        parts, group, rows = [], [], 0
        for g, size in enumerate(sizes):
            if group and rows + size > partition_rows:
                parts.append(("parquet", group))
                group, rows = [], 0
            group.append(g)
            rows += size
        return parts + [("parquet", group)]
    readers.batches(path, labels=labels, column=column, batch_rows=1)  # an unknown extension fails here
    return [("csv", None)]


def partition_state(options, kind, normalize, batch_rows, shown, path, labels, column, part) -> dict:
    """A Dask task: one partition of one file into a fresh accumulator; its state as plain data.

    `path` is absolute (a worker has its own working directory); errors name the file as `shown`, as one
    process does.
    """
    from .metrics import Accumulator
    from .metrics import io as readers

    reader, where = part
    if reader == "npy":
        batches = readers.npy_batches(path, labels, batch_rows, rows=where)
    elif reader == "parquet":
        batches = readers.parquet_batches(path, column[0], labels, batch_rows, row_groups=where)
    else:
        batches = readers.csv_batches(path, column, labels, batch_rows)
    acc = Accumulator(**options)
    try:
        _feed(acc, path, batches, kind, normalize)
    except (ValueError, TypeError) as exc:
        raise type(exc)(str(exc).replace(path, shown)) from None
    return acc.to_dict()


def _default_batch_rows(path: str, column) -> int:
    """Rows per batch so that a batch holds about BATCH_BYTES of float64 predictions (CSV: of Python floats)."""
    lower = path.lower()
    classes, value_bytes = 1, 8
    if lower.endswith(".npy"):
        from .metrics.io import npy_header

        shape = npy_header(path)[0]
        classes = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    elif lower.endswith(".csv"):
        from .metrics.io import csv_header

        return max(1, BATCH_BYTES // (CSV_VALUE_BYTES * len(csv_header(path)) + CSV_ROW_BYTES))
    elif column and len(column) == 1:
        from .metrics.io import parquet_values_per_row

        classes = parquet_values_per_row(path, column[0])
    return max(1, BATCH_BYTES // (value_bytes * max(classes, 1)))


def _text(result: dict, args, n_files: int) -> str:
    def f(x):
        return f"{x:.6g}" if math.isfinite(x) else str(x)

    k = result["top_k"]
    nll = f"{f(result['nll'])} nats"
    if "nll_base" in result:
        nll += f" ({f(result['nll_base'])} in base {args.base:g})"
    rows = [("nll", nll), ("perplexity", f(result["perplexity"])), ("accuracy", f(result["accuracy"])),
            (f"top-{k} accuracy", f(result["top_k_accuracy"])), ("entropy", f"{f(result['entropy'])} nats"),
            ("brier", f(result["brier"])), ("ECE", f"{f(result['ece'])} ({args.bins} bins)"),
            ("MCE", f(result["mce"]))]
    lines = [f"{result['count']:,} rows ({result['ignored']:,} ignored) from {n_files} file(s), "
             f"total weight {f(result['total_weight'])}"]
    lines += [f"  {name:<16}{value}" for name, value in rows]
    return "\n".join(lines)


def _json(result: dict) -> dict:
    def number(x):
        x = float(x)
        return x if math.isfinite(x) else str(x)  # JSON has no NaN or infinity

    data = {k: (number(v) if isinstance(v, float) else v) for k, v in result.items() if k != "bins"}
    data["bins"] = {k: [number(x) if k != "count" else int(x) for x in v] for k, v in result["bins"].items()}
    return data


def _check_reliability_plot(path: str) -> None:
    """Before any work: matplotlib is there and `path`'s folder takes a new file (status 1, as a failed write)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError("--reliability-plot needs matplotlib", name="matplotlib")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise OSError(f"cannot write {path}: {'no such folder' if not os.path.isdir(folder) else 'permission denied'}")


def _write_reliability_plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = result["bins"]
    edges = bins["edges"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    filled = bins["count"] > 0
    ax.bar(edges[:-1][filled], bins["accuracy"][filled], width=np.diff(edges)[filled], align="edge",
           edgecolor="black", color="#4878cf", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"ECE {result['ece']:.4f}, {result['count']:,} rows")
    ax.legend(loc="upper left")
    tmp = f"{path}.tmp-{os.getpid()}.png"
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)  # the file appears only once it is complete
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
