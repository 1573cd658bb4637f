"""crossent.metrics: every metric against its reference, exact merges, JSON states, validation."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import log_softmax, softmax

from crossent.metrics import Accumulator, evaluate
from crossent.metrics._exact import ExactSum, grouped_sums


def _data(n=300, c=6, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c)) * scale
    labels = rng.integers(0, c, n)
    return logits, labels


def _numpy_ece(probs, labels, bins=15, weight=None):
    """A plain reference: top-label confidence, equal-width bins closed on the right, weighted."""
    weight = np.ones(len(labels)) if weight is None else weight
    conf = probs.max(axis=1)
    hit = (probs.argmax(axis=1) == labels).astype(float)
    ece, mce = 0.0, 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if weight[inside].sum() > 0:
            gap = abs(np.sum(weight[inside] * (hit[inside] - conf[inside])))
            ece += gap
            mce = max(mce, gap / weight[inside].sum())
    return ece / weight.sum(), mce


def _same(a, b) -> bool:
    """Bitwise-equal results (NaN equal to NaN, arrays element by element)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not all(np.array_equal(x[k], y[k], equal_nan=True) for k in x):
                return False
        elif not (x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))):
            return False
        elif isinstance(x, float) and x == y and math.copysign(1, x) != math.copysign(1, y):
            return False
    return True


try:  # the lab extra: scikit-learn, and the lab's ECE (which needs matplotlib's package to import)
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, top_k_accuracy_score

    from crossent.lab.models import expected_calibration_error
except ImportError:  # pragma: no cover - the references are a dev dependency
    log_loss = None


