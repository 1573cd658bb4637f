"""Hostile probes over the public loss and kernel functions (``make fuzz`` runs them with fresh examples).

Each probe throws extreme or malformed input at a function and checks the
contract every public function keeps: a number that is right (against an
exact reference), or a ValueError/TypeError that names the parameter; never
NaN, never a silent wrong answer, never an internal error from NumPy or Numba.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

import crossent as ce
from crossent.kernels import sigmoid_binary_cross_entropy_fused

FAST = settings(max_examples=60, deadline=None)
EXTREMES = [0.0, -0.0, 1e-300, -1e-30, 2.5, -7.0, 88.0, -104.0, 1e4, -1e4, 1e30, -1e30, 3e38, -3e38]
LABELS = [0.0, 1.0, 0.5, 1e-8, 1 - 1e-8]


def exact_bce(x, y):
    """log(1 + e^-x) + (1 - y) x, in float64 through logaddexp (exact for every finite x)."""
    x = x.astype(np.float64)
    return np.logaddexp(0.0, -x) + (1.0 - y) * x


@FAST
@given(
    x=hnp.arrays(np.float32, st.integers(1, 40), elements=st.sampled_from(EXTREMES)),
    data=st.data(),
    backend=st.sampled_from(["numba", "numpy"]),
    readonly=st.booleans(),
)
def test_fused_bce_is_exact_on_extreme_logits_and_takes_read_only_arrays(x, data, backend, readonly):
    pytest.importorskip("numba")
    y = data.draw(hnp.arrays(np.float32, x.shape, elements=st.sampled_from(LABELS)))
    if readonly:
        x.setflags(write=False)
    loss, grad = sigmoid_binary_cross_entropy_fused(x, y, reduction="none", backend=backend)
    expected = exact_bce(x, y.astype(np.float64))
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, expected, rtol=2e-6, atol=1e-6)
    sig = special.expit(x.astype(np.float64))
    np.testing.assert_allclose(grad, sig - y, atol=2e-6)


@FAST
@given(bad=st.sampled_from([np.nan, -0.5, 1.5, np.inf, -np.inf]), where=st.integers(0, 5),
       backend=st.sampled_from(["numba", "numpy"]), inplace=st.booleans())
def test_fused_bce_names_a_bad_label(bad, where, backend, inplace):
    pytest.importorskip("numba")
    x = np.linspace(-3, 3, 6, dtype=np.float32)
    y = np.full(6, 0.5, np.float32)
    y[where] = bad
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 1\]"):
        sigmoid_binary_cross_entropy_fused(x, y, backend=backend, inplace=inplace)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_fused_bce_says_when_the_loss_overflows(backend):
    pytest.importorskip("numba")
    x = np.full(4, -50.0, np.float32)
    with pytest.raises(ValueError, match="the loss overflows float32"):
        sigmoid_binary_cross_entropy_fused(x, np.ones(4, np.float32), pos_weight=np.full(4, 3e37, np.float32),
                                           backend=backend)


LOSSES = [
    (ce.sigmoid_binary_cross_entropy_with_grad, "logits"),
    (ce.binary_cross_entropy_with_grad, "probs"),
    (ce.sigmoid_focal_loss_with_grad, "logits"),
    (ce.mean_squared_error_with_grad, "pred"),
]


@FAST
@given(
    which=st.integers(0, len(LOSSES) - 1),
    x=hnp.arrays(np.float64, st.integers(0, 6), elements=st.sampled_from(EXTREMES + [np.nan, np.inf])),
    reduction=st.sampled_from(["none", "sum", "mean"]),
)
def test_elementwise_losses_give_a_number_or_a_named_error(which, x, reduction):
    f, first = LOSSES[which]
    y = np.zeros_like(x)
    if first == "probs":
        x = np.clip(np.abs(x), 0, 1) if np.isfinite(x).all() else x
    try:
        loss, grad = f(x, y, reduction=reduction)
    except ValueError as error:
        assert f"`{first}`" in str(error)
        return
    assert not np.isnan(loss).any() and not np.isnan(grad).any()
    assert grad.shape == x.shape


@pytest.mark.parametrize("bad, error", [
    (True, TypeError), (np.True_, TypeError), (1.5, TypeError), ("0", TypeError), (None, None)])
def test_ignore_index_values(bad, error):
    x = np.zeros((2, 3))
    call = lambda: ce.softmax_cross_entropy(x, np.array([0, 1]), ignore_index=bad)  # noqa: E731
    if error is None:
        assert call() == pytest.approx(np.log(3))
    else:
        with pytest.raises(error, match="`ignore_index` must be an integer or None"):
            call()
