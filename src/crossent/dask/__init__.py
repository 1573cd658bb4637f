r"""The streaming metrics on Dask collections: one accumulator per block, a tree of exact merges.

For blocks :math:`B_1, \dots, B_k` of the rows (the chunks of a ``dask.array``,
the partitions of a ``dask.dataframe``, the pieces of files of ``crossent eval
--dask``), each task feeds its block to an :class:`crossent.metrics.Accumulator`
and returns its state as plain data (``to_dict``); the states are merged in a
tree of at most `split_every` states per node (the ``chunk`` / ``combine`` /
``aggregate`` of ``dask.array.reductions``), and

.. math::

    \mathrm{result}(\mathrm{merge}(A(B_1), \dots, A(B_k))) = \mathrm{result}(A(B_1 \cup \dots \cup B_k))

holds bit for bit, whatever the blocks, the tree, the worker that ran a task
or the order in which they finished, because every sum in a state is an exact
integer (:mod:`crossent.metrics._exact`) and each row's values depend on that
row alone.  A task that is lost with its worker is simply run again.

This is the only module that imports Dask (``pip install 'crossent[dask]'``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

try:
    import dask.array as da
    from dask.delayed import Delayed, delayed
except ImportError:  # pragma: no cover - exercised by a subprocess test without dask
    raise ModuleNotFoundError("crossent.dask needs Dask: pip install 'crossent[dask]'", name="dask") from None

from .._validate import show
from ..metrics import Accumulator
from ..metrics._inputs import as_floats, as_labels, as_sample_weight
from ..metrics.accumulator import shift_rows_in_message
from ..metrics.kernel import select_backend
from ._cluster import CONNECT_TIMEOUT, MAX_LOCAL_WORKERS, QUIET_HTTP, cluster_client, local_threads  # noqa: F401

__all__ = ["evaluate", "evaluate_dataframe", "merge_states", "tree_merge", "cluster_client"]

SPLIT_EVERY = 8  # states merged per task of the tree: a merge of 8 small states is cheap, a task is not free


# ---------------------------------------------------------------- the tree


def block_state(options: dict, offset: int, kind: str, predictions, labels, sample_weight=None) -> dict:
    """A task: one block into a fresh ``Accumulator(**options)``, its state as plain data.

    Errors name the row in the whole collection (`offset` is the block's first row).
    """
    acc = Accumulator(**options)
    try:
        acc.update(labels=labels, sample_weight=sample_weight, **{kind: predictions})
    except (ValueError, TypeError) as exc:
        raise type(exc)(shift_rows_in_message(str(exc), offset)) from None
    return acc.to_dict()


def _ordered_task(order: int, fn, *args) -> dict:
    """Run the task ``fn(*args)``; its bad input (ValueError, TypeError) becomes a state that records it.

    The merge keeps the recorded error of the lowest `order` (the block's place in row order), so the error
    raised at the end is the first bad block's whichever task failed first: the same error on every run.
    """
    try:
        return fn(*args)
    except (ValueError, TypeError) as exc:
        return {"error": [order, type(exc).__name__, str(exc)]}


def _raise_failure(state: dict) -> dict:
    """`state` itself, or the error that an :func:`_ordered_task` recorded in it, raised."""
    if "error" in state:
        _, kind, message = state["error"]
        raise (TypeError if kind == "TypeError" else ValueError)(message)
    return state


def merge_states(*states: dict) -> dict:
    """The merge of accumulator states (``to_dict`` output) as one state; exact, so in any grouping and order.

    A state with an error (:func:`_ordered_task`) wins: the one of the lowest order.

    Examples:
        >>> a = block_state({}, 0, "probs", np.array([[0.9, 0.1]]), np.array([0]))
        >>> b = block_state({}, 1, "probs", np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1]))
        >>> Accumulator.from_dict(merge_states(b, a)).result()["accuracy"]  # 2 right of 3, in any order
        0.6666666666666666
    """
    failures = [state["error"] for state in states if "error" in state]
    if failures:
        return {"error": min(failures, key=lambda failure: failure[0])}
    acc = Accumulator.from_dict(states[0])
    for state in states[1:]:
        acc.merge(Accumulator.from_dict(state))
    return acc.to_dict()


def tree_merge(states: list, *, split_every: int | None = None, options: dict | None = None) -> Delayed:
    """A ``Delayed`` of the merge of `states` (Delayed states), merged `split_every` at a time, level by level.

    With no states at all, the state of an empty ``Accumulator(**options)``.

    Examples:
        >>> parts = [delayed(block_state)({}, 0, "probs", np.array([[0.9, 0.1]]), np.array([y])) for y in (0, 1, 1)]
        >>> state = tree_merge(parts, split_every=2).compute(scheduler="sync")
        >>> Accumulator.from_dict(state).result()["accuracy"]
        0.3333333333333333
    """
    split_every = _split_every(split_every)
    level = list(states)
    if not level:
        return delayed(Accumulator(**(options or {})).to_dict())
    while len(level) > 1:
        level = [delayed(merge_states, pure=True)(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def _split_every(split_every) -> int:
    if split_every is None:
        return SPLIT_EVERY
    if isinstance(split_every, bool) or not isinstance(split_every, numbers.Integral) or split_every < 2:
        raise ValueError(f"`split_every` must be an integer of at least 2, got {split_every!r}.")
    return int(split_every)


def pin_backend(options: dict) -> dict:
    """`options` checked (bad ones fail here, not in every task), with the logits kernel's backend resolved here.

    The Numba and NumPy kernels round differently in the last bits, so every worker must use the backend this
    process would use: a worker without Numba then fails loudly instead of giving other bits.
    """
    Accumulator(**options)
    return {**options, "backend": select_backend(options.get("backend", "auto"))}


def _result(state: dict) -> dict:
    return Accumulator.from_dict(_raise_failure(state)).result()


# ------------------------------------------------------------ dask.array


def evaluate(*, logits=None, probs=None, labels, sample_weight=None, split_every=None, compute=True, **options):
    """The metrics of :func:`crossent.metrics.evaluate` over Dask arrays, bit for bit the same.

    Each row block of `logits` (or `probs`) feeds an ``Accumulator(**options)`` with the same rows of
    `labels` (and `sample_weight`); the states are merged in a tree (:func:`tree_merge`), exactly.

    Args:
        logits, probs: exactly one, a ``dask.array`` of shape (N, C), or (N,) for binary predictions, any
            float dtype the accumulator takes.  The rows may be chunked at will; the class axis is
            rechunked into one chunk (a row must be in one block).
        labels: (N,) integer ``dask.array`` (rechunked to the predictions' row chunks) or NumPy array.
        sample_weight: like `labels`, non-negative weights, or None.
        split_every: states merged per task of the tree (default 8).
        compute: False returns a ``Delayed`` of the result dict (for ``client.compute``).
        **options: of :class:`crossent.metrics.Accumulator` (``bins``, ``top_k``, ``ignore_index``, ``base``, ...).

    Examples:
        >>> import dask.array as da
        >>> from crossent import metrics
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.standard_normal((1000, 7)), rng.integers(0, 7, 1000)
        >>> r = evaluate(logits=da.from_array(x, chunks=(137, 7)), labels=y, bins=10)  # 8 uneven blocks
        >>> r["nll"] == metrics.evaluate(logits=x, labels=y, bins=10)["nll"]
        True
    """
    if (logits is None) == (probs is None):
        raise ValueError("pass exactly one of `logits` and `probs`.")
    kind = "logits" if probs is None else "probs"
    x = _dask_predictions(logits if probs is None else probs, kind)
    options = pin_backend(options)
    rows = x.chunks[0]
    y = _aligned(labels, "labels", x, _check_label_dtype)
    w = None if sample_weight is None else _aligned(sample_weight, "sample_weight", x, _check_weight_dtype)
    offsets = np.cumsum((0,) + rows[:-1]).tolist()
    x_blocks, y_blocks = x.to_delayed().ravel(), y.to_delayed().ravel()
    w_blocks = [None] * len(rows) if w is None else w.to_delayed().ravel()
    states = [delayed(_ordered_task, pure=True)(i, block_state, options, offset, kind, xb, yb, wb)
              for i, (offset, xb, yb, wb) in enumerate(zip(offsets, x_blocks, y_blocks, w_blocks))]
    out = delayed(_result, pure=True)(tree_merge(states, split_every=split_every, options=options))
    return out.compute() if compute else out


def _dask_predictions(x, name: str):
    if not isinstance(x, da.Array):
        raise TypeError(f"`{name}` must be a dask.array.Array, got {type(x).__name__}; for in-memory arrays use "
                        "crossent.metrics.evaluate.")
    _check_dtype(lambda empty: as_floats(empty, name), x)  # the accumulator's dtype check, before any task
    if x.ndim not in (1, 2):
        raise ValueError(f"`{name}` must be (N, C), or (N,) for binary predictions; got shape {x.shape}.")
    _known_chunks(x, name)
    if x.ndim == 2 and len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})  # a row's classes in one block
    return x


def _known_chunks(x, name: str) -> None:
    if any(math.isnan(c) for c in x.chunks[0]):
        raise ValueError(f"`{name}` has unknown chunk sizes (NaN); call `{name}.compute_chunk_sizes()` first, "
                         "or use crossent.dask.evaluate_dataframe for a dataframe.")


def _check_dtype(check, x) -> None:
    """``check`` (an accumulator's input check) on an empty array of the dtype of `x`, a Dask array.

    Its message shows the values it saw; here that is an empty stand-in, so it names `x` instead.
    """
    empty = np.empty((0,) * x.ndim, dtype=x.dtype)
    try:
        check(empty)
    except TypeError as exc:
        raise TypeError(str(exc).replace(show(empty), f"a dask.array of shape {x.shape}")) from None


def _check_label_dtype(values) -> None:
    as_labels(values.ravel(), values.size)


def _check_weight_dtype(values) -> None:
    as_sample_weight(values.ravel(), values.size)


def _aligned(values, name: str, x, check_dtype):
    """`values` as a 1-D Dask array with the row chunks of `x` (rechunked if they differ)."""
    if not isinstance(values, da.Array):
        values = np.asarray(values)
        if values.shape != (x.shape[0],):
            raise ValueError(f"`{name}` must have shape ({x.shape[0]},) to match the predictions' rows, got "
                             f"{values.shape}.")
        check_dtype(values)
        return da.from_array(values, chunks=(x.chunks[0],))
    _check_dtype(check_dtype, values)
    _known_chunks(values, name)
    if values.ndim != 1 or values.shape[0] != x.shape[0]:
        raise ValueError(f"`{name}` must have shape ({x.shape[0]},) to match the predictions' rows, got "
                         f"{values.shape}.")
    return values if values.chunks[0] == x.chunks[0] else values.rechunk((x.chunks[0],))


# -------------------------------------------------------- dask.dataframe


def evaluate_dataframe(df, *, logits=None, probs=None, labels, sample_weight=None, split_every=None, compute=True,
                       **options):
    """The metrics of the predictions in a ``dask.dataframe`` (e.g. ``dd.read_parquet`` of many files).

    Each partition feeds an ``Accumulator(**options)``; the states are merged in a tree, exactly, so the
    result is bit for bit :func:`crossent.metrics.evaluate` on all the rows in partition order.

    Args:
        df: a ``dask.dataframe.DataFrame``.
        logits, probs: exactly one: the name of a list (or array) column holding C values per row, or a
            list of C column names (one per class; one column: binary predictions of class 1).
        labels: the name of the integer label column.
        sample_weight: the name of a weight column, or None.
        split_every, compute, **options: as :func:`evaluate`.

    Examples:
        >>> import dask.dataframe as dd, pandas as pd
        >>> frame = pd.DataFrame({"p0": [0.9, 0.2, 0.6], "p1": [0.1, 0.8, 0.4], "y": [0, 1, 1]})
        >>> r = evaluate_dataframe(dd.from_pandas(frame, npartitions=2), probs=["p0", "p1"], labels="y")
        >>> r["accuracy"], r["count"]
        (0.6666666666666666, 3)
    """
    import dask.dataframe as dd

    if (logits is None) == (probs is None):
        raise ValueError("pass exactly one of `logits` and `probs`.")
    if not isinstance(df, dd.DataFrame):
        raise TypeError(f"`df` must be a dask.dataframe.DataFrame, got {type(df).__name__}.")
    kind = "logits" if probs is None else "probs"
    columns = logits if probs is None else probs
    names = [columns] if isinstance(columns, str) else list(columns) if isinstance(columns, (list, tuple)) else None
    if not names or not all(isinstance(c, str) for c in names):
        raise TypeError(f"`{kind}` must be a column name or a list of column names, got {columns!r}.")
    wanted = {kind: names, "labels": [labels]} | ({} if sample_weight is None else {"sample_weight": [sample_weight]})
    for name, cols in wanted.items():
        if name != kind and not isinstance(cols[0], str):
            raise TypeError(f"`{name}` must be a column name, got {cols[0]!r}.")
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"`{name}`: no column {missing[0]!r}; the columns are {list(df.columns)}.")
    _check_column_dtypes(df, kind, names, labels, sample_weight)
    options = pin_backend(options)
    used = list(dict.fromkeys(names + [labels] + ([] if sample_weight is None else [sample_weight])))
    parts = df[used].to_delayed()
    column = columns if isinstance(columns, str) else names
    states = [delayed(_ordered_task, pure=True)(i, partition_state, options, i, kind, part, column, labels, sample_weight)
              for i, part in enumerate(parts)]
    out = delayed(_result, pure=True)(tree_merge(states, split_every=split_every, options=options))
    return out.compute() if compute else out


def _check_column_dtypes(df, kind: str, names: list, labels: str, sample_weight) -> None:
    """The columns' dtypes (the dataframe's metadata) checked here, not found wrong in a task."""
    import pandas as pd

    types = pd.api.types
    if not types.is_integer_dtype(df.dtypes[labels]):
        raise TypeError(f"`labels`: column {labels!r} must hold integer class indices, got dtype {df.dtypes[labels]}.")
    if sample_weight is not None and not types.is_numeric_dtype(df.dtypes[sample_weight]):
        raise TypeError(f"`sample_weight`: column {sample_weight!r} must hold numbers, got dtype "
                        f"{df.dtypes[sample_weight]}.")
    for name in names:
        dtype = df.dtypes[name]
        if len(names) == 1 and types.is_string_dtype(dtype) and not types.is_object_dtype(dtype):
            raise TypeError(f"`{kind}`: column {name!r} holds strings (dtype {dtype}), not numbers; a list column "
                            "turned into strings by dask's `dataframe.convert-string` can be kept as lists with "
                            "dask.config.set({'dataframe.convert-string': False}) or read from Parquet.")
        if len(names) > 1 and not types.is_float_dtype(dtype):
            raise TypeError(f"`{kind}`: column {name!r} must hold floating-point numbers, got dtype {dtype}.")


def partition_state(options: dict, index: int, kind: str, frame, column, labels: str, sample_weight) -> dict:
    """A task: one pandas partition into a fresh accumulator; errors name the partition and its row."""
    acc = Accumulator(**options)
    try:
        if len(frame):
            weight = None if sample_weight is None else frame[sample_weight].to_numpy(dtype=np.float64)
            acc.update(labels=_label_values(frame[labels]), sample_weight=weight,
                       **{kind: _prediction_matrix(frame, column, kind)})
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"partition {index}: {exc}") from None
    return acc.to_dict()


def _label_values(series) -> np.ndarray:
    if series.isna().any():
        raise ValueError(f"`labels`: column {series.name!r} has a missing label at row {int(series.isna().argmax())}.")
    return series.to_numpy(dtype=np.int64)


def _prediction_matrix(frame, column, kind: str) -> np.ndarray:
    """The (n, C) predictions of a partition: C scalar columns, or one column of C-value lists/arrays."""
    if not isinstance(column, str):
        return frame[column].to_numpy()[:, 0] if len(column) == 1 else frame[column].to_numpy()
    series = frame[column]
    if str(series.dtype).startswith(("list<", "large_list<", "fixed_size_list<")):  # pandas ArrowDtype
        import pyarrow as pa

        values = pa.chunked_array(pa.array(series)).combine_chunks()
        lengths = values.value_lengths().to_numpy(zero_copy_only=False)
        if values.null_count or (lengths != lengths[0]).any():
            raise ValueError(f"`{kind}`: row {int(np.argmax(lengths != lengths[0]))} of column {column!r}: every "
                             "row must hold the same number of classes (and no nulls)")
        return values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), -1)
    rows = series.to_numpy()
    if rows.dtype != object:  # a scalar column: binary predictions
        return rows
    try:
        return np.stack([np.asarray(r) for r in rows])
    except ValueError:
        sizes = [np.size(r) for r in rows]
        raise ValueError(f"`{kind}`: row {next(i for i, s in enumerate(sizes) if s != sizes[0])} of column "
                         f"{column!r}: every row must hold the same number of classes") from None


# --------------------------------------------------------------- clusters (connecting: _cluster.py)


def run_tasks(client, tasks: list[tuple], *, split_every=None, options=None, on_done=None) -> dict:
    """Run ``fn(*args)`` for each ``(fn, *args)`` of `tasks` on `client`, each giving a state; their merge.

    ``on_done(state)`` is called in the client as each task finishes (the progress line).  Bad input raises
    the error of the first failing task in the order of `tasks`, as one process would.
    """
    from distributed import as_completed

    leaves = [delayed(_ordered_task, pure=True)(i, fn, *args) for i, (fn, *args) in enumerate(tasks)]
    root = tree_merge(leaves, split_every=split_every, options=options)
    futures = client.compute([root, *leaves] if on_done else [root])
    if on_done:
        for future in as_completed(futures[1:]):
            state = future.result()
            if "error" not in state:
                on_done(state)
    return _raise_failure(futures[0].result())