@pytest.mark.skipif(log_loss is None, reason="scikit-learn (the lab extra) is not installed")
class TestAgainstReferences:
    def test_logits_match_sklearn_and_numpy(self):
        logits, labels = _data()
        probs = softmax(logits, axis=1)
        r = evaluate(logits=logits, labels=labels, top_k=3)
        assert r["nll"] == pytest.approx(log_loss(labels, probs, labels=range(6)), rel=1e-12)
        assert r["perplexity"] == pytest.approx(math.exp(r["nll"]), rel=1e-15)
        assert r["accuracy"] == accuracy_score(labels, probs.argmax(axis=1))
        assert r["top_k_accuracy"] == pytest.approx(top_k_accuracy_score(labels, probs, k=3, labels=range(6)))
        assert r["brier"] == pytest.approx(brier_score_loss(labels, probs, labels=range(6)), rel=1e-12)
        entropy = -np.sum(probs * log_softmax(logits, axis=1), axis=1).mean()
        assert r["entropy"] == pytest.approx(entropy, rel=1e-12)
        ece, mce = _numpy_ece(probs, labels)
        assert r["ece"] == pytest.approx(ece, rel=1e-12)
        assert r["mce"] == pytest.approx(mce, rel=1e-12)
        lab_ece, table = expected_calibration_error(probs, labels, bins=15)
        assert r["ece"] == pytest.approx(lab_ece, rel=1e-12)
        np.testing.assert_array_equal(r["bins"]["count"], table["count"])
        np.testing.assert_allclose(r["bins"]["confidence"], table["confidence"], rtol=1e-12)
        assert r["count"] == 300 and r["ignored"] == 0 and r["total_weight"] == 300.0

    def test_probs_with_sample_weight_match_sklearn(self):
        logits, labels = _data(seed=1)
        probs = softmax(logits, axis=1)
        w = np.random.default_rng(2).random(len(labels)) * 3
        r = evaluate(probs=probs, labels=labels, sample_weight=w, top_k=2, bins=10)
        assert r["nll"] == pytest.approx(log_loss(labels, probs, sample_weight=w, labels=range(6)), rel=1e-12)
        assert r["brier"] == pytest.approx(brier_score_loss(labels, probs, sample_weight=w, labels=range(6)), rel=1e-12)
        assert r["top_k_accuracy"] == pytest.approx(top_k_accuracy_score(labels, probs, k=2, sample_weight=w,
                                                                         labels=range(6)), rel=1e-12)
        assert r["accuracy"] == pytest.approx(accuracy_score(labels, probs.argmax(1), sample_weight=w), rel=1e-12)
        ece, mce = _numpy_ece(probs, labels, bins=10, weight=w)
        assert r["ece"] == pytest.approx(ece, rel=1e-12) and r["mce"] == pytest.approx(mce, rel=1e-12)
        assert r["total_weight"] == pytest.approx(w.sum(), rel=1e-15)

    def test_binary_logits_are_two_class_logits(self):
        rng = np.random.default_rng(3)
        x = rng.standard_normal(200) * 3
        y = rng.integers(0, 2, 200)
        one = evaluate(logits=x, labels=y)
        two = evaluate(logits=np.stack([np.zeros_like(x), x], axis=1), labels=y)
        assert _same(one, two)
        p = 1 / (1 + np.exp(-x))
        assert one["nll"] == pytest.approx(log_loss(y, p), rel=1e-12)
        # the Brier sums over both classes: twice scikit-learn's binary (p - y)^2
        assert one["brier"] == pytest.approx(2 * brier_score_loss(y, p), rel=1e-12)

    def test_binary_probabilities(self):
        p = np.array([0.9, 0.2, 0.5, 1e-20, 1.0])
        y = np.array([1, 0, 1, 0, 1])
        r = evaluate(probs=p, labels=y, bins=5)
        expected = -np.mean([np.log(0.9), np.log(0.8), np.log(0.5), np.log1p(-1e-20), 0.0])
        assert r["nll"] == pytest.approx(expected, rel=1e-15)
        assert r["accuracy"] == 0.8  # p = 1/2 predicts class 0, the first maximum
        two = evaluate(probs=np.stack([1 - p, p], axis=1), labels=y, bins=5)
        assert r["brier"] == pytest.approx(two["brier"], rel=1e-15)

    def test_zero_probability_label_costs_inf_without_clipping(self):
        r = evaluate(probs=np.array([[1.0, 0.0], [0.5, 0.5]]), labels=np.array([1, 0]))
        assert r["nll"] == math.inf and r["perplexity"] == math.inf
        masked = evaluate(logits=np.array([[0.0, -np.inf]]), labels=np.array([1]))
        assert masked["nll"] == math.inf and masked["brier"] == 2.0

    def test_ignore_index(self):
        logits, labels = _data(n=50)
        labels[::5] = -100
        r = evaluate(logits=logits, labels=labels, ignore_index=-100)
        keep = labels != -100
        ref = evaluate(logits=logits[keep], labels=labels[keep])
        assert r["count"] == keep.sum() and r["ignored"] == 10
        assert r["nll"] == ref["nll"] and r["ece"] == ref["ece"]

    def test_top_k_counts_strictly_higher_classes(self):
        # the label ties the maximum: not the (first) prediction, but within the top 1
        r = evaluate(logits=np.array([[1.0, 1.0, 0.0]]), labels=np.array([1]), top_k=1)
        assert r["accuracy"] == 0.0 and r["top_k_accuracy"] == 1.0

    def test_default_top_k_is_lowered_to_the_number_of_classes(self):
        r = evaluate(logits=np.zeros((2, 3)), labels=np.array([0, 2]))
        assert r["top_k_accuracy"] == 1.0

    def test_nll_in_base_units(self):
        r = evaluate(logits=np.zeros((4, 8)), labels=np.arange(4), base=2)
        assert r["nll_base"] == pytest.approx(3.0, rel=1e-15)
        assert "nll_base" not in evaluate(logits=np.zeros((4, 8)), labels=np.arange(4))

    def test_no_rows_gives_nan_means(self):
        r = Accumulator().result()
        assert math.isnan(r["nll"]) and math.isnan(r["ece"]) and r["count"] == 0 and r["total_weight"] == 0.0


