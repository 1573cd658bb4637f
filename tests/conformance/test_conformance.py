"""The conformance table: every case of `cases.CASES` through every implementation of `implementations.IMPLEMENTATIONS`.

Values and gradients are compared with the extended-precision reference of
the rules (`reference.py`), which is itself checked against
``torch.nn.functional.cross_entropy`` in float64 (the rules) and against
mpmath (the shifted-frame numerics).  Known defects are listed once, in
KNOWN_FAILURES, as strict expected failures: remove a pair when its fix lands.
A hypothesis property at the end runs random cases through every implementation.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

import reference  # noqa: E402  (tests/conformance is on sys.path)
from cases import CASES, Case  # noqa: E402
from implementations import IMPLEMENTATIONS  # noqa: E402

# "Exact": relative error at most RTOL[result dtype] against the reference.  float16/bfloat16
# results are float32 computations rounded once to the result dtype (half an eps) plus slack.
RTOL = {
    np.dtype(np.float64): 1e-12,
    np.dtype(np.float32): 1e-6,
    np.dtype(np.float16): float(np.finfo(np.float16).eps),
    np.dtype(ml_dtypes.bfloat16): float(ml_dtypes.finfo(ml_dtypes.bfloat16).eps),
}

# --------------------------------------------------------------------------- known failures

# What fails today, grouped by defect: {defect: {case id: "implementation names"}}.  Each pair is a
# strict expected failure (an unexpected pass fails the run): remove it when its fix lands.
# Not a table entry any more (the kernels sum a confident row's, and a z_loss row's with |lse| < 1, S - 1 in float64
# without the maxima); what remains is for the property test below: the float32 exponentials themselves err by
# ~1e-7, so a z_loss zeta lse^2 with |lse| well below 0.1 still loses digits (2e-7 (S - 1) / S / |lse| relative).
LOG1P = ("lse = m + log(sum_c e^(x_c - m)) errs by about one ulp of the sum (float32: 6e-8), so a loss near 0 "
         "loses its digits: a confident row (log1p of the non-maximal mass keeps them: the reference and the kernels "
         "do), or a z_loss zeta lse^2 with lse near 0 (the kernels' float64 sum leaves the float32 exponentials' error)")

KNOWN_FAILURES: dict[str, dict[str, str]] = {}  # none today: every pair of the table passes

_REASONS = {(case, impl): defect for defect, failing in KNOWN_FAILURES.items()
            for case, impls in failing.items() for impl in impls.split()}
assert len(_REASONS) == sum(len(impls.split()) for failing in KNOWN_FAILURES.values() for impls in failing.values()), \
    "a (case, implementation) pair is listed under two defects"


# --------------------------------------------------------------------------- comparison


@functools.cache
def expected(case_id: str) -> reference.Expected:
    case = next(c for c in CASES if c.id == case_id)
    return reference.softmax_cross_entropy(case.logits, case.labels, **case.options)


def _finfo(dtype):
    return ml_dtypes.finfo(dtype) if dtype == ml_dtypes.bfloat16 else np.finfo(dtype)


def _wide(a):
    a = np.asarray(a)
    return (a.astype(np.float32) if a.dtype == ml_dtypes.bfloat16 else a).astype(reference.WIDE)


def assert_values_close(values, ref, what: str, dtype=None) -> None:
    """|value - ref| <= rtol |ref|, rtol of `dtype` (default: the values'), below whose normal range only absolutely;
    a reference beyond the range of the values' own dtype must come back as that infinity."""
    dtype = np.asarray(values).dtype if dtype is None else np.dtype(dtype)
    rtol, info = RTOL[dtype], _finfo(dtype)
    got = _wide(values)
    with np.errstate(invalid="ignore"):  # inf - inf, 0 * inf: judged below
        close = np.abs(got - ref) <= rtol * np.abs(ref) + float(info.smallest_normal)
        ok = np.where(np.abs(ref) > reference.WIDE(_finfo(np.asarray(values).dtype).max),
                      got == np.sign(ref) * np.inf, close)
    assert ok.all(), f"{what} {np.asarray(got, np.float64)} != reference {np.asarray(ref, np.float64)} (rtol {rtol:g})"


def assert_rows_match_reference(case, nll, entropy):
    """The loss-only mode: per-row NLL on the kept rows and entropy on the rows with a finite logit."""
    assert nll.shape == entropy.shape == case.logits.shape[:1], f"row shapes {nll.shape}, {entropy.shape}"
    options = dict(case.options, reduction="none")
    rows = reference.softmax_cross_entropy(case.logits, case.labels, **options).loss
    kept = np.ones(len(nll), bool) if case.ignore_index is None else case.labels != case.ignore_index
    live = np.isfinite(case.logits.astype(np.float64)).any(axis=1)
    # The kernel's rows are float64 for any input; they are judged by the input dtype's precision.
    assert_values_close(nll[kept], rows[kept], "nll", case.logits.dtype)
    assert_values_close(entropy[live], reference.entropy(case.logits[live]), "entropy", case.logits.dtype)


def assert_matches_reference(case, loss, grad, ref=None, *, check_loss=True, check_grad=True):
    """Loss: |loss - ref| <= rtol |ref| (a reference beyond the dtype's range must come back as that infinity).

    Gradient: entry ij may err by rtol times the largest term of its row, where the terms of
    ``s ((sum_c Q_ic + 2 zeta l_i) p_ij - Q_ij)`` are ``s |P_i| p_ij`` and ``s |Q_ij|``: a ~0
    gradient that is the difference of two O(1) terms is judged on their scale.  Entries whose
    terms are exactly 0 (ignored rows, masked classes without smoothing, the empty mean) must be 0.
    Below the dtype's normal range, relative precision is not asked for.
    """
    ref = expected(case.id) if ref is None else ref
    dtype = np.asarray(loss).dtype
    assert grad.dtype == dtype, f"gradient dtype {grad.dtype} differs from the loss dtype {dtype}"
    assert np.shape(loss) == ref.loss.shape, f"loss shape {np.shape(loss)}, expected {ref.loss.shape}"
    assert grad.shape == case.logits.shape, f"gradient shape {grad.shape}, expected {case.logits.shape}"
    rtol, info = RTOL[dtype], _finfo(dtype)

    if check_loss:
        assert_values_close(loss, ref.loss, "loss")

    if not check_grad:
        return
    got = _wide(grad)
    row_scale = ref.grad_terms.max(axis=1, keepdims=True, initial=0)
    tol = np.where(ref.grad_terms > 0, rtol * row_scale + float(info.smallest_normal), 0)
    with np.errstate(invalid="ignore"):
        err = np.abs(got - ref.grad)
    bad = ~(err <= tol)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} gradient entries off; first [{i}, {j}]: {float(got[i, j])!r} vs reference "
            f"{float(ref.grad[i, j])!r} (allowed {float(tol[i, j]):.3g}, row scale {float(row_scale[i, 0]):.3g})")


