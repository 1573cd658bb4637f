"""Tests for crossent._validate: the generic checks every public function runs first."""

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from crossent import _validate as v
from crossent._samples import check_samples

try:
    import ml_dtypes
except ImportError:  # a dev extra; only the tests that need it are skipped
    ml_dtypes = None

needs_ml_dtypes = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed")
EXTENSION_FLOATS = ["bfloat16", "float8_e4m3fn", "float8_e5m2"]


class TestCheckBase:
    @pytest.mark.parametrize("base, expected", [
        (np.uint8(2), math.log(2)), (np.int8(3), math.log(3)), (np.float16(2), math.log(2)),
        (np.float16(10), math.log(10)), (np.float32(10), math.log(10)), (np.longdouble(2), math.log(2)),
        (Fraction(2), math.log(2)), (Fraction(1, 2), -math.log(2)), pytest.param(10**400, 400 * math.log(10), id="10**400"),
        (math.e, 1.0),
    ])
    def test_log_is_float64_whatever_the_type_of_base(self, base, expected):
        # np.log(np.float16(10)) is 2.303 (float16); np.log(np.uint8(2)) is float16 too.
        got = v.check_base(base)
        assert type(got) is float
        assert got == pytest.approx(expected, rel=1e-15)

    def test_none_means_nats(self):
        assert v.check_base(None) is None

    @pytest.mark.parametrize("base", [True, np.bool_(True), Decimal(2), "2", 2j, [2]])
    def test_non_real_base_is_type_error_naming_base(self, base):
        with pytest.raises(TypeError, match=r"`base` must be a positive number or None, got .*"):
            v.check_base(base)

    @pytest.mark.parametrize("base", [0, -2, 1, 1.0, np.uint8(1), np.int8(-3), np.float16(np.inf), math.nan,
                                      Fraction(-1), pytest.param(Fraction(10**400), id="Fraction(10**400)")])
    def test_bad_value_is_value_error_showing_it(self, base):
        with pytest.raises(ValueError, match=r"`base` must be a positive finite number other than 1, got "):
            v.check_base(base)


class TestToBase:
    def test_float32_result_is_rounded_once(self):
        nats = np.float32(0.6931472)
        log_base = math.log(10)
        assert v.to_base(nats, log_base) == np.float32(float(nats) / log_base)
        assert v.to_base(nats, log_base).dtype == np.float32

    def test_none_leaves_the_value(self):
        assert v.to_base(1.5, None) == 1.5


class TestSumTolerance:
    @pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.longdouble])
    def test_native_floats_use_sqrt_eps_at_least_1e_6(self, dtype):
        assert v.sum_tolerance(dtype) == pytest.approx(max(math.sqrt(np.finfo(dtype).eps), 1e-6), rel=1e-6)

    @needs_ml_dtypes
    @pytest.mark.parametrize("dtype", EXTENSION_FLOATS)
    def test_extension_floats_use_their_own_eps(self, dtype):
        dtype = getattr(ml_dtypes, dtype)
        assert v.sum_tolerance(dtype) == pytest.approx(math.sqrt(float(ml_dtypes.finfo(dtype).eps)), rel=1e-15)
        assert v.sum_tolerance(np.dtype(dtype)) == v.sum_tolerance(dtype)


class TestAsFloatArray:
    @needs_ml_dtypes
    @pytest.mark.parametrize("dtype", EXTENSION_FLOATS)
    def test_extension_floats_become_float32_exactly(self, dtype):
        dtype = getattr(ml_dtypes, dtype)
        x = np.array([0.1, 0.2, 0.7, 0.0], dtype=dtype)
        got = v.as_float_array(x, "x")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x.astype(np.float32))

    @needs_ml_dtypes
    def test_extension_integers_become_min_dtype_like_integers(self):
        got = v.as_float_array(np.array([1, -2, 7], dtype=ml_dtypes.int4), "x")
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, [1, -2, 7])

    def test_ragged_input_is_one_clear_value_error(self):
        with pytest.raises(ValueError, match=r"`x` must be a rectangular array of numbers, got \[\[0.5, 0.5\], \[1.0\]\]"):
            v.as_float_array([[0.5, 0.5], [1.0]], "x")

    @pytest.mark.parametrize("bad", [["a"], [1 + 2j], [None, 1.0]])
    def test_non_real_input_is_type_error(self, bad):
        with pytest.raises(TypeError, match="`x` must be a real numeric array"):
            v.as_float_array(bad, "x")


class TestComputeDtype:
    @pytest.mark.parametrize("dtypes, expected", [
        ((np.float16,), np.float32), ((np.float32,), np.float32), ((np.float64,), np.float64),
        ((np.longdouble,), np.float64), ((np.float32, np.longdouble), np.float64), ((np.float16, np.float32), np.float32),
    ])
    def test_longdouble_is_computed_in_float64_not_float32(self, dtypes, expected):
        assert v.compute_dtype(*dtypes) == expected


