"""crossent.torch against PyTorch's own functions and modules."""

import itertools
import math
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import crossent.torch as ct  # noqa: E402

TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (2e-5, 2e-5), torch.bfloat16: (3e-2, 3e-2),
       torch.float16: (3e-3, 3e-3)}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_close(actual, expected, dtype=torch.float64, scale=1.0):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual, expected, atol=atol * scale, rtol=rtol, check_dtype=False)


def value_and_grad(fn, x, *args, upstream=None, **kwargs):
    """Loss and d(upstream . loss)/dx for a fresh leaf copy of x."""
    leaf = x.detach().clone().requires_grad_()
    loss = fn(leaf, *args, **kwargs)
    g = torch.ones_like(loss) if upstream is None else upstream
    (grad,) = torch.autograd.grad(loss, leaf, g)
    return loss.detach(), grad


def upstream_for(reduction, shape, seed=1):
    if reduction == "none":
        return torch.randn(shape, generator=gen(seed), dtype=torch.float64)
    return torch.tensor(-0.7, dtype=torch.float64)


def reference_z_loss_rows(x2d, target, weight, ignore_index, z_loss):
    """Our documented z-loss term: z * logsumexp(x_i)**2 on non-ignored rows; the mean's denominator."""
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    row_weight = valid.to(x2d.dtype) if weight is None else weight[safe] * valid
    return valid.to(x2d.dtype) * z_loss * torch.logsumexp(x2d, -1) ** 2, row_weight.sum()


# --------------------------------------------------------------------------- import hygiene


def test_import_crossent_does_not_import_torch():
    code = "import sys, crossent; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_crossent_torch_uses_the_real_torch_despite_its_name():
    code = ("import crossent.torch as ct, torch, sys; "
            "assert torch.__name__ == 'torch' and hasattr(torch, 'nn'); "
            "assert ct.torch is sys.modules['torch']; assert sys.modules['crossent.torch'] is ct")
    subprocess.run([sys.executable, "-c", code], check=True)


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
def test_cross_entropy_torch_ops_path_matches_fused_path(monkeypatch, reduction):
    """The path used on non-CPU devices (forced here on CPU) gives the same numbers."""
    x = torch.randn(9, 5, generator=gen(), dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 4, -100, 0, 1, 2])
    kwargs = dict(weight=torch.rand(5, generator=gen(1), dtype=torch.float64), label_smoothing=0.2, z_loss=0.05,
                  reduction=reduction)
    g = upstream_for(reduction, (9,))
    fused = value_and_grad(ct.cross_entropy, x, target, upstream=g, **kwargs)
    monkeypatch.setattr(ct, "_fused_device", lambda tensor: False)
    plain = value_and_grad(ct.cross_entropy, x, target, upstream=g, **kwargs)
    assert_close(fused[0], plain[0])
    assert_close(fused[1], plain[1])
    all_ignored = ct.cross_entropy(x, torch.full((9,), -100), reduction="mean")
    assert all_ignored.item() == 0.0


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


# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize("kwargs", [{}, {"weight": torch.tensor([1.0, 2.0, 0.5])}, {"reduction": "sum"},
                                    {"ignore_index": 1, "label_smoothing": 0.1}])
def test_cross_entropy_module_matches_torch_state_dict_repr_and_values(kwargs):
    ours, theirs = ct.CrossEntropyLoss(**kwargs), torch.nn.CrossEntropyLoss(**kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    assert dict(ours.named_buffers()).keys() == dict(theirs.named_buffers()).keys()
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 3, generator=gen())
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(ours(x, y), theirs(x, y))


