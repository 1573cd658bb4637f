"""Shared input checks.

Every public function validates its inputs here first, so that bad input
gets a `ValueError`/`TypeError` that names the parameter and shows the bad
value, never a NaN or a silently wrong number.  Nothing in this module
imports anything else from the package.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np


def show(value, limit: int = 6) -> str:
    """Short repr of `value` for error messages (arrays are truncated)."""
    if isinstance(value, np.ndarray) and value.size > limit:
        flat = ", ".join(np.array2string(v, precision=6) for v in value.ravel()[:limit])
        return f"array([{flat}, ...], shape={value.shape})"
    return repr(value)


def check_base(base) -> float | None:
    """Return ``log(base)`` (``None`` for nats) after checking that `base` > 0 and != 1."""
    if base is None:
        return None
    if isinstance(base, bool) or not isinstance(base, numbers.Real):
        raise TypeError(f"`base` must be a positive number or None, got {base!r}.")
    if not np.isfinite(base) or base <= 0 or base == 1:
        raise ValueError(f"`base` must be a positive finite number other than 1, got {base!r}.")
    return float(np.log(base))


def to_base(value, log_base: float | None):
    """Convert a result in nats to the unit given by ``log_base``."""
    return value if log_base is None else value / log_base


def check_axis(axis, ndim: int, name: str = "axis") -> int:
    """Return `axis` normalised to ``0 <= axis < ndim``."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"`{name}` must be an integer, got {axis!r}.") from None
    if not -ndim <= axis < ndim:
        raise ValueError(f"`{name}`={axis} is out of bounds for an array with {ndim} dimension(s).")
    return axis % ndim


_NATIVE_FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.longdouble))


def _is_extension_float(dtype: np.dtype) -> bool:
    """A float type of at most 16 bits that NumPy does not implement itself (bfloat16, float8_*)."""
    return (dtype.kind in "fV" and dtype not in _NATIVE_FLOATS and dtype.fields is None
            and dtype.itemsize <= 2 and np.can_cast(dtype, np.float32, "same_kind"))


def as_float_array(x, name: str, *, min_dtype=np.float64) -> np.ndarray:
    """`x` as a floating NumPy array.

    Integer and boolean input becomes `min_dtype`; float16 and float32 stay
    as they are (callers decide their compute dtype).  Low-precision floats
    that NumPy knows only as extension types (``ml_dtypes.bfloat16`` as used
    by JAX, the float8 formats) become float32, which holds each of their
    values exactly.  Complex, object, string and structured input is a
    `TypeError`.
    """
    arr = np.asarray(x)
    if arr.dtype.kind in "biu":
        return arr.astype(min_dtype)
    if _is_extension_float(arr.dtype):
        return arr.astype(np.float32)
    if arr.dtype.kind != "f":
        raise TypeError(f"`{name}` must be a real numeric array, got dtype {arr.dtype} ({show(x)}).")
    return arr


def compute_dtype(*dtypes) -> np.dtype:
    """The dtype arithmetic is done in: float64 if any input is, else float32.

    float16 (and other low-precision) inputs are promoted to float32 so that
    sums and logs do not lose all their digits.
    """
    return np.dtype(np.float64) if any(np.dtype(d) == np.float64 for d in dtypes) else np.dtype(np.float32)


