"""crossent.torch.cross_entropy and binary_cross_entropy_with_logits against PyTorch's own."""

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _torch_helpers import assert_close, gen, reference_z_loss_rows, upstream_for, value_and_grad  # noqa: E402

import crossent.torch as ct  # noqa: E402
from crossent.torch._plain import cross_entropy_plain  # noqa: E402

# --------------------------------------------------------------------------- cross_entropy: hand values


class TestCrossEntropyHandComputed:
    def test_uniform_logits_give_log_num_classes_and_p_minus_onehot(self):
        x = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
        loss = ct.cross_entropy(x, torch.tensor([1, 3]))
        assert loss.item() == pytest.approx(math.log(4), abs=1e-15)
        loss.backward()
        expected = torch.full((2, 4), 0.25 / 2, dtype=torch.float64)
        expected[0, 1] -= 0.5
        expected[1, 3] -= 0.5
        assert_close(x.grad, expected)

    def test_two_classes_is_softplus_of_the_margin(self):
        x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
        assert ct.cross_entropy(x, torch.tensor([1])).item() == pytest.approx(math.log1p(math.exp(2.0)), 1e-15)

    def test_all_ignored_batch_is_zero_with_zero_grad_not_nan(self):
        x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
        target = torch.full((5,), -100)
        assert torch.isnan(F.cross_entropy(x, target))  # torch's behaviour, documented as a difference
        loss = ct.cross_entropy(x, target, weight=torch.rand(3, dtype=torch.float64), label_smoothing=0.2)
        loss.backward()
        assert loss.item() == 0.0 and not x.grad.any()

    def test_empty_batch(self):
        x = torch.zeros(0, 4, requires_grad=True)
        target = torch.zeros(0, dtype=torch.long)
        assert ct.cross_entropy(x, target).item() == 0.0
        assert ct.cross_entropy(x, target, reduction="sum").item() == 0.0
        assert ct.cross_entropy(x, target, reduction="none").shape == (0,)
        ct.cross_entropy(x, target).backward()
        assert x.grad.shape == (0, 4)

    def test_single_class_loss_is_zero(self):
        x = torch.randn(6, 1, requires_grad=True)
        loss = ct.cross_entropy(x, torch.zeros(6, dtype=torch.long))
        loss.backward()
        assert loss.item() == 0.0 and not x.grad.any()


# --------------------------------------------------------------------------- cross_entropy vs torch


OPTIONS = list(itertools.product([False, True], [None, 2], [0.0, 0.3], ["none", "sum", "mean"]))


@pytest.mark.parametrize("use_weight,ignore_label,smoothing,reduction", OPTIONS)
def test_cross_entropy_every_option_matches_torch_float64(use_weight, ignore_label, smoothing, reduction):
    n, c = 13, 7
    x = torch.randn(n, c, generator=gen(), dtype=torch.float64) * 3
    target = torch.randint(0, c, (n,), generator=gen(2))
    ignore_index = -100
    if ignore_label is not None:
        target[::4] = ignore_label
        ignore_index = ignore_label
    weight = torch.rand(c, generator=gen(3), dtype=torch.float64) + 0.1 if use_weight else None
    kwargs = dict(weight=weight, ignore_index=ignore_index, label_smoothing=smoothing, reduction=reduction)
    g = upstream_for(reduction, (n,))
    ours = value_and_grad(ct.cross_entropy, x, target, upstream=g, **kwargs)
    theirs = value_and_grad(F.cross_entropy, x, target, upstream=g, **kwargs)
    assert_close(ours[0], theirs[0])
    assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("use_weight,smoothing,reduction", list(itertools.product(
    [False, True], [0.0, 0.25], ["none", "sum", "mean"])))
