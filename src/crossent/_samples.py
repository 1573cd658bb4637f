"""Samples of a discrete variable (labels, strings, objects) turned into integer codes, for the empirical measures."""

from __future__ import annotations

import numpy as np

from ._validate import _extension_kind, show


def check_samples(values, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A non-empty 1-D sample of one kind of value: each sample's code and the sorted distinct values.

    NaN, NaT and None are missing values, not samples; strings mixed with
    other values are refused, since NumPy would turn ``[1, "1"]`` into two
    equal strings.
    """
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):  # ragged nesting such as [[1], {}]
        arr = None
    if arr is None or arr.ndim != 1 or arr.size == 0:
        got = show(values) if arr is None or arr.ndim == 0 else f"shape {arr.shape}"
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence of samples, got {got}.")
    kind = arr.dtype.kind
    if kind in "US" and not isinstance(values, np.ndarray):
        text = str if kind == "U" else bytes
        for i, value in enumerate(values):
            if not isinstance(value, text):
                raise TypeError(f"`{name}` mixes {text.__name__} samples with {show(value)} "
                                f"({type(value).__name__}) at index {i}; use one kind of value.")
    if kind == "O":
        return _encode_objects(arr, name)
    missing = (np.isnan(arr.astype(np.float32)) if _extension_kind(arr.dtype) == "f"
               else np.isnan(arr) if kind in "fc" else np.isnat(arr) if kind in "mM" else None)
    if missing is not None and missing.any():
        what = "NaT" if kind in "mM" else "NaN"
        raise ValueError(f"`{name}` contains {what} (first at index {int(np.argmax(missing))}).")
    distinct, codes = np.unique(arr, return_inverse=True)
    return codes.ravel(), distinct


def _encode_objects(arr: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_samples` for an object array: codes from a dict, so only hashing and ordering are needed."""
    codes, index = np.empty(arr.size, dtype=np.intp), {}
    for i, value in enumerate(arr):
        if value is None:
            raise TypeError(f"`{name}` contains None at index {i}; every sample must be a value (a number, a string, ...).")
        if isinstance(value, (float, complex, np.inexact)) and np.isnan(value):
            raise ValueError(f"`{name}` contains NaN (first at index {i}).")
        try:
            codes[i] = index.setdefault(value, len(index))
        except TypeError:
            raise TypeError(f"`{name}` must hold hashable values, got {show(value)} "
                            f"({type(value).__name__}) at index {i}.") from None
    distinct = list(index)
    try:
        order = sorted(range(len(distinct)), key=distinct.__getitem__)
    except TypeError:
        first = distinct[0]
        other = next((v for v in distinct if not _comparable(v, first)), first)
        if type(other) is type(first):
            raise TypeError(f"`{name}` holds {type(first).__name__} values, which cannot be ordered, e.g. {show(first)}.") from None
        raise TypeError(f"`{name}` mixes values that cannot be compared: {show(first)} ({type(first).__name__}) "
                        f"and {show(other)} ({type(other).__name__}); use one kind of value.") from None
    rank, values = np.empty(len(order), dtype=np.intp), np.empty(len(order), dtype=object)
    for position, j in enumerate(order):
        rank[j], values[position] = position, distinct[j]
    return rank[codes], values


def _comparable(a, b) -> bool:
    try:
        a < b  # noqa: B015 - only whether it raises matters
    except TypeError:
        return False
    return True
