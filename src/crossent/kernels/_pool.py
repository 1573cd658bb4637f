"""The process's one thread pool, and the loop that spreads blocks of rows over it."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

# Bytes of logits per block.  Measured on a 2 MiB-L2 core: the logits block and
# the gradient block (1 MiB together) stay in L2 between the ufunc passes,
# while the per-block Python overhead (~20 ufunc calls) stays small.
BLOCK_BYTES = 1 << 19
# Below this many bytes a single thread is faster than waking the pool.
SINGLE_THREAD_BYTES = 1 << 20

# One pool per process, whatever `num_threads` callers ask for: its size is
# the number of usable cores (threads start only as work needs them), and a
# request for more threads queues its runs on those.  A pool inherited across
# os.fork() has no threads in the child, so the child forgets it (see _reset_pool).
_shared_pool: ThreadPoolExecutor | None = None
_pools_lock = threading.Lock()


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _pool() -> ThreadPoolExecutor:
    global _shared_pool
    with _pools_lock:
        if _shared_pool is None:
            _shared_pool = ThreadPoolExecutor(default_threads(), thread_name_prefix="crossent")
        return _shared_pool


def _reset_pool() -> None:
    """In a forked child: drop the parent's pool (its threads do not exist here) and its lock."""
    global _shared_pool, _pools_lock
    _shared_pool, _pools_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool)


def run_in_blocks(work, n_items: int, item_bytes: int, num_threads: int, align: int = 1,
                  block_bytes: int | None = None) -> None:
    """Call ``work(lo, hi)`` on consecutive blocks covering ``range(n_items)``.

    The items are split into one contiguous run per thread; each thread walks
    its run block by block.  Block bounds are multiples of `align`.  The first
    exception raised by a worker is re-raised here (after every worker ends).
    """
    if n_items == 0:
        return
    per_block = max(align, (block_bytes or BLOCK_BYTES) // max(item_bytes, 1) // align * align)
    share = -(-n_items // max(num_threads, 1))  # every thread gets at least one block
    per_block = min(per_block, -(-share // align) * align)
    n_blocks = -(-n_items // per_block)
    threads = min(num_threads, n_blocks)
    if threads <= 1 or n_items * item_bytes < SINGLE_THREAD_BYTES:
        for lo in range(0, n_items, per_block):
            work(lo, min(lo + per_block, n_items))
        return

    def run(first_block: int, last_block: int) -> None:
        for b in range(first_block, last_block):
            work(b * per_block, min((b + 1) * per_block, n_items))

    bounds = [n_blocks * t // threads for t in range(threads + 1)]
    pool = _pool()
    futures = [pool.submit(run, bounds[t], bounds[t + 1]) for t in range(threads)]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
