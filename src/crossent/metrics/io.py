"""Readers of predictions larger than memory: bounded batches of (predictions, labels) from .npy, Parquet, CSV.

Each reader yields ``(first_row, predictions, labels)`` with at most
`batch_rows` rows, in ordinary memory that is freed after the batch (a
``.npy`` file is read with ``readinto``, not memory-mapped, so the resident
memory stays bounded whatever the file size).  Problems are `ValueError`s that
name the file, and the row and column where there is one.  Parquet needs
pyarrow (``pip install 'crossent[eval]'``); ``.npy`` and CSV need nothing more.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator

import numpy as np

Batch = tuple[int, np.ndarray, np.ndarray]


def _open(path: str, mode: str = "rb"):
    try:
        return open(path, mode, **({} if "b" in mode else {"newline": ""}))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a file") from None


def npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a ``.npy`` file, checked against the file's size."""
    with _open(path) as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a .npy file ({exc})") from None
        offset = f.tell()
    if fortran and len(shape) > 1:
        raise ValueError(f"{path}: Fortran-ordered arrays are not supported; save it C-ordered")
    if dtype.hasobject:  # pickled Python objects: nothing to read as numbers (and never unpickled here)
        raise ValueError(f"{path}: holds Python objects (dtype {dtype}), not numbers; save a numeric array")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise ValueError(f"{path}: truncated: its header says shape {shape} of {dtype} ({expected} bytes), "
                         f"the file has {os.path.getsize(path)} bytes")
    return shape, dtype, offset


def _npy_batches(path: str, batch_rows: int, start: int = 0, stop: int | None = None
                 ) -> Iterator[tuple[int, np.ndarray]]:
    shape, dtype, offset = npy_header(path)
    if not shape:
        raise ValueError(f"{path}: holds a scalar, not rows")
    stop = shape[0] if stop is None else min(stop, shape[0])
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    with _open(path) as f:
        f.seek(offset + start * row_bytes)
        for lo in range(start, stop, batch_rows):
            hi = min(lo + batch_rows, stop)
            out = np.empty((hi - lo,) + tuple(shape[1:]), dtype=dtype)
            if f.readinto(memoryview(out.reshape(-1).view(np.uint8))) != out.nbytes:
                raise ValueError(f"{path}: truncated at row {lo}")
            yield lo, out


def npy_rows(path: str, labels_path: str) -> int:
    """The number of rows of a ``.npy`` of predictions, checked against the ``.npy`` of its labels."""
    n = npy_header(path)[0][:1]
    n_labels = npy_header(labels_path)[0]
    if n_labels[:1] != n or len(n_labels) != 1:
        raise ValueError(f"{labels_path}: labels of shape {n_labels} do not match the {n[0] if n else 0} rows of "
                         f"{path}")
    return n[0]


def npy_batches(path: str, labels_path: str, batch_rows: int, rows: tuple[int, int] | None = None
                ) -> Iterator[Batch]:
    """Batches of a ``.npy`` of predictions and the ``.npy`` of their labels, row by row (only `rows` = [lo, hi))."""
    npy_rows(path, labels_path)
    start, stop = rows or (0, None)
    for (lo, pred), (_, lab) in zip(_npy_batches(path, batch_rows, start, stop),
                                    _npy_batches(labels_path, batch_rows, start, stop)):
        yield lo, pred, lab


def _pyarrow(what: str):
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"reading {what} needs pyarrow: pip install 'crossent[eval]'") from None
    return pq


