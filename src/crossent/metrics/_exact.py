r"""Exact sums of float64 values: integers, so that every merge order gives the same bits.

Every finite float64 is an integer multiple of :math:`2^{-1074}`.  From its
bits (sign, biased exponent :math:`E \in [0, 2046]`, 52-bit fraction :math:`f`)
the signed integer :math:`M = \pm(f + [E > 0]\,2^{52})`, with :math:`|M| < 2^{53}`, gives

.. math::

    x = M\,2^{\max(E, 1) - 1075} = M\,2^{b}\cdot 2^{-1074}, \qquad b = \max(E, 1) - 1 \in [0, 2045].

So :math:`x\,2^{1074}` is the Python integer ``M << b``, and a sum of floats
is a sum of integers: exact, associative and commutative.  Summing each value
with a Python shift would be slow; instead the values are bucketed by
:math:`b` (and by group), and each bucket's mantissas are added with
``np.bincount`` in float64, split in a high part (< 2**27 in magnitude) and a
low part (< 2**26): at most ``MAX_CHUNK`` = 2**25 values per bucket keeps every
partial sum below 2**53, where float64 addition of integers is exact.  Only
the non-empty buckets are then shifted into one Python integer per group.

Infinities are counted apart (``+inf`` and ``-inf``); NaN is refused.  The
final division (a mean) is done on the integers, so it is correctly rounded.
"""

from __future__ import annotations

import math

import numpy as np

N_EXP = 2046  # exponent buckets per group
SCALE_BITS = 1074  # a value is (integer) * 2**-SCALE_BITS
CHUNK = 1 << 16  # values per bincount: small enough for the cache, and its bucket sums stay below 2**53
_LOW_BITS = 26
_LOW_MASK = (1 << _LOW_BITS) - 1
_DIRECT_KEYS = 1 << 20  # above this many (group, exponent) keys, compress them with np.unique first


class ExactSum:
    """An exact sum of float64 values: ``scaled * 2**-1074``, plus counts of ``+inf`` and ``-inf``.

    Examples:
        >>> s = ExactSum.of(np.array([1e16, 1.0, -1e16]))
        >>> s.value()  # float addition in this order gives 0.0
        1.0
        >>> ExactSum.from_json(s.to_json()) == s
        True
    """

    __slots__ = ("scaled", "posinf", "neginf")

    def __init__(self, scaled: int = 0, posinf: int = 0, neginf: int = 0):
        self.scaled, self.posinf, self.neginf = scaled, posinf, neginf

    @classmethod
    def of(cls, values) -> ExactSum:
        """The exact sum of a float64 array."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        return grouped_sums(values, np.zeros(values.size, dtype=np.intp), 1)[0]

    def __iadd__(self, other: ExactSum) -> ExactSum:
        self.scaled += other.scaled
        self.posinf += other.posinf
        self.neginf += other.neginf
        return self

    def __add__(self, other: ExactSum) -> ExactSum:
        return ExactSum(self.scaled + other.scaled, self.posinf + other.posinf, self.neginf + other.neginf)

    def __eq__(self, other) -> bool:
        return isinstance(other, ExactSum) and (self.scaled, self.posinf, self.neginf) == (
            other.scaled, other.posinf, other.neginf)

    def __repr__(self) -> str:
        return f"ExactSum({self.to_json()!r})"

    def special(self) -> float | None:
        """``inf``, ``-inf`` or ``nan`` when infinities were added, else None (the sum is finite)."""
        if self.posinf and self.neginf:
            return math.nan
        if self.posinf:
            return math.inf
        if self.neginf:
            return -math.inf
        return None

    def value(self) -> float:
        """The sum, correctly rounded to float64."""
        special = self.special()
        return special if special is not None else ratio(self.scaled, 1 << SCALE_BITS)

    def to_json(self) -> str:
        """``"<hex integer>p<binary exponent>"`` (value = integer * 2**exponent), then ``,+inf:n,-inf:n`` if any.

        The integer is stripped of its trailing zero bits, so a sum of values
        near 1 is a few dozen hex digits, not the ~270 of ``scaled``.
        """
        q, e = self.scaled, -SCALE_BITS
        if q:
            zeros = (q & -q).bit_length() - 1
            q, e = q >> zeros, e + zeros
        else:
            e = 0
        text = f"{'-' if q < 0 else ''}{abs(q):#x}p{e}"
        if self.posinf or self.neginf:
            text += f",+inf:{self.posinf},-inf:{self.neginf}"
        return text

    @classmethod
    def from_json(cls, text: str) -> ExactSum:
        """Inverse of :meth:`to_json`; a malformed string is a `ValueError` that shows it."""
        try:
            head, *infs = str(text).split(",")
            mantissa, exponent = head.split("p")
            q, e = int(mantissa, 16), int(exponent)
            posinf = neginf = 0
            if infs:
                posinf, neginf = (int(part.split(":")[1]) for part in infs)
            if e + SCALE_BITS < 0 or posinf < 0 or neginf < 0:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"not an exact sum: {text!r} (expected e.g. '0x3p-1')") from None
        return cls(q << (e + SCALE_BITS), posinf, neginf)


def ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator`` of two integers, correctly rounded; NaN for 0/0, ±inf on overflow.

    Examples:
        >>> ratio(1, 3) == 1 / 3, ratio(0, 0), ratio(10**400, 1)
        (True, nan, inf)
    """
    if denominator == 0:
        return math.nan if numerator == 0 else (math.inf if numerator > 0 else -math.inf)
    try:
        return numerator / denominator  # int / int in CPython: correctly rounded
    except OverflowError:
        return math.inf if (numerator > 0) == (denominator > 0) else -math.inf


