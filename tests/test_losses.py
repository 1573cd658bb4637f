"""Tests for crossent.losses: hand-computed values, PyTorch/scikit-learn references,
finite-difference gradients, property tests and every documented error."""

from __future__ import annotations

import contextlib
import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal
from scipy import special

from crossent import losses

from _numerics import numerical_gradient

torch = pytest.importorskip("torch")
F = torch.nn.functional
sklearn_metrics = pytest.importorskip("sklearn.metrics")

LN2 = float(np.log(2.0))
REDUCTIONS = ("none", "sum", "mean")
FAST = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- helpers


def check_gradient(loss_with_grad, x, *args, rtol=1e-6, atol=1e-7, **options):
    """The analytic gradient of `loss_with_grad` matches float64 central differences."""
    _, grad = loss_with_grad(x, *args, **options)
    numeric = numerical_gradient(lambda v: loss_with_grad(v, *args, **options)[0], x)
    assert grad.shape == np.shape(x)
    assert_allclose(grad, numeric, rtol=rtol, atol=atol)


def torch_loss_and_grad(torch_loss, x, *args, reduction="mean", **options):
    """Value and autograd gradient (of the sum, for reduction='none') of a torch loss."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    value = torch_loss(xt, *args, reduction=reduction, **options)
    value.sum().backward()
    return value.detach().numpy(), xt.grad.numpy()


@contextlib.contextmanager
def no_warnings():
    """Context in which any warning (RuntimeWarning included) is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# --------------------------------------------------------------------------- activations


class TestActivations:
    def test_sigmoid_hand_values_and_saturation(self):
        assert float(losses.sigmoid(0.0)) == 0.5
        assert_allclose(losses.sigmoid([np.log(3.0)]), [0.75])
        assert_array_equal(losses.sigmoid(np.array([-1e4, 1e4], np.float32)), [0.0, 1.0])

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_sigmoid_is_within_4_ulp_of_scipy_expit_everywhere(self, dtype, rng):
        # the whole range: tiny, moderate and huge |z|, both saturations, the extremes, NaN and infinities
        finfo = np.finfo(dtype)
        z = np.concatenate([rng.standard_normal(20000) * s for s in (1e-3, 1.0, 10.0, 300.0)]
                           + [[0.0, -0.0, finfo.max, -finfo.max, finfo.tiny, np.inf, -np.inf]]).astype(dtype)
        with np.errstate(over="ignore"):
            ours, scipys = losses.sigmoid(z), special.expit(z)
        assert ours.dtype == dtype and scipys.dtype == dtype
        finite = np.isfinite(z)
        assert_array_equal(ours[~finite], scipys[~finite])
        ulps = np.abs(ours - scipys)[finite] / np.spacing(np.maximum(np.abs(scipys[finite]), finfo.tiny))
        assert ulps.max() <= 4.0
        assert np.isnan(losses.sigmoid(np.nan)) and 0.0 <= ours.min() and ours.max() <= 1.0

    def test_sigmoid_derivative_matches_finite_differences_and_is_stable(self):
        z = np.linspace(-8, 8, 17)
        numeric = (special.expit(z + 1e-6) - special.expit(z - 1e-6)) / 2e-6
        assert_allclose(losses.sigmoid_derivative(z), numeric, rtol=1e-6)
        exact = np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))) ** 2
        assert_allclose(losses.sigmoid_derivative(z), exact, rtol=1e-14)
        assert float(losses.sigmoid_derivative(0.0)) == 0.25
        # 1 - sigma(40) rounds to 0 in float64; sigma(40) sigma(-40) keeps e^-40.
        assert_allclose(losses.sigmoid_derivative(40.0), np.exp(-40.0), rtol=1e-12)

    def test_log_sigmoid_exact_for_extreme_inputs(self):
        assert float(losses.log_sigmoid(np.float32(-1e4))) == -1e4
        assert float(losses.log_sigmoid(1e4)) == 0.0
        assert_allclose(losses.log_sigmoid(0.0), -LN2)

    def test_softmax_masks_and_axis(self):
        assert_array_equal(losses.softmax([0.0, 0.0, -np.inf]), [0.5, 0.5, 0.0])
        z = np.arange(6.0).reshape(2, 3)
        assert_allclose(losses.softmax(z, axis=0).sum(axis=0), 1.0)
        assert_allclose(np.exp(losses.log_softmax(z, axis=0)), losses.softmax(z, axis=0))

    def test_log_softmax_does_not_overflow(self):
        assert_allclose(losses.log_softmax([1000.0, 1000.0]), [-LN2, -LN2])

    def test_activation_dtypes(self):
        assert losses.sigmoid(np.float16(1.0)).dtype == np.float32
        assert losses.log_softmax(np.zeros(3, np.float32)).dtype == np.float32
        assert losses.softmax(np.arange(3)).dtype == np.float64

    def test_activation_bad_axis_and_dtype(self):
        with pytest.raises(ValueError, match="`axis`"):
            losses.softmax(np.zeros((2, 3)), axis=2)
        with pytest.raises(TypeError, match="`z`"):
            losses.sigmoid(np.array(["a"]))


# --------------------------------------------------------------------------- sigmoid BCE