def parquet_batches(path: str, column: str, labels: str, batch_rows: int, row_groups: list[int] | None = None
                    ) -> Iterator[Batch]:
    """Batches of a Parquet file: a list/array column of predictions and an integer label column.

    `row_groups`: read only these (ascending, consecutive) row groups; rows are still numbered in the file.
    """
    pq = _pyarrow("Parquet")
    try:
        # pre_buffer=False: pyarrow's default pre-buffers whole column chunks (a 136 MB file held 143 MiB in
        # its pool at the end); without it a read holds about one row group, so memory stays bounded
        reader = pq.ParquetFile(path, pre_buffer=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as exc:  # pyarrow raises its own error types for a corrupt file
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    names = reader.schema_arrow.names
    for name, what in ((column, "--column"), (labels, "--labels")):
        if name not in names:
            raise ValueError(f"{path}: no column {name!r} ({what}); the columns are {names}")
    lo = 0 if not row_groups else sum(reader.metadata.row_group(g).num_rows for g in range(row_groups[0]))
    for batch in reader.iter_batches(batch_size=batch_rows, columns=[column, labels], row_groups=row_groups):
        preds, labs = batch.column(column), batch.column(labels)
        if hasattr(preds, "flatten") and hasattr(preds, "value_lengths"):
            lengths = preds.value_lengths().to_numpy(zero_copy_only=False)
            if preds.null_count or lengths.size and (lengths != lengths[0]).any():
                bad = int(np.argmax(lengths != lengths[0])) if lengths.size else 0
                raise ValueError(f"{path}: row {lo + bad}, column {column!r}: every row must hold the same number "
                                 "of classes (and no nulls)")
            values = preds.flatten().to_numpy(zero_copy_only=False)
            array = values.reshape(len(preds), -1) if len(preds) else values.reshape(0, 0)
        else:
            array = preds.to_numpy(zero_copy_only=False)
        if labs.null_count:
            raise ValueError(f"{path}: column {labels!r} has a missing label")
        yield lo, array, labs.to_numpy(zero_copy_only=False)
        lo += len(preds)


def csv_header(path: str) -> list[str]:
    """The column names of a CSV file."""
    with _open(path, "r") as f:
        header = next(csv.reader(f), None)
    if header is None:
        raise ValueError(f"{path}: empty file")
    return header


def _parquet_metadata(path: str):
    pq = _pyarrow("Parquet")
    try:
        return pq.ParquetFile(path).metadata
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None


def parquet_row_group_rows(path: str) -> list[int]:
    """The number of rows of each row group of a Parquet file."""
    meta = _parquet_metadata(path)
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def parquet_values_per_row(path: str, column: str) -> int:
    """Values of `column` per row in the first row group (the number of classes of a list column), at least 1.

    A batch can be no smaller than pyarrow's read of a row group's column chunk: write
    row groups of bounded size to bound the memory.
    """
    meta = _parquet_metadata(path)
    if meta.num_row_groups == 0 or meta.row_group(0).num_rows == 0:
        return 1
    group = meta.row_group(0)
    for j in range(group.num_columns):
        chunk = group.column(j)
        if chunk.path_in_schema.split(".")[0] == column:
            return max(1, chunk.num_values // group.num_rows)
    return 1


def csv_batches(path: str, columns: list[str] | None, labels: str, batch_rows: int) -> Iterator[Batch]:
    """Batches of a CSV with a header: probability (or logit) columns and an integer label column."""
    with _open(path, "r") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        if labels not in header:
            raise ValueError(f"{path}: no column {labels!r} (--labels); the columns are {header}")
        chosen = columns or [h for h in header if h != labels]
        missing = [c for c in chosen if c not in header]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} (--column); the columns are {header}")
        index = [header.index(c) for c in chosen]
        label_index = header.index(labels)
        preds, labs, lo = [], [], 0
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
            try:
                preds.append([float(row[i]) for i in index])
            except ValueError:
                bad = next(i for i in index if not _is_float(row[i]))
                raise ValueError(f"{path}: line {line}, column {header[bad]!r}: not a number: {row[bad]!r}") from None
            try:
                labs.append(int(row[label_index]))
            except ValueError:
                raise ValueError(f"{path}: line {line}, column {labels!r}: not an integer label: "
                                 f"{row[label_index]!r}") from None
            if len(labs) == batch_rows:
                yield lo, _rows(preds), np.array(labs)
                lo += len(labs)
                preds, labs = [], []
        if labs:
            yield lo, _rows(preds), np.array(labs)


def _rows(preds: list) -> np.ndarray:
    """The CSV rows as an array; one prediction column is binary (the probability of class 1)."""
    array = np.array(preds, dtype=np.float64)
    return array[:, 0] if array.shape[1] == 1 else array


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def batches(path: str, *, labels: str, column: list[str] | None, batch_rows: int) -> Iterator[Batch]:
    """The reader for `path` by its extension: ``.npy`` (labels: a ``.npy``), ``.parquet``/``.pq``, ``.csv``."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return npy_batches(path, labels, batch_rows)
    if ext in (".parquet", ".pq"):
        if not column or len(column) != 1:
            raise ValueError(f"{path}: Parquet needs --column NAME, the list column of predictions")
        return parquet_batches(path, column[0], labels, batch_rows)
    if ext == ".csv":
        return csv_batches(path, column, labels, batch_rows)
    raise ValueError(f"{path}: unknown file type {ext or '(none)'!r}; expected .npy, .parquet or .csv")
