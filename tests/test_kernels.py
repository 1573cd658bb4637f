"""Fused kernels against PyTorch (float64 autograd), a plain NumPy reference and finite differences."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crossent.kernels as kernels
from crossent._rules import CrossEntropyOptions
from crossent.kernels import (
    sigmoid_binary_cross_entropy_fused,
    softmax_cross_entropy_fused,
    supports_softmax,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (atol, rtol) per dtype, for losses and gradients; gradient atol scales with the largest entry.
TOL = {np.float64: (1e-12, 1e-10), np.float32: (2e-6, 2e-5)}
IGNORE = -100


@pytest.fixture(params=["numba", "numpy"])
def backend(request, monkeypatch):
    """Run a test once with the Numba backend (where it applies) and once with NumPy only."""
    if request.param == "numba":
        pytest.importorskip("numba")
    else:  # backend="auto" then behaves as on an install without Numba
        monkeypatch.setattr(kernels.api, "_numba_module", lambda: None)
    return request.param


def torch_softmax_ce(x, labels, *, weight=None, ignore_index=None, smoothing=0.0, z_loss=0.0, reduction="mean"):
    """float64 PyTorch reference, with crossent's z-loss and all-ignored conventions added."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(labels) if labels.dtype.kind in "iu" else torch.tensor(labels, dtype=torch.float64)
    wt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    ii = IGNORE if ignore_index is None else ignore_index
    per_row = F.cross_entropy(xt, yt, weight=wt, ignore_index=ii, label_smoothing=smoothing, reduction="none")
    if labels.dtype.kind in "iu":
        kept = yt != ii
        denominator = (wt[yt.clamp(min=0)] if wt is not None else torch.ones(len(yt), dtype=torch.float64))[kept].sum()
    else:
        kept = torch.ones(len(x), dtype=torch.bool)
        denominator = torch.tensor(float(len(x)), dtype=torch.float64)
    if z_loss:
        per_row = per_row + torch.where(kept, z_loss * torch.logsumexp(xt, dim=1) ** 2, 0.0)
    if reduction == "none":
        loss = per_row
    elif reduction == "sum":
        loss = per_row.sum()
    else:
        loss = per_row.sum() / denominator if denominator > 0 else per_row.sum() * 0.0
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def assert_close(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, atol=atol * scale, rtol=rtol, err_msg=what)