class TestExactMerge:
    @given(st.data())
    def test_any_partition_and_merge_order_gives_the_same_bits(self, data):
        seed = data.draw(st.integers(0, 2**32 - 1))
        n = data.draw(st.integers(1, 60))
        rng = np.random.default_rng(seed)
        kind = data.draw(st.sampled_from(["logits", "probs", "binary"]))
        logits = (rng.standard_normal((n, 4)) * rng.choice([0.1, 3.0, 40.0])).astype(
            data.draw(st.sampled_from([np.float32, np.float64])))
        if kind == "probs":
            logits = softmax(logits.astype(np.float64), axis=1)
        labels = rng.integers(0, 4, n)
        if kind == "binary":
            logits, labels = logits[:, 0], labels % 2
        labels[rng.random(n) < 0.2] = -1
        weight = rng.random(n) * 10 if data.draw(st.booleans()) else None
        options = dict(bins=7, top_k=2, ignore_index=-1)
        whole = Accumulator(**options)
        name = "probs" if kind == "probs" else "logits"
        whole.update(labels=labels, sample_weight=weight, **{name: logits})
        cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
        bounds = [0, *cuts, n]
        parts = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            part = Accumulator(**options)
            part.update(labels=labels[lo:hi], sample_weight=None if weight is None else weight[lo:hi],
                        **{name: logits[lo:hi]})
            parts.append(Accumulator.from_dict(json.loads(json.dumps(part.to_dict()))))
        order = data.draw(st.permutations(range(len(parts))))
        while len(order) > 1:  # merge random neighbours: a random tree
            i = data.draw(st.integers(0, len(order) - 2))
            parts[order[i]].merge(parts[order[i + 1]])
            order = order[: i + 1] + order[i + 2 :]
        assert _same(parts[order[0]].result(), whole.result())
        assert parts[order[0]].to_dict() == whole.to_dict()

    def test_unit_weights_give_the_state_of_no_weights(self):
        logits, labels = _data(n=80)
        a, b = Accumulator(), Accumulator()
        a.update(logits=logits, labels=labels)
        b.update(logits=logits[:30], labels=labels[:30], sample_weight=np.ones(30))
        b.update(logits=logits[30:], labels=labels[30:])
        assert a.to_dict() == b.to_dict()

    def test_sums_are_exact_where_float_addition_is_not(self):
        values = np.array([1e16, 1.0, -1e16, 3.0, 5e-324])
        assert ExactSum.of(values).value() == math.fsum(values) == 4.0
        a, b = grouped_sums(values, np.array([0, 1, 0, 1, 1]), 2)
        assert (a + b).value() == 4.0

    def test_numba_and_numpy_buckets_give_the_same_integers(self, monkeypatch):
        import crossent.metrics._exact as exact

        rng = np.random.default_rng(7)
        values = rng.standard_normal(5000) * 10.0 ** rng.integers(-300, 300, 5000)
        values[:3] = [5e-324, -2.2e-308, 1.7e308]
        groups = rng.integers(0, 9, 5000)
        compiled = grouped_sums(values, groups, 9)
        monkeypatch.setattr(exact, "_compiled_bucket_sums", lambda: None)
        assert grouped_sums(values, groups, 9) == compiled
        assert [s.value() for s in compiled] == [math.fsum(values[groups == g]) for g in range(9)]

    def test_state_size_does_not_grow_with_rows(self):
        acc = Accumulator()
        logits, labels = _data(n=2000)
        acc.update(logits=logits[:10], labels=labels[:10])
        small = len(json.dumps(acc.to_dict()))
        for i in range(0, 2000, 500):
            acc.update(logits=logits[i : i + 500], labels=labels[i : i + 500])
        assert len(json.dumps(acc.to_dict())) < 3 * small