def grouped_sums(values: np.ndarray, groups: np.ndarray, n_groups: int) -> list[ExactSum]:
    """The exact sum of ``values[groups == g]`` for every g in ``range(n_groups)``.

    Args:
        values: 1-D float64 (no NaN).
        groups: 1-D integer group of each value, in ``[0, n_groups)``.
        n_groups: number of groups.

    Examples:
        >>> [s.value() for s in grouped_sums(np.array([0.1, 0.2, np.inf, 0.3]), np.array([0, 0, 1, 1]), 3)]
        [0.30000000000000004, inf, 0.0]
    """
    sums = [ExactSum() for _ in range(n_groups)]
    values = np.ascontiguousarray(values, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.intp)
    finite = np.isfinite(values)
    if not finite.all():
        if np.isnan(values).any():
            raise ValueError("internal error: a NaN reached an exact sum")
        for g in groups[values == np.inf]:
            sums[g].posinf += 1
        for g in groups[values == -np.inf]:
            sums[g].neginf += 1
        values, groups = values[finite], groups[finite]
    size = n_groups * N_EXP
    if size > _DIRECT_KEYS:  # many bins: bucket by the keys that occur
        keys = np.unique(_keys(values.view(np.int64), groups, n_groups))
        size = keys.size
    else:
        keys = None
    # Per-bucket sums in int64: a chunk adds less than CHUNK * 2**27 <= 2**43 to a bucket, so 2**19
    # chunks (2**35 values) cannot overflow; the buckets are folded into Python integers after each such run.
    high_total = np.zeros(size, dtype=np.int64)
    low_total = np.zeros(size, dtype=np.int64)
    compiled = _compiled_bucket_sums() if keys is None else None
    for start in range(0, values.size, CHUNK << 19):
        stop = min(start + (CHUNK << 19), values.size)
        if compiled is not None:
            compiled(values[start:stop].view(np.int64), groups[start:stop], N_EXP, high_total, low_total)
        else:
            for lo in range(start, stop, CHUNK):
                _add_chunk(high_total, low_total, values[lo : lo + CHUNK], groups[lo : lo + CHUNK], n_groups, keys)
        for k in np.flatnonzero((high_total != 0) | (low_total != 0)):
            full = int(keys[k]) if keys is not None else int(k)
            group, bucket = divmod(full, N_EXP)
            sums[group].scaled += ((int(high_total[k]) << _LOW_BITS) + int(low_total[k])) << bucket
        high_total[:] = 0
        low_total[:] = 0
    return sums


def _compiled_bucket_sums():
    """The Numba loop that fills the buckets (same integers as :func:`_add_chunk`), or None without Numba."""
    from .kernel import _numba_kernel  # the kernel module imports nothing of this one

    kernel = _numba_kernel()
    return None if kernel is None else kernel.bucket_sums


def _keys(bits: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """The bucket of each value: its group times N_EXP plus max(E, 1) - 1 (E the biased exponent)."""
    key = np.maximum((bits >> 52) & 0x7FF, 1) - 1
    if n_groups > 1:
        key += groups * N_EXP
    return key


def _add_chunk(high_total, low_total, values, groups, n_groups, keys) -> None:
    bits = values.view(np.int64)
    mantissa = bits & ((1 << 52) - 1)
    mantissa |= ((bits & (0x7FF << 52)) != 0).astype(np.int64) << 52  # a normal number's implicit bit
    np.negative(mantissa, out=mantissa, where=bits < 0)
    key = _keys(bits, groups, n_groups)
    if keys is not None:
        key = np.searchsorted(keys, key)
    # |M >> 26| < 2**27 and M & (2**26 - 1) < 2**26: CHUNK of them add exactly in float64 (< 2**53).
    high = (mantissa >> _LOW_BITS).astype(np.float64)
    low = (mantissa & _LOW_MASK).astype(np.float64)
    high_total += np.bincount(key, weights=high, minlength=high_total.size).astype(np.int64)
    low_total += np.bincount(key, weights=low, minlength=low_total.size).astype(np.int64)
