"""crossent.torch.linear: every option of linear_cross_entropy, and linear_log_probs_and_entropy, against plain torch."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _torch_helpers import assert_close, gen  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import crossent.torch as ct  # noqa: E402
from crossent.torch.linear import _blocks  # noqa: E402

PROPERTY = settings(max_examples=25 if settings.default.max_examples == 100 else settings.default.max_examples)


def head_logits(h, w, b, softcap=None, temperature=1.0):
    z = F.linear(h, w, b)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return z / temperature


def reference_loss(h, w, y, b=None, *, ignore_index=-100, label_smoothing=0.0, class_weight=None, z_loss=0.0,
                   softcap=None, temperature=1.0, reduction="mean"):
    """F.linear + softcap + temperature + F.cross_entropy, plus z * logsumexp^2 per kept token (the rules)."""
    z = head_logits(h, w, b, softcap, temperature).float() if h.dtype in (torch.bfloat16, torch.float16) else \
        head_logits(h, w, b, softcap, temperature)
    cw = None if class_weight is None else class_weight.to(z.dtype)
    loss = F.cross_entropy(z, y, weight=cw, ignore_index=ignore_index, label_smoothing=label_smoothing,
                           reduction=reduction)
    kept = (y != ignore_index).to(z.dtype)
    z_rows = z_loss * torch.logsumexp(z, 1) ** 2 * kept
    den = kept.sum() if cw is None else (cw[y.clamp(min=0)] * kept).sum()
    return loss + {"none": z_rows, "sum": z_rows.sum(), "mean": z_rows.sum() / den}[reduction]


def problem(n=13, d=5, v=37, dtype=torch.float64, bias=True, seed=0):
    h = torch.randn(n, d, generator=gen(seed), dtype=dtype)
    w = torch.randn(v, d, generator=gen(seed + 1), dtype=dtype)
    b = torch.randn(v, generator=gen(seed + 2), dtype=dtype) if bias else None
    y = torch.randint(0, v, (n,), generator=gen(seed + 3))
    y[[1, n // 2]] = -100
    return h, w, b, y


def value_and_grads(fn, h, w, b, y, upstream, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in (h, w)] + (
        [] if b is None else [b.detach().clone().requires_grad_()])
    loss = fn(leaves[0], leaves[1], y, leaves[2] if b is not None else None, **kwargs)
    return loss.detach(), torch.autograd.grad(loss, leaves, upstream)


OPTIONS = {
    "plain": {},
    "smoothing": dict(label_smoothing=0.1),
    "class_weight": dict(class_weight="w"),
    "weighted_smoothing": dict(class_weight="w", label_smoothing=0.2),
    "z_loss": dict(z_loss=1e-2),
    "softcap": dict(softcap=2.5),
    "temperature": dict(temperature=0.7),
    "everything": dict(class_weight="w", label_smoothing=0.1, z_loss=1e-2, softcap=4.0, temperature=1.3),
}


def _resolve(options, v, dtype):
    options = dict(options)
    if options.get("class_weight") == "w":
        options["class_weight"] = torch.rand(v, generator=gen(9), dtype=dtype) * 2
        options["class_weight"][3] = 0.0
    return options


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_matches_plain_torch_values_and_all_gradients_float64(name, reduction):
    h, w, b, y = problem()
    options = _resolve(OPTIONS[name], w.shape[0], h.dtype)
    upstream = torch.randn(13, generator=gen(5), dtype=h.dtype) if reduction == "none" else torch.tensor(
        -1.7, dtype=h.dtype)
    ours = value_and_grads(ct.linear_cross_entropy, h, w, b, y, upstream, reduction=reduction, chunk_size=4,
                           vocab_tile=8, **options)
    theirs = value_and_grads(reference_loss, h, w, b, y, upstream, reduction=reduction, **options)
    assert_close(ours[0], theirs[0])
    for a, e in zip(ours[1], theirs[1]):
        assert_close(a, e)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_gradcheck_float64_with_every_option(reduction):
    h, w, b, y = problem(n=6, d=3, v=7)
    cw = torch.rand(7, generator=gen(4), dtype=torch.float64) + 0.5
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]

    def fn(h_, w_, b_):
        return ct.linear_cross_entropy(h_, w_, y, b_, class_weight=cw, label_smoothing=0.1, z_loss=0.05,
                                       softcap=3.0, temperature=0.8, reduction=reduction, chunk_size=4, vocab_tile=3)
    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("options", [{}, {"reduction": "sum"}, {"softcap": 2.0}, {"label_smoothing": 0.1},
                                     {"softcap": 3.0, "z_loss": 1e-3, "chunk_size": 2, "vocab_tile": 3}])
def test_backward_is_reentrant_for_gradcheck_at_its_default_tolerance(options):
    # gradcheck runs backward twice through one graph and wants the same numbers (nondet_tol=0): the first
    # backward hands on the gradients formed in forward, the second forms them again the same way
    h, w, b, y = problem(n=5, d=3, v=7)
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]
    assert torch.autograd.gradcheck(lambda h_, w_, b_: ct.linear_cross_entropy(h_, w_, y, b_, **options), leaves)
    loss = ct.linear_cross_entropy(*leaves[:2], y, leaves[2], **options)
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softcap_turns_a_minus_infinite_bias_into_a_finite_logit_also_under_smoothing(reduction):
    # c tanh(-inf / c) = -c: nothing is masked, so smoothing gives a finite loss (it was +inf)
    h, w, b, _ = problem(n=4, d=3, v=5)
    b = b.clone()
    b[0] = -math.inf
    y = torch.tensor([1, 2, 0, 4])  # row 3: the target is the capped class
    leaves = [t.clone().requires_grad_() for t in (h, w)]
    ours = ct.linear_cross_entropy(*leaves, y, b, softcap=4.0, label_smoothing=0.1, reduction=reduction)
    ref = reference_loss(*leaves, y, b, softcap=4.0, label_smoothing=0.1, reduction=reduction)
    assert bool(torch.isfinite(ours).all())
    assert_close(ours, ref)
    for a, c in zip(torch.autograd.grad(ours.sum(), leaves), torch.autograd.grad(ref.sum(), leaves)):
        assert_close(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_softcap_and_temperature_beyond_the_compute_dtype_are_errors(dtype):
    h, w, y = torch.zeros(4, 3, dtype=dtype), torch.zeros(5, 3, dtype=dtype), torch.zeros(4, dtype=torch.long)
    for function in (ct.linear_cross_entropy, ct.linear_log_probs_and_entropy):
        for name, value in (("temperature", 1e-39), ("softcap", 1e-39), ("softcap", 1e39), ("temperature", 1e39)):
            with pytest.raises(ValueError, match=f"`{name}` must lie in"):
                function(h, w, y, **{name: value})
    # float64 holds them: the same values are fine there
    assert torch.isfinite(ct.linear_cross_entropy(h.double(), w.double(), y, temperature=1e-39))


def test_odd_shapes_float32_tiles_that_do_not_divide_the_vocabulary():
    h, w, b, y = problem(n=41, d=37, v=1271, dtype=torch.float32, seed=10)
    w = w / 37**0.5
    options = dict(label_smoothing=0.05, z_loss=1e-3, softcap=30.0, temperature=0.9,
                   class_weight=torch.rand(1271, generator=gen(2)) + 0.5)
    for reduction, upstream in (("none", torch.randn(41, generator=gen(3))), ("mean", torch.tensor(2.5))):
        ours = value_and_grads(ct.linear_cross_entropy, h, w, b, y, upstream, reduction=reduction, chunk_size=16,
                               vocab_tile=300, **options)
        theirs = value_and_grads(reference_loss, h, w, b, y, upstream, reduction=reduction, **options)
        assert_close(ours[0], theirs[0], torch.float32)
        for a, e in zip(ours[1], theirs[1]):
            assert_close(a, e, torch.float32)


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_accumulates_in_float32(dtype, native, monkeypatch):
    # native=True: the low-precision products of the non-CPU path, run here on the CPU.
    if native:
        monkeypatch.setattr(_blocks, "products_in_float32", lambda device: False)
    h, w, b, y = problem(n=40, d=16, v=300, dtype=torch.float32, seed=20)
    h, w, b = (t.to(dtype) for t in (h, w / 4, b))
    for reduction in ("mean", "none"):
        upstream = torch.tensor(1.0) if reduction == "mean" else torch.randn(40, generator=gen(1))
        ours = value_and_grads(ct.linear_cross_entropy, h, w, b, y, upstream, reduction=reduction, chunk_size=7,
                               vocab_tile=64, label_smoothing=0.1)
        theirs = value_and_grads(reference_loss, *(t.float() for t in (h, w, b)), y, upstream, reduction=reduction,
                                 label_smoothing=0.1)
        assert ours[0].dtype == dtype and all(g.dtype == dtype for g in ours[1])
        torch.testing.assert_close(ours[0].float(), theirs[0], atol=2e-2, rtol=1e-2)
        for a, e in zip(ours[1], theirs[1]):  # native: the logits themselves are rounded to the input's dtype
            torch.testing.assert_close(a.float(), e, atol=2e-2 if native else 3e-3, rtol=3e-2)


class MatmulFlops(TorchDispatchMode):
    """Counts 2 M N K for every matrix product torch runs (mm, addmm and their out=/in-place forms)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm", "addmm_"):
            a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
            self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        return func(*args, **kwargs)