class TestSigmoidBinaryCrossEntropy:
    def test_logit_zero_costs_ln2_for_either_label(self):
        loss, grad = losses.sigmoid_binary_cross_entropy_with_grad([0.0, 0.0], [1.0, 0.0], reduction="none")
        assert_allclose(loss, [LN2, LN2], rtol=1e-15)
        assert_array_equal(grad, [-0.5, 0.5])

    def test_hand_value_with_pos_weight_and_smoothing(self):
        # z = ln 3: sigma = 3/4. y = 1 smoothed by 0.2 -> 0.9; pos_weight 2.
        z, y = np.log(3.0), 0.9
        expected = -(2 * y * np.log(0.75) + (1 - y) * np.log(0.25))
        got = losses.sigmoid_binary_cross_entropy(z, 1.0, pos_weight=2.0, label_smoothing=0.2)
        assert_allclose(got, expected, rtol=1e-14)

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_extreme_logits_give_exact_values(self, dtype):
        logits = np.array([-1e4, 1e4, -1e4, 1e4], dtype)
        labels = np.array([1.0, 0.0, 0.0, 1.0], dtype)
        loss, grad = losses.sigmoid_binary_cross_entropy_with_grad(logits, labels, reduction="none")
        assert loss.dtype == dtype and grad.dtype == dtype
        assert_array_equal(loss, [1e4, 1e4, 0.0, 0.0])
        assert_array_equal(grad, [-1.0, 1.0, 0.0, 0.0])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("use_pos_weight", [False, True])
    @pytest.mark.parametrize("use_sample_weight", [False, True])
    def test_matches_torch_bce_with_logits(self, rng, reduction, use_pos_weight, use_sample_weight):
        logits = rng.normal(scale=4, size=(6, 5))
        labels = rng.uniform(size=(6, 5))
        pos_weight = rng.uniform(0.2, 3, size=5) if use_pos_weight else None
        sample_weight = rng.uniform(0, 2, size=(6, 1)) if use_sample_weight else None
        loss, grad = losses.sigmoid_binary_cross_entropy_with_grad(
            logits, labels, pos_weight=pos_weight, sample_weight=sample_weight, reduction=reduction)
        to_t = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
        ref_loss, ref_grad = torch_loss_and_grad(
            F.binary_cross_entropy_with_logits, logits, torch.tensor(labels),
            weight=to_t(sample_weight), pos_weight=to_t(pos_weight), reduction=reduction)
        assert_allclose(loss, ref_loss, rtol=1e-12)
        assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)

    def test_label_smoothing_equals_torch_on_smoothed_labels(self, rng):
        logits, labels = rng.normal(size=7), rng.integers(0, 2, size=7).astype(float)
        loss, grad = losses.sigmoid_binary_cross_entropy_with_grad(logits, labels, label_smoothing=0.3)
        ref = torch_loss_and_grad(F.binary_cross_entropy_with_logits, logits, torch.tensor(labels * 0.7 + 0.15))
        assert_allclose(loss, ref[0], rtol=1e-13)
        assert_allclose(grad, ref[1], rtol=1e-12)

    def test_matches_sklearn_log_loss(self, rng):
        logits, labels = rng.normal(scale=3, size=50), rng.integers(0, 2, size=50)
        expected = sklearn_metrics.log_loss(labels, special.expit(logits), labels=[0, 1])
        assert_allclose(losses.sigmoid_binary_cross_entropy(logits, labels), expected, rtol=1e-12)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("options", [
        {}, {"pos_weight": np.array([0.5, 2.0, 1.5])}, {"sample_weight": np.array([[1.0], [0.0], [2.5]])},
        {"label_smoothing": 0.1}, {"pos_weight": 3.0, "sample_weight": 0.5, "label_smoothing": 0.4},
    ])
    def test_gradient_matches_finite_differences(self, rng, reduction, options):
        logits, labels = rng.normal(scale=2, size=(3, 3)), rng.uniform(size=(3, 3))
        check_gradient(losses.sigmoid_binary_cross_entropy_with_grad, logits, labels, reduction=reduction, **options)

    @FAST
    @given(
        logits=hnp.arrays(np.float64, 6, elements=st.sampled_from([-1e4, -500.0, -40.0, 0.0, 40.0, 500.0, 1e4])),
        labels=hnp.arrays(np.float64, 6, elements=st.floats(0, 1)),
        dtype=st.sampled_from([np.float32, np.float64]),
    )
    def test_extreme_logits_never_nan_and_exact(self, logits, labels, dtype):
        with no_warnings():
            loss, grad = losses.sigmoid_binary_cross_entropy_with_grad(
                logits.astype(dtype), labels, reduction="none")
        # softplus(-z) = log(1 + e^-z), exact via logaddexp: L = y softplus(-z) + (1-y) softplus(z).
        expected = labels * np.logaddexp(0, -logits) + (1 - labels) * np.logaddexp(0, logits)
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        assert_allclose(loss, expected.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-14)

    def test_batch_loss_equals_loss_of_each_row(self, rng):
        logits, labels = rng.normal(size=(4, 3)), rng.uniform(size=(4, 3))
        batch = losses.sigmoid_binary_cross_entropy(logits, labels, reduction="none")
        rows = [losses.sigmoid_binary_cross_entropy(z, y, reduction="none") for z, y in zip(logits, labels)]
        assert_allclose(batch, np.stack(rows), rtol=1e-15)

    def test_dtypes_float16_float32_int(self):
        for dtype, expected in [(np.float16, np.float32), (np.float32, np.float32), (np.int64, np.float64),
                                (np.float64, np.float64)]:
            loss, grad = losses.sigmoid_binary_cross_entropy_with_grad(np.zeros(3, dtype), np.ones(3))
            assert np.asarray(loss).dtype == expected and grad.dtype == expected
            assert_allclose(loss, LN2, rtol=1e-7)

    def test_errors(self):
        f = losses.sigmoid_binary_cross_entropy
        with pytest.raises(ValueError, match="`logits` and `labels` must have the same shape"):
            f(np.zeros(3), np.zeros(2))
        with pytest.raises(ValueError, match="`labels` must lie in \\[0, 1\\]"):
            f(np.zeros(2), [0.5, 1.5])
        with pytest.raises(ValueError, match="`labels` must be finite"):
            f(np.zeros(2), [0.5, np.nan])
        with pytest.raises(ValueError, match="`logits` must be finite"):
            f([0.0, np.nan], [0.5, 0.5])
        with pytest.raises(ValueError, match="`logits` must be finite"):
            f([0.0, np.inf], [0.5, 0.5])
        with pytest.raises(ValueError, match="`pos_weight` must be non-negative"):
            f(np.zeros(2), np.zeros(2), pos_weight=-1.0)
        with pytest.raises(ValueError, match="`sample_weight` of shape \\(3,\\) does not broadcast"):
            f(np.zeros(2), np.zeros(2), sample_weight=np.ones(3))
        with pytest.raises(ValueError, match="`sample_weight` of shape \\(2, 2\\) does not broadcast"):
            f(np.zeros(2), np.zeros(2), sample_weight=np.ones((2, 2)))
        with pytest.raises(ValueError, match="`label_smoothing`"):
            f(np.zeros(2), np.zeros(2), label_smoothing=1.5)
        with pytest.raises(ValueError, match="`reduction`"):
            f(np.zeros(2), np.zeros(2), reduction="avg")
        with pytest.raises(TypeError, match="`logits`"):
            f(np.array(["x"]), np.zeros(1))
        with pytest.raises(TypeError, match="positional"):
            f(np.zeros(2), np.zeros(2), None)


# --------------------------------------------------------------------------- BCE from probabilities


