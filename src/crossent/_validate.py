"""Shared input checks.

Every public function validates its inputs here first, so that bad input
gets a `ValueError`/`TypeError` that names the parameter and shows the bad
value, never a NaN or a silently wrong number.  Nothing in this module
imports anything else from the package.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator

import numpy as np


def show(value, limit: int = 6) -> str:
    """Short repr of `value` for error messages (arrays are truncated)."""
    if isinstance(value, np.ndarray) and value.size > limit:
        # np.asarray: an object array holds Python objects (a float, a str), which array2string cannot take
        flat = ", ".join(np.array2string(np.asarray(v), precision=6) for v in value.ravel()[:limit])
        return f"array([{flat}, ...], shape={value.shape})"
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + " ..."


def check_base(base) -> float | None:
    """Return ``log(base)`` as a Python float (``None`` for nats) after checking that `base` > 0 and != 1.

    `base` may be any real number: int, float, `fractions.Fraction`, or a NumPy
    scalar of any precision.
    """
    if base is None:
        return None
    if isinstance(base, (bool, np.bool_)) or not isinstance(base, numbers.Real):
        raise TypeError(f"`base` must be a positive number or None, got {base!r} ({type(base).__name__}).")
    # A Python number first: np.log(np.float16(10)) is computed in float16, and
    # arithmetic on np.uint8 wraps around.  math.log of an int is exact for any size.
    try:
        value = int(base) if isinstance(base, numbers.Integral) else float(base)
    except OverflowError:  # Fraction(10**400)
        value = math.inf
    if (isinstance(value, float) and not math.isfinite(value)) or value <= 0 or value == 1:
        raise ValueError(f"`base` must be a positive finite number other than 1, got {base!r}.")
    return math.log(value)


def to_base(value, log_base: float | None):
    """Convert a result in nats to the unit given by ``log_base``.

    The division is done in float64 and rounded once to the result's dtype,
    so a float32 result is within half an ulp of the exact quotient.
    """
    if log_base is None:
        return value
    value = np.asarray(value)
    return (value.astype(np.result_type(value.dtype, np.float64), copy=False) / log_base).astype(value.dtype, copy=False)


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


@functools.cache
def _extension_kind(dtype: np.dtype) -> str:
    """"f" for a float type of at most 16 bits that NumPy does not implement itself (ml_dtypes'
    bfloat16, float8/6/4 formats), "i" for such an integer type (int4, int2), "" otherwise."""
    if (dtype.kind not in "fV" or dtype in _NATIVE_FLOATS or dtype.fields is not None or dtype.itemsize > 2
            or not np.can_cast(dtype, np.float32, "same_kind")):
        return ""
    return "f" if float(np.asarray(0.5).astype(dtype).astype(np.float32)) == 0.5 else "i"


def _asarray(x, name: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError):  # ragged nesting such as [[0.5, 0.5], [1.0]]
        raise ValueError(f"`{name}` must be a rectangular array of numbers, got {show(x)}.") from None


def as_float_array(x, name: str, *, min_dtype=np.float64) -> np.ndarray:
    """`x` as a floating NumPy array.

    Integer and boolean input (including ml_dtypes' int4/int2) becomes
    `min_dtype`; float16, float32, float64 and longdouble stay as they are
    (callers decide their compute dtype).  Low-precision floats that NumPy
    knows only as extension types (``ml_dtypes.bfloat16`` as used by JAX, the
    float8 formats) become float32, which holds each of their values exactly.
    Complex, object, string and structured input is a `TypeError`.
    """
    return _to_float(_asarray(x, name), name, min_dtype)


def _to_float(arr: np.ndarray, name: str, min_dtype=np.float64) -> np.ndarray:
    extension = _extension_kind(arr.dtype)
    if arr.dtype.kind in "biu" or extension == "i":
        return arr.astype(min_dtype)
    if extension == "f":
        return arr.astype(np.float32)
    if arr.dtype.kind != "f":
        raise TypeError(f"`{name}` must be a real numeric array, got dtype {arr.dtype} ({show(arr)}).")
    return arr


def compute_dtype(*dtypes) -> np.dtype:
    """The dtype arithmetic is done in: float64 if any input is float64 or wider, else float32.

    float16 (and other low-precision) inputs are promoted to float32 so that
    sums and logs do not lose all their digits; longdouble is computed in
    float64, the widest type SciPy's ``entr``/``xlogy``/``rel_entr`` accept.
    """
    wide = any(np.dtype(d) in (np.dtype(np.float64), np.dtype(np.longdouble)) for d in dtypes)
    return np.dtype(np.float64) if wide else np.dtype(np.float32)


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


@functools.cache
def _epsilon(dtype: np.dtype) -> float:
    """The gap between 1 and the next number of a float dtype, NumPy's own or an extension type."""
    if dtype in _NATIVE_FLOATS:
        return float(np.finfo(dtype).eps)
    # np.finfo does not know bfloat16 or float8_*: find the smallest 2**-k
    # that 1 + 2**-k survives a round trip through the type.
    k = 1
    while k < 64 and float(np.asarray(1 + 2.0 ** -k).astype(dtype).astype(np.float64)) == 1 + 2.0 ** -k:
        k += 1
    return 2.0 ** -(k - 1)


def sum_tolerance(dtype) -> float:
    """How far a sum of probabilities may stray from 1 in this dtype: ``max(sqrt(eps), 1e-6)``.

    `dtype` is the type the values were given in, which may be an extension
    float (bfloat16: 0.088; float8_e4m3fn: 0.35) even when they are computed
    in float32.
    """
    return epsilon_sum_tolerance(_epsilon(np.dtype(dtype)))


def epsilon_sum_tolerance(eps: float) -> float:
    """:func:`sum_tolerance` of a float type whose epsilon is `eps` (for types NumPy lacks, e.g. torch's)."""
    return max(math.sqrt(eps), 1e-6)


def _tolerance_dtype(given: np.dtype, converted: np.dtype) -> np.dtype:
    """Floats are judged by their own precision; integers and booleans by their float conversion."""
    return given if given in _NATIVE_FLOATS or _extension_kind(given) == "f" else converted


def check_unit_interval(x: np.ndarray, name: str) -> None:
    """Raise unless every entry of `x` is a finite number in [0, 1]."""
    check_finite(x, name)
    bad = (x < 0) | (x > 1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"`{name}` must lie in [0, 1], got {float(x[idx])!r} at index {idx}.")


def check_distribution(p, name: str, axis: int = -1, normalize: bool = False, *,
                       offer_normalize: bool = True, tolerance_dtype=None) -> np.ndarray:
    """Validate probabilities along `axis` and return them as a float array.

    Without `normalize`, entries must be finite, in [0, 1] and sum to 1 along
    `axis` within the :func:`sum_tolerance` of the dtype `p` was given in
    (bfloat16 input is computed in float32 but judged by bfloat16's
    precision); `tolerance_dtype` names that dtype when `p` has already been
    converted.  With ``normalize=True`` entries may be any finite
    non-negative weights or counts with a positive sum, and are divided by
    that sum (the explicit opt-in; nothing is normalised silently); the
    result is then at least float32.  `offer_normalize` adds that hint to the
    error; callers without a ``normalize`` parameter turn it off.
    """
    given = _asarray(p, name)
    p = _to_float(given, name)
    tol = sum_tolerance(_tolerance_dtype(given.dtype, p.dtype) if tolerance_dtype is None else tolerance_dtype)
    if p.ndim == 0:
        raise ValueError(f"`{name}` must have at least one dimension, got the scalar {show(p)}.")
    axis = check_axis(axis, p.ndim)
    check_finite(p, name)
    if (p < 0).any():
        idx = tuple(int(i) for i in np.argwhere(p < 0)[0])
        raise ValueError(f"`{name}` must be non-negative, got {float(p[idx])!r} at index {idx}.")
    if p.shape[axis] == 0:
        raise ValueError(f"`{name}` has no outcomes along axis {axis} (shape {p.shape}).")
    if normalize:
        normalized = normalize_weights(p, axis)
        if normalized is None:
            totals = p.max(axis=axis, keepdims=True)
            idx = tuple(int(i) for i in np.argwhere(totals <= 0)[0])
            raise ValueError(f"`{name}`{_at(idx, axis, ' at')} sums to 0 along axis {axis}; cannot normalize.")
        return normalized
    # Entries may exceed 1 by the tolerance the sum has: a marginal of a
    # one-row joint table can be 1.0000000000000002.  Checked before summing,
    # so that huge entries cannot overflow the sum.
    if (p > 1 + tol).any():
        idx = tuple(int(i) for i in np.argwhere(p > 1 + tol)[0])
        raise ValueError(
            f"`{name}` must lie in [0, 1], got {float(p[idx])!r} at index {idx}"
            + ("; pass normalize=True to treat weights or counts as a distribution." if offer_normalize else ".")
        )
    totals = p.sum(axis=axis, dtype=np.float64, keepdims=True)
    off = np.abs(totals - 1) > tol
    if off.any():
        idx = tuple(int(i) for i in np.argwhere(off)[0])
        raise ValueError(
            f"`{name}` must sum to 1 along axis {axis}, but {_at(idx, axis, 'the distribution at') or 'it'} sums to "
            f"{float(totals[idx]):.9g} (tolerance {tol:.1e})"
            + ("; pass normalize=True to normalise weights or counts." if offer_normalize else ".")
        )
    return p


def normalize_weights(w: np.ndarray, axis: int | None) -> np.ndarray | None:
    """``w / sum(w)`` along `axis` (over all of `w` for None) for finite ``w >= 0``; None if a sum is 0.

    The result is at least float32 (float16 would round every quotient).

    >>> normalize_weights(np.array([1e308, 1e308, 5e307]), -1).tolist()  # the sum overflows float64
    [0.4, 0.4, 0.2]
    """
    work = w.astype(np.result_type(w.dtype, np.float64), copy=False)
    peak = work.max(axis=axis, keepdims=True)
    if (peak <= 0).any():
        return None
    # Where the sum could overflow (the largest entry above 2**1000), scaling by a
    # power of two is exact and brings the largest entry into [1/2, 1): the sum
    # is then at most the number of entries, so counts such as 1e308 + 1e308
    # cannot overflow it (entries it rounds to 0 would be 0 in the quotient
    # anyway).  Smaller entries are not scaled, so a subnormal weight such as
    # 5e-324 is never halved to 0.  The quotient is rounded once more.
    exponent = np.frexp(peak)[1]
    scaled = np.ldexp(work, -np.where(exponent > 1000, exponent, 0))
    return (scaled / scaled.sum(axis=axis, keepdims=True)).astype(np.result_type(w.dtype, np.float32), copy=False)


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


# ----------------------------------------------- the information measures' inputs


def check_flag(value, name: str) -> bool:
    """A Python or NumPy bool (not 0/1, not a string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_distribution_pair(p, q, axis: int, normalize) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate `p` and `q` as distributions along a shared `axis` of their broadcast shape.

    Returns both in their common compute dtype and the axis as an index into
    the broadcast shape.  Each is judged by the tolerance of its own dtype.
    """
    normalize = check_flag(normalize, "normalize")
    given = {"p": _asarray(p, "p"), "q": _asarray(q, "q")}
    arrays = {name: _to_float(arr, name) for name, arr in given.items()}
    for name, arr in arrays.items():
        if arr.ndim == 0:
            raise ValueError(f"`{name}` must have at least one dimension, got the scalar {show(arr)}.")
    shapes = arrays["p"].shape, arrays["q"].shape
    try:
        shape = np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"`p` and `q` must broadcast against each other, got shapes {shapes[0]} and {shapes[1]}.") from None
    axis = check_axis(axis, len(shape))
    own_axes = {name: axis - (len(shape) - arr.ndim) for name, arr in arrays.items()}
    for name, own in own_axes.items():
        if own < 0:
            raise ValueError(f"`{name}` with shape {arrays[name].shape} has no outcome axis {axis} "
                             f"of the broadcast shape {shape}.")
    n_p, n_q = shapes[0][own_axes["p"]], shapes[1][own_axes["q"]]
    if n_p != n_q:
        raise ValueError(f"`p` and `q` must have the same number of outcomes along the axis, got {n_p} and {n_q} "
                         f"(shapes {shapes[0]} and {shapes[1]}).")
    dtype = compute_dtype(arrays["p"].dtype, arrays["q"].dtype)
    checked = []
    for name, arr in arrays.items():
        # Widened (exactly) before normalising, so that float16 counts beside
        # float64 ones are divided and rounded once, in float64.
        wide = arr if arr.dtype.itemsize >= dtype.itemsize else arr.astype(dtype)
        tolerance_dtype = _tolerance_dtype(given[name].dtype, arr.dtype)
        checked.append(check_distribution(wide, name, own_axes[name], normalize,
                                          tolerance_dtype=tolerance_dtype).astype(dtype, copy=False))
    return checked[0], checked[1], axis