def random_case(rng, n, v, dtype, *, targets="int", with_ignored=True, spread=3.0):
    x = (rng.standard_normal((n, v)) * spread).astype(dtype)
    if targets == "int":
        labels = rng.integers(0, v, n)
        if with_ignored and n > 2:
            labels[:: max(2, n // 4)] = IGNORE
    else:
        labels = rng.dirichlet(np.ones(v), n).astype(dtype)
    return x, labels


class TestSoftmaxHandComputed:
    def test_uniform_logits_cost_log_v_and_gradient_is_p_minus_onehot(self, backend):
        loss, grad = softmax_cross_entropy_fused(np.zeros((1, 4), np.float32), np.array([2]))
        assert loss == pytest.approx(np.log(4), rel=1e-6)
        np.testing.assert_allclose(grad, [[0.25, 0.25, -0.75, 0.25]], atol=1e-7)

    def test_two_classes_is_softplus_of_the_margin(self, backend):
        # p(y=0) = sigmoid(2 - 0), so the loss is log(1 + e^-2) = 0.126928...
        loss, grad = softmax_cross_entropy_fused(np.array([[2.0, 0.0]]), np.array([0]), reduction="sum")
        assert loss == pytest.approx(0.12692801104297263, rel=1e-14)
        p1 = 1 / (1 + np.exp(2.0))
        np.testing.assert_allclose(grad, [[-p1, p1]], rtol=1e-14)

    def test_one_class_costs_nothing(self, backend):
        loss, grad = softmax_cross_entropy_fused(np.array([[3.0], [-7.0]], np.float32), np.array([0, 0]))
        assert loss == 0.0
        assert not grad.any()

    def test_empty_batch_gives_zero_and_empty_gradient(self, backend):
        for reduction in ("mean", "sum"):
            loss, grad = softmax_cross_entropy_fused(np.zeros((0, 5), np.float32), np.zeros(0, np.int64), reduction=reduction)
            assert loss == 0.0 and grad.shape == (0, 5)
        loss, _ = softmax_cross_entropy_fused(np.zeros((0, 5)), np.zeros(0, np.int64), reduction="none")
        assert loss.shape == (0,)

    def test_all_ignored_gives_zero_loss_and_zero_gradient(self, backend):
        x = np.random.default_rng(0).standard_normal((6, 9)).astype(np.float32)
        loss, grad = softmax_cross_entropy_fused(
            x, np.full(6, IGNORE), ignore_index=IGNORE, label_smoothing=0.1, z_loss=0.01, class_weight=np.ones(9))
        assert loss == 0.0
        assert not grad.any()

    def test_loss_dtype_follows_the_logits(self, backend):
        for dtype in (np.float32, np.float64):
            loss, grad = softmax_cross_entropy_fused(np.zeros((2, 3), dtype), np.array([0, 1]))
            assert loss.dtype == dtype and grad.dtype == dtype
            losses, _ = softmax_cross_entropy_fused(np.zeros((2, 3), dtype), np.array([0, 1]), reduction="none")
            assert losses.dtype == dtype and losses.shape == (2,)


OPTIONS = list(itertools.product(
    ("mean", "sum", "none"),  # reduction
    (False, True),  # class weights
    (False, True),  # ignore_index
    (0.0, 0.15),  # label smoothing
    (0.0, 1e-3),  # z-loss
))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("targets", ["int", "prob"])
def test_every_option_combination_matches_torch(backend, dtype, targets):
    rng = np.random.default_rng(7)
    x, labels = random_case(rng, 23, 37, dtype, targets=targets)
    weight = rng.uniform(0.2, 3.0, 37).astype(dtype)
    for reduction, weighted, ignore, smoothing, z in OPTIONS:
        if targets == "prob" and ignore:
            continue  # ignore_index applies to class indices only (as in PyTorch)
        y = labels if ignore or targets == "prob" else np.where(labels == IGNORE, 0, labels)
        kwargs = dict(class_weight=weight if weighted else None, ignore_index=IGNORE if ignore else None,
                      label_smoothing=smoothing, z_loss=z, reduction=reduction)
        loss, grad = softmax_cross_entropy_fused(x, y, **kwargs)
        ref_loss, ref_grad = torch_softmax_ce(x, y, weight=kwargs["class_weight"], ignore_index=kwargs["ignore_index"],
                                              smoothing=smoothing, z_loss=z, reduction=reduction)
        what = f"{targets} {kwargs}"
        assert_close(loss, ref_loss, dtype, what)
        assert_close(grad, ref_grad, dtype, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_odd_batch_shape_41x401_with_v_1271_matches_torch(backend, dtype):
    rng = np.random.default_rng(1)
    x, labels = random_case(rng, 41 * 401, 1271, dtype)
    loss, grad = softmax_cross_entropy_fused(x, labels, ignore_index=IGNORE, label_smoothing=0.1)
    ref_loss, ref_grad = torch_softmax_ce(x, labels, ignore_index=IGNORE, smoothing=0.1)
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_rows_span_many_chunks(backend, dtype):
    # V = 20000 crosses the Numba backend's 2048-class chunks, with the maximum in a late chunk.
    rng = np.random.default_rng(2)
    x, labels = random_case(rng, 3, 20000, dtype, with_ignored=False)
    x[:, 19_000] = 40.0
    x[1, :5000] = -np.inf
    labels[1] = 7000
    loss, grad = softmax_cross_entropy_fused(x, labels, reduction="none", z_loss=1e-4)
    ref_loss, ref_grad = torch_softmax_ce(x, labels, reduction="none", z_loss=1e-4)
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_pm_1e4(backend, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype)
    labels = np.array([1, 2, 0])
    for smoothing in (0.0, 0.2):
        loss, grad = softmax_cross_entropy_fused(x, labels, reduction="none", label_smoothing=smoothing)
        ref_loss, ref_grad = torch_softmax_ce(x, labels, reduction="none", smoothing=smoothing)
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        assert_close(loss, ref_loss, dtype, "loss")
        assert_close(grad, ref_grad, dtype, "grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minus_inf_masks_get_zero_gradient_and_no_nan(backend, dtype):
    rng = np.random.default_rng(3)
    x, labels = random_case(rng, 12, 30, dtype, with_ignored=False)
    mask = rng.random((12, 30)) < 0.4
    mask[np.arange(12), labels] = False
    x[mask] = -np.inf
    loss, grad = softmax_cross_entropy_fused(x, labels, class_weight=rng.uniform(0.5, 2, 30), z_loss=1e-3)
    ref_loss, ref_grad = torch_softmax_ce(x, labels, weight=None, z_loss=1e-3)
    assert np.isfinite(loss) and not np.isnan(grad).any()
    assert not grad[mask].any()
    loss, grad = softmax_cross_entropy_fused(x, labels, reduction="none")
    ref_loss, ref_grad = torch_softmax_ce(x, labels, reduction="none")
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")
    # With smoothing every class carries target mass, so a masked class costs +inf (never NaN).
    loss, grad = softmax_cross_entropy_fused(x, labels, label_smoothing=0.1, class_weight=np.where(mask[0], 0.0, 1.0))
    assert loss == np.inf and not np.isnan(grad).any()


def test_masked_target_costs_inf_and_fully_masked_rows_count_only_when_ignored(backend):
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]], np.float32)
    loss, grad = softmax_cross_entropy_fused(x, np.array([1, IGNORE]), ignore_index=IGNORE, reduction="none")
    assert loss[0] == np.inf and loss[1] == 0.0
    assert np.isfinite(grad).all() and not grad[1].any()
    with pytest.raises(ValueError, match=r"`logits` are -inf for every class in row 1"):
        softmax_cross_entropy_fused(x, np.array([1, 0]))
    with pytest.raises(ValueError, match=r"`logits` are -inf for every class in row 1"):
        softmax_cross_entropy_fused(x, np.full((2, 3), 1 / 3, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probability_targets_with_masks_count_zero_mass_as_zero(backend, dtype):
    x = np.array([[0.5, -np.inf, 1.0, 2.0]], dtype)
    q = np.array([[0.25, 0.0, 0.25, 0.5]], dtype)
    loss, grad = softmax_cross_entropy_fused(x, q, class_weight=np.array([1.0, 0.0, 2.0, 1.0]))
    ref_loss, ref_grad = torch_softmax_ce(np.where(np.isinf(x), -1e30, x), q, weight=np.array([1.0, 0.0, 2.0, 1.0]))
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")


def test_gradient_matches_central_finite_differences_float64(backend):
    rng = np.random.default_rng(4)
    x, labels = random_case(rng, 5, 7, np.float64)
    kwargs = dict(class_weight=rng.uniform(0.5, 2, 7), ignore_index=IGNORE, label_smoothing=0.1, z_loss=0.02)
    _, grad = softmax_cross_entropy_fused(x, labels, **kwargs)
    numeric = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (softmax_cross_entropy_fused(up, labels, **kwargs)[0]
                        - softmax_cross_entropy_fused(down, labels, **kwargs)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("targets", ["int", "prob"])
def test_inplace_writes_the_gradient_into_the_logits(backend, dtype, targets):
    rng = np.random.default_rng(5)
    x, labels = random_case(rng, 64, 300, dtype, targets=targets)
    kwargs = dict(ignore_index=IGNORE, label_smoothing=0.05, z_loss=1e-3, class_weight=rng.uniform(0.5, 2, 300))
    loss, grad = softmax_cross_entropy_fused(x, labels, **kwargs)
    buffer = x.copy()
    loss_inplace, grad_inplace = softmax_cross_entropy_fused(buffer, labels, inplace=True, **kwargs)
    assert grad_inplace is buffer
    assert loss_inplace == loss
    np.testing.assert_array_equal(grad_inplace, grad)


def test_threads_agree_with_one_thread(backend):
    rng = np.random.default_rng(6)
    x, labels = random_case(rng, 700, 1271, np.float32)
    loss1, grad1 = softmax_cross_entropy_fused(x, labels, ignore_index=IGNORE, num_threads=1)
    loss2, grad2 = softmax_cross_entropy_fused(x, labels, ignore_index=IGNORE, num_threads=2)
    np.testing.assert_array_equal(grad1, grad2)
    assert loss1 == pytest.approx(loss2, rel=1e-6)


def test_numba_and_numpy_backends_agree(monkeypatch):
    pytest.importorskip("numba")
    rng = np.random.default_rng(8)
    x, labels = random_case(rng, 300, 5000, np.float32)
    kwargs = dict(ignore_index=IGNORE, label_smoothing=0.1, class_weight=rng.uniform(0.5, 2, 5000), reduction="none")
    loss_numba, grad_numba = softmax_cross_entropy_fused(x, labels, backend="numba", **kwargs)
    loss_numpy, grad_numpy = softmax_cross_entropy_fused(x, labels, backend="numpy", **kwargs)
    np.testing.assert_allclose(loss_numba, loss_numpy, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(grad_numba, grad_numpy, atol=2e-9, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("targets", ["int", "prob"])
def test_matches_the_numpy_reference(backend, dtype, targets):
    reference = pytest.importorskip("crossent.losses.softmax_ce").softmax_ce_2d
    rng = np.random.default_rng(9)
    x, labels = random_case(rng, 40, 50, dtype, targets=targets)
    x[rng.random(x.shape) < 0.2] = -np.inf  # masks, including some targets (+inf loss rows)
    weight = rng.uniform(0.5, 2, 50).astype(dtype)
    weight[3] = 0.0
    for reduction, weighted, ignore, smoothing, z in OPTIONS:
        if targets == "int" and not ignore:
            y = np.where(labels == IGNORE, 0, labels)
        else:
            y = labels
        kwargs = dict(class_weight=weight if weighted else None, ignore_index=IGNORE if ignore else None,
                      label_smoothing=smoothing, z_loss=z, reduction=reduction)
        loss, grad = softmax_cross_entropy_fused(x, y, **kwargs)
        options = CrossEntropyOptions.check(ignore_index=kwargs["ignore_index"], label_smoothing=smoothing, z_loss=z,
                                            reduction=reduction)
        ref_loss, ref_grad = reference(x, y, kwargs["class_weight"], options)
        what = f"{targets} {kwargs}"
        np.testing.assert_array_equal(np.isinf(loss), np.isinf(ref_loss), err_msg=what)
        finite = np.isfinite(ref_loss)
        assert_close(np.where(finite, loss, 0), np.where(finite, ref_loss, 0), dtype, what)
        assert_close(grad, ref_grad, dtype, what)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6), v=st.integers(1, 40), shift=st.floats(-50, 50),
    smoothing=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 2**16),
)
def test_row_shift_invariance_and_rows_of_gradient_sum_to_zero(n, v, shift, smoothing, seed):
    rng = np.random.default_rng(seed)
    x, labels = random_case(rng, n, v, np.float64, with_ignored=False)
    w = rng.uniform(0.5, 2, v)
    loss, grad = softmax_cross_entropy_fused(x, labels, class_weight=w, label_smoothing=smoothing)
    loss_shifted, grad_shifted = softmax_cross_entropy_fused(x + shift, labels, class_weight=w, label_smoothing=smoothing)
    assert loss_shifted == pytest.approx(loss, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(grad_shifted, grad, atol=1e-10)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)


class TestSoftmaxErrors:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_nan_and_plus_inf_in_logits_raise(self, backend, dtype, bad):
        x = np.zeros((50, 3000), dtype)
        x[37, 2900] = bad
        message = (r"`logits` contains NaN \(first at index \(37, 2900\)\)" if np.isnan(bad)
                   else r"`logits` must not be \+inf \(found at index \(37, 2900\)\)")
        with pytest.raises(ValueError, match=message):
            softmax_cross_entropy_fused(x, np.zeros(50, np.int64))
        with pytest.raises(ValueError, match="`logits` (contains NaN|must not be)"):
            softmax_cross_entropy_fused(x.copy(), np.full((50, 3000), 1 / 3000, dtype), inplace=True)

    def test_bad_arrays(self):
        y = np.array([0, 1])
        with pytest.raises(TypeError, match="`logits`"):
            softmax_cross_entropy_fused(np.zeros((2, 3), np.float16), y)
        with pytest.raises(TypeError, match="`logits`"):
            softmax_cross_entropy_fused([[0.0, 1.0]], np.array([0]))
        with pytest.raises(ValueError, match="2-D"):
            softmax_cross_entropy_fused(np.zeros(3), y)
        with pytest.raises(ValueError, match="C-contiguous"):
            softmax_cross_entropy_fused(np.zeros((3, 2)).T, y)
        with pytest.raises(ValueError, match="at least one class"):
            softmax_cross_entropy_fused(np.zeros((2, 0)), y)
        with pytest.raises(ValueError, match=r"shape \(2,\)"):
            softmax_cross_entropy_fused(np.zeros((2, 3)), np.array([0, 1, 2]))
        with pytest.raises(ValueError, match="must lie in"):
            softmax_cross_entropy_fused(np.zeros((2, 3)), np.array([0, 3]))
        with pytest.raises(ValueError, match="must lie in"):
            softmax_cross_entropy_fused(np.zeros((2, 3)), np.array([0, -1]))
        with pytest.raises(ValueError, match="logits' shape"):
            softmax_cross_entropy_fused(np.zeros((2, 3)), np.zeros((2, 4)))
        with pytest.raises(TypeError, match="`labels`"):
            softmax_cross_entropy_fused(np.zeros((2, 3)), np.array(["a", "b"]))

    def test_bad_options(self):
        x, y = np.zeros((2, 3)), np.array([0, 1])
        with pytest.raises(ValueError, match="`class_weight` must have shape"):
            softmax_cross_entropy_fused(x, y, class_weight=np.ones(4))
        with pytest.raises(ValueError, match="`class_weight` must be non-negative"):
            softmax_cross_entropy_fused(x, y, class_weight=np.array([1.0, -1.0, 1.0]))
        with pytest.raises(ValueError, match="`reduction`"):
            softmax_cross_entropy_fused(x, y, reduction="avg")
        with pytest.raises(ValueError, match="`label_smoothing`"):
            softmax_cross_entropy_fused(x, y, label_smoothing=1.5)
        with pytest.raises(ValueError, match="`z_loss`"):
            softmax_cross_entropy_fused(x, y, z_loss=-1.0)
        with pytest.raises(ValueError, match="`num_threads`"):
            softmax_cross_entropy_fused(x, y, num_threads=0)
        with pytest.raises(TypeError, match="`ignore_index`"):
            softmax_cross_entropy_fused(x, y, ignore_index=1.5)
        with pytest.raises(ValueError, match="writeable"):
            x.flags.writeable = False
            softmax_cross_entropy_fused(x, y, inplace=True)


def test_supports_softmax():
    x32 = np.zeros((4, 5), np.float32)
    assert supports_softmax(x32, np.zeros(4, np.int32))
    assert supports_softmax(x32, np.zeros((4, 5), np.float32))
    assert not supports_softmax(x32, np.zeros((4, 5), np.float64))  # targets must match the dtype
    assert not supports_softmax(x32, np.zeros(5, np.int64))
    assert not supports_softmax(np.zeros((5, 4), np.float32).T, np.zeros(4, np.int64))
    assert not supports_softmax(np.zeros((2, 4, 5)), np.zeros((2, 4), np.int64))
    assert not supports_softmax(x32.tolist(), np.zeros(4, np.int64))


# ---------------------------------------------------------------- sigmoid BCE


def torch_bce(x, y, *, pos_weight=None, sample_weight=None, smoothing=0.0, reduction="mean"):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.float64) * (1 - smoothing) + smoothing / 2
    loss = F.binary_cross_entropy_with_logits(
        xt, yt, reduction=reduction,
        weight=None if sample_weight is None else torch.tensor(sample_weight, dtype=torch.float64),
        pos_weight=None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64))
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_every_option_matches_torch(backend, dtype):
    rng = np.random.default_rng(10)
    shape = (7, 5, 13)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.uniform(size=shape).astype(dtype)
    pos_weights = [None, 2.5, rng.uniform(0.5, 3, 13), rng.uniform(0.5, 3, (5, 13)), rng.uniform(0.5, 3, shape)]
    sample_weights = [None, rng.uniform(0, 2, (7, 1, 1)), rng.uniform(0, 2, 13), rng.uniform(0, 2, (7, 5, 1))]
    for pw, sw, smoothing, reduction in itertools.product(pos_weights, sample_weights, (0.0, 0.1), ("mean", "sum", "none")):
        pw_arr = None if pw is None else np.asarray(pw)
        loss, grad = sigmoid_binary_cross_entropy_fused(
            x, y, pos_weight=pw_arr, sample_weight=sw, label_smoothing=smoothing, reduction=reduction)
        ref_loss, ref_grad = torch_bce(x, y, pos_weight=pw_arr, sample_weight=sw, smoothing=smoothing, reduction=reduction)
        what = f"pw {None if pw is None else np.shape(pw)} sw {None if sw is None else sw.shape} {smoothing} {reduction}"
        assert_close(loss, ref_loss, dtype, what)
        assert_close(grad, ref_grad, dtype, what)


def test_bce_large_flat_array_uses_threads_and_matches_torch(backend):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(2_500_001) * 5).astype(np.float32)  # several blocks of 2^20
    y = (rng.random(2_500_001) < 0.3).astype(np.float32)
    pw = np.array([3.0])
    loss, grad = sigmoid_binary_cross_entropy_fused(x, y, pos_weight=pw, num_threads=2)
    ref_loss, ref_grad = torch_bce(x, y, pos_weight=pw)
    assert_close(loss, ref_loss, np.float32, "loss")
    assert_close(grad, ref_grad, np.float32, "grad")
    loss1, grad1 = sigmoid_binary_cross_entropy_fused(x, y, pos_weight=pw, num_threads=1)
    np.testing.assert_array_equal(grad1, grad)
    assert loss1 == pytest.approx(loss, rel=1e-6)