class TestBinaryCrossEntropy:
    def test_hand_values(self):
        loss, grad = losses.binary_cross_entropy_with_grad([0.5, 1.0, 0.25], [1.0, 1.0, 0.0], reduction="none")
        assert_allclose(loss, [LN2, 0.0, np.log(4 / 3)], rtol=1e-15)
        assert_allclose(grad, [-2.0, -1.0, 4 / 3], rtol=1e-15)

    def test_confident_wrong_answer_is_inf_with_signed_infinite_gradient(self):
        with no_warnings():
            loss, grad = losses.binary_cross_entropy_with_grad([0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0],
                                                               reduction="none")
        assert_array_equal(loss, [np.inf, np.inf, 0.0, 0.0])
        assert_array_equal(grad, [-np.inf, np.inf, 1.0, -1.0])
        # PyTorch clamps the log at -100 (documented difference).
        assert float(F.binary_cross_entropy(torch.tensor([0.0]), torch.tensor([1.0]))) == 100.0

    def test_zero_sample_weight_on_infinite_loss_counts_zero(self):
        with no_warnings():
            loss, grad = losses.binary_cross_entropy_with_grad([0.0, 0.5], [1.0, 1.0], sample_weight=[0.0, 1.0],
                                                               reduction="sum")
        assert_allclose(loss, LN2)
        assert_array_equal(grad, [0.0, -2.0])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("use_weight", [False, True])
    def test_matches_torch_binary_cross_entropy(self, rng, reduction, use_weight):
        probs, labels = rng.uniform(0.01, 0.99, size=(5, 4)), rng.uniform(size=(5, 4))
        weight = rng.uniform(0, 2, size=4) if use_weight else None
        loss, grad = losses.binary_cross_entropy_with_grad(probs, labels, sample_weight=weight, reduction=reduction)
        ref_loss, ref_grad = torch_loss_and_grad(
            F.binary_cross_entropy, probs, torch.tensor(labels),
            weight=None if weight is None else torch.tensor(weight), reduction=reduction)
        assert_allclose(loss, ref_loss, rtol=1e-12)
        assert_allclose(grad, ref_grad, rtol=1e-10)

    def test_matches_sklearn_log_loss(self, rng):
        probs, labels = rng.uniform(0.01, 0.99, size=40), rng.integers(0, 2, size=40)
        assert_allclose(losses.binary_cross_entropy(probs, labels),
                        sklearn_metrics.log_loss(labels, probs, labels=[0, 1]), rtol=1e-12)

    def test_equals_sigmoid_bce_of_the_logits(self, rng):
        logits, labels = rng.normal(size=9), rng.uniform(size=9)
        assert_allclose(losses.binary_cross_entropy(special.expit(logits), labels),
                        losses.sigmoid_binary_cross_entropy(logits, labels), rtol=1e-12)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("options", [{}, {"sample_weight": [0.5, 2.0, 0.0]}, {"label_smoothing": 0.2}])
    def test_gradient_matches_finite_differences(self, rng, reduction, options):
        probs, labels = rng.uniform(0.1, 0.9, size=(2, 3)), rng.uniform(size=(2, 3))
        check_gradient(losses.binary_cross_entropy_with_grad, probs, labels, rtol=1e-5, reduction=reduction,
                       **options)

    def test_dtype_float16_becomes_float32(self):
        loss, grad = losses.binary_cross_entropy_with_grad(np.full(2, 0.5, np.float16), [1, 0])
        assert loss.dtype == np.float32 and grad.dtype == np.float32

    def test_errors(self):
        f = losses.binary_cross_entropy
        with pytest.raises(ValueError, match="`probs` must lie in \\[0, 1\\]"):
            f([1.2], [1.0])
        with pytest.raises(ValueError, match="`probs` must be finite"):
            f([np.nan], [1.0])
        with pytest.raises(ValueError, match="`labels` must lie in \\[0, 1\\]"):
            f([0.5], [-0.1])
        with pytest.raises(ValueError, match="`probs` and `labels` must have the same shape"):
            f([0.5, 0.5], [1.0])
        with pytest.raises(ValueError, match="`sample_weight` must be non-negative"):
            f([0.5], [1.0], sample_weight=[-2.0])
        with pytest.raises(ValueError, match="`reduction`"):
            f([0.5], [1.0], reduction=None)


# --------------------------------------------------------------------------- softmax CE


def torch_softmax_ce(logits, labels, *, axis=-1, class_weight=None, ignore_index=None, label_smoothing=0.0,
                     z_loss=0.0, reduction="mean"):
    """PyTorch's cross_entropy (plus the z-loss written with torch ops): value and autograd gradient."""
    xt = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    x = torch.movedim(xt, axis, 1) if xt.ndim > 1 else xt
    prob_targets = np.asarray(labels).dtype.kind == "f"
    if prob_targets:
        target = torch.tensor(labels, dtype=torch.float64)
        target = torch.movedim(target, axis, 1) if target.ndim > 1 else target
    else:
        target = torch.tensor(labels, dtype=torch.int64)
    weight = None if class_weight is None else torch.tensor(class_weight)
    options = dict(weight=weight, label_smoothing=label_smoothing)
    if ignore_index is not None:
        options["ignore_index"] = ignore_index
    if not z_loss:
        value = F.cross_entropy(x, target, reduction=reduction, **options)
    else:
        rows = F.cross_entropy(x, target, reduction="none", **options)
        lse = torch.logsumexp(x, dim=1 if x.ndim > 1 else 0)
        if prob_targets:
            counted, denominator = torch.ones_like(lse), float(rows.numel())
        else:
            counted = (target != (-100 if ignore_index is None else ignore_index)).double()
            safe = torch.where(counted > 0, target, 0)
            denominator = (counted * (1.0 if weight is None else weight[safe])).sum()
        rows = rows + z_loss * lse**2 * counted
        value = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / denominator}[reduction]
    value.sum().backward()
    return value.detach().numpy(), xt.grad.numpy()


def random_integer_case(rng, shape, axis, with_ignore):
    """Logits with classes along `axis` and integer labels, some equal to -100 when `with_ignore`."""
    num_classes = shape[axis]
    logits = rng.normal(scale=3, size=shape)
    batch_shape = tuple(s for k, s in enumerate(shape) if k != axis % len(shape))
    labels = rng.integers(0, num_classes, size=batch_shape)
    if with_ignore:
        labels[rng.uniform(size=batch_shape) < 0.3] = -100
    return logits, labels


def random_distributions(rng, shape, axis):
    raw = rng.uniform(size=shape) ** 3
    return raw / raw.sum(axis=axis, keepdims=True)


@pytest.fixture(scope="class", params=["fused", "reference"])
def softmax_backend(request):
    """Run every softmax test through the fused kernel and through the NumPy reference."""
    from crossent import kernels

    with pytest.MonkeyPatch.context() as mp:
        if request.param == "reference":
            mp.setattr(kernels, "supports_softmax", lambda logits, labels: False)
        yield request.param


