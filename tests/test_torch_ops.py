"""The fused operators: the gradient hand-off, retained graphs, the in-place mode, second derivatives,
torch.func and torch.compile."""

import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _torch_helpers import assert_close, gen, upstream_for  # noqa: E402

import crossent.torch as ct  # noqa: E402
from crossent import kernels  # noqa: E402


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


# --------------------------------------------------------------------------- retained graphs (defect 7)


@pytest.mark.parametrize("loss_name", ["cross_entropy", "bce"])
def test_each_autograd_grad_call_through_a_retained_graph_gets_its_own_tensor(loss_name):
    x = torch.randn(5, 9, generator=gen(), dtype=torch.float64, requires_grad=True)
    if loss_name == "cross_entropy":
        loss = ct.cross_entropy(x, torch.randint(0, 9, (5,), generator=gen(1)))
    else:
        loss = ct.binary_cross_entropy_with_logits(x, torch.rand(5, 9, generator=gen(1), dtype=torch.float64))
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x, retain_graph=True)
    assert first.untyped_storage().data_ptr() != second.untyped_storage().data_ptr()
    expected = first.clone()
    second.add_(1.0)  # editing one leaves the other alone
    torch.testing.assert_close(first, expected)
    (third,) = torch.autograd.grad(loss, x)
    first.mul_(0.0)
    torch.testing.assert_close(third, expected)


def test_loss_backward_hands_the_kernels_gradient_to_the_leaf_without_a_copy():
    x = torch.randn(64, 100, generator=gen(), requires_grad=True)
    loss = ct.cross_entropy(x, torch.randint(0, 100, (64,), generator=gen(1)))
    kernel_gradient = loss.grad_fn.saved_tensors[-1]
    loss.backward()
    assert x.grad.data_ptr() == kernel_gradient.data_ptr()


# --------------------------------------------------------------------------- the in-place mode (defect 8)


def test_inplace_backward_over_logits_that_another_node_saved_raises_like_torch():
    x = torch.randn(3, 4, generator=gen(), requires_grad=True)
    target = torch.tensor([0, 1, 2])
    logits = (x * 2).exp()  # exp saves its output: the logits
    loss = ct.cross_entropy(logits, target, inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    logits = (x * 2).exp()
    logits.add_(1.0)  # torch's own in-place op on the same tensor: the same error
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        F.cross_entropy(logits, target).backward()


def test_inplace_backward_refuses_second_derivatives():
    x = torch.randn(3, 4, generator=gen(), dtype=torch.float64, requires_grad=True)
    loss = ct.cross_entropy(x * 1.0, torch.tensor([0, 1, 2]), inplace_backward=True)
    with pytest.raises(RuntimeError, match=r"inplace_backward=True\) overwrote the logits"):
        torch.autograd.grad(loss, x, create_graph=True)


# --------------------------------------------------------------------------- second derivatives (defect 6)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_cross_entropy_second_derivatives_match_finite_differences_and_torch(reduction):
    x = torch.randn(5, 4, 2, generator=gen(), dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0, 3], [1, -100], [2, 2], [3, 0], [1, 1]])
    probs = torch.softmax(torch.randn(5, 4, 2, generator=gen(1), dtype=torch.float64), 1)
    kwargs = dict(weight=torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64), label_smoothing=0.1,
                  reduction=reduction)
    assert torch.autograd.gradgradcheck(lambda x: ct.cross_entropy(x, target, z_loss=0.01, **kwargs), (x,))
    assert torch.autograd.gradgradcheck(lambda x: ct.cross_entropy(x, probs, **kwargs), (x,))
    upstream = upstream_for(reduction, (5, 2))
    penalties = []
    for fn in (ct.cross_entropy, F.cross_entropy):  # a gradient penalty, as in WGAN-GP
        (grad,) = torch.autograd.grad(fn(x, target, **kwargs), x, upstream, create_graph=True)
        penalties.append(torch.autograd.grad(grad.square().sum(), x)[0])
    assert_close(*penalties)