def test_modules_follow_to_dtype_and_legacy_arguments():
    ours = ct.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0])).double()
    assert ours.weight.dtype == torch.float64
    with pytest.warns(UserWarning):
        legacy = ct.CrossEntropyLoss(size_average=False)
    assert legacy.reduction == "sum"
    assert repr(ct.CrossEntropyLoss(z_loss=1e-4)) == "CrossEntropyLoss(z_loss=0.0001)"
    x = torch.randn(5, 2, generator=gen(), dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    assert_close(ours(x, y), F.cross_entropy(x, y, weight=ours.weight))


@pytest.mark.parametrize("kwargs", [{}, {"pos_weight": torch.tensor([2.0, 0.5])}, {"weight": torch.ones(2)},
                                    {"reduction": "none"}])
def test_bce_module_matches_torch(kwargs):
    ours, theirs = ct.BCEWithLogitsLoss(**kwargs), torch.nn.BCEWithLogitsLoss(**kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert isinstance(ours, torch.nn.BCEWithLogitsLoss)
    x = torch.randn(4, 2, generator=gen())
    y = torch.rand(4, 2, generator=gen(1))
    torch.testing.assert_close(ours(x, y), theirs(x, y))


# --------------------------------------------------------------------------- linear_cross_entropy


def linear_value_and_grads(fn, hidden, weight, target, bias, upstream, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight)]
    leaves.append(None if bias is None else bias.detach().clone().requires_grad_())
    loss = fn(leaves[0].reshape(-1, hidden.shape[-1]), leaves[1], target.flatten(), leaves[2], **kwargs)
    inputs = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, inputs, upstream.flatten() if upstream.ndim else upstream)
    return loss.detach(), grads


LINEAR_OPTIONS = list(itertools.product(["none", "sum", "mean"], [0.0, 0.2], [False, True]))


@pytest.mark.parametrize("reduction,smoothing,use_bias", LINEAR_OPTIONS)
def test_linear_cross_entropy_matches_linear_plus_cross_entropy_float64(reduction, smoothing, use_bias):
    n, d, v = 11, 6, 9
    hidden = torch.randn(n, d, generator=gen(), dtype=torch.float64)
    weight = torch.randn(v, d, generator=gen(1), dtype=torch.float64)
    bias = torch.randn(v, generator=gen(2), dtype=torch.float64) if use_bias else None
    target = torch.randint(0, v, (n,), generator=gen(3))
    target[[2, 7]] = 5
    kwargs = dict(ignore_index=5, label_smoothing=smoothing, reduction=reduction)
    g = upstream_for(reduction, (n,))
    ours = linear_value_and_grads(ct.linear_cross_entropy, hidden, weight, target, bias, g, chunk_size=4,
                                  vocab_tile=4, **kwargs)
    theirs = linear_value_and_grads(
        lambda h, w, y, b, **kw: F.cross_entropy(F.linear(h, w, b), y, **kw), hidden, weight, target, bias, g,
        **kwargs)
    assert_close(ours[0], theirs[0])
    for a, b in zip(ours[1], theirs[1]):
        assert_close(a, b)


def test_linear_cross_entropy_batched_float32_and_torch_linear_cross_entropy():
    b, t, d, v = 3, 37, 32, 501
    hidden = torch.randn(b, t, d, generator=gen(), requires_grad=True)
    weight = (torch.randn(v, d, generator=gen(1)) / d**0.5).requires_grad_()
    bias = torch.randn(v, generator=gen(2), requires_grad=True)
    target = torch.randint(0, v, (b, t), generator=gen(3))
    target[0, :5] = -100
    loss = ct.linear_cross_entropy(hidden, weight, target, bias, chunk_size=16, label_smoothing=0.1)
    ours = torch.autograd.grad(loss * 2.5, (hidden, weight, bias))
    ref = F.cross_entropy(F.linear(hidden, weight, bias).flatten(0, 1), target.flatten(), label_smoothing=0.1)
    theirs = torch.autograd.grad(ref * 2.5, (hidden, weight, bias))
    assert_close(loss, ref, torch.float32)
    for a, b_ in zip(ours, theirs):
        assert_close(a, b_, torch.float32)
    none = ct.linear_cross_entropy(hidden, weight, target, bias, reduction="none")
    assert none.shape == (b, t)
    if hasattr(F, "linear_cross_entropy"):
        torch_lce = F.linear_cross_entropy(hidden.flatten(0, 1), weight, target.flatten(), linear_bias=bias,
                                           label_smoothing=0.1)
        assert_close(loss, torch_lce, torch.float32)


