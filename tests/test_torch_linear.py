"""crossent.torch.linear_cross_entropy against F.linear + F.cross_entropy."""

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _torch_helpers import assert_close, gen, linear_value_and_grads, upstream_for  # noqa: E402

import crossent.torch as ct  # noqa: E402
from crossent import kernels  # noqa: E402
from crossent.torch.linear._blocks import default_vocab_tile as _default_vocab_tile  # noqa: E402

# --------------------------------------------------------------------------- linear_cross_entropy



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
    # 64 tokens: the default tile of 2 MiB (8192 classes) splits V = 70000 in nine, the last one short.
    n, d, v = 64, 8, 70000
    hidden = torch.randn(n, d, generator=gen())
    weight = torch.randn(v, d, generator=gen(1))
    target = torch.randint(0, v, (n,), generator=gen(2))
    target[:3] = torch.tensor([0, 8191, 8192])  # either side of a tile boundary
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


def test_linear_cross_entropy_saves_only_the_inputs_and_two_numbers_per_token():
    hidden = torch.randn(10, 4, generator=gen(), requires_grad=True)
    weight = torch.randn(50, 4, generator=gen(1), requires_grad=True)
    bias = torch.randn(50, generator=gen(2), requires_grad=True)
    target = torch.randint(0, 50, (10,), generator=gen(3))
    loss = ct.linear_cross_entropy(hidden, weight, target, bias, vocab_tile=16, reduction="none")
    node = loss.grad_fn.next_functions[0][0]  # under the reshape to the target's shape
    saved = [t for t in node.saved_tensors if t is not None]
    inputs = [t for t in saved if t.numel() != 10]
    assert sorted(t.data_ptr() for t in inputs) == sorted(t.data_ptr() for t in (hidden, weight, bias))
    extra = [t for t in saved if t.numel() == 10 and t.data_ptr() != target.data_ptr()]
    assert sum(t.numel() for t in extra) <= 2 * 10  # the row frames and log-sums: no N x V