def test_hessian_vector_products_match_torch():
    x = torch.randn(6, 5, generator=gen(), dtype=torch.float64)
    v = torch.randn(6, 5, generator=gen(1), dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 4, -100])
    ours = torch.autograd.functional.hvp(lambda x: ct.cross_entropy(x, target, label_smoothing=0.2), x, v)
    theirs = torch.autograd.functional.hvp(lambda x: F.cross_entropy(x, target, label_smoothing=0.2), x, v)
    assert_close(ours[0], theirs[0])
    assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_bce_second_derivatives_match_finite_differences_and_torch(reduction):
    x = torch.randn(4, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    y = torch.rand(4, 3, generator=gen(1), dtype=torch.float64)
    kwargs = dict(pos_weight=torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64), reduction=reduction)
    assert torch.autograd.gradgradcheck(lambda x: ct.binary_cross_entropy_with_logits(x, y, **kwargs), (x,))
    upstream = upstream_for(reduction, (4, 3))
    penalties = []
    for fn in (ct.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits):
        (grad,) = torch.autograd.grad(fn(x, y, **kwargs), x, upstream, create_graph=True)
        penalties.append(torch.autograd.grad(grad.square().sum(), x)[0])
    assert_close(*penalties)


# --------------------------------------------------------------------------- torch.func (defect 6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit inside forward-mode AD (hessian)
def test_torch_func_grad_vmap_and_hessian_match_torch():
    x = torch.randn(6, 5, generator=gen(), dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 4, -100])
    weight = torch.rand(5, generator=gen(1), dtype=torch.float64) + 0.5
    kwargs = dict(weight=weight, label_smoothing=0.1)
    for transform in (torch.func.grad, torch.func.hessian):
        ours = transform(lambda x: ct.cross_entropy(x, target, **kwargs))(x)
        theirs = transform(lambda x: F.cross_entropy(x, target, **kwargs))(x)
        assert_close(ours, theirs)
    batch = torch.randn(3, 6, 5, generator=gen(2), dtype=torch.float64)
    targets = torch.randint(0, 5, (3, 6), generator=gen(3))
    ours = torch.func.vmap(lambda x, y: ct.cross_entropy(x, y, **kwargs))(batch, targets)
    theirs = torch.stack([F.cross_entropy(x, y, **kwargs) for x, y in zip(batch, targets)])
    assert_close(ours, theirs)
    ours = torch.func.vmap(torch.func.grad(lambda x, y: ct.cross_entropy(x, y)))(batch, torch.softmax(batch, -1))
    assert ours.abs().max() < 1e-12  # the target equals the softmax: a zero gradient
    y = torch.rand(6, 5, generator=gen(4), dtype=torch.float64)
    ours = torch.func.grad(lambda x: ct.binary_cross_entropy_with_logits(x, y))(x)
    assert_close(ours, torch.func.grad(lambda x: F.binary_cross_entropy_with_logits(x, y))(x))


def test_torch_func_still_checks_the_values():
    x = torch.randn(2, 3, generator=gen())
    with pytest.raises(ValueError, match=r"`target` must lie in \[0, 3\)"):
        torch.func.grad(lambda x: ct.cross_entropy(x, torch.tensor([0, 3])))(x)
    with pytest.raises(ValueError, match="NaN"):
        torch.func.vmap(lambda x: ct.cross_entropy(x, torch.tensor([0, 1])))(torch.full((2, 2, 3), math.nan))


# --------------------------------------------------------------------------- torch.compile (defect 5)


class Head(torch.nn.Module):
    """A model ending in all four losses; `losses` is crossent.torch or torch.nn.functional/torch.nn."""

    def __init__(self, functional, modules):
        super().__init__()
        self.linear = torch.nn.Linear(6, 5, dtype=torch.float64)
        self.functional = functional
        self.ce = modules.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0, 1.5], dtype=torch.float64))
        self.bce = modules.BCEWithLogitsLoss(pos_weight=torch.full((5,), 2.0, dtype=torch.float64))

    def forward(self, hidden, labels, bits):
        logits = self.linear(hidden)
        return (self.functional.cross_entropy(logits, labels, label_smoothing=0.1) + self.ce(logits, labels)
                + self.functional.binary_cross_entropy_with_logits(logits, bits) + self.bce(logits, bits))