def test_bce_hand_computed_and_extreme_logits(backend):
    loss, grad = sigmoid_binary_cross_entropy_fused(np.zeros(2), np.array([1.0, 0.0]), reduction="none")
    np.testing.assert_allclose(loss, np.log(2), rtol=1e-15)
    np.testing.assert_allclose(grad, [-0.5, 0.5])
    x = np.array([1e4, -1e4, 1e4, -1e4], np.float32)
    y = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    loss, grad = sigmoid_binary_cross_entropy_fused(x, y, reduction="none")
    np.testing.assert_allclose(loss, [0.0, 0.0, 1e4, 1e4])
    np.testing.assert_allclose(grad, [0.0, 0.0, 1.0, -1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_inplace_and_errors(backend, dtype):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 6)).astype(dtype)
    y = rng.uniform(size=(4, 6))
    loss, grad = sigmoid_binary_cross_entropy_fused(x, y)
    buffer = x.copy()
    loss_inplace, grad_inplace = sigmoid_binary_cross_entropy_fused(buffer, y, inplace=True)
    assert grad_inplace is buffer and loss_inplace == loss
    np.testing.assert_array_equal(grad_inplace, grad)
    for bad, word in ((np.nan, "NaN"), (np.inf, "an infinity"), (-np.inf, "an infinity")):
        z = x.copy()
        z[2, 3] = bad
        with pytest.raises(ValueError, match=rf"`logits` contains {word} at index \(2, 3\)"):
            sigmoid_binary_cross_entropy_fused(z, y)
        with pytest.raises(ValueError, match=r"`logits` contains .* at index \(2, 3\)"):
            sigmoid_binary_cross_entropy_fused(z, y, inplace=True)
    with pytest.raises(ValueError, match="`labels` must have the logits' shape"):
        sigmoid_binary_cross_entropy_fused(x, y[:2])
    with pytest.raises(ValueError, match="`pos_weight` of shape"):
        sigmoid_binary_cross_entropy_fused(x, y, pos_weight=np.ones(5))
    with pytest.raises(ValueError, match="without enlarging"):
        sigmoid_binary_cross_entropy_fused(x, y, sample_weight=np.ones((2, 4, 6)))
    with pytest.raises(ValueError, match="`sample_weight` must be non-negative"):
        sigmoid_binary_cross_entropy_fused(x, y, sample_weight=-np.ones(6))
    with pytest.raises(ValueError, match="`reduction`"):
        sigmoid_binary_cross_entropy_fused(x, y, reduction="mean ")