def test_linear_cross_entropy_uses_torch_ops_not_the_numpy_kernels(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("linear_cross_entropy must not call the NumPy kernels")

    for name in ("softmax_cross_entropy_fused", "softmax_cross_entropy_core"):
        monkeypatch.setattr(kernels, name, refuse, raising=False)
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


def test_default_chunk_size_takes_three_sixteenths_of_the_batch_up_to_512_tokens_in_equal_chunks():
    assert [ct.default_chunk_size(n, 32768) for n in (0, 1, 64, 512, 1024, 2048, 4096)] == [1, 1, 64, 86, 171, 342, 512]
    for n in (257, 1000, 4096, 123457):
        rows = ct.default_chunk_size(n, 32768)
        cap = min(512, max(64, 3 * n // 16 - (3 * n // 16) % 16))
        assert n < 400 or rows / (2 * n) <= 0.1  # the kept block: at most a tenth of two N x V arrays
        chunks = -(-n // rows)
        assert rows <= cap and chunks == -(-n // cap) and n - (chunks - 1) * rows >= rows - chunks
    for v in (128256, 256000, 10**6, 10**8):  # the kept block (chunk x V) stays within 512 MiB, 16 tokens at least
        rows = ct.default_chunk_size(4096, v)
        assert rows >= 16 and (rows * v * 4 <= 512 * 2**20 or rows == 16)


def test_default_vocab_tile_makes_tiles_of_about_2_mib():
    for tokens, v, size in [(256, 128256, 4), (64, 32768, 4), (250, 256000, 4), (256, 50000, 8)]:
        tile = _default_vocab_tile(tokens, v, size)
        assert tile % 128 == 0 and 2 * 2**20 - 128 * tokens * size < tokens * tile * size <= 2 * 2**20
    assert _default_vocab_tile(128, 32768, 4) == 4096
    assert _default_vocab_tile(10**6, 5000, 4) == 128  # at least 128 classes
    assert _default_vocab_tile(16, 5000, 4) == 5000  # at most V


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


# --------------------------------------------------------------------------- the shifted frame (defects 3 and 4)


def linear_logits(logits, bias=None):
    """(hidden, weight) whose product is exactly `logits`: hidden = I, weight = logits.T."""
    n = logits.shape[0]
    return torch.eye(n, dtype=logits.dtype), logits.T.contiguous()


@pytest.mark.parametrize("dtype,value", [(torch.float32, 1e30), (torch.float64, 1e17)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_linear_cross_entropy_huge_equal_logits_cost_ln_2(dtype, value, label_smoothing):
    hidden = torch.zeros(1, 1, dtype=dtype, requires_grad=True)
    weight = torch.zeros(2, 1, dtype=dtype)
    bias = torch.full((2,), value, dtype=dtype, requires_grad=True)
    loss = ct.linear_cross_entropy(hidden, weight, torch.tensor([0]), bias, label_smoothing=label_smoothing,
                                   vocab_tile=1)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2), rel=1e-7)
    torch.testing.assert_close(bias.grad, torch.tensor([-0.5, 0.5], dtype=dtype) * (1 - label_smoothing))
    assert abs(bias.grad.sum().item()) <= 4 * torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype,offset,bound", [(torch.float32, 1e5, 1e-6), (torch.float32, 1e6, 1e-6),
                                                (torch.float64, 1e12, 1e-12)])
@pytest.mark.parametrize("vocab_tile", [1, 7, 50])
def test_linear_cross_entropy_at_a_large_offset_merges_tiles_in_the_running_maximum_frame(dtype, offset, bound,
                                                                                          vocab_tile):
    # Rising logits: every tile raises the running maximum, so the sums are moved into a new frame each time.
    x = (torch.randn(16, 50, generator=gen(), dtype=torch.float64) + torch.linspace(0, 8, 50, dtype=torch.float64)
         + offset).to(dtype)
    target = torch.randint(0, 50, (16,), generator=gen(1))
    hidden, weight = linear_logits(x)
    rows = ct.linear_cross_entropy(hidden, weight, target, reduction="none", label_smoothing=0.1,
                                   vocab_tile=vocab_tile, chunk_size=5)
    ref = np.asarray(x.numpy(), np.longdouble)
    m = ref.max(-1, keepdims=True)
    nll = np.log(np.exp(ref - m).sum(-1, keepdims=True)) - (ref - m)
    expected = 0.9 * nll[np.arange(16), target.numpy()] + 0.1 * nll.mean(-1)
    assert float(np.max(np.abs(np.asarray(rows.numpy(), np.longdouble) - expected) / expected)) <= bound
    (grad,) = torch.autograd.grad(ct.linear_cross_entropy(hidden, weight.requires_grad_(), target,
                                                          vocab_tile=vocab_tile), weight)
    p = torch.from_numpy(np.exp(-nll).astype(np.float64))
    expected_grad = (p - F.one_hot(target, 50).double()) / 16
    torch.testing.assert_close(grad.T.double(), expected_grad, atol=10 * bound, rtol=0)


def test_linear_cross_entropy_full_smoothing_on_a_masked_target_and_a_masked_ignored_row():
    bias = torch.tensor([-math.inf, 0.0, 1.0], dtype=torch.float64)
    hidden = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    weight = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    loss = ct.linear_cross_entropy(hidden, weight, torch.tensor([0, 1, 2]), bias, label_smoothing=1.0,
                                   reduction="none")
    assert loss.tolist() == [math.inf] * 3  # smoothing mass on the masked class: +inf (the rules), not NaN
    masked = torch.full((3,), -math.inf, dtype=torch.float64)
    with pytest.raises(ValueError, match="all_masked"):
        ct.linear_cross_entropy(hidden, weight, torch.tensor([-100, 1, 2]), masked)
    loss = ct.linear_cross_entropy(hidden, weight, torch.full((3,), -100), masked, vocab_tile=2)
    loss.backward()  # ignored rows masked everywhere cost nothing, and their gradient is 0, not NaN
    assert loss.item() == 0.0 and not hidden.grad.any() and not weight.grad.any()


# --------------------------------------------------------------------------- second derivatives and torch.func


def test_linear_cross_entropy_second_derivatives_match_finite_differences_and_torch():
    hidden = torch.randn(5, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, generator=gen(1), dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=gen(2), dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, -100, 1, 2])
    for reduction in ("none", "mean"):
        assert torch.autograd.gradgradcheck(
            lambda h, w, b: ct.linear_cross_entropy(h, w, target, b, reduction=reduction, label_smoothing=0.1,
                                                    chunk_size=2, vocab_tile=3), (hidden, weight, bias))
    (g_ours,) = torch.autograd.grad(ct.linear_cross_entropy(hidden, weight, target, bias), hidden, create_graph=True)
    (g_torch,) = torch.autograd.grad(F.cross_entropy(F.linear(hidden, weight, bias), target), hidden,
                                     create_graph=True)
    penalty = [torch.autograd.grad(g.square().sum(), (hidden, weight, bias)) for g in (g_ours, g_torch)]
    for a, b in zip(*penalty):
        assert_close(a, b)


def test_linear_cross_entropy_under_torch_func_grad_and_vmap():
    hidden = torch.randn(6, 3, generator=gen(), dtype=torch.float64)
    weight = torch.randn(5, 3, generator=gen(1), dtype=torch.float64)
    target = torch.tensor([0, 4, 2, -100, 1, 1])
    ours = torch.func.grad(lambda w: ct.linear_cross_entropy(hidden, w, target, label_smoothing=0.1))(weight)
    theirs = torch.func.grad(lambda w: F.cross_entropy(hidden @ w.T, target, label_smoothing=0.1))(weight)
    assert_close(ours, theirs)
    batch = torch.randn(2, 6, 3, generator=gen(2), dtype=torch.float64)
    ours = torch.func.vmap(lambda h: ct.linear_cross_entropy(h, weight, target))(batch)
    assert_close(ours, torch.stack([F.cross_entropy(h @ weight.T, target) for h in batch]))


@pytest.mark.parametrize("num_classes", [1, 5, 127, 128, 129, 300, 1271])
def test_row_peaks_match_amax_and_point_at_a_maximum(num_classes):
    from crossent.torch.linear._blocks import _peaks

    x = torch.randn(6, num_classes, generator=gen())
    x[1] = -math.inf  # a row of masked classes
    x[2, num_classes // 2] = math.nan
    x[3] = 1.0  # all tied
    x[4, -1] = 50.0  # the maximum in the last (short) segment
    top, at = _peaks(x)
    expected = x.amax(1, keepdim=True)
    assert torch.equal(top.nan_to_num(7.0), expected.nan_to_num(7.0))
    assert torch.equal(x.gather(1, at).nan_to_num(7.0), expected.nan_to_num(7.0))
    assert bool(((at >= 0) & (at < num_classes)).all())