def test_cross_entropy_probability_targets_match_torch(use_weight, smoothing, reduction):
    n, c, d = 4, 6, 3
    x = torch.randn(n, c, d, generator=gen(), dtype=torch.float64)
    target = torch.softmax(torch.randn(n, c, d, generator=gen(5), dtype=torch.float64), dim=1)
    weight = torch.rand(c, generator=gen(3), dtype=torch.float64) if use_weight else None
    kwargs = dict(weight=weight, label_smoothing=smoothing, reduction=reduction)
    g = upstream_for(reduction, (n, d))
    ours = value_and_grad(ct.cross_entropy, x, target, upstream=g, **kwargs)
    theirs = value_and_grad(F.cross_entropy, x, target, upstream=g, **kwargs)
    assert ours[0].shape == theirs[0].shape
    assert_close(ours[0], theirs[0])
    assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_cross_entropy_odd_shapes_float32_2d_and_class_dim_1(reduction):
    # Liger's odd shape: 41 x 401 rows, 1271 classes, as (N, C) and as (N, C, d).
    b, t, c = 41, 401, 1271
    x3 = torch.randn(b, c, t, generator=gen()) * 4
    target = torch.randint(0, c, (b, t), generator=gen(1))
    target[0, :7] = -100
    x2 = x3.movedim(1, -1).reshape(-1, c).contiguous()
    g = upstream_for(reduction, (b, t)).float()
    # The reference is torch in float64: torch's own float32 gradient is off by up to 1e-4 here.
    for x, y, up in ((x3, target, g), (x2, target.reshape(-1), g.reshape(-1) if g.ndim else g)):
        ours = value_and_grad(ct.cross_entropy, x, y, upstream=up, reduction=reduction, label_smoothing=0.1)
        theirs = value_and_grad(F.cross_entropy, x.double(), y, upstream=up.double(), reduction=reduction,
                                label_smoothing=0.1)
        assert ours[1].dtype == torch.float32
        torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=1e-6, check_dtype=False)
        torch.testing.assert_close(ours[1], theirs[1], atol=1e-5, rtol=2e-5, check_dtype=False)


def test_cross_entropy_unbatched_class_vector():
    x = torch.randn(9, generator=gen(), dtype=torch.float64)
    for target in (torch.tensor(4), torch.softmax(torch.randn(9, generator=gen(1), dtype=torch.float64), 0)):
        for reduction in ("none", "mean"):
            ours = value_and_grad(ct.cross_entropy, x, target, upstream=torch.tensor(1.7, dtype=torch.float64),
                                  reduction=reduction)
            theirs = value_and_grad(F.cross_entropy, x, target, upstream=torch.tensor(1.7, dtype=torch.float64),
                                    reduction=reduction)
            assert ours[0].shape == theirs[0].shape == ()
            assert_close(ours[0], theirs[0])
            assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cross_entropy_extreme_logits_match_torch(dtype):
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4]], dtype=dtype)
    target = torch.tensor([1, 0, 2])
    for reduction in ("none", "sum"):
        ours = value_and_grad(ct.cross_entropy, x, target, reduction=reduction)
        theirs = value_and_grad(F.cross_entropy, x, target, reduction=reduction)
        assert torch.isfinite(ours[0]).all() and torch.isfinite(ours[1]).all()
        assert_close(ours[0], theirs[0], dtype)
        assert_close(ours[1], theirs[1], dtype)


def test_cross_entropy_minus_inf_mask_has_finite_loss_and_zero_grad_on_masked_entries():
    x = torch.randn(4, 6, generator=gen(), dtype=torch.float64)
    x[:, 3:] = -math.inf
    target = torch.tensor([0, 1, 2, 1])
    ours = value_and_grad(ct.cross_entropy, x, target)
    theirs = value_and_grad(F.cross_entropy, x, target)
    assert torch.isfinite(ours[0]) and not torch.isnan(ours[1]).any()
    assert not ours[1][:, 3:].any()
    assert_close(ours[0], theirs[0])
    assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_cross_entropy_z_loss_adds_logsumexp_squared(reduction):
    n, c = 10, 5
    x = torch.randn(n, c, generator=gen(), dtype=torch.float64) * 2
    target = torch.randint(0, c, (n,), generator=gen(1))
    target[3] = -100
    weight = torch.rand(c, generator=gen(2), dtype=torch.float64) + 0.5
    z = 1e-2

    def reference(x, target):
        rows = F.cross_entropy(x, target, weight=weight, label_smoothing=0.1, reduction="none")
        z_rows, denom = reference_z_loss_rows(x, target, weight, -100, z)
        rows = rows + z_rows
        return rows if reduction == "none" else rows.sum() / (denom if reduction == "mean" else 1)

    g = upstream_for(reduction, (n,))
    ours = value_and_grad(ct.cross_entropy, x, target, upstream=g, weight=weight, label_smoothing=0.1,
                          reduction=reduction, z_loss=z)
    theirs = value_and_grad(lambda x, t: reference(x, t), x, target, upstream=g)
    assert_close(ours[0], theirs[0])
    assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_cross_entropy_gradcheck_float64(reduction):
    x = torch.randn(5, 4, 2, generator=gen(), dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0, 3], [1, -100], [2, 2], [3, 0], [1, 1]])
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    probs = torch.softmax(torch.randn(5, 4, 2, generator=gen(1), dtype=torch.float64), 1)
    assert torch.autograd.gradcheck(
        lambda x: ct.cross_entropy(x, target, weight, label_smoothing=0.1, reduction=reduction, z_loss=0.01), (x,))
    assert torch.autograd.gradcheck(lambda x: ct.cross_entropy(x, probs, weight, reduction=reduction), (x,))