# --------------------------------------------------------------------------- the table


def _not_taken(case, impl) -> str | None:
    """Why a loss-only implementation does not run this case: options it has no parameter for."""
    missing = case.features & impl.not_taken
    return f"not applicable: {impl.name} takes no {', '.join(sorted(missing))}" if missing else None


def _pairs(select, skip_not_taken=True):
    params = []
    for case, impl in itertools.product(CASES, IMPLEMENTATIONS):
        if select(case, impl):
            reason = _REASONS.get((case.id, impl.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            if skip_not_taken and _not_taken(case, impl):
                marks.append(pytest.mark.skip(reason=_not_taken(case, impl)))
            params.append(pytest.param(case, impl, id=f"{case.id}|{impl.name}", marks=marks))
    return params


def _supported(case, impl):
    return not (case.features & impl.unsupported)


def test_known_failures_name_real_pairs():
    names = {(case.id, impl.name) for case, impl in itertools.product(CASES, IMPLEMENTATIONS)}
    assert set(_REASONS) <= names, sorted(set(_REASONS) - names)


@pytest.mark.parametrize("case, impl", _pairs(lambda case, impl: _supported(case, impl) and not case.raises))
def test_matches_reference(case, impl):
    if "float64" in case.features and not reference.IS_WIDER_THAN_FLOAT64:
        pytest.skip("np.longdouble is float64 here: no higher-precision reference for float64")
    if impl.loss_only:
        assert_rows_match_reference(case, *impl.run(case))
        return
    loss, grad = impl.run(case)
    assert_matches_reference(case, loss, grad)


@pytest.mark.parametrize("case, impl", _pairs(lambda case, impl: _supported(case, impl) and case.raises))
def test_rejects_invalid_input(case, impl):
    with pytest.raises(case.raises):
        impl.run(case)


@pytest.mark.parametrize("case, impl", _pairs(lambda case, impl: not _supported(case, impl), skip_not_taken=False))
def test_refuses_unsupported_option(case, impl):
    with pytest.raises((ValueError, TypeError)):
        impl.run(case)


# --------------------------------------------------------------------------- the reference itself


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_reference_raises_exactly_where_the_case_says(case):
    if case.raises:
        with pytest.raises(case.raises):
            expected.__wrapped__(case.id)
    else:
        expected(case.id)


_TORCH_OPTIONS = [
    options for options in itertools.product(["int", "prob"], ["none", "positive", "zeros"], [0.0, 0.1, 1.0],
                                             [False, True], [0.0, 1e-3], ["none", "sum", "mean"])
    if not (options[0] == "prob" and options[3])  # probability targets have no ignored rows
]


@pytest.mark.parametrize("targets, class_weight, label_smoothing, ignore_some, z_loss, reduction", _TORCH_OPTIONS)
def test_reference_matches_torch_float64(targets, class_weight, label_smoothing, ignore_some, z_loss, reduction):
    """PyTorch's cross_entropy in float64, plus z_loss written with torch ops (torch has none)."""
    F = torch.nn.functional
    rng = np.random.default_rng(zlib.crc32(repr((targets, class_weight, label_smoothing, ignore_some)).encode()))
    n, c = 6, 5
    x = rng.normal(0, 2, (n, c))
    if targets == "prob":
        y = rng.dirichlet(np.ones(c), n)
        y[0] = [1.0, 0, 0, 0, 0]
    else:
        y = rng.integers(0, c, n)
        y[:2] = [1, 3]  # with the "zeros" weights: a target of weight 0 and one of positive weight, both kept
        if ignore_some:
            y[2::3] = -100
    w = None if class_weight == "none" else rng.uniform(0.5, 2, c)
    if class_weight == "zeros":
        w[[1, 4]] = 0.0
    ref = reference.softmax_cross_entropy(x, y, class_weight=w, ignore_index=-100 if ignore_some else None,
                                          label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction)

    xt, yt = torch.tensor(x, requires_grad=True), torch.tensor(y)
    wt = None if w is None else torch.tensor(w)
    loss = F.cross_entropy(xt, yt, weight=wt, label_smoothing=label_smoothing, reduction=reduction)
    kept = torch.ones(n, dtype=torch.float64) if targets == "prob" else (yt != -100).double()
    z_rows = z_loss * torch.logsumexp(xt, 1) ** 2 * kept
    if targets == "prob" or w is None:
        denominator = kept.sum()
    else:
        denominator = (wt[yt.clamp(min=0)] * kept).sum()
    loss = loss + {"none": z_rows, "sum": z_rows.sum(), "mean": z_rows.sum() / denominator}[reduction]
    loss.sum().backward()
    np.testing.assert_allclose(np.asarray(ref.loss, np.float64), loss.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.asarray(ref.grad, np.float64), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", [case for case in CASES if not case.raises], ids=lambda case: case.id)
def test_reference_log_softmax_matches_mpmath(case):
    """The shifted-frame lse - x and softmax agree with 40-digit mpmath on exact (rational) differences."""
    mpmath = pytest.importorskip("mpmath")
    x = case.logits.astype(np.float64)
    x = x[np.isfinite(x).any(axis=1)][:, :40]  # rows with a class left; the first 40 classes suffice
    _, neg_log_p, p = reference.log_softmax(x)

    def wide(v):  # via 30 digits: np.longdouble(mpf) would round through float64
        return reference.WIDE(mpmath.nstr(v, 30, min_fixed=-mpmath.inf, max_fixed=mpmath.inf))

    with mpmath.workdps(40):
        for i, row in enumerate(x):
            top = Fraction(row.max())
            shifted = [mpmath.mpf((Fraction(v) - top).numerator) / (Fraction(v) - top).denominator
                       if v > -np.inf else -mpmath.inf for v in row]
            log_sum = mpmath.log(mpmath.fsum(mpmath.exp(d) for d in shifted if d > -300))  # the rest is < 1e-130
            for j, d in enumerate(shifted):
                exact = log_sum - d  # lse - x_j, +inf where masked
                if exact > 10000:  # masked, or a probability below longdouble's range
                    assert p[i, j] <= reference.WIDE("1e-4000") and (neg_log_p[i, j] == np.inf) == (d == -mpmath.inf)
                    continue
                assert abs(neg_log_p[i, j] - wide(exact)) <= 1e-17 * abs(wide(exact)), (i, j)
                assert abs(p[i, j] - wide(mpmath.exp(-exact))) <= 1e-17 * wide(mpmath.exp(-exact)), (i, j)


# --------------------------------------------------------------------------- property test


@st.composite
def random_cases(draw):
    """Moderate random logits (10% masked), labels and options; float32 or float64."""
    n, c = draw(st.integers(0, 5)), draw(st.integers(1, 40))
    logits = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(-8, 8, width=32)))
    logits[draw(hnp.arrays(np.int8, (n, c), elements=st.integers(0, 9))) == 0] = -np.inf
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    ignore_index = None
    if draw(st.booleans()):  # probability targets
        counts = draw(hnp.arrays(np.int64, (n, c), elements=st.integers(0, 4)))
        counts[:, 0] += counts.sum(axis=1) == 0
        labels = (counts / counts.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
        if draw(st.booleans()):
            ignore_index = -100
            labels[draw(hnp.arrays(bool, (n,)))] = ignore_index
    weights = st.sampled_from([0.0, 0.5, 1.0, 2.5])
    return Case("random", logits.astype(dtype), labels, ignore_index=ignore_index,
                class_weight=draw(st.none() | hnp.arrays(np.float64, (c,), elements=weights)),
                label_smoothing=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
                z_loss=draw(st.sampled_from([0.0, 1e-3, 0.1])), reduction=draw(st.sampled_from(["none", "sum", "mean"])))


def skip_reason(case, impl, ref) -> str | None:
    """Why this example is not judged: a KNOWN_FAILURES defect it runs into, or nothing to refuse."""
    x = case.logits.astype(np.float64)
    if impl.name.startswith("torch.linear") and x.shape[1] == 1 and "masked" in case.features:
        return "one class: -inf passes the identity product unchanged, so there is no NaN for it to refuse"
    return None


def _near_zero_loss(case) -> bool:
    """LOG1P: a row with 0 < lse - max(x) (or, with z_loss, |lse|) below what the dtype's sum keeps."""
    x = case.logits.astype(np.float64)
    x = x[np.isfinite(x).any(axis=1)]
    if not len(x):
        return False
    lse, _, _ = reference.log_softmax(x)
    limit = 3 * np.finfo(case.logits.dtype).eps / RTOL[case.logits.dtype]
    gap = lse - x.max(axis=1)
    return bool(((gap > 0) & (gap < limit)).any() or (case.z_loss and (np.abs(lse) < limit).any()))


# The gate profile leaves hypothesis's default of 100 examples: 12 per implementation keep the run short;
# the explore profile's own number (2000) is used as it is.
PROPERTY = settings(max_examples=12 if settings.default.max_examples == 100 else settings.default.max_examples)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda impl: impl.name)
@PROPERTY
@given(case=random_cases())
def test_random_cases_match_reference(impl, case):
    try:
        ref = reference.softmax_cross_entropy(case.logits, case.labels, **case.options)
    except ValueError:
        ref = None
    reason = skip_reason(case, impl, ref) or (_supported(case, impl) and _not_taken(case, impl))
    if reason:
        note(f"skipped: {reason}")
        return
    if not _supported(case, impl):
        with pytest.raises((ValueError, TypeError)):
            impl.run(case)
    elif ref is None:
        with pytest.raises(ValueError):
            impl.run(case)
    elif impl.loss_only:
        assert_rows_match_reference(case, *impl.run(case))
    else:
        loss, grad = impl.run(case)
        # LOG1P: a loss near 0 is not exact yet, nor is a z_loss gradient 2 zeta lse p there.
        near_zero = _near_zero_loss(case)
        assert_matches_reference(case, loss, grad, ref, check_loss=not near_zero,
                                 check_grad=not (near_zero and case.z_loss))