def check_joint_table(pxy, normalize) -> np.ndarray:
    """A 2-D table of probabilities summing to 1 over all cells (or counts), in its compute dtype."""
    normalize = check_flag(normalize, "normalize")
    given = _asarray(pxy, "pxy")
    table = _to_float(given, "pxy")
    if table.ndim != 2 or table.size == 0:
        raise ValueError(f"`pxy` must be a non-empty 2-D table (rows X, columns Y), got shape {table.shape}.")
    check_finite(table, "pxy")
    if (table < 0).any():
        row, col = (int(i) for i in np.argwhere(table < 0)[0])
        raise ValueError(f"`pxy` must be non-negative, got {float(table[row, col])!r} at row {row}, column {col}.")
    if normalize:
        table = normalize_weights(table, None)
        if table is None:
            raise ValueError("`pxy` sums to 0; cannot normalize.")
        return table.astype(compute_dtype(table.dtype), copy=False)
    tol = sum_tolerance(_tolerance_dtype(given.dtype, table.dtype))
    too_big = table > 1 + tol  # a cell may exceed 1 by rounding, as the sum may; checked before summing
    if too_big.any():
        row, col = (int(i) for i in np.argwhere(too_big)[0])
        raise ValueError(
            f"`pxy` must lie in [0, 1], got {float(table[row, col])!r} at row {row}, column {col}; "
            "pass normalize=True to treat counts as a distribution."
        )
    total = float(table.sum(dtype=np.float64))
    if abs(total - 1) > tol:
        raise ValueError(
            f"`pxy` must sum to 1 over all cells, got {total:.9g} (tolerance {tol:.1e}); "
            "pass normalize=True to treat counts as a distribution."
        )
    return table.astype(compute_dtype(table.dtype), copy=False)