class TestCheckDistribution:
    @needs_ml_dtypes
    @pytest.mark.parametrize("dtype", EXTENSION_FLOATS)
    def test_extension_float_is_judged_by_its_own_precision(self, dtype):
        dtype = getattr(ml_dtypes, dtype)
        # bfloat16 [0.1, 0.2, 0.7] sums to 0.99951, outside float32's tolerance (3.5e-4).
        p = np.array([0.1, 0.2, 0.7], dtype=dtype)
        got = v.check_distribution(p, "p")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, p.astype(np.float32))

    @needs_ml_dtypes
    def test_extension_float_far_from_one_is_still_refused_with_its_tolerance(self):
        with pytest.raises(ValueError, match=r"`p` must sum to 1 .* sums to 0\.5 \(tolerance 8\.8e-02\)"):
            v.check_distribution(np.array([0.25, 0.25], dtype=ml_dtypes.bfloat16), "p")

    @needs_ml_dtypes
    def test_tolerance_dtype_names_the_dtype_the_values_came_in(self):
        p = np.array([0.1, 0.2, 0.7], dtype=ml_dtypes.bfloat16).astype(np.float32)
        with pytest.raises(ValueError, match="tolerance 3.5e-04"):
            v.check_distribution(p, "p")
        v.check_distribution(p, "p", tolerance_dtype=ml_dtypes.bfloat16)

    @pytest.mark.parametrize("dtype, huge", [(np.float64, 1e308), (np.float32, 3e38), (np.float16, 6e4),
                                             (np.longdouble, 1e308)])
    def test_normalize_does_not_overflow_and_is_exact(self, dtype, huge):
        counts = np.array([huge, huge, huge / 2, 0.0], dtype=dtype)
        got = v.check_distribution(counts, "p", normalize=True)
        assert got.dtype == np.result_type(dtype, np.float32)
        rtol = 1e-12 if got.dtype != np.float32 else 1e-6
        np.testing.assert_allclose(got.astype(np.float64), [0.4, 0.4, 0.2, 0.0], rtol=rtol, atol=0)

    def test_normalize_of_subnormal_counts(self):
        got = v.check_distribution(np.array([5e-324, 1e-323, 0.0]), "p", normalize=True)
        np.testing.assert_allclose(got, [1 / 3, 2 / 3, 0.0], rtol=1e-15)

    def test_huge_entries_without_normalize_are_refused_without_overflow_warning(self):
        # The sum 1e308 + 1e308 used to be formed first (an overflow RuntimeWarning).
        with pytest.raises(ValueError, match=r"`p` must lie in \[0, 1\], got 1e\+308"):
            v.check_distribution([1e308, 1e308], "p")


class TestCheckWeights:
    @needs_ml_dtypes
    def test_extension_float_weights_become_float32(self):
        w = v.check_weights(np.array([0.5, 2.0], dtype=ml_dtypes.bfloat16), "w", (2,))
        assert w.dtype == np.float32 and w.tolist() == [0.5, 2.0]

    def test_negative_and_wrong_shape_are_named(self):
        with pytest.raises(ValueError, match=r"`w` must be non-negative, got -1\.0 at index \(1,\)"):
            v.check_weights([1.0, -1.0], "w")
        with pytest.raises(ValueError, match=r"`w` must have shape \(3,\), got \(2,\)"):
            v.check_weights([1.0, 1.0], "w", (3,))


class TestCheckSamples:
    def test_codes_index_the_sorted_distinct_values(self):
        codes, values = check_samples(["b", "a", "b"], "x")
        assert values.tolist() == ["a", "b"] and codes.tolist() == [1, 0, 1]

    def test_object_samples_are_counted_by_equality(self):
        codes, values = check_samples(np.array([Fraction(1, 2), 3, Fraction(1, 2)], dtype=object), "x")
        assert values.tolist() == [Fraction(1, 2), 3] and codes.tolist() == [0, 1, 0]

    def test_long_samples_are_shown_short(self):
        with pytest.raises(ValueError, match=r"got 'aaaa.* \.\.\.\.$"):
            check_samples("a" * 500, "x")


def test_show_of_a_long_object_array_names_its_values_instead_of_crashing():
    """An object array (a dataframe's mixed columns) in an error message: a TypeError, not an AttributeError."""
    mixed = np.array([[0.5, "x"]] * 10, dtype=object)
    assert v.show(mixed) == "array([0.5, 'x', 0.5, 'x', 0.5, 'x', ...], shape=(10, 2))"
    from crossent import metrics

    with pytest.raises(TypeError, match="`logits` must be a floating array.*dtype object"):
        metrics.evaluate(logits=mixed, labels=np.zeros(10, dtype=int))


def test_normalize_weights_never_rounds_a_subnormal_weight_to_zero():
    from crossent._validate import normalize_weights

    assert normalize_weights(np.array([5e-324, 1.0]), -1).tolist() == [5e-324, 1.0]
    assert normalize_weights(np.array([1e308, 1e308, 5e307]), -1).tolist() == [0.4, 0.4, 0.2]  # still no overflow