def test_cross_entropy_backward_twice_with_retained_graph_gives_the_same_gradient():
    x = torch.randn(6, 5, generator=gen(), requires_grad=True)
    loss = ct.cross_entropy(x, torch.arange(6) % 5)
    (first,) = torch.autograd.grad(loss, x, torch.tensor(3.0), retain_graph=True)
    (second,) = torch.autograd.grad(loss, x, torch.tensor(3.0))
    assert torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["2d", "class_dim_1"])
def test_cross_entropy_low_precision_accumulates_in_float32(dtype, layout):
    x = (torch.randn(64, 300, generator=gen()) * 3).to(dtype)
    target = torch.randint(0, 300, (64,), generator=gen(1))
    if layout == "class_dim_1":
        x, target = x.reshape(8, 8, 300).movedim(-1, 1), target.reshape(8, 8)
    loss, grad = value_and_grad(ct.cross_entropy, x, target, upstream=torch.tensor(2.0, dtype=dtype),
                                label_smoothing=0.1)
    assert loss.dtype == dtype and grad.dtype == dtype
    ref_loss, ref_grad = value_and_grad(F.cross_entropy, x.float(), target, upstream=torch.tensor(2.0),
                                        label_smoothing=0.1)
    assert_close(loss.float(), ref_loss, dtype)
    torch.testing.assert_close(grad.float(), ref_grad, atol=1e-3, rtol=2e-2)


@pytest.mark.parametrize("loss_fn", [ct.cross_entropy, cross_entropy_plain], ids=["fused", "plain"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_probability_targets_are_judged_by_their_own_precision(dtype, loss_fn):
    # Rows off by 2**-10 (a few roundings to the dtype): beyond float32's tolerance (3.5e-4), within
    # the dtype's own, sqrt(eps) (bfloat16 0.088, float16 0.031).
    x = torch.randn(8, 300, generator=gen())
    target = torch.softmax(torch.randn(8, 300, generator=gen(1)) * 3, -1)
    target = (target / target.sum(-1, keepdim=True) * (1 + 2.0**-10)).to(dtype)
    assert ((target.double().sum(-1) - 1).abs() > 3.5e-4).any()  # float32's tolerance refuses these rows
    loss = loss_fn(x.to(dtype), target)
    assert_close(loss.float(), F.cross_entropy(x.to(dtype).float(), target.float()), dtype)
    off = target.clone()
    off[0] *= 1.2  # a row that sums to 1.2 stays refused
    with pytest.raises(ValueError, match=r"rows must sum to 1 \(tolerance"):
        loss_fn(x.to(dtype), off)


def test_cross_entropy_without_grad_returns_the_same_loss():
    x = torch.randn(7, 11, generator=gen())
    target = torch.randint(0, 11, (7,), generator=gen(1))
    with torch.no_grad():
        loss = ct.cross_entropy(x.requires_grad_(), target)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, F.cross_entropy(x.detach(), target))


def test_cross_entropy_does_not_overwrite_the_callers_logits():
    x = torch.randn(5, 6, 2, generator=gen(), requires_grad=True)
    before = x.detach().clone()
    ct.cross_entropy(x, torch.zeros(5, 2, dtype=torch.long)).backward()
    x2 = torch.randn(5, 6, generator=gen(), requires_grad=True)
    before2 = x2.detach().clone()
    ct.cross_entropy(x2, torch.zeros(5, dtype=torch.long)).backward()
    assert torch.equal(x.detach(), before) and torch.equal(x2.detach(), before2)


def test_cross_entropy_int32_targets_are_accepted():
    x = torch.randn(4, 3, generator=gen())
    target = torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(ct.cross_entropy(x, target.int()), F.cross_entropy(x, target))


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_cross_entropy_plain_torch_path_matches_fused_path(reduction):
    """The path used on non-CPU devices (cross_entropy_plain, here on CPU) gives the same numbers."""
    x = torch.randn(9, 5, generator=gen(), dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 4, -100, 0, 1, 2])
    kwargs = dict(weight=torch.rand(5, generator=gen(1), dtype=torch.float64), label_smoothing=0.2, z_loss=0.05,
                  reduction=reduction)
    g = upstream_for(reduction, (9,))
    fused = value_and_grad(ct.cross_entropy, x, target, upstream=g, **kwargs)
    plain = value_and_grad(cross_entropy_plain, x, target, upstream=g, **kwargs)
    assert_close(fused[0], plain[0])
    assert_close(fused[1], plain[1])
    assert cross_entropy_plain(x, torch.full((9,), -100), reduction="mean").item() == 0.0


