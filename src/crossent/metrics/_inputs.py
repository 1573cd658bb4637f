"""Inputs of the accumulator: NumPy arrays or CPU torch tensors, without a copy, checked at the boundary.

torch is never imported here: a tensor is recognised by its type's module, and
its ``.numpy()`` view shares its memory.  bfloat16 (torch's, or NumPy arrays of
``ml_dtypes.bfloat16``) is read as its 16 bits and widened to float32 one batch
at a time (a bfloat16 is the top half of a float32, so the widening is exact).
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr

from .._validate import show, sum_tolerance
from .kernel import RowStats

_BFLOAT16_BITS = "bfloat16 bits"
_NATIVE = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))


def _is_extension_float(dtype: np.dtype) -> bool:
    """A float of at most 16 bits that NumPy does not implement (ml_dtypes' float8 formats): read via float32."""
    return (dtype.kind in "fV" and dtype not in _NATIVE and dtype.fields is None and dtype.itemsize <= 2
            and np.can_cast(dtype, np.float32, "same_kind")
            and float(np.asarray(0.5).astype(dtype).astype(np.float32)) == 0.5)


class FloatInput:
    """A float array as given (no copy), and how to read one batch of its rows as float32/float64."""

    def __init__(self, array: np.ndarray, kind: str):
        self.array, self.kind = array, kind
        self.shape, self.ndim = array.shape, array.ndim

    def sum_tolerance(self) -> float:
        """How far a row of probabilities in this dtype may sum from 1 (as :func:`crossent._validate.sum_tolerance`)."""
        if self.kind == _BFLOAT16_BITS:
            return float(np.sqrt(2.0**-7))  # bfloat16 keeps 8 significant bits
        return sum_tolerance(self.array.dtype)  # float8_* included

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) as a C-contiguous float32 or float64 array (a copy only where needed)."""
        block = self.array[lo:hi]
        if self.kind == _BFLOAT16_BITS:
            return (block.astype(np.uint32) << 16).view(np.float32)
        if block.dtype.kind == "f" and block.dtype.itemsize >= 4:
            # native byte order (a big-endian '>f8' stays float64); a long double is read as float64
            return np.ascontiguousarray(block, dtype=np.float32 if block.dtype.itemsize == 4 else np.float64)
        return block.astype(np.float32)  # float16 and the float8 formats: exact in float32


def _is_torch_tensor(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _from_torch(x, name: str) -> np.ndarray:
    """The NumPy view of a CPU tensor (bfloat16 as its uint16 bits)."""
    if x.device.type != "cpu":
        raise ValueError(f"`{name}` must be a CPU tensor, got a tensor on {x.device}; call .cpu() first.")
    x = x.detach()
    if str(x.dtype) == "torch.bfloat16":
        import torch  # only reached when a torch tensor was passed

        return x.view(torch.int16).numpy().view(np.uint16), True
    return x.numpy(), False


def as_array(x, name: str) -> tuple[np.ndarray, bool]:
    """(`x` as a NumPy array without a copy, whether it holds bfloat16 bits)."""
    if _is_torch_tensor(x):
        return _from_torch(x, name)
    arr = np.asarray(x)
    if arr.dtype.name == "bfloat16":
        return arr.view(np.uint16), True
    return arr, False


def as_floats(x, name: str) -> FloatInput:
    """`x` as a :class:`FloatInput`; anything but a real floating array is a `TypeError`."""
    arr, bf16 = as_array(x, name)
    if bf16:
        return FloatInput(arr, _BFLOAT16_BITS)
    if arr.dtype.kind != "f" and not _is_extension_float(arr.dtype):
        raise TypeError(f"`{name}` must be a floating array (float16, bfloat16, float32 or float64), got dtype "
                        f"{arr.dtype} ({show(arr)}).")
    if arr.dtype == np.longdouble and arr.dtype != np.float64:
        raise TypeError(f"`{name}` must be float16, bfloat16, float32 or float64, got {arr.dtype}.")
    return FloatInput(arr, "native")


def as_labels(labels, n: int) -> np.ndarray:
    """Integer labels of shape (n,); floats or booleans are a `TypeError`."""
    arr, _ = as_array(labels, "labels")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"`labels` must be integer class indices, got dtype {arr.dtype} ({show(arr)}).")
    if arr.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},) to match the predictions' {n} rows, got {arr.shape}.")
    return arr


def as_sample_weight(sample_weight, n: int) -> np.ndarray | None:
    """Finite, non-negative float64 weights of shape (n,), or None."""
    if sample_weight is None:
        return None
    arr, bf16 = as_array(sample_weight, "sample_weight")
    if bf16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    if arr.dtype.kind not in "biuf" and not _is_extension_float(arr.dtype):
        raise TypeError(f"`sample_weight` must be numeric, got dtype {arr.dtype}.")
    if arr.shape != (n,):
        raise ValueError(f"`sample_weight` must have shape ({n},), got {arr.shape}.")
    arr = arr.astype(np.float64)
    bad = ~(np.isfinite(arr) & (arr >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"`sample_weight` must be finite and non-negative, got {float(arr[i])!r} at index {i}.")
    return arr


def check_labels(labels: np.ndarray, kept: np.ndarray, num_classes: int, ignore_index, first_row: int) -> None:
    """Labels of the kept rows must lie in [0, num_classes)."""
    bad = kept & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        i = int(np.argmax(bad))
        extra = "" if ignore_index is None else f" (or equal ignore_index={ignore_index})"
        raise ValueError(f"`labels` must lie in [0, {num_classes}){extra}, got {int(labels[i])} at index "
                         f"{first_row + i}.")


def check_probabilities(p: np.ndarray, first_row: int, tol: float) -> None:
    """Rows of `p` (float64) must be finite, in [0, 1] and sum to 1 within `tol`."""
    bad = ~(np.isfinite(p) & (p >= 0) & (p <= 1 + tol))
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), p.shape)
        index = (first_row + int(where[0]),) + tuple(int(i) for i in where[1:])
        raise ValueError(f"`probs` must be finite and lie in [0, 1], got {float(p[where])!r} at index {index}.")
    if p.ndim == 2:
        totals = p.sum(axis=1)
        off = np.abs(totals - 1) > tol
        if off.any():
            i = int(np.argmax(off))
            raise ValueError(f"`probs` must sum to 1 along each row, but row {first_row + i} sums to "
                             f"{totals[i]:.9g} (tolerance {tol:.1e}); normalize them, or pass logits.")


def prob_row_stats(block: np.ndarray, labels: np.ndarray, kept: np.ndarray, first_row: int,
                   tolerance: float | None = None) -> RowStats:
    r"""Per-row statistics of probabilities: (n, C) rows, or (n,) binary probabilities of class 1.

    :math:`-\log p_y` (``inf`` for :math:`p_y = 0`, no clipping), :math:`-\sum_c p_c\log p_c`,
    :math:`\max_c p_c`, :math:`\sum_c (p_c - [c = y])^2`, the rank of :math:`p_y` and the
    first-maximum hit.  Rows must sum to 1 within `tolerance` (default: that of the block's dtype).
    """
    tol = (sum_tolerance(block.dtype) if tolerance is None else tolerance) if block.ndim == 2 else 0.0  # no 1 - p > 1
    p = block.astype(np.float64)
    check_probabilities(p, first_row, tol)
    np.minimum(p, 1.0, out=p)  # an entry a rounding above 1 (within the tolerance) counts as 1: no negative NLL
    n = p.shape[0]
    y = np.where(kept, labels, 0)
    with np.errstate(divide="ignore"):
        if p.ndim == 1:  # binary: the distribution (1 - p, p)
            q = 1.0 - p
            nll = np.where(y == 1, -np.log(p), -np.log1p(-np.minimum(p, 1.0)))  # log1p keeps 1 - tiny p exact
            entropy = entr(p) + entr(q)
            confidence = np.maximum(p, q)
            predicted = (p > q).astype(np.int64)  # a tie (p = 1/2) predicts class 0, the first maximum
            rank = (predicted != y).astype(np.int64) * (p != q)
            brier = 2.0 * (p - y) ** 2
            correct = predicted == y
        else:
            p_label = p[np.arange(n), y]
            nll = -np.log(p_label)
            entropy = entr(p).sum(axis=1)
            confidence = p.max(axis=1)
            rank = np.count_nonzero(p > p_label[:, None], axis=1)
            correct = np.argmax(p, axis=1) == y
            p[np.arange(n), y] -= 1.0  # p - onehot, summed squared: no cancellation
            brier = np.einsum("ij,ij->i", p, p)
    stats = RowStats(nll, entropy, confidence, brier, rank.astype(np.int64), correct)
    return RowStats(*(np.where(kept, s, 0).astype(s.dtype) for s in stats))
