"""The gradient-buffer cache of crossent.kernels: reuse only what nobody holds."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from crossent import kernels
from crossent.kernels import _buffers, empty_cache, sigmoid_binary_cross_entropy_fused, softmax_cross_entropy_fused

N, V = 64, 8192  # a 2 MiB float32 gradient: above the 1 MiB threshold


def address(a):
    return a.__array_interface__["data"][0]


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(kernels, "max_cached_buffers", 2)
    empty_cache()
    yield
    empty_cache()


def problem(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, V), dtype=np.float32), rng.integers(0, V, N)


def test_a_dropped_gradient_buffer_is_reused():
    x, y = problem(0)
    _, grad = softmax_cross_entropy_fused(x, y)
    first = address(grad)
    del grad
    _, grad = softmax_cross_entropy_fused(x, y)
    assert address(grad) == first


@pytest.mark.parametrize("keep", ["array", "view", "reshaped", "frombuffer", "torch"])
def test_a_gradient_in_use_is_never_overwritten(keep):
    x0, y0 = problem(1)
    _, grad = softmax_cross_entropy_fused(x0, y0)
    expected = grad.copy()
    if keep == "array":
        held = grad
    elif keep == "view":
        held = grad[3:, 5:]
        expected = expected[3:, 5:]
    elif keep == "reshaped":
        held = grad.reshape(-1)
        expected = expected.reshape(-1)
    elif keep == "frombuffer":
        held = np.frombuffer(grad.data, dtype=np.float32)
        expected = expected.reshape(-1)
    else:
        torch = pytest.importorskip("torch")
        held = torch.from_numpy(grad)
        expected = torch.from_numpy(expected)
    del grad
    x1, y1 = problem(2)
    for _ in range(3):  # more calls than the cache has slots
        _, other = softmax_cross_entropy_fused(x1, y1)
        assert not np.shares_memory(np.asarray(other), np.asarray(held))
        del other
    assert (held == expected).all()


def test_reuse_gives_the_same_answer_as_a_fresh_buffer():
    x, y = problem(3)
    loss, grad = softmax_cross_entropy_fused(x, y)
    grad = grad.copy()
    for seed in (4, 5):  # leave stale values in the cached buffers
        softmax_cross_entropy_fused(*problem(seed))
    again_loss, again = softmax_cross_entropy_fused(x, y)
    assert again_loss == loss
    np.testing.assert_array_equal(again, grad)


def test_the_cache_holds_at_most_max_cached_buffers():
    x, y = problem(6)
    held = [softmax_cross_entropy_fused(x, y)[1] for _ in range(5)]
    assert len({address(g) for g in held}) == 5
    assert _buffers.cached_bytes() == 2 * x.nbytes
    del held
    assert empty_cache() == 2 * x.nbytes
    assert _buffers.cached_bytes() == 0


def test_max_cached_buffers_zero_turns_reuse_off_and_lets_go(monkeypatch):
    x, y = problem(7)
    softmax_cross_entropy_fused(x, y)
    assert _buffers.cached_bytes() == x.nbytes
    monkeypatch.setattr(kernels, "max_cached_buffers", 0)
    _, first = softmax_cross_entropy_fused(x, y)
    assert _buffers.cached_bytes() == 0  # the kept buffer is released at the next call
    _, second = softmax_cross_entropy_fused(x, y)
    assert _buffers.cached_bytes() == 0 and not np.shares_memory(first, second)


def test_without_reference_counts_nothing_is_reused(monkeypatch):
    monkeypatch.setattr(_buffers, "_CAN_COUNT", False)
    x, y = problem(11)
    softmax_cross_entropy_fused(x, y)
    assert _buffers.cached_bytes() == 0


def test_small_gradients_are_not_cached():
    x, y = problem(8)
    softmax_cross_entropy_fused(x[:4], y[:4])  # 128 KiB
    assert _buffers.cached_bytes() == 0


def test_a_smaller_request_reuses_a_buffer_at_most_twice_its_size():
    x = np.zeros((128, V), dtype=np.float32)  # 4 MiB
    y = np.zeros(128, dtype=np.int64)
    softmax_cross_entropy_fused(x, y)
    _, half = softmax_cross_entropy_fused(x[:64], y[:64])
    assert _buffers.cached_bytes() == x.nbytes  # reused, not a second block
    del half
    _, quarter = softmax_cross_entropy_fused(x[:33], y[:33])  # 1.03 MiB: under half of 4 MiB
    assert _buffers.cached_bytes() == x.nbytes + quarter.nbytes


def test_bce_uses_the_cache_too():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((N, V), dtype=np.float32)
    y = (rng.random((N, V)) < 0.5).astype(np.float32)
    _, grad = sigmoid_binary_cross_entropy_fused(x, y)
    first = address(grad)
    del grad
    _, grad = sigmoid_binary_cross_entropy_fused(x, y)
    assert address(grad) == first


def test_threads_calling_at_once_get_distinct_correct_buffers():
    problems = [problem(20 + k) for k in range(6)]
    expected = [softmax_cross_entropy_fused(x, y)[1].copy() for x, y in problems]
    empty_cache()
    with ThreadPoolExecutor(3) as pool:
        grads = list(pool.map(lambda p: softmax_cross_entropy_fused(*p, num_threads=1)[1], problems))
    assert len({address(g) for g in grads}) == len(grads)
    for got, want in zip(grads, expected):
        np.testing.assert_array_equal(got, want)