def test_linear_cross_entropy_gradcheck_float64():
    hidden = torch.randn(5, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, generator=gen(1), dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=gen(2), dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, -100, 1, 2])
    for reduction in ("none", "sum", "mean"):
        assert torch.autograd.gradcheck(
            lambda h, w, b: ct.linear_cross_entropy(h, w, target, b, reduction=reduction, label_smoothing=0.1,
                                                    chunk_size=2, vocab_tile=3), (hidden, weight, bias))


def test_linear_cross_entropy_partial_requires_grad_no_grad_and_all_ignored():
    hidden = torch.randn(6, 4, generator=gen(), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, generator=gen(1), dtype=torch.float64)  # frozen
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = ct.linear_cross_entropy(hidden, weight, target, chunk_size=4)
    (grad,) = torch.autograd.grad(loss, hidden)
    ref = F.cross_entropy(hidden @ weight.T, target)
    assert_close(grad, torch.autograd.grad(ref, hidden)[0])
    with torch.no_grad():
        assert_close(ct.linear_cross_entropy(hidden, weight, target), ref.detach())
    zero = ct.linear_cross_entropy(hidden, weight, torch.full((6,), -100))
    zero.backward()
    assert zero.item() == 0.0 and not hidden.grad.any()


@pytest.mark.parametrize("chunk_size,vocab_tile", [(1, 1), (3, 4), (7, 6), (7, 100), (100, 5)])
def test_linear_cross_entropy_does_not_depend_on_chunks_and_tiles(chunk_size, vocab_tile):
    hidden = torch.randn(7, 3, generator=gen(), dtype=torch.float64)
    weight = torch.randn(6, 3, generator=gen(1), dtype=torch.float64)
    bias = torch.randn(6, generator=gen(3), dtype=torch.float64)
    target = torch.tensor([0, 5, 2, -100, 1, 1, 4])
    g = torch.randn(7, generator=gen(2), dtype=torch.float64)
    for reduction, up in (("mean", torch.tensor(0.3, dtype=torch.float64)), ("none", g)):
        kwargs = dict(reduction=reduction, label_smoothing=0.15)
        whole = linear_value_and_grads(ct.linear_cross_entropy, hidden, weight, target, bias, up, **kwargs)
        blocked = linear_value_and_grads(ct.linear_cross_entropy, hidden, weight, target, bias, up,
                                         chunk_size=chunk_size, vocab_tile=vocab_tile, **kwargs)
        assert_close(blocked[0], whole[0])
        for a, b in zip(blocked[1], whole[1]):
            assert_close(a, b)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("use_bias", [False, True])
def test_linear_cross_entropy_float32_blocks_match_linear_plus_cross_entropy(reduction, use_bias):
    b, t, d, v = 3, 37, 32, 1000  # 111 tokens in chunks of 50, 1000 classes in tiles of 384
    hidden = torch.randn(b, t, d, generator=gen())
    weight = torch.randn(v, d, generator=gen(1)) / d**0.5
    bias = torch.randn(v, generator=gen(2)) if use_bias else None
    target = torch.randint(0, v, (b, t), generator=gen(3))
    target[1, 3:9] = 7  # ignored, although 7 is a class
    kwargs = dict(ignore_index=7, label_smoothing=0.1, reduction=reduction)
    g = upstream_for(reduction, (b * t,)).float() * 3
    ours = linear_value_and_grads(ct.linear_cross_entropy, hidden, weight, target, bias, g, chunk_size=50,
                                  vocab_tile=384, **kwargs)
    theirs = linear_value_and_grads(
        lambda h, w, y, b_, **kw: F.cross_entropy(F.linear(h, w, b_), y, **kw), hidden, weight, target, bias, g,
        **kwargs)
    assert_close(ours[0], theirs[0], torch.float32)
    for a, b_ in zip(ours[1], theirs[1]):
        assert_close(a, b_, torch.float32)