class TestInputs:
    def test_float16_and_bfloat16_equal_their_float32_values(self):
        ml_dtypes = pytest.importorskip("ml_dtypes")
        logits, labels = _data(n=100)
        for dtype in (np.float16, ml_dtypes.bfloat16):
            low = logits.astype(dtype)
            assert _same(evaluate(logits=low, labels=labels), evaluate(logits=low.astype(np.float32), labels=labels))

    def test_low_precision_probabilities_get_their_dtypes_tolerance(self):
        ml_dtypes = pytest.importorskip("ml_dtypes")
        probs = softmax(np.random.default_rng(4).standard_normal((64, 50)), axis=1)
        for dtype in (np.float16, ml_dtypes.bfloat16):
            low = probs.astype(dtype)  # rows no longer sum to 1 within float32's tolerance
            r = evaluate(probs=low, labels=np.zeros(64, dtype=int))
            assert r["count"] == 64

    def test_torch_tensors_without_a_copy(self):
        torch = pytest.importorskip("torch")
        logits, labels = _data(n=100)
        x = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
        ref = evaluate(logits=logits.astype(np.float32), labels=labels)
        assert _same(evaluate(logits=x, labels=torch.tensor(labels)), ref)
        bf = x.detach().to(torch.bfloat16)
        assert _same(evaluate(logits=bf, labels=torch.tensor(labels)),
                     evaluate(logits=bf.float().numpy(), labels=labels))

    def test_torch_is_not_imported_for_numpy_input(self):
        code = ("import sys, numpy as np; from crossent.metrics import evaluate; "
                "evaluate(logits=np.zeros((2, 3), np.float32), labels=np.array([0, 1])); "
                "assert 'torch' not in sys.modules, 'torch was imported'")
        subprocess.run([sys.executable, "-c", code], check=True)

    def test_read_only_memmap(self, tmp_path):
        logits, labels = _data(n=64)
        path = tmp_path / "x.npy"
        np.save(path, logits.astype(np.float32))
        mm = np.load(path, mmap_mode="r")
        assert _same(evaluate(logits=mm, labels=labels), evaluate(logits=logits.astype(np.float32), labels=labels))

    def test_non_contiguous_logits(self):
        logits, labels = _data(n=40, c=8)
        assert _same(evaluate(logits=logits[:, ::2], labels=labels % 4),
                     evaluate(logits=np.ascontiguousarray(logits[:, ::2]), labels=labels % 4))


