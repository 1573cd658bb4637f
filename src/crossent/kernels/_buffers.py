"""A small cache of freed gradient buffers, so that a training loop stops paying for fresh pages.

A new N x V gradient from ``np.empty`` is fresh memory from the operating
system: the first write to each 4 KiB page traps into the kernel, which zeroes
it.  At N x V = 4096 x 32768 float32 (512 MiB) that costs about 23 ms on the
2-core benchmark machine, half as long again as the whole in-place kernel.
Training calls the loss with the same shape at every step, and by the next step
the previous gradient has usually been consumed and dropped; this module keeps
(at most ``max_buffers``) such buffers and hands a dropped one out again.

A buffer counts as dropped when the cache holds the only reference to it.  Any
array or tensor that still uses its memory keeps a reference (a NumPy view
through ``.base``, a ``torch.from_numpy`` tensor through its storage), so a
buffer in use is never handed out twice.  Only buffers of at least
``MIN_BYTES`` are cached: smaller ones come from malloc's heap, which already
reuses them.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

#: Smaller requests go straight to ``np.empty``.
MIN_BYTES = 1 << 20

_lock = threading.Lock()
_cache: list[np.ndarray] = []  # raw 1-D uint8 buffers, oldest first


def _references(cache: list, index: int) -> int:
    return sys.getrefcount(cache[index])


# A list entry that nothing else holds. Its count, taken through the same
# function at every check, is what a dropped buffer shows: measured, not
# assumed, since how references are counted depends on the interpreter.
_SENTINEL = [np.empty(1, dtype=np.uint8)]
# Without reference counts (PyPy) there is no telling; nothing is reused.
_CAN_COUNT = hasattr(sys, "getrefcount")


def empty(shape: tuple[int, ...], dtype, max_buffers: int) -> np.ndarray:
    """A C-contiguous uninitialised array, from a dropped cached buffer when one fits.

    A cached buffer fits when it has at least the bytes needed and at most
    twice as many (so a small request never pins a much larger block).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if max_buffers <= 0 or not _CAN_COUNT:
        if _cache:
            clear()  # reuse was switched off: let go of what was kept
        return np.empty(shape, dtype=dtype)
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    with _lock:
        unused = _references(_SENTINEL, 0)
        for i in range(len(_cache)):
            size = _cache[i].size
            if nbytes <= size <= 2 * nbytes and _references(_cache, i) == unused:
                raw = _cache.pop(i)
                _cache.append(raw)  # most recently used last
                return raw[:nbytes].view(dtype).reshape(shape)
        raw = np.empty(nbytes, dtype=np.uint8)
        _cache.append(raw)
        # Forget the oldest entries beyond the limit: one in use stays alive
        # through its user's reference, a dropped one is freed here.
        del _cache[: max(len(_cache) - max_buffers, 0)]
        return raw.view(dtype).reshape(shape)


def clear() -> int:
    """Forget every cached buffer (those no longer in use are freed); return the bytes they held."""
    with _lock:
        held = sum(raw.size for raw in _cache)
        _cache.clear()
    return held


def cached_bytes() -> int:
    """Bytes held by the cache, in use or not."""
    with _lock:
        return sum(raw.size for raw in _cache)