def test_flops_6ndv_for_mean_8_for_none_and_2_under_no_grad():
    n, d, v = 32, 16, 256
    h, w, _, y = problem(n=n, d=d, v=v, dtype=torch.float32, bias=False)
    h.requires_grad_()
    w.requires_grad_()
    unit = 2 * n * d * v
    for reduction, forward, backward in (("mean", 3, 0), ("sum", 3, 0), ("none", 1, 3)):
        with MatmulFlops() as count:
            loss = ct.linear_cross_entropy(h, w, y, reduction=reduction, chunk_size=8, vocab_tile=64)
        assert count.flops == forward * unit
        with MatmulFlops() as count:
            loss.sum().backward()
        assert count.flops == backward * unit
    with torch.no_grad(), MatmulFlops() as count:
        ct.linear_cross_entropy(h, w, y)
    assert count.flops == unit
    w.requires_grad_(False)  # only the hidden's gradient: h W^T and G W
    with MatmulFlops() as count:
        ct.linear_cross_entropy(h, w, y).backward()
    assert count.flops == 2 * unit


def test_backward_scales_the_precomputed_gradients_then_recomputes_through_a_retained_graph():
    h, w, b, y = problem()
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]
    loss = ct.linear_cross_entropy(*leaves[:2], y, leaves[2], label_smoothing=0.1, z_loss=1e-2, chunk_size=4)
    ref = reference_loss(*leaves[:2], y, leaves[2], label_smoothing=0.1, z_loss=1e-2)
    expected = torch.autograd.grad(ref, leaves)
    first = torch.autograd.grad(loss, leaves, torch.tensor(3.0, dtype=h.dtype), retain_graph=True)
    second = torch.autograd.grad(loss, leaves, torch.tensor(-0.5, dtype=h.dtype))
    for a, b_, e in zip(first, second, expected):
        assert_close(a, 3.0 * e)
        assert_close(b_, -0.5 * e)