def test_cross_entropy_gradient_reaches_probability_targets_that_require_grad():
    x = torch.randn(3, 4, generator=gen(), dtype=torch.float64)
    target = torch.softmax(torch.randn(3, 4, generator=gen(1), dtype=torch.float64), -1).requires_grad_()
    (ours,) = torch.autograd.grad(ct.cross_entropy(x, target), target)
    (theirs,) = torch.autograd.grad(F.cross_entropy(x, target), target)
    assert_close(ours, theirs)


class TestCrossEntropyErrors:
    x = torch.randn(3, 4)

    @pytest.mark.parametrize("target,match", [
        (torch.tensor([0, 4, 1]), r"`target` must lie in \[0, 4\).*got 4"),
        (torch.tensor([0, -1, 1]), r"`target` must lie in \[0, 4\).*got -1"),
    ])
    def test_labels_out_of_range(self, target, match):
        with pytest.raises(ValueError, match=match):
            ct.cross_entropy(self.x, target)

    def test_bad_arguments(self):
        y = torch.tensor([0, 1, 2])
        with pytest.raises(ValueError, match="`reduction` must be one of"):
            ct.cross_entropy(self.x, y, reduction="avg")
        with pytest.raises(ValueError, match="`label_smoothing`"):
            ct.cross_entropy(self.x, y, label_smoothing=1.5)
        with pytest.raises(ValueError, match="`z_loss`"):
            ct.cross_entropy(self.x, y, z_loss=-1.0)
        with pytest.raises(ValueError, match=r"`weight` must have shape \(4,\)"):
            ct.cross_entropy(self.x, y, weight=torch.ones(3))
        with pytest.raises(ValueError, match=r"`weight` must be non-negative and finite, got -1.0 at index \(1,\)"):
            ct.cross_entropy(self.x, y, weight=torch.tensor([1.0, -1.0, 1.0, 1.0]))
        with pytest.raises(ValueError, match="`weight` must be non-negative and finite, got nan"):
            ct.cross_entropy(self.x, y, weight=torch.tensor([1.0, math.nan, 1.0, 1.0]))
        with pytest.raises(ValueError, match=r"`target` must have shape \(3,\)"):
            ct.cross_entropy(self.x, torch.tensor([0, 1]))
        with pytest.raises(TypeError, match="`input` must be a floating-point tensor"):
            ct.cross_entropy(torch.ones(3, 4, dtype=torch.long), y)
        with pytest.raises(TypeError, match="`target` must hold integer class indices"):
            ct.cross_entropy(self.x, torch.tensor([True, False, True]))
        with pytest.raises(TypeError, match="`ignore_index` must be an integer"):
            ct.cross_entropy(self.x, y, ignore_index=0.5)

    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_nan_and_plus_inf_logits(self, bad):
        x = self.x.clone()
        x[1, 2] = bad
        with pytest.raises(ValueError, match="NaN|inf"):
            ct.cross_entropy(x, torch.tensor([0, 1, 2]))

    def test_probability_targets_must_be_distributions(self):
        with pytest.raises(ValueError, match="`target` rows must sum to 1"):
            ct.cross_entropy(self.x, torch.full((3, 4), 0.3))
        with pytest.raises(ValueError, match="`target` probabilities must be non-negative"):
            ct.cross_entropy(self.x, torch.tensor([[1.5, -0.5, 0, 0]] * 3))
        with pytest.raises(ValueError, match="`target` probabilities must be non-negative"):
            ct.cross_entropy(self.x, torch.tensor([[math.nan, 1.0, 0, 0]] * 3))
        with pytest.raises(ValueError, match="same shape"):
            ct.cross_entropy(self.x, torch.full((3, 5), 0.2))


# --------------------------------------------------------------------------- binary_cross_entropy_with_logits


BCE_OPTIONS = list(itertools.product(["none", "full", "column"], [False, True], ["none", "sum", "mean"]))


