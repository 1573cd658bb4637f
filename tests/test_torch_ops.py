"""The fused operators' autograd: the gradient hand-off, retained graphs, the in-place mode."""

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import crossent.torch as ct  # noqa: E402
from crossent import kernels  # noqa: E402
from _torch_helpers import (  # noqa: E402
    assert_close, gen, linear_value_and_grads, reference_z_loss_rows, upstream_for, value_and_grad)


def test_cpu_tensors_go_through_the_fused_kernels(monkeypatch):
    calls = []
    for name in ("softmax_cross_entropy_fused", "softmax_cross_entropy_core", "sigmoid_binary_cross_entropy_fused"):
        original = getattr(kernels, name, None)
        if original is not None:
            monkeypatch.setattr(kernels, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    x = torch.randn(4, 5, generator=gen(), requires_grad=True)
    ct.cross_entropy(x, torch.tensor([0, 1, 2, 3])).backward()
    ct.binary_cross_entropy_with_logits(x, torch.zeros(4, 5)).backward()
    ct.linear_cross_entropy(x, torch.randn(3, 5, generator=gen(1)), torch.tensor([0, 1, 2, 0]), chunk_size=3)
    assert [name.split("_")[0] for name in calls] == ["softmax", "sigmoid"]  # linear_cross_entropy: torch ops


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