@pytest.mark.usefixtures("softmax_backend")
class TestSoftmaxCrossEntropy:
    def test_three_classes_by_hand(self):
        # logits (2, 1, 0), label 0: log(e^2 + e + 1) - 2; gradient p - onehot.
        z = np.array([2.0, 1.0, 0.0])
        p = np.exp(z) / np.exp(z).sum()
        loss, grad = losses.softmax_cross_entropy_with_grad(z, 0, backend="reference")
        assert_allclose(loss, np.log(np.exp(2) + np.e + 1) - 2, rtol=1e-15)
        assert_allclose(grad, p - [1, 0, 0], rtol=1e-15)
        # The fused kernel (the default for float64) agrees to its documented 1e-12.
        loss, grad = losses.softmax_cross_entropy_with_grad(z, 0)
        assert_allclose(loss, np.log(np.exp(2) + np.e + 1) - 2, rtol=1e-12)
        assert_allclose(grad, p - [1, 0, 0], rtol=1e-12, atol=1e-15)
        assert_allclose(losses.softmax_cross_entropy(z, 0), 0.40760596444438, rtol=1e-13)

    def test_uniform_logits_cost_log_num_classes(self):
        loss, grad = losses.softmax_cross_entropy_with_grad(np.zeros((2, 4)), np.array([2, 0]))
        assert_allclose(loss, np.log(4), rtol=1e-15)
        assert_allclose(grad, (np.full((2, 4), 0.25) - np.eye(4)[[2, 0]]) / 2)

    def test_hand_value_with_weight_smoothing_and_z_loss(self):
        # Two classes, logits (0, 0): -log p_c = ln 2 for both, lse = ln 2.
        # w = (1, 3), label 1, eps = 0.5, z = 0.1:
        # L = 0.5 * 3 * ln2 + 0.25 * (1 + 3) * ln2 + 0.1 * ln2^2; mean divides by w[1] = 3.
        loss = losses.softmax_cross_entropy(np.zeros((1, 2)), np.array([1]), class_weight=[1.0, 3.0],
                                            label_smoothing=0.5, z_loss=0.1)
        assert_allclose(loss, (1.5 * LN2 + LN2 + 0.1 * LN2**2) / 3, rtol=1e-15)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("use_weight,use_ignore,smoothing", list(itertools.product([False, True], [False, True],
                                                                                      [0.0, 0.25])))
    def test_integer_labels_match_torch_on_41x401_batch(self, rng, reduction, use_weight, use_ignore, smoothing):
        num_classes = 9
        logits, labels = random_integer_case(rng, (41, 401, num_classes), -1, use_ignore)
        weight = rng.uniform(0.1, 3, size=num_classes) if use_weight else None
        options = dict(class_weight=weight, ignore_index=-100 if use_ignore else None, label_smoothing=smoothing,
                       reduction=reduction)
        loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, **options)
        ref_loss, ref_grad = torch_softmax_ce(logits, labels, **options)
        assert np.shape(loss) == ref_loss.shape
        assert_allclose(loss, ref_loss, rtol=1e-10, atol=1e-12)
        assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-14)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("use_weight,use_ignore,smoothing,z_loss", list(itertools.product(
        [False, True], [False, True], [0.0, 0.3], [0.0, 0.01])))
    def test_integer_labels_class_axis_1_match_torch(self, rng, reduction, use_weight, use_ignore, smoothing, z_loss):
        logits, labels = random_integer_case(rng, (3, 5, 4, 2), 1, use_ignore)
        weight = rng.uniform(0.1, 3, size=5) if use_weight else None
        options = dict(axis=1, class_weight=weight, ignore_index=-100 if use_ignore else None,
                       label_smoothing=smoothing, z_loss=z_loss, reduction=reduction)
        loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, **options)
        ref_loss, ref_grad = torch_softmax_ce(logits, labels, **options)
        assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-14)
        assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("use_weight,smoothing,z_loss", list(itertools.product([False, True], [0.0, 0.2],
                                                                                   [0.0, 0.05])))
    @pytest.mark.parametrize("axis,shape", [(-1, (6, 5)), (1, (3, 5, 4))])
    def test_probability_targets_match_torch(self, rng, reduction, use_weight, smoothing, z_loss, axis, shape):
        logits = rng.normal(scale=2, size=shape)
        targets = random_distributions(rng, shape, axis)
        weight = rng.uniform(0.1, 3, size=shape[axis]) if use_weight else None
        options = dict(axis=axis, class_weight=weight, label_smoothing=smoothing, z_loss=z_loss, reduction=reduction)
        loss, grad = losses.softmax_cross_entropy_with_grad(logits, targets, **options)
        ref_loss, ref_grad = torch_softmax_ce(logits, targets, **options)
        assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-14)
        assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)

    def test_one_hot_targets_equal_integer_labels(self, rng):
        logits, labels = rng.normal(size=(7, 4)), rng.integers(0, 4, size=7)
        weight = rng.uniform(0.5, 2, size=4)
        as_int = losses.softmax_cross_entropy_with_grad(logits, labels, class_weight=weight, reduction="sum")
        as_prob = losses.softmax_cross_entropy_with_grad(logits, np.eye(4)[labels], class_weight=weight,
                                                         reduction="sum")
        assert_allclose(as_int[0], as_prob[0], rtol=1e-14)
        assert_allclose(as_int[1], as_prob[1], rtol=1e-13, atol=1e-16)

    def test_matches_sklearn_log_loss(self, rng):
        logits, labels = rng.normal(scale=2, size=(30, 4)), rng.integers(0, 4, size=30)
        probs = special.softmax(logits, axis=1)
        expected = sklearn_metrics.log_loss(labels, probs, labels=range(4))
        assert_allclose(losses.softmax_cross_entropy(logits, labels), expected, rtol=1e-12)
        assert_allclose(losses.softmax_cross_entropy(logits, np.eye(4)[labels]), expected, rtol=1e-12)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("use_weight,use_ignore,smoothing,z_loss", list(itertools.product(
        [False, True], [False, True], [0.0, 0.3], [0.0, 0.1])))
    def test_integer_gradient_matches_finite_differences(self, rng, reduction, use_weight, use_ignore, smoothing,
                                                         z_loss):
        logits, labels = random_integer_case(rng, (4, 3), -1, use_ignore)
        labels[0] = 1  # at least one counted example
        weight = rng.uniform(0.2, 2, size=3) if use_weight else None
        check_gradient(losses.softmax_cross_entropy_with_grad, logits, labels, class_weight=weight,
                       ignore_index=-100 if use_ignore else None, label_smoothing=smoothing, z_loss=z_loss,
                       reduction=reduction)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("use_weight,smoothing,z_loss", list(itertools.product([False, True], [0.0, 0.3],
                                                                                   [0.0, 0.1])))
    def test_probability_gradient_matches_finite_differences(self, rng, reduction, use_weight, smoothing, z_loss):
        logits, targets = rng.normal(size=(3, 4)), random_distributions(rng, (3, 4), -1)
        weight = rng.uniform(0.2, 2, size=4) if use_weight else None
        check_gradient(losses.softmax_cross_entropy_with_grad, logits, targets, class_weight=weight,
                       label_smoothing=smoothing, z_loss=z_loss, reduction=reduction)

    def test_all_targets_ignored_gives_zero_loss_and_zero_gradient(self, rng):
        logits, labels = rng.normal(size=(3, 4)), np.full(3, -100)
        for reduction in REDUCTIONS:
            loss, grad = losses.softmax_cross_entropy_with_grad(
                logits, labels, ignore_index=-100, label_smoothing=0.1, z_loss=0.1, reduction=reduction)
            assert_array_equal(loss, np.zeros(3) if reduction == "none" else 0.0)
            assert_array_equal(grad, np.zeros((3, 4)))
        # PyTorch's mean is 0/0 = NaN here (documented difference).
        assert np.isnan(float(F.cross_entropy(torch.tensor(logits), torch.tensor(labels))))

    def test_empty_batch_mean_is_zero(self):
        loss, grad = losses.softmax_cross_entropy_with_grad(np.zeros((0, 3)), np.zeros(0, np.int64))
        assert float(loss) == 0.0 and grad.shape == (0, 3)

    def test_masked_logits_finite_loss_zero_gradient_no_warning(self, rng):
        logits = rng.normal(size=(5, 6))
        logits[:, [1, 4]] = -np.inf
        labels = np.array([0, 2, 3, 5, 0])
        with no_warnings():
            loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, reduction="none")
        assert np.isfinite(loss).all()
        assert_array_equal(grad[:, [1, 4]], 0.0)
        ref_loss, ref_grad = torch_softmax_ce(logits, labels, reduction="none")
        assert_allclose(loss, ref_loss, rtol=1e-13)
        assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-16)
        # Dropping the masked columns changes nothing.
        kept = [0, 2, 3, 5]
        assert_allclose(loss, losses.softmax_cross_entropy(logits[:, kept], np.array([0, 1, 2, 3, 0]),
                                                           reduction="none"), rtol=1e-14)

    def test_masked_logits_with_smoothing_give_inf_loss_and_torch_gradient(self, rng):
        logits = rng.normal(size=(2, 4))
        logits[:, 3] = -np.inf
        labels = np.array([0, 1])
        weight = rng.uniform(0.5, 2, size=4)
        with no_warnings():
            loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, class_weight=weight,
                                                                label_smoothing=0.1)
        assert loss == np.inf
        ref_loss, ref_grad = torch_softmax_ce(logits, labels, class_weight=weight, label_smoothing=0.1)
        assert ref_loss == np.inf
        assert np.isfinite(grad).all()
        assert_allclose(grad, ref_grad, rtol=1e-12)

    def test_masked_class_with_zero_weight_counts_zero_not_nan(self, rng):
        logits = rng.normal(size=(2, 3))
        logits[:, 2] = -np.inf
        labels, weight, eps = np.array([0, 1]), np.array([1.0, 2.0, 0.0]), 0.2
        with no_warnings():
            loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, class_weight=weight,
                                                                label_smoothing=eps, reduction="none")
        # By hand: the masked class has weight 0, so its infinite -log p counts 0 (torch: NaN).
        neg_log_p = special.logsumexp(logits[:, :2], axis=1)[:, None] - logits[:, :2]
        expected = (1 - eps) * weight[labels] * neg_log_p[[0, 1], labels] + eps / 3 * (neg_log_p * weight[:2]).sum(1)
        assert_allclose(loss, expected, rtol=1e-14)
        assert_array_equal(grad[:, 2], 0.0)
        assert np.isfinite(grad).all()

    def test_zero_weight_on_every_counted_target_gives_zero_mean(self, rng):
        loss, grad = losses.softmax_cross_entropy_with_grad(rng.normal(size=(2, 3)), np.array([1, 1]),
                                                            class_weight=[1.0, 0.0, 1.0], label_smoothing=0.1)
        assert float(loss) == 0.0
        assert_array_equal(grad, 0.0)

    def test_masked_entries_with_probability_targets_of_zero_mass(self):
        logits = np.array([[0.0, 0.0, -np.inf]])
        with no_warnings():
            loss, grad = losses.softmax_cross_entropy_with_grad(logits, np.array([[0.5, 0.5, 0.0]]))
        assert_allclose(loss, LN2, rtol=1e-15)
        assert_array_equal(grad, [[0.0, 0.0, 0.0]])

    def test_target_with_masked_logit_costs_inf(self):
        with no_warnings():
            loss, grad = losses.softmax_cross_entropy_with_grad(np.array([[0.0, -np.inf]]), np.array([1]))
        assert loss == np.inf
        assert_array_equal(grad, [[1.0, -1.0]])  # p - onehot, finite

    def test_row_of_all_masked_logits(self):
        logits = np.array([[0.0, 1.0], [-np.inf, -np.inf]])
        with pytest.raises(ValueError, match="-inf for every class in row 1"):
            losses.softmax_cross_entropy(logits, np.array([0, 1]))
        with no_warnings():
            loss, grad = losses.softmax_cross_entropy_with_grad(logits, np.array([0, -1]), ignore_index=-1,
                                                                label_smoothing=0.1, reduction="none")
        assert loss[1] == 0.0 and np.isfinite(loss[0])
        assert_array_equal(grad[1], 0.0)

    @FAST
    @given(
        values=hnp.arrays(np.float64, (3, 5), elements=st.sampled_from([-1e4, -300.0, 0.0, 2.5, 300.0, 1e4,
                                                                        -np.inf])),
        labels=hnp.arrays(np.int64, 3, elements=st.integers(0, 4)),
        dtype=st.sampled_from([np.float32, np.float64]),
    )
    def test_extreme_and_masked_logits_exact_without_nan(self, values, labels, dtype):
        values[np.arange(3), labels] = np.where(np.isinf(values[np.arange(3), labels]), 1.0,
                                                values[np.arange(3), labels])
        logits = values.astype(dtype)
        with no_warnings():
            loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, reduction="none")
        # Exact reference: shift by the row maximum, sum the exponentials in float64, and
        # subtract the target in that frame (lse - x_y would cancel at |x| = 1e4).
        top = values.max(axis=1)
        log_sum = np.log(np.exp(values - top[:, None]).sum(axis=1))
        expected = log_sum - (values[np.arange(3), labels] - top)
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        assert_allclose(loss, expected.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-30)
        assert_array_equal(grad[np.isinf(values)], 0.0)
        assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)

    @FAST
    @given(seed=st.integers(0, 2**32 - 1), smoothing=st.sampled_from([0.0, 0.2]),
           prob_targets=st.booleans())
    def test_batch_loss_equals_loss_of_each_row(self, seed, smoothing, prob_targets):
        rng = np.random.default_rng(seed)
        logits = rng.normal(scale=3, size=(4, 3, 5))
        labels = random_distributions(rng, (4, 3, 5), -1) if prob_targets else rng.integers(0, 5, size=(4, 3))
        weight = rng.uniform(0.1, 2, size=5)
        options = dict(class_weight=weight, label_smoothing=smoothing, reduction="none")
        loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, **options)
        for idx in np.ndindex(4, 3):
            row_loss, row_grad = losses.softmax_cross_entropy_with_grad(logits[idx], labels[idx], **options)
            assert_allclose(loss[idx], row_loss, rtol=1e-14)
            assert_allclose(grad[idx], row_grad, rtol=1e-14, atol=1e-17)

    @FAST
    @given(seed=st.integers(0, 2**32 - 1), smoothing=st.sampled_from([0.0, 0.3]), z_loss=st.sampled_from([0.0, 0.1]),
           prob_targets=st.booleans())
    def test_permuting_classes_together_changes_nothing(self, seed, smoothing, z_loss, prob_targets):
        rng = np.random.default_rng(seed)
        logits = rng.normal(scale=3, size=(6, 5))
        labels = random_distributions(rng, (6, 5), -1) if prob_targets else rng.integers(0, 5, size=6)
        weight = rng.uniform(0.1, 2, size=5)
        perm = rng.permutation(5)
        permuted_labels = labels[:, perm] if prob_targets else np.argsort(perm)[labels]
        options = dict(label_smoothing=smoothing, z_loss=z_loss)
        loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, class_weight=weight, **options)
        loss_p, grad_p = losses.softmax_cross_entropy_with_grad(logits[:, perm], permuted_labels,
                                                                class_weight=weight[perm], **options)
        assert_allclose(loss_p, loss, rtol=1e-13)
        assert_allclose(grad_p, grad[:, perm], rtol=1e-12, atol=1e-16)

    @pytest.mark.parametrize("dtype,expected", [(np.float16, np.float32), (np.float32, np.float32),
                                                (np.float64, np.float64), (np.int32, np.float64),
                                                (np.bool_, np.float64)])
    def test_result_dtypes(self, dtype, expected):
        logits = np.array([[1, 0, 0], [0, 1, 1]]).astype(dtype)
        for reduction in REDUCTIONS:
            loss, grad = losses.softmax_cross_entropy_with_grad(logits, np.array([0, 2]), reduction=reduction)
            assert np.asarray(loss).dtype == expected and grad.dtype == expected
        exact = losses.softmax_cross_entropy(logits.astype(np.float64), np.array([0, 2]))
        assert_allclose(losses.softmax_cross_entropy(logits, np.array([0, 2])), exact, rtol=1e-7)

    def test_float32_extreme_logits_exact(self):
        logits = np.array([[1e4, -1e4, 0.0]], np.float32)
        assert losses.softmax_cross_entropy(logits, np.array([1])) == np.float32(2e4)

    def test_label_ignore_index_inside_range_is_ignored(self, rng):
        logits, labels = rng.normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2])
        loss = losses.softmax_cross_entropy(logits, labels, ignore_index=2, label_smoothing=0.1)
        ref, _ = torch_softmax_ce(logits, labels, ignore_index=2, label_smoothing=0.1)
        assert_allclose(loss, ref, rtol=1e-13)

    def test_errors(self):
        f = losses.softmax_cross_entropy
        x = np.zeros((2, 3))
        with pytest.raises(ValueError, match="`labels` must lie in \\[0, 3\\)"):
            f(x, np.array([0, 3]))
        with pytest.raises(ValueError, match="`labels` must lie in \\[0, 3\\).*ignore_index=-100.*got -1"):
            f(x, np.array([0, -1]), ignore_index=-100)
        with pytest.raises(ValueError, match="integer `labels` must have the logits' shape without axis"):
            f(x, np.array([0, 1, 2]))
        with pytest.raises(ValueError, match="float `labels` are probability targets"):
            f(x, np.array([0.0, 1.0]))
        with pytest.raises(ValueError, match="`labels` must sum to 1 along axis 1") as info:
            f(x, np.array([[0.5, 0.2, 0.2], [1.0, 0.0, 0.0]]))
        assert "normalize" not in str(info.value)  # the losses have no such option to offer
        with pytest.raises(ValueError, match="`labels` must be non-negative"):
            f(x, np.array([[1.5, -0.5, 0.0], [1.0, 0.0, 0.0]]))
        with pytest.raises(ValueError, match="`labels` must be finite"):
            f(x, np.array([[np.nan, 0.5, 0.5], [1.0, 0.0, 0.0]]))
        with pytest.raises(TypeError, match="`labels` must be integer class indices or float"):
            f(x, np.array([True, False]))
        with pytest.raises(ValueError, match="`logits` contains NaN"):
            f(np.array([[0.0, np.nan, 1.0]]), np.array([0]))
        with pytest.raises(ValueError, match="`logits` must not be \\+inf"):
            f(np.array([[0.0, np.inf, 1.0]]), np.array([0]))
        with pytest.raises(ValueError, match="`class_weight` must have shape \\(3,\\)"):
            f(x, np.array([0, 1]), class_weight=[1.0, 2.0])
        with pytest.raises(ValueError, match="`class_weight` must be non-negative"):
            f(x, np.array([0, 1]), class_weight=[1.0, -2.0, 1.0])
        with pytest.raises(ValueError, match="`class_weight` must be finite"):
            f(x, np.array([0, 1]), class_weight=[1.0, np.nan, 1.0])
        with pytest.raises(ValueError, match="`label_smoothing` must be a number in \\[0, 1\\]"):
            f(x, np.array([0, 1]), label_smoothing=-0.1)
        with pytest.raises(ValueError, match="`label_smoothing`"):
            f(x, np.array([0, 1]), label_smoothing=1.1)
        with pytest.raises(ValueError, match="`z_loss` must be a finite non-negative number"):
            f(x, np.array([0, 1]), z_loss=-1e-4)
        with pytest.raises(ValueError, match="`reduction` must be one of"):
            f(x, np.array([0, 1]), reduction="batchmean")
        with pytest.raises(ValueError, match="`axis`=2 is out of bounds"):
            f(x, np.array([0, 1]), axis=2)
        with pytest.raises(TypeError, match="`axis` must be an integer"):
            f(x, np.array([0, 1]), axis=1.0)
        with pytest.raises(TypeError, match="`ignore_index` must be an integer or None"):
            f(x, np.array([0, 1]), ignore_index=1.5)
        with pytest.raises(ValueError, match="`ignore_index`=0 applies to integer labels only"):
            f(x, np.eye(3)[:2], ignore_index=0)
        with pytest.raises(TypeError, match="`ignore_index` must be an integer or None, got True"):
            f(x, np.array([0, 1]), ignore_index=True)
        with pytest.raises(ValueError, match="`logits` must have a class axis"):
            f(1.0, 0)
        with pytest.raises(ValueError, match="at least one class"):
            f(np.zeros((2, 0)), np.array([0, 0]))
        with pytest.raises(TypeError, match="`logits` must be a real numeric array"):
            f(np.array([[1 + 2j, 0]]), np.array([0]))