def compiled_against_torch(backend, fullgraph=False):
    hidden = torch.randn(8, 6, generator=gen(), dtype=torch.float64)
    labels = torch.randint(0, 5, (8,), generator=gen(1))
    bits = torch.rand(8, 5, generator=gen(2), dtype=torch.float64).round()
    ours, theirs = Head(ct, ct), Head(F, torch.nn)
    theirs.load_state_dict(ours.state_dict())
    compiled = torch.compile(ours, backend=backend, fullgraph=fullgraph)
    for step in range(2):  # the first call compiles, the second reuses
        results = []
        for model in (compiled, theirs):
            model.zero_grad()
            loss = model(hidden * (step + 1), labels, bits)
            loss.backward()
            results.append((loss.detach(), model.linear.weight.grad, model.linear.bias.grad))
        for a, b in zip(*results):
            assert_close(a, b)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit inside torch._dynamo
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_a_compiled_model_keeps_the_fused_operators_and_matches_torch(backend):
    torch._dynamo.reset()
    nodes = []

    def recording(graph_module, example_inputs):
        nodes.extend(node.target for node in graph_module.graph.nodes)
        return torch._dynamo.lookup_backend(backend)(graph_module, example_inputs)

    compiled_against_torch(recording)
    assert torch.ops.crossent.softmax_cross_entropy.default in nodes
    assert torch.ops.crossent.sigmoid_binary_cross_entropy.default in nodes


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_four_losses_compile_into_one_graph_without_a_break():
    torch._dynamo.reset()
    compiled_against_torch("eager", fullgraph=True)  # fullgraph: a graph break is an error


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_model_compiled_by_inductor_matches_torch():
    torch._dynamo.reset()
    compiled_against_torch("inductor")


# --------------------------------------------------------------------------- the operators themselves


def softmax_operator_cases():
    x = torch.randn(4, 3, 2, generator=gen(), dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1, 0, 0, 1, 2])
    weight = torch.rand(3, generator=gen(1), dtype=torch.float64)
    probs = torch.softmax(torch.randn(8, 3, generator=gen(2)), -1)
    return [(x, labels, weight, 0.1, -100, 0.01, "mean", True), (x, labels, None, 0.0, None, 0.0, "none", True),
            (x.detach().bfloat16().requires_grad_(), probs, None, 0.2, None, 0.0, "sum", True)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("case", range(3))
def test_softmax_operator_passes_torch_library_opcheck(case):
    # Schema, fake (meta) implementation, autograd registration and AOT dispatch with dynamic shapes.
    torch.library.opcheck(torch.ops.crossent.softmax_cross_entropy.default, softmax_operator_cases()[case])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_sigmoid_bce_operator_passes_torch_library_opcheck(reduction):
    x = torch.randn(4, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    y = torch.rand(4, 3, generator=gen(1), dtype=torch.float64)
    pos_weight = torch.rand(3, generator=gen(2), dtype=torch.float64)
    torch.library.opcheck(torch.ops.crossent.sigmoid_binary_cross_entropy.default,
                          (x, y, pos_weight, None, reduction, True))


def test_inplace_backward_refuses_a_leaf_that_requires_grad():
    weight = torch.randn(4, 5, requires_grad=True)  # e.g. a parameter used as logits
    before = weight.detach().clone()
    with pytest.raises(ValueError, match="`inplace_backward=True` would write the gradient into `input`"):
        ct.cross_entropy(weight, torch.tensor([0, 1, 2, 3]), inplace_backward=True)
    assert torch.equal(weight.detach(), before)
    with torch.no_grad():  # nothing to write: allowed, and the leaf is left alone
        ct.cross_entropy(weight, torch.tensor([0, 1, 2, 3]), inplace_backward=True)
    assert torch.equal(weight.detach(), before)