def check_not_nan(x: np.ndarray, name: str) -> None:
    """Raise if `x` has a NaN; report the first index."""
    bad = np.isnan(x)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"`{name}` contains NaN (first at index {idx}).")


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise if `x` has a NaN or an infinity; report the first index."""
    bad = ~np.isfinite(x)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"`{name}` must be finite, got {float(x[idx])!r} at index {idx}.")


def sum_tolerance(dtype) -> float:
    """How far a sum of probabilities may stray from 1 in this dtype."""
    return max(float(np.sqrt(np.finfo(dtype).eps)), 1e-6)


def check_unit_interval(x: np.ndarray, name: str) -> None:
    """Raise unless every entry of `x` is a finite number in [0, 1]."""
    check_finite(x, name)
    bad = (x < 0) | (x > 1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"`{name}` must lie in [0, 1], got {float(x[idx])!r} at index {idx}.")


def check_distribution(p, name: str, axis: int = -1, normalize: bool = False, *,
                       offer_normalize: bool = True) -> np.ndarray:
    """Validate probabilities along `axis` and return them as a float array.

    Without `normalize`, entries must be finite, in [0, 1] and sum to 1 along
    `axis` within :func:`sum_tolerance`.  With ``normalize=True`` they may be
    any finite non-negative weights or counts with a positive sum, and are
    divided by that sum (the explicit opt-in; nothing is normalised silently).
    `offer_normalize` adds that hint to the error; callers without a
    ``normalize`` parameter turn it off.
    """
    p = as_float_array(p, name)
    if p.ndim == 0:
        raise ValueError(f"`{name}` must have at least one dimension, got the scalar {show(p)}.")
    axis = check_axis(axis, p.ndim)
    check_finite(p, name)
    if (p < 0).any():
        idx = tuple(int(i) for i in np.argwhere(p < 0)[0])
        raise ValueError(f"`{name}` must be non-negative, got {float(p[idx])!r} at index {idx}.")
    if p.shape[axis] == 0:
        raise ValueError(f"`{name}` has no outcomes along axis {axis} (shape {p.shape}).")
    totals = p.sum(axis=axis, dtype=np.float64, keepdims=True)
    if normalize:
        if (totals <= 0).any():
            idx = tuple(int(i) for i in np.argwhere(totals <= 0)[0])
            where = _at(idx, axis, " at")
            raise ValueError(f"`{name}`{where} sums to 0 along axis {axis}; cannot normalize.")
        return (p / totals).astype(p.dtype, copy=False)
    tol = sum_tolerance(p.dtype)
    # Entries may exceed 1 by the tolerance the sum has: a marginal of a
    # one-row joint table can be 1.0000000000000002.
    if (p > 1 + tol).any():
        idx = tuple(int(i) for i in np.argwhere(p > 1 + tol)[0])
        raise ValueError(
            f"`{name}` must lie in [0, 1], got {float(p[idx])!r} at index {idx}"
            + ("; pass normalize=True to treat weights or counts as a distribution." if offer_normalize else ".")
        )
    off = np.abs(totals - 1) > tol
    if off.any():
        idx = tuple(int(i) for i in np.argwhere(off)[0])
        raise ValueError(
            f"`{name}` must sum to 1 along axis {axis}, but {_at(idx, axis, 'the distribution at') or 'it'} sums to "
            f"{float(totals[idx]):.9g} (tolerance {tol:.1e})"
            + ("; pass normalize=True to normalise weights or counts." if offer_normalize else ".")
        )
    return p


def _at(idx: tuple, axis: int, prefix: str) -> str:
    """Where a distribution sits in the batch, e.g. "at (2,)"; empty for a single distribution."""
    batch = tuple(i for k, i in enumerate(idx) if k != axis)
    return f"{prefix} {batch}" if batch else ""


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"`{name_a}` and `{name_b}` must have the same shape, got {a.shape} and {b.shape}.")


def check_weights(w, name: str, shape: tuple | None = None) -> np.ndarray:
    """Finite, non-negative weights, optionally of an exact `shape`."""
    w = as_float_array(w, name)
    if shape is not None and w.shape != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {w.shape}.")
    check_finite(w, name)
    if (w < 0).any():
        idx = tuple(int(i) for i in np.argwhere(w < 0)[0])
        raise ValueError(f"`{name}` must be non-negative, got {float(w[idx])!r} at index {idx}.")
    return w


def check_integer_labels(labels, num_classes: int, name: str = "labels", ignore_index=None) -> np.ndarray:
    """Integer class indices in ``[0, num_classes)``, or equal to `ignore_index`.

    Floating or boolean labels are a `TypeError`: an index must be an integer.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must be integer class indices, got dtype {labels.dtype} ({show(labels)}).")
    if ignore_index is not None:
        try:
            ignore_index = operator.index(ignore_index)
        except TypeError:
            raise TypeError(f"`ignore_index` must be an integer or None, got {ignore_index!r}.") from None
    kept = labels if ignore_index is None else labels[labels != ignore_index]
    bad = (kept < 0) | (kept >= num_classes)
    if bad.any():
        value = int(kept[bad][0])
        extra = "" if ignore_index is None else f" (or equal to ignore_index={ignore_index})"
        raise ValueError(f"`{name}` must lie in [0, {num_classes}){extra}, got {value}.")
    return labels
