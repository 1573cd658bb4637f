"""The kernels' thread pool: one per process, bounded, and safe across os.fork."""

import os
import threading
import time

import numpy as np
import pytest

from crossent.kernels import _pool, sigmoid_binary_cross_entropy_fused, softmax_cross_entropy_fused


def _cores():
    return _pool.default_threads()


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2048, 160))  # 2.5 MiB of float64: large enough to use the pool
    return logits, rng.integers(0, 160, size=2048), rng.random(logits.shape)


def test_default_threads_counts_the_cores_this_process_may_use():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _pool.default_threads() == expected >= 1


def test_many_thread_counts_keep_the_live_threads_bounded(batch):
    logits, labels, _ = batch
    before = threading.active_count()
    for k in [*range(1, 51), 200, 3, 77]:
        softmax_cross_entropy_fused(logits, labels, num_threads=k)
    assert threading.active_count() <= 2 * _cores() + 4
    assert threading.active_count() - before <= _cores()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_results_do_not_depend_on_the_thread_count(batch, dtype):
    logits, labels, targets = (a.astype(dtype) if a.dtype.kind == "f" else a for a in batch)
    loss1, grad1 = softmax_cross_entropy_fused(logits, labels, num_threads=1)
    bce1, bgrad1 = sigmoid_binary_cross_entropy_fused(logits, targets, num_threads=1)
    for k in (2, 7, 50):
        loss, grad = softmax_cross_entropy_fused(logits, labels, num_threads=k)
        assert loss == loss1 and np.array_equal(grad, grad1)
        bce, bgrad = sigmoid_binary_cross_entropy_fused(logits, targets, num_threads=k)
        np.testing.assert_allclose(bce, bce1, rtol=1e-6 if dtype == np.float32 else 1e-13)
        assert np.array_equal(bgrad, bgrad1)


def test_a_worker_error_still_reaches_the_caller_after_many_sizes(batch):
    logits = batch[0].copy()
    logits[1500, 3] = np.nan
    for k in (2, 9, 33):
        with pytest.raises(ValueError, match=r"NaN \(first at index \(1500, 3\)\)"):
            softmax_cross_entropy_fused(logits, batch[1], num_threads=k)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_reuse_the_parents_pool(batch):
    logits, labels, _ = batch
    for _ in range(3):  # the parent's pool now has idle threads, which a forked child does not get
        expected, _ = softmax_cross_entropy_fused(logits, labels, num_threads=2)
    pid = os.fork()
    if pid == 0:  # the child: work queued for the parent's idle threads would wait forever
        try:
            loss, _ = softmax_cross_entropy_fused(logits, labels, num_threads=2)
            os._exit(0 if loss == expected else 1)
        finally:
            os._exit(3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung on the parent's thread pool")