class TestValidation:
    @pytest.mark.parametrize("kwargs, error, match", [
        (dict(logits=np.zeros((2, 3)), labels=np.array([0, 3])), ValueError, r"`labels` must lie in \[0, 3\), got 3 at index 1"),
        (dict(logits=np.zeros((2, 3)), labels=np.array([0])), ValueError, r"`labels` must have shape \(2,\)"),
        (dict(logits=np.zeros((2, 3)), labels=np.array([0.0, 1.0])), TypeError, "integer class indices"),
        (dict(logits=np.array([[0.0, np.nan]]), labels=np.array([0])), ValueError, r"NaN \(first at index \(0, 1\)\)"),
        (dict(logits=np.array([[0.0, 1.0], [0.0, np.inf]]), labels=np.array([0, 0])), ValueError, r"\+inf .*\(1, 1\)"),
        (dict(logits=np.full((1, 2), -np.inf), labels=np.array([0])), ValueError, "-inf for every class in row 0"),
        (dict(probs=np.array([[0.5, 0.6]]), labels=np.array([0])), ValueError, "row 0 sums to 1.1"),
        (dict(probs=np.array([[1.5, -0.5]]), labels=np.array([0])), ValueError, r"lie in \[0, 1\], got 1.5"),
        (dict(probs=np.array([1.5]), labels=np.array([0])), ValueError, r"lie in \[0, 1\]"),
        (dict(logits=np.zeros((2, 3)), probs=np.zeros((2, 3)), labels=np.array([0, 1])), ValueError, "exactly one"),
        (dict(labels=np.array([0, 1])), ValueError, "exactly one"),
        (dict(logits=np.zeros((2, 3, 4)), labels=np.array([0, 1])), ValueError, "must be \\(N, C\\)"),
        (dict(logits=np.zeros((2, 3), dtype=np.int64), labels=np.array([0, 1])), TypeError, "floating array"),
        (dict(logits=np.zeros((2, 3)), labels=np.array([0, 1]), sample_weight=np.array([1.0, -1.0])), ValueError,
         "non-negative, got -1.0 at index 1"),
        (dict(logits=np.zeros((2, 3)), labels=np.array([0, 1]), top_k=4), ValueError, r"`top_k`=4 is larger"),
        (dict(logits=np.zeros((2, 3)), labels=np.array([0, 1]), bins=0), ValueError, "`bins` must be a positive"),
        (dict(logits=np.zeros((2, 3)), labels=np.array([0, 1]), base=1), ValueError, "`base`"),
    ])
    def test_bad_input_names_the_parameter(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            evaluate(**kwargs)

    def test_error_in_a_later_batch_names_the_callers_row_and_keeps_the_state(self, monkeypatch):
        import crossent.metrics.accumulator as module

        monkeypatch.setattr(module, "_BATCH_BYTES", 3 * 8 * 4)  # 4 rows per batch
        acc = Accumulator()
        acc.update(logits=np.zeros((2, 3)), labels=np.array([0, 1]))
        before = acc.to_dict()
        logits = np.zeros((10, 3))
        logits[9, 2] = np.nan
        with pytest.raises(ValueError, match=r"\(9, 2\)"):
            acc.update(logits=logits, labels=np.zeros(10, dtype=int))
        assert acc.to_dict() == before

    def test_merge_refuses_different_options(self):
        with pytest.raises(ValueError, match="bins"):
            Accumulator(bins=10).merge(Accumulator(bins=15))
        with pytest.raises(ValueError, match="num_classes=3"):
            acc = Accumulator(3)
            acc.update(logits=np.zeros((1, 4)), labels=np.array([0]))

    def test_from_dict_refuses_malformed_states(self):
        with pytest.raises(ValueError, match="not an accumulator state"):
            Accumulator.from_dict({"format": "x"})
        state = Accumulator().to_dict()
        state["sums"]["nll"] = "zz"
        with pytest.raises(ValueError, match="malformed"):
            Accumulator.from_dict(state)


class TestTorchmetrics:
    def test_perplexity_and_calibration_error(self):
        torch = pytest.importorskip("torch")
        tm = pytest.importorskip("torchmetrics")
        logits, labels = _data(n=400, c=10, seed=5)
        labels[::7] = -100
        r = evaluate(logits=logits, labels=labels, ignore_index=-100)
        ppl = tm.text.Perplexity(ignore_index=-100)
        ppl.update(torch.tensor(logits[None]), torch.tensor(labels[None]))
        assert r["perplexity"] == pytest.approx(float(ppl.compute()), rel=1e-6)
        keep = labels != -100
        cal = tm.classification.MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")
        cal.update(torch.tensor(softmax(logits[keep], axis=1)), torch.tensor(labels[keep]))
        assert r["ece"] == pytest.approx(float(cal.compute()), rel=1e-6)
        mce = tm.classification.MulticlassCalibrationError(num_classes=10, n_bins=15, norm="max")
        mce.update(torch.tensor(softmax(logits[keep], axis=1)), torch.tensor(labels[keep]))
        assert r["mce"] == pytest.approx(float(mce.compute()), rel=1e-6)


def test_probabilities_a_rounding_above_one_count_as_one():
    for dtype, high in ((np.float32, 1.0003), (np.float16, 1.02)):  # within each dtype's tolerance
        result = evaluate(probs=np.array([[high, 0.0]], dtype), labels=np.array([0]))
        assert result["nll"] == result["entropy"] == 0.0 and result["perplexity"] == 1.0


def test_big_endian_and_native_float64_give_the_same_numbers():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 7)), rng.integers(0, 7, 300)
    swapped, native = evaluate(logits=x.astype(">f8"), labels=y), evaluate(logits=x, labels=y)
    for key in ("nll", "entropy", "brier", "ece", "accuracy"):
        assert swapped[key] == native[key], key
