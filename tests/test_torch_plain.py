"""The rules of crossent._rules on the torch paths: shifted frame, masked classes, empty means, options.

``cross_entropy_plain`` is the plain-torch path (any device); ``ct.cross_entropy``
on CPU float tensors is the fused one.  Expected values come from a float64 /
long-double NumPy reference of the rules, computed from the very same inputs.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _torch_helpers import gen  # noqa: E402

import crossent.torch as ct  # noqa: E402
from crossent._rules import CrossEntropyOptions  # noqa: E402
from crossent.torch._plain import cross_entropy_plain  # noqa: E402

inf = math.inf
PATHS = [pytest.param(ct.cross_entropy, id="fused"), pytest.param(cross_entropy_plain, id="plain")]


def reference_rows(logits, target, weight=None, label_smoothing=0.0):
    """Per-row losses of the rules in long double, every difference in the shifted frame."""
    x = np.asarray(logits.detach().numpy(), dtype=np.longdouble)
    num_rows, num_classes = x.shape
    m = x.max(-1, keepdims=True)
    nll = np.log(np.exp(x - m).sum(-1, keepdims=True)) - (x - m)
    w = np.ones(num_classes, np.longdouble) if weight is None else np.asarray(weight.numpy(), np.longdouble)
    if target.is_floating_point():
        mass = w * ((1 - label_smoothing) * np.asarray(target.numpy(), np.longdouble) + label_smoothing / num_classes)
    else:
        mass = np.tile(label_smoothing / num_classes * w, (num_rows, 1))
        mass[np.arange(num_rows), target.numpy()] += (1 - label_smoothing) * w[target.numpy()]
    return np.where(mass != 0, mass * np.where(mass != 0, nll, 0), 0).sum(-1)


def relative_error(actual, expected):
    actual = np.asarray(actual.detach().numpy(), np.longdouble)
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


class TestShiftedFrame:
    """Defects 3 and 4: ``lse - x`` cancels at a large common offset; ``log sum exp(x - m) - (x - m)`` does not."""

    @pytest.mark.parametrize("dtype,value", [(torch.float32, 1e30), (torch.float64, 1e17)])
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
    def test_huge_equal_logits_cost_ln_2_with_a_gradient_summing_to_zero(self, dtype, value, label_smoothing):
        x = torch.tensor([[value, value]], dtype=dtype, requires_grad=True)
        loss = cross_entropy_plain(x, torch.tensor([0]), label_smoothing=label_smoothing)
        loss.backward()
        assert loss.item() == pytest.approx(math.log(2), rel=1e-7)
        expected = torch.tensor([[-0.5, 0.5]], dtype=dtype) * (1 - label_smoothing)
        torch.testing.assert_close(x.grad, expected, rtol=1e-7, atol=1e-7)
        assert abs(x.grad.sum().item()) <= 4 * torch.finfo(dtype).eps

    @pytest.mark.parametrize("offset", [1e5, 1e6])
    def test_float32_probability_targets_at_a_large_offset(self, offset):
        x = (torch.randn(64, 50, generator=gen(), dtype=torch.float64) * 3 + offset).float()
        target = torch.softmax(torch.randn(64, 50, generator=gen(1)), -1)
        rows = cross_entropy_plain(x, target, reduction="none", label_smoothing=0.1)
        assert relative_error(rows, reference_rows(x, target, label_smoothing=0.1)) <= 1e-6

    def test_float64_integer_labels_at_an_offset_of_1e12(self):
        x = torch.randn(64, 50, generator=gen(), dtype=torch.float64) * 3 + 1e12
        target = torch.randint(0, 50, (64,), generator=gen(1))
        weight = torch.rand(50, generator=gen(2), dtype=torch.float64) + 0.5
        rows = cross_entropy_plain(x, target, weight, reduction="none", label_smoothing=0.1)
        assert relative_error(rows, reference_rows(x, target, weight, 0.1)) <= 1e-12


class TestMaskedClasses:
    """Defect 2: a weight or target mass of 0 on a ``-inf`` logit counts 0, never NaN (both paths)."""

    @pytest.mark.parametrize("path", PATHS)
    def test_masked_target_of_weight_zero_contributes_nothing(self, path):
        x = torch.tensor([[-inf, 0.0, 1.0], [0.0, 1.0, 2.0]], requires_grad=True)
        weight = torch.tensor([0.0, 1.0, 1.0])
        loss = path(x, torch.tensor([0, 1]), weight=weight)  # the mean divides by 0 + 1
        loss.backward()
        row_2 = torch.logsumexp(torch.tensor([0.0, 1.0, 2.0]), 0) - 1.0
        torch.testing.assert_close(loss, row_2)
        assert torch.isfinite(x.grad).all() and not x.grad[0].any()

    @pytest.mark.parametrize("path", PATHS)
    @pytest.mark.parametrize("probability_targets", [False, True])
    def test_full_smoothing_puts_no_mass_on_a_masked_target(self, path, probability_targets):
        x = torch.tensor([[-inf, 0.0, 1.0], [0.5, 1.0, -1.0]], dtype=torch.float64, requires_grad=True)
        labels = torch.tensor([0, 1])
        target = F.one_hot(labels, 3).double() if probability_targets else labels
        weight = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
        loss = path(x, target, weight=weight, label_smoothing=1.0, reduction="none")
        loss.sum().backward()
        expected = reference_rows(x, labels, weight, 1.0)
        np.testing.assert_allclose(loss.detach().numpy(), expected.astype(np.float64), rtol=1e-12)
        assert torch.isfinite(x.grad).all()

    @pytest.mark.parametrize("path", PATHS)
    def test_smoothing_over_a_masked_class_of_positive_weight_is_plus_inf_with_a_finite_gradient(self, path):
        x = torch.tensor([[-inf, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
        loss = path(x, torch.tensor([1]), label_smoothing=0.1)
        loss.backward()
        assert loss.item() == inf and torch.isfinite(x.grad).all()

    @pytest.mark.parametrize("path", PATHS)
    def test_a_kept_row_masked_everywhere_is_a_value_error_an_ignored_one_costs_nothing(self, path):
        x = torch.tensor([[-inf, -inf], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
        with pytest.raises(ValueError, match="all_masked|-inf"):
            path(x, torch.tensor([0, 1]))
        loss = path(x, torch.tensor([-100, 1]), label_smoothing=0.2, z_loss=0.1)
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(x.grad).all() and not x.grad[0].any()

    def test_target_and_weight_gradients_next_to_minus_inf_logits_are_finite(self):
        # Defect 12: the gradient of 0 * inf is NaN unless the infinity is replaced before the product.
        x = torch.tensor([[-inf, 0.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
        target = torch.tensor([[0.0, 0.25, 0.75], [0.2, 0.3, 0.5]], dtype=torch.float64, requires_grad=True)
        ct.cross_entropy(x, target).backward()  # target requires grad: the plain path
        lse = torch.logsumexp(x, -1, keepdim=True)
        expected = torch.where(torch.isfinite(x), lse - x, 0.0) / 2
        torch.testing.assert_close(target.grad, expected)
        weight = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
        ct.cross_entropy(x, torch.tensor([1, 2]), weight=weight, label_smoothing=0.1).backward()
        assert torch.isfinite(weight.grad).all()
        assert torch.autograd.gradcheck(lambda w12: ct.cross_entropy(
            x, torch.tensor([1, 2]), weight=torch.cat([torch.zeros(1, dtype=torch.float64), w12]),
            label_smoothing=0.1), (weight.detach()[1:].clone().requires_grad_(),))


class TestEmptyMean:
    @pytest.mark.parametrize("path", PATHS)
    def test_zero_total_weight_with_smoothing_and_z_loss_gives_zero_and_a_zero_gradient(self, path):
        x = torch.randn(4, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
        weight = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
        loss = path(x, torch.zeros(4, dtype=torch.long), weight=weight, label_smoothing=0.1, z_loss=0.01)
        loss.backward()
        assert loss.item() == 0.0 and not x.grad.any()


class TestOptions:
    """The options are checked once, at the public boundary, by CrossEntropyOptions.check."""

    @pytest.mark.parametrize("call", [
        lambda: ct.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), ignore_index=True),
        lambda: cross_entropy_plain(torch.zeros(2, 3), torch.tensor([0, 1]), ignore_index=True),
        lambda: ct.CrossEntropyLoss(ignore_index=True),
        lambda: ct.linear_cross_entropy(torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1]),
                                        ignore_index=True),
    ], ids=["cross_entropy", "cross_entropy_plain", "CrossEntropyLoss", "linear_cross_entropy"])
    def test_a_bool_ignore_index_is_a_type_error(self, call):
        with pytest.raises(TypeError, match="`ignore_index` must be an integer"):
            call()

    def test_each_call_builds_the_options_once(self, monkeypatch):
        calls = []
        original = CrossEntropyOptions.check.__func__
        monkeypatch.setattr(CrossEntropyOptions, "check",
                            classmethod(lambda cls, **kw: calls.append(kw) or original(cls, **kw)))
        x = torch.randn(3, 4, generator=gen(), requires_grad=True)
        y = torch.tensor([0, 1, 3])
        module = ct.CrossEntropyLoss(label_smoothing=0.1)

        def checks(call):
            calls.clear()
            call().backward()  # backward checks nothing again
            return len(calls)

        assert checks(lambda: ct.cross_entropy(x, y, label_smoothing=0.1)) == 1
        assert checks(lambda: module(x, y)) == 1
        assert checks(lambda: ct.cross_entropy(x, torch.softmax(x.detach(), -1))) == 1
        assert checks(lambda: ct.linear_cross_entropy(x, torch.randn(5, 4, generator=gen(1)), y)) == 1
        assert checks(lambda: cross_entropy_plain(x, y)) == 1

    @pytest.mark.parametrize("path", PATHS + [pytest.param(lambda x, t, **kw: ct.CrossEntropyLoss(**kw)(x, t),
                                                           id="module")])
    def test_probability_targets_refuse_a_non_negative_ignore_index(self, path):
        x = torch.zeros(2, 3)
        target = torch.full((2, 3), 1 / 3)
        with pytest.raises(ValueError, match="`ignore_index`=0 applies to integer labels only"):
            path(x, target, ignore_index=0)
        torch.testing.assert_close(path(x, target, ignore_index=-1), torch.tensor(math.log(3)))
