"""The one-pass metric kernel against a 50-digit reference, on both backends."""

import functools
import tracemalloc

import mpmath
import numpy as np
import pytest

from crossent.metrics.kernel import logit_row_stats, select_backend

BACKENDS = ["numpy"] + (["numba"] if select_backend("auto") == "numba" else [])
RTOL = {np.float32: 1e-6, np.float64: 1e-12}
# float32 exp underflows below 2**-126 (and the float32 kernel's Brier below 2**-132): values that small
# are only compared in absolute terms
ATOL = {np.float32: 1e-36, np.float64: 0.0}


def reference(x, y):
    """(nll, entropy, confidence, brier, rank, correct) of each row, with mpmath at 50 digits."""
    mpmath.mp.dps = 50
    out = []
    for row, label in zip(x, y):
        finite = [mpmath.mpf(float(v)) for v in row if np.isfinite(v)]
        top = max(finite)
        e = [mpmath.exp(mpmath.mpf(float(v)) - top) if np.isfinite(v) else mpmath.mpf(0) for v in row]
        total = mpmath.fsum(e)
        p = [v / total for v in e]
        nll = mpmath.inf if p[label] == 0 else -mpmath.log(p[label])
        entropy = -mpmath.fsum(q * mpmath.log(q) for q in p if q > 0)
        brier = mpmath.fsum((q - (c == label)) ** 2 for c, q in enumerate(p))
        out.append((float(nll), float(entropy), float(max(p)), float(brier), int(np.sum(row > row[label])),
                    int(np.argmax(row)) == label))
    return [np.array(col) for col in zip(*out)]


def hostile_rows(dtype, classes, seed, rows=24):
    """Random rows of several scales, plus ties, masked classes, a large offset and very confident rows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, classes)) * rng.choice([0.01, 1.0, 5.0, 30.0], size=(rows, 1))
    y = rng.integers(0, classes, rows)
    x[1] = x[1, 0]  # all equal
    x[2, : classes // 2] = -np.inf  # masked classes
    x[3] += 1e6  # a large common offset
    x[4] = -20.0
    x[4, y[4]] = 0.0  # confident and right: nll ~ V e^-20
    x[5] = -60.0
    x[5, (y[5] + 1) % classes] = 0.0  # confident and wrong
    x[6, y[6]] = x[6].max()  # the label ties the maximum
    return x.astype(dtype), y


@functools.cache
def hostile_case(dtype, classes):
    """The rows and their reference, computed once for both backends (mpmath is slow)."""
    x, y = hostile_rows(dtype, classes, seed=classes, rows=24 if classes < 1000 else 10)
    return x, y, reference(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [1, 2, 7, 300, 2100])  # 2100: two chunks of the Numba kernel
def test_rows_match_the_reference(backend, dtype, classes):
    x, y, ref = hostile_case(dtype, classes)
    got = logit_row_stats(x, y, backend=backend)
    for name, value, expected in zip(got._fields[:4], got[:4], ref[:4]):
        np.testing.assert_allclose(value, expected, rtol=RTOL[dtype], atol=ATOL[dtype], err_msg=name)
    np.testing.assert_array_equal(got.rank, ref[4])
    np.testing.assert_array_equal(got.correct, ref[5])


def spread_rows(dtype, classes=4500):
    """Rows with S >= 2 (the Numba kernel's one-pass rows), built to stress its float32 shortcuts.

    A rounded difference x - M repeated over every class (no averaging out),
    S just above 2, masked classes and a first chunk that is masked, the maximum
    in the last chunk (every earlier sum is rescaled), a huge common offset.
    """
    rng = np.random.default_rng(7)
    x = np.empty((6, classes))
    x[0] = -6.7
    x[0, 3] = 0.3  # x - M rounds in float32 the same way for every class; S ~ 2.1
    x[1] = np.log(1.02 / (classes - 1))
    x[1, 0] = 0.0  # S = 2.02
    x[2] = rng.standard_normal(classes)
    x[2, :2500] = -np.inf  # a masked first chunk, then the row
    x[3] = rng.standard_normal(classes) * 3
    x[3, -1] = x[3].max() + 1  # the maximum arrives last
    x[4] = rng.standard_normal(classes) + 1e5
    x[5] = rng.standard_normal(classes) * 0.001
    y = np.array([0, 0, 3000, 7, 11, classes - 1])
    return x.astype(dtype), y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unconfident_rows_match_the_reference(backend, dtype):
    x, y = spread_rows(dtype)
    ref = reference(x, y)
    got = logit_row_stats(x, y, backend=backend)
    assert got.confidence.max() < 0.5  # S > 2 in every row
    for name, value, expected in zip(got._fields[:4], got[:4], ref[:4]):
        np.testing.assert_allclose(value, expected, rtol=RTOL[dtype], atol=ATOL[dtype], err_msg=name)
    np.testing.assert_array_equal(got.rank, ref[4])
    np.testing.assert_array_equal(got.correct, ref[5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_maximum_is_the_prediction(backend):
    x = np.array([[1.0, 3.0, 3.0, 0.0]] * 4)
    got = logit_row_stats(x, np.array([1, 2, 0, 3]), backend=backend)
    np.testing.assert_array_equal(got.correct, [True, False, False, False])
    np.testing.assert_array_equal(got.rank, [0, 0, 2, 3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_do_not_depend_on_blocks_or_threads(backend):
    x, y = hostile_rows(np.float32, 3000, seed=1)
    whole = logit_row_stats(x, y, backend=backend, num_threads=1)
    for threads in (2, 3):
        assert all(np.array_equal(a, b) for a, b in zip(whole, logit_row_stats(x, y, backend=backend,
                                                                               num_threads=threads)))
    for lo, hi in [(0, 5), (5, 6), (6, 24)]:
        part = logit_row_stats(np.ascontiguousarray(x[lo:hi]), y[lo:hi], backend=backend)
        assert all(np.array_equal(a[lo:hi], b) for a, b in zip(whole, part))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_row_may_be_all_masked(backend):
    x = np.array([[0.0, 1.0], [-np.inf, -np.inf]], dtype=np.float32)
    got = logit_row_stats(x, np.array([0, 0]), np.array([True, False]), backend=backend)
    assert got.nll[1] == 0.0 and np.isfinite(got.nll[0])
    with pytest.raises(ValueError, match="-inf for every class in row 1"):
        logit_row_stats(x, np.array([0, 0]), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad, match", [(np.nan, r"NaN \(first at index \(2, 2049\)\)"),
                                        (np.inf, r"\+inf \(found at index \(2, 2049\)\)")])
def test_non_finite_logits_name_row_and_column(backend, bad, match):
    x = np.zeros((4, 3000), dtype=np.float32)
    x[2, 2049] = bad
    with pytest.raises(ValueError, match=match):
        logit_row_stats(x, np.zeros(4, dtype=int), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_memmap(backend, tmp_path):
    x, y = hostile_rows(np.float32, 50, seed=2)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert not mm.flags.writeable
    assert all(np.array_equal(a, b) for a, b in zip(logit_row_stats(mm, y, backend=backend),
                                                    logit_row_stats(x, y, backend=backend)))


def test_numba_kernel_allocates_no_row_by_class_temporary():
    if "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    x = np.random.default_rng(0).standard_normal((64, 1 << 16), dtype=np.float32)  # 16 MiB
    y = np.zeros(64, dtype=int)
    logit_row_stats(x, y)  # compile / load from the cache first
    tracemalloc.start()
    logit_row_stats(x, y, num_threads=2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < x.nbytes // 16