def test_linear_cross_entropy_default_blocks_with_several_tiles():
    # 64 tokens x 70000 classes of float32 is 17 MiB: the default tile (65536 classes) splits V in two.
    n, d, v = 64, 8, 70000
    hidden = torch.randn(n, d, generator=gen())
    weight = torch.randn(v, d, generator=gen(1))
    target = torch.randint(0, v, (n,), generator=gen(2))
    target[:3] = torch.tensor([0, 65535, 65536])  # either side of the tile boundary
    ours = linear_value_and_grads(ct.linear_cross_entropy, hidden, weight, target, None, torch.tensor(1.0))
    theirs = linear_value_and_grads(lambda h, w, y, b: F.cross_entropy(h @ w.T, y), hidden, weight, target, None,
                                    torch.tensor(1.0))
    assert_close(ours[0], theirs[0], torch.float32)
    for a, b in zip(ours[1], theirs[1]):
        assert_close(a, b, torch.float32)


def test_linear_cross_entropy_zero_features_give_log_v_and_a_hand_computed_gradient():
    # h = 0: every logit is 0, softmax is uniform, L = log V and for the mean
    # dL/dh_i = (mean_j W_j - W_{y_i}) / n, dL/dW_j = 0 (the features are 0), dL/db_j = (1/V - share of y = j).
    n, d, v = 4, 3, 5
    hidden = torch.zeros(n, d, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, d, generator=gen(), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(v, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 4, 4, 2])
    loss = ct.linear_cross_entropy(hidden, weight, target, bias, vocab_tile=2)
    gh, gw, gb = torch.autograd.grad(loss, (hidden, weight, bias))
    assert_close(loss, torch.tensor(math.log(5), dtype=torch.float64))
    assert_close(gh, (weight.detach().mean(0) - weight.detach()[target]) / n)
    assert not gw.any()
    assert_close(gb, torch.tensor([0.2 - 0.25, 0.2, 0.2 - 0.25, 0.2, 0.2 - 0.5], dtype=torch.float64))


def test_linear_cross_entropy_against_torch_linear_cross_entropy_every_reduction():
    if not hasattr(F, "linear_cross_entropy"):
        pytest.skip("torch.nn.functional.linear_cross_entropy is not in this torch")
    hidden = torch.randn(40, 16, generator=gen())
    weight = torch.randn(300, 16, generator=gen(1)) / 4
    bias = torch.randn(300, generator=gen(2))
    target = torch.randint(0, 300, (40,), generator=gen(3))
    target[::7] = -1
    for reduction in ("none", "sum", "mean"):
        kwargs = dict(ignore_index=-1, label_smoothing=0.05, reduction=reduction)
        g = upstream_for(reduction, (40,)).float()
        ours = linear_value_and_grads(ct.linear_cross_entropy, hidden, weight, target, bias, g, chunk_size=16,
                                      vocab_tile=128, **kwargs)
        theirs = linear_value_and_grads(lambda h, w, y, b, **kw: F.linear_cross_entropy(h, w, y, linear_bias=b, **kw),
                                        hidden, weight, target, bias, g, **kwargs)
        assert_close(ours[0], theirs[0], torch.float32)
        for a, b in zip(ours[1], theirs[1]):
            assert_close(a, b, torch.float32)