def test_no_grad_gives_the_same_loss_and_stats():
    h, w, b, y = problem()
    options = dict(label_smoothing=0.1, z_loss=1e-2, softcap=3.0, return_stats=True)
    loss, stats = ct.linear_cross_entropy(h.requires_grad_(), w, y, b, **options)
    with torch.no_grad():
        loss2, stats2 = ct.linear_cross_entropy(h, w, y, b, **options)
    assert loss2.grad_fn is None and loss.grad_fn is not None
    assert_close(loss2, loss.detach())
    for key in stats:
        assert_close(stats2[key].double(), stats[key].double())


@pytest.mark.parametrize("weighted", [False, True])
def test_return_stats_per_token_and_reduced_with_the_loss_denominator(weighted):
    h, w, b, y = problem(seed=30)
    cw = torch.rand(37, generator=gen(8), dtype=torch.float64) + 0.5 if weighted else None
    z = head_logits(h, w, b, 3.0, 0.9)
    kept = y != -100
    lse = torch.where(kept, torch.logsumexp(z, 1), 0.0)
    correct = kept & (z.argmax(1) == y)
    y[0] = int(z[0].argmax())  # at least one correct token
    correct[0] = True
    options = dict(class_weight=cw, z_loss=1e-2, softcap=3.0, temperature=0.9, chunk_size=4, vocab_tile=8,
                   return_stats=True)
    loss, stats = ct.linear_cross_entropy(h, w, y, b, reduction="none", **options)
    assert_close(stats["lse"], lse)
    assert_close(stats["z_loss"], 1e-2 * lse**2)
    assert stats["correct"].dtype == torch.bool and torch.equal(stats["correct"], correct)
    row_weight = kept.double() if cw is None else torch.where(kept, cw[y.clamp(min=0)], 0.0)
    for reduction, scale in (("sum", 1.0), ("mean", 1 / row_weight.sum())):
        loss, stats = ct.linear_cross_entropy(h, w, y, b, reduction=reduction, **options)
        without, _ = ct.linear_cross_entropy(h, w, y, b, reduction=reduction, **{**options, "z_loss": 0.0})
        assert_close(stats["z_loss"], loss - without)  # the z-loss term, reported apart and included in the loss
        assert_close(stats["lse"], (row_weight * lse).sum() * scale)
        assert_close(stats["correct"], (row_weight * correct).sum() * scale)