@pytest.mark.parametrize("weight_kind,use_pos_weight,reduction", BCE_OPTIONS)
def test_bce_every_option_matches_torch_float64(weight_kind, use_pos_weight, reduction):
    shape = (3, 5, 7)
    x = torch.randn(shape, generator=gen(), dtype=torch.float64) * 4
    target = torch.rand(shape, generator=gen(1), dtype=torch.float64).round()
    target[0] = 0.3  # soft labels too
    weight = {"none": None, "full": torch.rand(shape, generator=gen(2), dtype=torch.float64),
              "column": torch.rand(7, generator=gen(2), dtype=torch.float64)}[weight_kind]
    pos_weight = torch.rand(7, generator=gen(3), dtype=torch.float64) * 3 if use_pos_weight else None
    kwargs = dict(weight=weight, pos_weight=pos_weight, reduction=reduction)
    g = upstream_for(reduction, shape)
    ours = value_and_grad(ct.binary_cross_entropy_with_logits, x, target, upstream=g, **kwargs)
    theirs = value_and_grad(F.binary_cross_entropy_with_logits, x, target, upstream=g, **kwargs)
    assert_close(ours[0], theirs[0])
    assert_close(ours[1], theirs[1])


def test_bce_hand_values_extreme_logits_and_gradcheck():
    x = torch.tensor([0.0, 1e4, -1e4, 1e4], dtype=torch.float32, requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    loss = ct.binary_cross_entropy_with_logits(x, y, reduction="none")
    torch.testing.assert_close(loss, torch.tensor([math.log(2), 0.0, 0.0, 1e4]))
    loss.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, 0.0, 0.0, 1.0]))
    x64 = torch.randn(4, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    y64 = torch.rand(4, 3, generator=gen(1), dtype=torch.float64)
    pw = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    for reduction in ("none", "mean"):
        assert torch.autograd.gradcheck(
            lambda x: ct.binary_cross_entropy_with_logits(x, y64, reduction=reduction, pos_weight=pw), (x64,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bce_low_precision(dtype):
    x = torch.randn(33, 17, generator=gen()).to(dtype)
    y = torch.rand(33, 17, generator=gen(1)).round()
    loss, grad = value_and_grad(ct.binary_cross_entropy_with_logits, x, y.to(dtype),
                                upstream=torch.tensor(3.0, dtype=dtype))
    assert loss.dtype == dtype and grad.dtype == dtype
    ref = value_and_grad(F.binary_cross_entropy_with_logits, x.float(), y, upstream=torch.tensor(3.0))
    assert_close(loss.float(), ref[0], dtype)
    torch.testing.assert_close(grad.float(), ref[1], atol=1e-3, rtol=2e-2)


def test_bce_empty_and_scalar_inputs():
    assert ct.binary_cross_entropy_with_logits(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0.0
    x = torch.tensor(0.5, dtype=torch.float64)
    y = torch.tensor(1.0, dtype=torch.float64)
    assert_close(ct.binary_cross_entropy_with_logits(x, y), F.binary_cross_entropy_with_logits(x, y))


def test_bce_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"`target` must lie in \[0, 1\]"):
        ct.binary_cross_entropy_with_logits(x, torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match=r"`target` must lie in \[0, 1\]"):
        ct.binary_cross_entropy_with_logits(x, torch.full((2, 3), math.nan))
    with pytest.raises(ValueError, match="same shape"):
        ct.binary_cross_entropy_with_logits(x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="`pos_weight` must be non-negative"):
        ct.binary_cross_entropy_with_logits(x, torch.zeros(2, 3), pos_weight=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="`reduction`"):
        ct.binary_cross_entropy_with_logits(x, torch.zeros(2, 3), reduction="max")
    with pytest.raises(ValueError, match="`weight` of shape \\(2,\\) does not broadcast"):
        ct.binary_cross_entropy_with_logits(x, torch.zeros(2, 3), weight=torch.ones(2))
    with pytest.raises(ValueError, match="`pos_weight` of shape \\(4, 2, 3\\) does not broadcast"):
        ct.binary_cross_entropy_with_logits(x, torch.zeros(2, 3), pos_weight=torch.ones(4, 2, 3))
    with pytest.raises(ValueError, match="`weight` must be non-negative and finite, got inf"):
        ct.binary_cross_entropy_with_logits(x, torch.zeros(2, 3), weight=torch.tensor(math.inf))
    bad = x.clone()
    bad[1, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        ct.binary_cross_entropy_with_logits(bad, torch.zeros(2, 3))


# --------------------------------------------------------------------------- properties and other devices


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), c=st.integers(1, 9), seed=st.integers(0, 2**16),
       smoothing=st.sampled_from([0.0, 0.1, 1.0]), use_weight=st.booleans(),
       reduction=st.sampled_from(["none", "sum", "mean"]), scale=st.sampled_from([1.0, 1e4]))
def test_cross_entropy_random_cases_match_torch_or_our_documented_zero(n, c, seed, smoothing, use_weight,
                                                                       reduction, scale):
    x = torch.randn(n, c, generator=gen(seed), dtype=torch.float64) * scale
    target = torch.randint(-1, c, (n,), generator=gen(seed + 1))  # -1: ignored
    weight = torch.rand(c, generator=gen(seed + 2), dtype=torch.float64) + 0.1 if use_weight else None
    kwargs = dict(weight=weight, ignore_index=-1, label_smoothing=smoothing, reduction=reduction)
    g = upstream_for(reduction, (n,), seed)
    ours = value_and_grad(ct.cross_entropy, x, target, upstream=g, **kwargs)
    assert not torch.isnan(ours[0]).any() and not torch.isnan(ours[1]).any()
    if reduction == "mean" and not (target != -1).any():
        assert ours[0].item() == 0.0 and not ours[1].any()
        return
    theirs = value_and_grad(F.cross_entropy, x, target, upstream=g, **kwargs)
    assert_close(ours[0], theirs[0], scale=scale)
    assert_close(ours[1], theirs[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_use_torch_ops_and_match_cpu():
    x = torch.randn(37, 11, 3, generator=gen(), dtype=torch.float64)
    target = torch.randint(0, 11, (37, 3), generator=gen(1))
    target[0] = -100
    kwargs = dict(weight=torch.rand(11, generator=gen(2), dtype=torch.float64), label_smoothing=0.1, z_loss=1e-3)
    cpu = value_and_grad(ct.cross_entropy, x, target, upstream=torch.tensor(0.5, dtype=torch.float64), **kwargs)
    cuda_kwargs = {k: v.cuda() if torch.is_tensor(v) else v for k, v in kwargs.items()}
    cuda = value_and_grad(ct.cross_entropy, x.cuda(), target.cuda(),
                          upstream=torch.tensor(0.5, dtype=torch.float64, device="cuda"), **cuda_kwargs)
    assert_close(cuda[0].cpu(), cpu[0])
    assert_close(cuda[1].cpu(), cpu[1])
    hidden = torch.randn(50, 8, generator=gen(), device="cpu").cuda().requires_grad_()
    weight = torch.randn(300, 8, generator=gen(1)).cuda().requires_grad_()
    y = torch.randint(0, 300, (50,), generator=gen(2)).cuda()
    loss = ct.linear_cross_entropy(hidden, weight, y, chunk_size=16)
    ref = F.cross_entropy(hidden @ weight.T, y)
    for a, b in zip(torch.autograd.grad(loss, (hidden, weight)), torch.autograd.grad(ref, (hidden, weight))):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


def test_a_uint64_target_of_2_pow_63_is_an_error_not_ignore_index():
    x = torch.tensor([[0.0, 2.0, 1.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="2\\*\\*63 or more"):
        ct.cross_entropy(x, torch.tensor([2**63, 0], dtype=torch.uint64), ignore_index=-(2**63))
    torch.testing.assert_close(ct.cross_entropy(x, torch.tensor([2, 0], dtype=torch.uint64)),
                               F.cross_entropy(x, torch.tensor([2, 0])))


def test_bce_whose_target_requires_grad_checks_the_logits_and_keeps_the_input_dtype():
    target = torch.tensor([0.0, 1.0], requires_grad=True)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="`input` must be finite logits"):
            ct.binary_cross_entropy_with_logits(torch.tensor([bad, 0.0]), target)
    x = torch.randn(3, requires_grad=True)
    soft = torch.rand(3, dtype=torch.float64, requires_grad=True)
    loss = ct.binary_cross_entropy_with_logits(x, soft)  # the plain path: the target requires grad
    assert loss.dtype == ct.binary_cross_entropy_with_logits(x, soft.detach()).dtype == torch.float32
    loss.backward()
    reference = F.binary_cross_entropy_with_logits(x.detach().double(), soft.detach().requires_grad_())
    reference.backward()
    assert soft.grad.dtype == torch.float64
    torch.testing.assert_close(loss, reference.float())