def test_linear_cross_entropy_saves_only_the_inputs_and_n_numbers():
    hidden = torch.randn(10, 4, generator=gen(), requires_grad=True)
    weight = torch.randn(50, 4, generator=gen(1), requires_grad=True)
    bias = torch.randn(50, generator=gen(2), requires_grad=True)
    target = torch.randint(0, 50, (10,), generator=gen(3))
    loss = ct.linear_cross_entropy(hidden, weight, target, bias, vocab_tile=16)
    saved = loss.grad_fn.saved_tensors
    inputs = [t for t in saved if t.numel() != 10]
    assert sorted(t.data_ptr() for t in inputs) == sorted(t.data_ptr() for t in (hidden, weight, bias))
    extra = [t for t in saved if t.numel() == 10 and t.data_ptr() != target.data_ptr()]
    assert sum(t.numel() for t in extra) <= 2 * 10  # the labels (int64) and lse: no N x V, no gradient


def test_linear_cross_entropy_uses_torch_ops_not_the_numpy_kernels(monkeypatch):
    def refuse(*args):
        raise AssertionError("linear_cross_entropy must not call the NumPy kernels")

    monkeypatch.setattr(ct, "_softmax_ce_numpy", refuse)
    hidden = torch.randn(5, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, generator=gen(1), dtype=torch.float64)
    target = torch.tensor([0, 3, 1, 2, 2])
    loss = ct.linear_cross_entropy(hidden, weight, target)
    loss.backward()
    ref = F.cross_entropy(hidden @ weight.T, target)
    assert_close(loss, ref)
    assert_close(hidden.grad, torch.autograd.grad(ref, hidden)[0])