def test_bce_empty_input(backend):
    loss, grad = sigmoid_binary_cross_entropy_fused(np.zeros((0, 3), np.float32), np.zeros((0, 3)))
    assert loss == 0.0 and grad.shape == (0, 3)


def test_without_numba_the_numpy_backend_gives_the_same_answer(monkeypatch):
    # numba is an optional extra ("fast"): simulate an install without it
    import sys

    from crossent import kernels

    rng = np.random.default_rng(99)
    x = rng.standard_normal((37, 300), dtype=np.float32)
    y = rng.integers(0, 300, 37)
    want_loss, want_grad = kernels.softmax_cross_entropy_fused(x, y, label_smoothing=0.1)
    monkeypatch.setitem(sys.modules, "crossent.kernels.numba_fused", None)  # import raises ImportError
    monkeypatch.delattr(kernels, "numba_fused", raising=False)
    loss, grad = kernels.softmax_cross_entropy_fused(x, y, label_smoothing=0.1)
    with pytest.raises(ValueError, match="needs the numba package"):
        kernels.softmax_cross_entropy_fused(x, y, backend="numba")
    np.testing.assert_allclose(loss, want_loss, rtol=2e-5)
    np.testing.assert_allclose(grad, want_grad, atol=2e-6 * np.abs(want_grad).max())