def test_class_weight_that_requires_grad_takes_the_full_logits_path():
    h, w, b, y = problem()
    cw = (torch.rand(37, generator=gen(6), dtype=torch.float64) + 0.5).requires_grad_()
    loss = ct.linear_cross_entropy(h, w, y, b, class_weight=cw, label_smoothing=0.1)
    # F.cross_entropy has no gradient for its weight: the rule written out
    nll = -torch.log_softmax(F.linear(h, w, b), 1)
    kept = y != -100
    safe = y.clamp(min=0)
    rows = 0.9 * cw[safe] * nll.gather(1, safe[:, None]).squeeze(1) + 0.1 / 37 * (nll * cw).sum(1)
    ref = (rows * kept).sum() / (cw[safe] * kept).sum()
    assert_close(loss, ref)
    assert_close(torch.autograd.grad(loss, cw)[0], torch.autograd.grad(ref, cw)[0])


def test_masked_classes_with_weights_and_smoothing_follow_the_rules():
    h, w, b, y = problem()
    b[[4, 9]] = -math.inf
    y[y == 4] = 5
    y[y == 9] = 5
    cw = torch.rand(37, generator=gen(7), dtype=torch.float64) + 0.5
    cw[[4, 9]] = 0.0  # zero weight on the masked classes: finite, as F.cross_entropy would give without 0 * inf
    ours = value_and_grads(ct.linear_cross_entropy, h, w, b, y, torch.tensor(1.0, dtype=h.dtype), class_weight=cw,
                           label_smoothing=0.1, vocab_tile=8)
    b_ref = b.clone()
    b_ref[[4, 9]] = -1e4  # the same probabilities (exp(-1e4) = 0) with finite logits
    theirs = value_and_grads(reference_loss, h, w, b_ref, y, torch.tensor(1.0, dtype=h.dtype), class_weight=cw,
                             label_smoothing=0.1)
    assert_close(ours[0], theirs[0])
    for a, e in zip(ours[1][:2], theirs[1][:2]):
        assert_close(a, e)
    cw[4] = 1.0  # a masked class of positive weight under smoothing: +inf (the rules)
    assert ct.linear_cross_entropy(h, w, y, b, class_weight=cw, label_smoothing=0.1).item() == math.inf