def test_linear_cross_entropy_masked_classes_with_minus_infinite_bias():
    # A whole tile of -inf logits (classes 4..7) must merge into lse as exp(-inf) = 0, not NaN.
    hidden = torch.randn(6, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(10, 3, generator=gen(1), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(10, dtype=torch.float64)
    bias[4:8] = -math.inf
    target = torch.tensor([0, 1, 2, 3, 8, 9])
    loss = ct.linear_cross_entropy(hidden, weight, target, bias, vocab_tile=4)
    ref = F.cross_entropy(F.linear(hidden, weight, bias), target)
    assert_close(loss, ref)
    for a, b in zip(torch.autograd.grad(loss, (hidden, weight)), torch.autograd.grad(ref, (hidden, weight))):
        assert_close(a, b)


def test_linear_cross_entropy_all_ignored_gives_zero_and_zero_gradients():
    hidden = torch.randn(5, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, generator=gen(1), dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=gen(2), dtype=torch.float64, requires_grad=True)
    target = torch.full((5,), -100)
    for reduction in ("none", "sum", "mean"):
        loss = ct.linear_cross_entropy(hidden, weight, target, bias, reduction=reduction, chunk_size=2,
                                       vocab_tile=3)
        grads = torch.autograd.grad(loss, (hidden, weight, bias), torch.full_like(loss, 2.0))
        assert not loss.any() and not any(g.any() for g in grads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_cross_entropy_low_precision(dtype):
    hidden = torch.randn(20, 16, generator=gen()).to(dtype).requires_grad_()
    weight = (torch.randn(40, 16, generator=gen(1)) / 4).to(dtype).requires_grad_()
    bias = torch.randn(40, generator=gen(3)).to(dtype).requires_grad_()
    target = torch.randint(0, 40, (20,), generator=gen(2))
    loss = ct.linear_cross_entropy(hidden, weight, target, bias, chunk_size=7, vocab_tile=16)
    gh, gw, gb = torch.autograd.grad(loss, (hidden, weight, bias))
    assert loss.dtype == gh.dtype == gw.dtype == gb.dtype == dtype
    leaves = [t.detach().float().requires_grad_() for t in (hidden, weight, bias)]
    ref = F.cross_entropy(F.linear(*leaves), target)
    assert_close(loss.float(), ref, torch.bfloat16)
    for ours, theirs in zip((gh, gw, gb), torch.autograd.grad(ref, leaves)):
        torch.testing.assert_close(ours.float(), theirs, atol=2e-3, rtol=3e-2)


def test_linear_cross_entropy_errors():
    h, w, y = torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="`hidden` must end with D=3"):
        ct.linear_cross_entropy(torch.zeros(4, 2), w, y)
    with pytest.raises(ValueError, match=r"`target` must have shape \(4,\)"):
        ct.linear_cross_entropy(h, w, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`target` must lie in \[0, 5\)"):
        ct.linear_cross_entropy(h, w, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
        ct.linear_cross_entropy(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="`vocab_tile` must be a positive integer"):
        ct.linear_cross_entropy(h, w, y, vocab_tile=2.5)
    with pytest.raises(ValueError, match=r"`weight` must have shape \(V, D\) with V >= 1"):
        ct.linear_cross_entropy(h, torch.zeros(0, 3), y)
    with pytest.raises(ValueError, match="must not contain NaN or \\+inf logits \\(found in row 2\\)"):
        ct.linear_cross_entropy(torch.tensor([[0.0] * 3, [1.0] * 3, [math.nan] * 3, [0.0] * 3]), w, y)
    with pytest.raises(ValueError, match=r"`bias` must have shape \(5,\)"):
        ct.linear_cross_entropy(h, w, y, torch.zeros(4))
    with pytest.raises(TypeError, match="`weight` must have the dtype"):
        ct.linear_cross_entropy(h, w.double(), y)
    with pytest.raises(TypeError, match="`target` must be an integer tensor"):
        ct.linear_cross_entropy(h, w, y.float())


def test_default_chunk_size_takes_all_tokens_up_to_4096_then_equal_chunks():
    assert [ct.default_chunk_size(n) for n in (0, 1, 1000, 4096)] == [1, 1, 1000, 4096]
    for n in (4097, 8192, 10000, 123457):
        rows = ct.default_chunk_size(n)
        chunks = -(-n // rows)
        assert rows <= 4096 and chunks == -(-n // 4096) and n - (chunks - 1) * rows >= rows - chunks


def test_default_vocab_tile_makes_blocks_of_about_8_mib():
    for tokens, v, size in [(1024, 128256, 4), (4096, 32768, 4), (2500, 256000, 2), (1000, 50000, 8)]:
        tile = ct._default_vocab_tile(tokens, v, size)
        assert tile % 128 == 0 and 8 * 2**20 - 128 * tokens * size < tokens * tile * size <= 8 * 2**20
    assert ct._default_vocab_tile(1024, 128256, 4) == 2048
    assert ct._default_vocab_tile(10**6, 5000, 4) == 128  # at least 128 classes
    assert ct._default_vocab_tile(16, 5000, 4) == 5000  # at most V


def test_linear_cross_entropy_backward_twice_through_a_retained_graph():
    hidden = torch.randn(9, 4, generator=gen(), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, generator=gen(1), dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 5, 2, -100, 1, 1, 4, 3, 3])
    loss = ct.linear_cross_entropy(hidden, weight, target, chunk_size=4, vocab_tile=4, label_smoothing=0.1)
    first = torch.autograd.grad(loss, (hidden, weight), torch.tensor(2.0, dtype=torch.float64), retain_graph=True)
    second = torch.autograd.grad(loss, (hidden, weight), torch.tensor(-0.5, dtype=torch.float64))
    ref = F.cross_entropy(hidden @ weight.T, target, label_smoothing=0.1)
    expected = torch.autograd.grad(ref, (hidden, weight))
    for a, b, e in zip(first, second, expected):
        assert_close(a, 2.0 * e)
        assert_close(b, -0.5 * e)
    rows = ct.linear_cross_entropy(hidden, weight, target, reduction="none", chunk_size=4, vocab_tile=4)
    ref_rows = F.cross_entropy(hidden @ weight.T, target, reduction="none")
    for seed in (1, 2):  # two different per-row upstream gradients through the same graph
        up = torch.randn(9, generator=gen(seed), dtype=torch.float64)
        ours = torch.autograd.grad(rows, (hidden, weight), up, retain_graph=True)
        theirs = torch.autograd.grad(ref_rows, (hidden, weight), up, retain_graph=True)
        for a, b in zip(ours, theirs):
            assert_close(a, b)


# --------------------------------------------------------------------------- properties and other devices


from hypothesis import given, settings, strategies as st  # noqa: E402


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


def test_linear_cross_entropy_non_contiguous_inputs():
    hidden = torch.randn(4, 10, 6, generator=gen(), dtype=torch.float64).transpose(0, 1).requires_grad_()
    base = torch.randn(6, 9, generator=gen(1), dtype=torch.float64, requires_grad=True)
    weight = base.t()  # (9, 6), not contiguous: a tied embedding seen through a transpose
    target = torch.randint(0, 9, (10, 4), generator=gen(2))
    loss = ct.linear_cross_entropy(hidden, weight, target, chunk_size=7)
    ref = F.cross_entropy((hidden @ weight.T).reshape(-1, 9), target.reshape(-1))
    assert_close(loss, ref)
    for a, b in zip(torch.autograd.grad(loss * 3, (hidden, base)), torch.autograd.grad(ref * 3, (hidden, base))):
        assert_close(a, b)


def test_cpu_tensors_go_through_the_fused_kernels(monkeypatch):
    calls = []
    for name in ("_softmax_ce_numpy", "_sigmoid_bce_numpy"):
        original = getattr(ct, name)
        monkeypatch.setattr(ct, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    x = torch.randn(4, 5, generator=gen(), requires_grad=True)
    ct.cross_entropy(x, torch.tensor([0, 1, 2, 3])).backward()
    ct.binary_cross_entropy_with_logits(x, torch.zeros(4, 5)).backward()
    ct.linear_cross_entropy(x, torch.randn(3, 5, generator=gen(1)), torch.tensor([0, 1, 2, 0]), chunk_size=3)
    assert calls == ["_softmax_ce_numpy", "_sigmoid_bce_numpy"]  # linear_cross_entropy: plain torch ops


def test_linear_cross_entropy_empty_batch_and_single_class():
    weight = torch.randn(4, 3, generator=gen(), requires_grad=True)
    empty = torch.zeros(0, 3, requires_grad=True)
    loss = ct.linear_cross_entropy(empty, weight, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and empty.grad.shape == (0, 3) and not weight.grad.any()
    hidden = torch.randn(5, 3, generator=gen(1), requires_grad=True)
    one_class = torch.randn(1, 3, generator=gen(2), requires_grad=True)
    loss = ct.linear_cross_entropy(hidden, one_class, torch.zeros(5, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and not hidden.grad.any() and not one_class.grad.any()


def test_without_the_kernels_the_numpy_reference_serves(monkeypatch):
    monkeypatch.setattr(ct, "_kernels", lambda: None)
    x = torch.randn(6, 5, 2, generator=gen(), dtype=torch.float64)
    target = torch.randint(0, 5, (6, 2), generator=gen(1))
    target[0, 0] = -100
    kwargs = dict(weight=torch.rand(5, generator=gen(2), dtype=torch.float64), label_smoothing=0.1)
    ours = value_and_grad(ct.cross_entropy, x, target, upstream=torch.tensor(0.3, dtype=torch.float64), **kwargs)
    theirs = value_and_grad(F.cross_entropy, x, target, upstream=torch.tensor(0.3, dtype=torch.float64), **kwargs)
    assert_close(ours[0], theirs[0])
    assert_close(ours[1], theirs[1])
    y = torch.rand(6, 5, 2, generator=gen(3), dtype=torch.float64)
    pos_weight = torch.rand(2, generator=gen(4), dtype=torch.float64)
    ours = value_and_grad(ct.binary_cross_entropy_with_logits, x, y, pos_weight=pos_weight, reduction="none",
                          upstream=torch.ones(6, 5, 2, dtype=torch.float64))
    theirs = value_and_grad(F.binary_cross_entropy_with_logits, x, y, pos_weight=pos_weight, reduction="none",
                            upstream=torch.ones(6, 5, 2, dtype=torch.float64))
    assert_close(ours[0], theirs[0])
    assert_close(ours[1], theirs[1])


class TestInplaceBackward:
    def test_gradients_through_linear_match_torch_and_allocate_no_new_buffer(self):
        torch.manual_seed(0)
        hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
        layer = torch.nn.Linear(16, 301, dtype=torch.float64)
        target = torch.randint(0, 301, (37,))
        target[3] = -100

        expected = F.cross_entropy(layer(hidden), target, label_smoothing=0.1)
        expected.backward()
        want = [hidden.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]
        hidden.grad = layer.weight.grad = layer.bias.grad = None

        logits = layer(hidden)
        seen = {}
        logits.register_hook(lambda g: seen.update(ptr=g.data_ptr()))
        loss = ct.cross_entropy(logits, target, label_smoothing=0.1, inplace_backward=True)
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
        # The logits now hold their own gradient, and backward hands that very memory on.
        assert seen == {} and not torch.equal(logits.detach(), layer(hidden).detach())
        (loss * 3.0).backward()
        for got, ref in zip([hidden.grad, layer.weight.grad, layer.bias.grad], want):
            torch.testing.assert_close(got, 3.0 * ref, rtol=1e-10, atol=1e-12)

    def test_unit_upstream_gradient_reuses_the_logits_memory(self):
        logits = torch.randn(8, 50, requires_grad=True)
        work = logits * 1.0  # a non-leaf, like a model's output
        seen = {}
        work.register_hook(lambda g: seen.update(ptr=g.data_ptr()))
        ct.cross_entropy(work, torch.randint(0, 50, (8,)), inplace_backward=True).backward()
        assert seen["ptr"] == work.data_ptr()

    def test_without_grad_the_input_is_left_alone(self):
        logits = torch.randn(4, 9)
        before = logits.clone()
        ct.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), inplace_backward=True)
        assert torch.equal(logits, before)

    def test_module_repr_shows_the_option(self):
        assert "inplace_backward=True" in repr(ct.CrossEntropyLoss(inplace_backward=True))
        assert repr(ct.CrossEntropyLoss()) == repr(torch.nn.CrossEntropyLoss())


class TestRetainedGraph:
    """The saved gradient is handed on without a copy; a retained graph must never give a wrong number."""

    @pytest.mark.parametrize("loss_name", ["cross_entropy", "bce"])
    def test_backward_twice_accumulates_like_torch_then_a_modified_saved_gradient_raises(self, loss_name):
        torch.manual_seed(1)
        x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
        if loss_name == "cross_entropy":
            target = torch.randint(0, 7, (6,))
            ours, theirs = ct.cross_entropy, F.cross_entropy
        else:
            target = torch.rand(6, 7, dtype=torch.float64)
            ours, theirs = ct.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits
        loss = ours(x, target)
        loss.backward(retain_graph=True)
        loss.backward(retain_graph=True)
        got = x.grad.clone()
        x.grad = None
        reference = theirs(x, target)
        reference.backward(retain_graph=True)
        reference.backward(retain_graph=True)
        torch.testing.assert_close(got, x.grad)
        # The leaf's .grad now shares (and has modified) the saved gradient: refuse, loudly.
        with pytest.raises(RuntimeError, match="handed to an earlier backward"):
            loss.backward()

    def test_repeated_autograd_grad_is_stable(self):
        x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
        target = torch.randint(0, 9, (5,))
        loss = ct.cross_entropy(x, target)
        first, = torch.autograd.grad(loss, x, retain_graph=True)
        for _ in range(3):
            again, = torch.autograd.grad(loss, x, retain_graph=True)
            torch.testing.assert_close(again, first)
        torch.testing.assert_close(first, torch.autograd.grad(F.cross_entropy(x, target), x)[0])