# --------------------------------------------------------------------------- focal loss


def torchvision_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss re-implemented from its definition (torchvision is not installed)."""
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


class TestSigmoidFocalLoss:
    def test_hand_value_at_logit_zero(self):
        # p = 1/2: 1 - p_t = 1/2, so L = alpha * (1/2)^gamma * ln 2.
        loss = losses.sigmoid_focal_loss([0.0, 0.0], [1.0, 0.0], alpha=0.25, gamma=2.0, reduction="none")
        assert_allclose(loss, [0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2], rtol=1e-15)

    def test_gamma_zero_without_alpha_is_binary_cross_entropy(self, rng):
        logits, labels = rng.normal(size=8), rng.uniform(size=8)
        focal = losses.sigmoid_focal_loss_with_grad(logits, labels, alpha=None, gamma=0.0)
        bce = losses.sigmoid_binary_cross_entropy_with_grad(logits, labels)
        assert_allclose(focal[0], bce[0], rtol=1e-14)
        assert_allclose(focal[1], bce[1], rtol=1e-13)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 2.0), (0.6, 0.5), (0.25, 0.0), (None, 1.5)])
    @pytest.mark.parametrize("soft_labels", [False, True])
    def test_matches_torchvision_definition(self, rng, reduction, alpha, gamma, soft_labels):
        logits = rng.normal(scale=3, size=(4, 5))
        labels = rng.uniform(size=(4, 5)) if soft_labels else rng.integers(0, 2, size=(4, 5)).astype(float)
        loss, grad = losses.sigmoid_focal_loss_with_grad(logits, labels, alpha=alpha, gamma=gamma,
                                                         reduction=reduction)
        ref_loss, ref_grad = torch_loss_and_grad(torchvision_focal_loss, logits, torch.tensor(labels),
                                                 alpha=-1 if alpha is None else alpha, gamma=gamma,
                                                 reduction=reduction)
        assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-300)
        assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)

    def test_label_smoothing_and_sample_weight_match_reference(self, rng):
        logits, labels = rng.normal(size=6), rng.integers(0, 2, size=6).astype(float)
        weight = rng.uniform(0, 2, size=6)
        loss, grad = losses.sigmoid_focal_loss_with_grad(logits, labels, label_smoothing=0.2, sample_weight=weight,
                                                         reduction="sum")
        xt = torch.tensor(logits, requires_grad=True)
        ref = (torchvision_focal_loss(xt, torch.tensor(labels * 0.8 + 0.1)) * torch.tensor(weight)).sum()
        ref.backward()
        assert_allclose(loss, ref.detach().item(), rtol=1e-13)
        assert_allclose(grad, xt.grad.numpy(), rtol=1e-11)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("options", [
        {}, {"alpha": None, "gamma": 0.5}, {"gamma": 0.0}, {"gamma": 3.0, "alpha": 0.9},
        {"label_smoothing": 0.3}, {"sample_weight": np.array([1.0, 0.0, 2.0])},
    ])
    def test_gradient_matches_finite_differences(self, rng, reduction, options):
        logits, labels = rng.normal(scale=2, size=(2, 3)), rng.uniform(size=(2, 3))
        labels[0] = [0.0, 1.0, 1.0]
        check_gradient(losses.sigmoid_focal_loss_with_grad, logits, labels, reduction=reduction, **options)

    @FAST
    @given(
        logits=hnp.arrays(np.float64, 6, elements=st.sampled_from([-1e4, -800.0, -40.0, 0.0, 40.0, 800.0, 1e4])),
        labels=hnp.arrays(np.float64, 6, elements=st.sampled_from([0.0, 1.0, 0.5, 0.3])),
        gamma=st.sampled_from([0.0, 0.3, 1.0, 2.0]),
        dtype=st.sampled_from([np.float32, np.float64]),
    )
    def test_extreme_logits_never_nan(self, logits, labels, gamma, dtype):
        with no_warnings():
            loss, grad = losses.sigmoid_focal_loss_with_grad(logits.astype(dtype), labels, gamma=gamma,
                                                             reduction="none")
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        # Hard labels, exact: right and confident costs 0; wrong costs alpha_t * |z| (m = 1).
        hard = (labels == 0) | (labels == 1)
        wrong = hard & (np.abs(logits) >= 800) & ((logits > 0) != (labels == 1))
        right = hard & (np.abs(logits) >= 800) & ((logits > 0) == (labels == 1))
        alpha_t = np.where(labels == 1, 0.25, 0.75)
        assert_allclose(loss[wrong], (alpha_t * np.abs(logits))[wrong].astype(dtype), rtol=1e-7)
        assert_array_equal(loss[right], 0.0)

    def test_errors(self):
        f = losses.sigmoid_focal_loss
        with pytest.raises(ValueError, match="`alpha` must be a number in \\[0, 1\\] or None"):
            f([0.0], [1.0], alpha=-1.0)
        with pytest.raises(ValueError, match="`gamma` must be a finite non-negative number"):
            f([0.0], [1.0], gamma=-0.5)
        with pytest.raises(ValueError, match="`labels` must lie in \\[0, 1\\]"):
            f([0.0], [2.0])
        with pytest.raises(ValueError, match="`logits` must be finite"):
            f([np.nan], [1.0])
        with pytest.raises(ValueError, match="must have the same shape"):
            f([0.0, 1.0], [1.0])


# --------------------------------------------------------------------------- mean squared error


class TestMeanSquaredError:
    def test_hand_values(self):
        loss, grad = losses.mean_squared_error_with_grad([1.0, 3.0], [0.0, 0.0])
        assert float(loss) == 5.0
        assert_array_equal(grad, [1.0, 3.0])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_matches_torch_mse_loss(self, rng, reduction):
        pred, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
        loss, grad = losses.mean_squared_error_with_grad(pred, target, reduction=reduction)
        ref_loss, ref_grad = torch_loss_and_grad(F.mse_loss, pred, torch.tensor(target), reduction=reduction)
        assert_allclose(loss, ref_loss, rtol=1e-14)
        assert_allclose(grad, ref_grad, rtol=1e-14)

    def test_weighted_mean_matches_sklearn(self, rng):
        pred, target, weight = rng.normal(size=(8, 2)), rng.normal(size=(8, 2)), rng.uniform(0, 2, size=8)
        expected = sklearn_metrics.mean_squared_error(target, pred, sample_weight=weight)
        got = losses.mean_squared_error(pred, target, sample_weight=weight[:, None])
        assert_allclose(got, expected, rtol=1e-13)

    def test_zero_total_weight_gives_zero(self):
        loss, grad = losses.mean_squared_error_with_grad([1.0, 2.0], [0.0, 0.0], sample_weight=[0.0, 0.0])
        assert float(loss) == 0.0
        assert_array_equal(grad, [0.0, 0.0])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weight", [None, np.array([0.5, 0.0, 2.0])])
    def test_gradient_matches_finite_differences(self, rng, reduction, weight):
        check_gradient(losses.mean_squared_error_with_grad, rng.normal(size=(2, 3)), rng.normal(size=(2, 3)),
                       sample_weight=weight, reduction=reduction)

    def test_float16_computed_and_returned_in_float32(self):
        loss, grad = losses.mean_squared_error_with_grad(np.array([300.0], np.float16), np.array([0.0]))
        assert loss.dtype == np.float32 and grad.dtype == np.float32
        assert float(loss) == 90000.0  # overflows float16 (max 65504)

    def test_errors(self):
        f = losses.mean_squared_error
        with pytest.raises(ValueError, match="`pred` and `target` must have the same shape"):
            f([1.0, 2.0], [1.0])
        with pytest.raises(ValueError, match="`pred` must be finite"):
            f([np.inf], [1.0])
        with pytest.raises(ValueError, match="`target` must be finite"):
            f([1.0], [np.nan])
        with pytest.raises(ValueError, match="`sample_weight` must be non-negative"):
            f([1.0], [1.0], sample_weight=[-1.0])
        with pytest.raises(ValueError, match="`reduction`"):
            f([1.0], [1.0], reduction="max")


def test_all_names_are_exported():
    import crossent

    for name in losses.__all__:
        assert callable(getattr(crossent, name))


class TestFusedDispatchLeavesInputsAlone:
    @pytest.mark.parametrize("axis", [0, 1, -1])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_caller_logits_are_never_overwritten(self, axis, dtype):
        rng = np.random.default_rng(3)
        logits = rng.standard_normal((5, 6, 7)).astype(dtype)
        before = logits.copy()
        labels = rng.integers(0, logits.shape[axis], np.delete(logits.shape, axis % 3))
        loss, grad = losses.softmax_cross_entropy_with_grad(logits, labels, axis=axis)
        assert_array_equal(logits, before)
        ref_loss, ref_grad = losses.softmax_cross_entropy_with_grad(logits, labels, axis=axis, backend="reference")
        assert_allclose(loss, ref_loss, rtol=2e-5 if dtype == np.float32 else 1e-12)
        assert_allclose(grad, ref_grad, rtol=2e-5, atol=2e-6 if dtype == np.float32 else 1e-14)


# ------------------------------------------------------------- bfloat16-like inputs


class TestBfloat16:
    """ml_dtypes' bfloat16 (JAX's NumPy bfloat16) is computed and returned in float32, like float16."""

    def bf16(self, values):
        # ml_dtypes is a dev dependency, installed wherever the test command runs
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return np.asarray(values, dtype=np.float32).astype(ml_dtypes.bfloat16)

    def test_softmax_cross_entropy_equals_the_float32_result(self):
        z = self.bf16([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0], [-0.5, 0.25, 8.0]])
        labels = np.array([0, 1, 2])
        for backend in ("auto", "reference"):
            loss, grad = losses.softmax_cross_entropy_with_grad(z, labels, label_smoothing=0.1, backend=backend)
            want_loss, want_grad = losses.softmax_cross_entropy_with_grad(z.astype(np.float32), labels, label_smoothing=0.1,
                                                                     backend=backend)
            assert grad.dtype == np.float32 and np.asarray(loss).dtype == np.float32
            assert loss == want_loss
            np.testing.assert_array_equal(grad, want_grad)

    def test_binary_losses_and_activations(self):
        z, y = self.bf16([1.0, -2.0, 40.0]), self.bf16([1.0, 0.0, 0.0])
        loss, grad = losses.sigmoid_binary_cross_entropy_with_grad(z, y)
        want_loss, want_grad = losses.sigmoid_binary_cross_entropy_with_grad(z.astype(np.float32), y.astype(np.float32))
        assert grad.dtype == np.float32 and loss == want_loss
        np.testing.assert_array_equal(grad, want_grad)
        assert losses.sigmoid(z).dtype == np.float32
        np.testing.assert_array_equal(losses.log_softmax(z), losses.log_softmax(z.astype(np.float32)))

    def test_measures(self):
        from crossent import measures

        p = self.bf16([0.5, 0.25, 0.25])
        assert measures.entropy(p, base=2) == 1.5
        assert measures.cross_entropy(p, self.bf16([0.25, 0.25, 0.5]), base=2) == 1.75

    @pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2"])
    def test_float8_formats_too(self, name):
        # ml_dtypes reports e4m3fn as kind "V" but e5m2 as kind "f"; both must become float32
        ml_dtypes = pytest.importorskip("ml_dtypes")
        p = np.array([0.5, 0.25, 0.25], dtype=getattr(ml_dtypes, name))
        from crossent import measures

        result = measures.entropy(p, base=2)
        assert result == 1.5 and result.dtype == np.float32

    def test_structured_dtypes_are_still_refused(self):
        with pytest.raises(TypeError, match="`logits` must be a real numeric array"):
            losses.softmax_cross_entropy(np.zeros((2, 3), dtype=[("a", "<f2")]), np.array([0, 1]))


@pytest.mark.parametrize("f", [losses.softmax, losses.log_softmax])
def test_softmax_of_nothing_is_a_clear_error(f):
    # Before: NumPy's "zero-size array to reduction operation maximum which has no identity".
    with pytest.raises(ValueError, match=r"`z` has no classes along axis 0 \(shape \(0,\)\)"):
        f([])
    assert f(np.zeros((0, 3))).shape == (0, 3)  # no rows is fine


def test_ignore_index_true_is_a_type_error_everywhere():
    from crossent.kernels import softmax_cross_entropy_fused

    x = np.zeros((2, 3))
    for f in (losses.softmax_cross_entropy, softmax_cross_entropy_fused):
        with pytest.raises(TypeError, match="`ignore_index` must be an integer or None, got True"):
            f(x, np.array([0, 1]), ignore_index=True)


def test_unsigned_labels_never_wrap_to_a_kept_row_or_to_ignore_index():
    x = np.array([[0.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="`ignore_index` must fit in int64"):
        losses.softmax_cross_entropy(x, np.array([2**64 - 1, 0], np.uint64), ignore_index=2**64 - 1)
    with pytest.raises(ValueError, match="`labels` must lie in"):  # 2**64 - 100 is not -100
        losses.softmax_cross_entropy(x, np.array([2**64 - 100, 0], np.uint64), ignore_index=-100)
    assert losses.softmax_cross_entropy(x, np.array([2, 0], np.uint64)) == losses.softmax_cross_entropy(x, [2, 0])


def test_a_float32_loss_beyond_float32_is_inf_without_a_warning():
    import warnings

    x = np.array([[3e38, -3e38]], np.float32)  # -log p_1 = 6e38 > float32's max
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for backend in ("auto", "reference"):
            assert np.isinf(losses.softmax_cross_entropy(x, np.array([1]), backend=backend))
            assert np.isinf(losses.softmax_cross_entropy(x, np.array([1]), backend=backend, reduction="none")).all()
        assert np.isinf(losses.sigmoid_binary_cross_entropy(np.float32([-1e30]), [1.0], pos_weight=1e10))
    # the fused sigmoid kernel keeps its documented rule: a loss beyond the logits' dtype is a ValueError
    from crossent import kernels

    with pytest.raises(ValueError, match="overflows float32"):
        kernels.sigmoid_binary_cross_entropy_fused(np.float32([3e38, 3e38]), np.zeros(2, np.float32), reduction="sum")