def test_errors_name_the_parameter():
    h, w, y = torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="`softcap` must be None or a finite number > 0, got 0"):
        ct.linear_cross_entropy(h, w, y, softcap=0)
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0, got -1"):
        ct.linear_cross_entropy(h, w, y, temperature=-1)
    with pytest.raises(ValueError, match=r"`class_weight` must have shape \(5,\)"):
        ct.linear_cross_entropy(h, w, y, class_weight=torch.ones(4))
    with pytest.raises(ValueError, match="`class_weight` must be non-negative and finite"):
        ct.linear_cross_entropy(h, w, y, class_weight=torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="`z_loss` must be a finite non-negative number"):
        ct.linear_cross_entropy(h, w, y, z_loss=-1.0)
    with pytest.raises(TypeError, match="`return_stats` must be a bool"):
        ct.linear_cross_entropy(h, w, y, return_stats=1)
    with pytest.raises(TypeError, match="`return_entropy` must be a bool"):
        ct.linear_log_probs_and_entropy(h, w, y, return_entropy="yes")
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0"):
        ct.linear_log_probs_and_entropy(h, w, y, temperature=math.inf)


# --------------------------------------------------------------------------- log-probabilities and entropy


def reference_log_probs(h, w, y, b=None, *, temperature=1.0, softcap=None, ignore_index=-100):
    z = head_logits(h, w, b, softcap, temperature)
    log_p = torch.log_softmax(z, 1)
    kept = y != ignore_index
    lp = torch.where(kept, log_p.gather(1, y.clamp(min=0)[:, None]).squeeze(1), 0.0)
    return lp, torch.where(kept, -(log_p.exp() * log_p).sum(1), 0.0)


@pytest.mark.parametrize("softcap,temperature", [(None, 1.0), (None, 0.6), (3.0, 1.4)])
def test_log_probs_and_entropy_match_plain_torch_with_gradients(softcap, temperature):
    h, w, b, y = problem(seed=40)
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]
    lp, ent = ct.linear_log_probs_and_entropy(*leaves[:2], y, leaves[2], temperature=temperature, softcap=softcap,
                                              chunk_size=4, vocab_tile=8)
    rlp, rent = reference_log_probs(*leaves[:2], y, leaves[2], temperature=temperature, softcap=softcap)
    assert_close(lp, rlp)
    assert_close(ent, rent)
    g1, g2 = torch.randn(13, generator=gen(1), dtype=h.dtype), torch.randn(13, generator=gen(2), dtype=h.dtype)
    ours = torch.autograd.grad((lp * g1).sum() + (ent * g2).sum(), leaves, retain_graph=True)
    theirs = torch.autograd.grad((rlp * g1).sum() + (rent * g2).sum(), leaves, retain_graph=True)
    for a, e in zip(ours, theirs):
        assert_close(a, e)
    for a, e in zip(torch.autograd.grad(lp.sum(), leaves), torch.autograd.grad(rlp.sum(), leaves)):
        assert_close(a, e)  # the entropy unused: its gradient is not asked for