class TestRulesDefects:
    """Regression cases of the issue "One home for the cross-entropy rules" (each failed before its fix)."""

    def test_read_only_float32_logits_run_on_every_backend(self, backend):
        x = np.frombuffer(np.arange(6, dtype=np.float32).tobytes(), dtype=np.float32).reshape(2, 3)
        loss, grad = softmax_cross_entropy_fused(x, np.array([0, 2]))
        assert loss == pytest.approx(1.4076059644443806, rel=1e-6)  # mean of log(1+e+e^2) - 2 and -0
        y = np.frombuffer(np.ones(6, np.float32).tobytes(), dtype=np.float32)
        assert sigmoid_binary_cross_entropy_fused(y, y)[0] == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-6)
        with pytest.raises(ValueError, match="needs a writeable"):
            softmax_cross_entropy_fused(x, np.array([0, 2]), inplace=True)

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_a_masked_target_of_zero_weight_costs_nothing(self, backend, dtype):
        x = np.array([[-np.inf, 0, 1], [0, 1, 2]], dtype)
        loss, grad = softmax_cross_entropy_fused(x, np.array([0, 1]), class_weight=[0, 1, 1])
        assert loss == pytest.approx(np.log1p(np.exp(-1.0) + np.exp(1.0)), rel=1e-6)  # row 2 alone
        assert np.isfinite(grad).all() and not grad[0].any()

    @pytest.mark.parametrize("dtype, big", [(np.float32, 1e30), (np.float32, 3e38), (np.float64, 1e17),
                                            (np.float64, 1e300)])
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
    def test_huge_equal_logits_cost_log_2(self, backend, dtype, big, label_smoothing):
        loss, grad = softmax_cross_entropy_fused(np.array([[big, big]], dtype), np.array([0]),
                                                 label_smoothing=label_smoothing)
        assert loss == pytest.approx(np.log(2), rel=1e-7)
        assert grad.sum() == 0.0 and grad[0, 0] == pytest.approx(-0.5 + label_smoothing / 2)

    @pytest.mark.parametrize("dtype, offset", [(np.float32, 1e5), (np.float32, 1e6), (np.float64, 1e12)])
    @pytest.mark.parametrize("targets", ["int", "prob"])
    def test_a_large_common_offset_loses_no_digits(self, backend, dtype, offset, targets):
        rng = np.random.default_rng(3)
        x, labels = random_case(rng, 6, 7, dtype, targets=targets, with_ignored=False, spread=1.0)
        x = (x.astype(np.float64) + offset).astype(dtype)
        exact = x.astype(np.longdouble)
        shifted = exact - exact.max(axis=1, keepdims=True)
        neg_log_p = np.log(np.exp(shifted).sum(axis=1, keepdims=True)) - shifted
        if targets == "int":
            expected = neg_log_p[np.arange(6), labels].mean()
        else:
            expected = (labels.astype(np.longdouble) * neg_log_p).sum(axis=1).mean()
        loss, _ = softmax_cross_entropy_fused(x, labels)
        assert abs(float((loss - expected) / expected)) <= (1e-6 if dtype == np.float32 else 1e-12)

    @pytest.mark.parametrize("dtype, margin", [(np.float32, 20.0), (np.float64, 30.0)])
    def test_a_confident_row_keeps_the_digits_of_its_tiny_loss(self, backend, dtype, margin):
        # log S of the rounded sum S = 1 + 2e^-margin gave 0 (float32) or 1e-4 relative error (float64).
        x = np.array([[margin, 0.0, 0.0]], dtype)
        loss, _ = softmax_cross_entropy_fused(x, np.array([0]))
        expected = np.log1p(2 * np.exp(-margin))
        assert abs(float(loss) - expected) <= (1e-6 if dtype == np.float32 else 1e-12) * expected