def test_log_probs_gradcheck_float64_and_ignored_tokens_give_zero_and_zero_gradient():
    h, w, b, y = problem(n=6, d=3, v=7)
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]
    assert torch.autograd.gradcheck(
        lambda *t: ct.linear_log_probs_and_entropy(t[0], t[1], y, t[2], temperature=0.8, softcap=2.0, chunk_size=4,
                                                   vocab_tile=3), leaves)
    lp, ent = ct.linear_log_probs_and_entropy(*leaves[:2], y, leaves[2])
    assert lp[1] == 0 and ent[1] == 0
    (grad,) = torch.autograd.grad((lp + ent).sum(), leaves[0])
    assert not grad[1].any()


def test_entropy_only_when_asked():
    h, w, b, y = problem()
    h.requires_grad_()
    lp, ent = ct.linear_log_probs_and_entropy(h, w, y, b, return_entropy=False)
    assert ent is None and lp.requires_grad
    assert_close(lp, reference_log_probs(h, w, y, b)[0])


def test_log_probs_bfloat16_come_back_in_float32():
    h, w, b, y = problem(n=20, d=16, v=100, dtype=torch.float32)
    lp, ent = ct.linear_log_probs_and_entropy(h.bfloat16(), (w / 4).bfloat16(), y, b.bfloat16())
    rlp, rent = reference_log_probs(h.bfloat16().float(), (w / 4).bfloat16().float(), y, b.bfloat16().float())
    assert lp.dtype == ent.dtype == torch.float32
    assert_close(lp, rlp, torch.float32, scale=10)
    assert_close(ent, rent, torch.float32, scale=10)


@PROPERTY
@given(scale=st.sampled_from([1.0, 1e3, 1e10, 1e30]), offset=st.sampled_from([0.0, 1e6, -1e30]),
       seed=st.integers(0, 2**16), temperature=st.sampled_from([1.0, 0.3]), tile=st.integers(1, 9))
def test_log_probs_are_never_positive_and_entropy_never_negative(scale, offset, seed, temperature, tile):
    """Huge logits (1e30 in float32), large common offsets, ties, many tiles: log p <= 0 and H >= 0 exactly."""
    g = gen(seed)
    n, v = 6, 9
    h = torch.randn(n, 2, generator=g) * scale
    h[0] = h[1]  # a repeated row
    w = torch.randint(-2, 3, (v, 2), generator=g).float()  # equal columns: ties in the logits
    b = torch.full((v,), offset)
    y = torch.randint(0, v, (n,), generator=g)
    lp, ent = ct.linear_log_probs_and_entropy(h, w, y, b, temperature=temperature, chunk_size=4, vocab_tile=tile)
    assert bool((lp <= 0).all()) and bool((ent >= 0).all()), (lp, ent)
    assert bool(lp.isfinite().all() | (lp == -math.inf).all()) and bool(ent.isfinite().all())


def test_log_probs_gradients_with_a_masked_class_and_large_entropy_weights_are_finite():
    # -(g_lp + g_H (d + H)) p with d = -inf where p = 0: the term is 0, never -inf * 0 = NaN, whatever g_H
    h, w, b, y = problem(n=6, d=3, v=7)
    b = b.clone()
    b[2] = -math.inf
    y = torch.where(y == 2, 0, y)
    leaves = [t.clone().requires_grad_() for t in (h, w)]
    lp, ent = ct.linear_log_probs_and_entropy(*leaves, y, b)
    up = torch.linspace(-3.0, 3.0, 6, dtype=torch.float64)
    grads = torch.autograd.grad((lp, ent), leaves, (up, 2.0 * up))
    ref_lp, ref_h = reference_log_probs(*leaves, y, b)
    ref_h = torch.where(y != -100, -(torch.log_softmax(F.linear(leaves[0], leaves[1], b), 1).exp()
                                     * torch.log_softmax(F.linear(leaves[0], leaves[1], b), 1).nan_to_num(neginf=0.0)).sum(1), 0.0)
    ref = torch.autograd.grad((ref_lp, ref_h), leaves, (up, 2.0 * up))
    for a, c in zip(grads, ref):
        assert bool(torch.isfinite(a).all())
        assert_close(a, c)
