"""Tests for crossent.measures: hand-computed values, SciPy/sklearn references,
identities as hypothesis properties, and every documented error."""

import math
import warnings
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special, stats
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import mutual_info_score

from crossent import measures as m

try:
    import ml_dtypes
except ImportError:  # a dev extra; only the tests that need it are skipped
    ml_dtypes = None
needs_ml_dtypes = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed")

LN2 = math.log(2)
P4 = [1 / 2, 1 / 4, 1 / 8, 1 / 8]
U4 = [1 / 4] * 4
PAIR_FUNCTIONS = [m.cross_entropy, m.kl_divergence, m.js_divergence]
TABLE_FUNCTIONS = [m.joint_entropy, m.conditional_entropy, m.mutual_information]


def random_distributions(rng, shape, zeros=False):
    x = rng.random(shape)
    if zeros:
        x[rng.random(shape) < 0.3] = 0.0
        x[..., 0] += 1e-3  # keep every distribution non-empty
    return x / x.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------ strategies


@st.composite
def distributions(draw, n=None, min_n=1, max_n=8, zeros=True):
    n = draw(st.integers(min_n, max_n)) if n is None else n
    low = 0.0 if zeros else 1e-3
    weights = draw(hnp.arrays(np.float64, n, elements=st.floats(low, 1.0)))
    if weights.sum() == 0:
        weights[0] = 1.0
    return weights / weights.sum()


@st.composite
def distribution_pairs(draw, zeros=True):
    n = draw(st.integers(1, 8))
    return draw(distributions(n=n, zeros=zeros)), draw(distributions(n=n, zeros=zeros))


@st.composite
def joint_tables(draw):
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return draw(distributions(n=rows * cols)).reshape(rows, cols)


# --------------------------------------------------------- self_information


class TestSelfInformation:
    def test_fair_coin_outcome_is_one_bit(self):
        assert m.self_information(0.5, base=2) == 1.0

    def test_rarer_event_carries_more_information(self):
        info = m.self_information([0.99, 0.5, 0.01], base=2)
        assert np.all(np.diff(info) > 0)
        np.testing.assert_allclose(info[2], math.log2(100))

    def test_zero_probability_is_inf_without_warning(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            info = m.self_information([0.0, 1.0])
        assert info[0] == np.inf
        assert info[1] == 0.0 and not np.signbit(info[1])

    def test_is_additive_over_independent_events(self):
        np.testing.assert_allclose(m.self_information(0.3 * 0.2), m.self_information(0.3) + m.self_information(0.2))

    def test_keeps_shape_and_scalar_gives_numpy_float(self):
        assert m.self_information(np.full((2, 3), 0.5)).shape == (2, 3)
        assert isinstance(m.self_information(0.25), np.floating)

    @pytest.mark.parametrize("bad", [1.5, -0.1, np.nan, np.inf])
    def test_rejects_values_outside_unit_interval(self, bad):
        with pytest.raises(ValueError, match="`p` must"):
            m.self_information([0.5, bad])

    def test_rejects_string_input(self):
        with pytest.raises(TypeError, match="`p` must be a real numeric array"):
            m.self_information(["a"])


# ------------------------------------------------------------------- entropy


class TestEntropy:
    def test_fair_coin_is_one_bit(self):
        assert m.entropy([0.5, 0.5], base=2) == 1.0

    def test_four_outcome_example_is_1_75_bits(self):
        # 1/2*1 + 1/4*2 + 2 * 1/8*3 = 1.75
        assert m.entropy(P4, base=2) == pytest.approx(1.75, abs=1e-15)

    def test_zero_log_zero_is_zero(self):
        assert m.entropy([1.0, 0.0, 0.0]) == 0.0
        assert m.entropy([0.5, 0.0, 0.5], base=2) == 1.0

    def test_result_type_numpy_float_for_1d_array_for_batch(self):
        assert isinstance(m.entropy([0.5, 0.5]), np.floating)
        assert m.entropy(np.full((3, 4), 0.25)).shape == (3,)

    def test_normalize_treats_counts_as_distribution(self):
        assert m.entropy([2, 2], base=2, normalize=True) == 1.0
        assert m.entropy([3, 1, 0], normalize=True) == pytest.approx(m.entropy([0.75, 0.25, 0.0]))

    def test_matches_scipy_on_random_input_nondefault_axis_and_base(self):
        rng = np.random.default_rng(0)
        p = random_distributions(rng, (5, 7), zeros=True)
        np.testing.assert_allclose(m.entropy(p), stats.entropy(p, axis=-1), rtol=1e-12)
        np.testing.assert_allclose(m.entropy(p.T, axis=0, base=3), stats.entropy(p.T, base=3, axis=0), rtol=1e-12)

    def test_float32_input_gives_float32_result(self):
        assert m.entropy(np.array([0.5, 0.5], dtype=np.float32), base=2).dtype == np.float32

    def test_rejects_unnormalized_input_and_shows_the_sum(self):
        with pytest.raises(ValueError, match=r"`p` must sum to 1 .* sums to 1\.1"):
            m.entropy([0.5, 0.6])

    def test_rejects_bad_row_of_a_batch_and_names_it(self):
        with pytest.raises(ValueError, match=r"`p` must sum to 1 .* at \(1,\) sums to 0\.5"):
            m.entropy([[0.5, 0.5], [0.25, 0.25]])

    def test_rejects_counts_without_normalize(self):
        with pytest.raises(ValueError, match="pass normalize=True"):
            m.entropy([3, 1])

    @pytest.mark.parametrize("bad", [[-0.5, 1.5], [np.nan, 1.0], [np.inf, 0.0]])
    def test_rejects_negative_and_non_finite(self, bad):
        with pytest.raises(ValueError, match="`p` must be"):
            m.entropy(bad, normalize=True)

    def test_rejects_all_zero_counts(self):
        with pytest.raises(ValueError, match="`p` sums to 0"):
            m.entropy([0, 0], normalize=True)

    def test_rejects_scalar_and_empty(self):
        with pytest.raises(ValueError, match="at least one dimension"):
            m.entropy(1.0)
        with pytest.raises(ValueError, match="no outcomes"):
            m.entropy([])

    @pytest.mark.parametrize("base, error", [(1, ValueError), (0, ValueError), (-2, ValueError), ("2", TypeError)])
    def test_rejects_bad_base(self, base, error):
        with pytest.raises(error, match="`base` must be"):
            m.entropy([0.5, 0.5], base=base)

    def test_rejects_bad_axis(self):
        with pytest.raises(ValueError, match="out of bounds"):
            m.entropy([0.5, 0.5], axis=1)
        with pytest.raises(TypeError, match="`axis` must be an integer"):
            m.entropy([0.5, 0.5], axis=0.5)

    def test_rejects_non_bool_normalize(self):
        with pytest.raises(TypeError, match="`normalize` must be True or False"):
            m.entropy([1, 1], normalize="yes")

    @given(distributions(), st.randoms())
    def test_is_permutation_invariant(self, p, rnd):
        order = list(range(p.size))
        rnd.shuffle(order)
        assert m.entropy(p[order]) == pytest.approx(m.entropy(p), abs=1e-12)

    @given(distributions(), st.floats(1.1, 100.0))
    def test_base_result_is_nats_divided_by_ln_base(self, p, base):
        assert m.entropy(p, base=base) == pytest.approx(m.entropy(p) / math.log(base), rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------- two-argument


class TestFourOutcomeExampleInBits:
    """p = (1/2, 1/4, 1/8, 1/8), q uniform over 4; every number by hand."""

    def test_cross_entropy_p_q_is_2_bits(self):
        # -sum p log2(1/4) = 2
        assert m.cross_entropy(P4, U4, base=2) == pytest.approx(2.0, abs=1e-15)

    def test_kl_p_q_is_quarter_bit(self):
        # 1/2*log2(2) + 1/4*log2(1) + 2 * 1/8*log2(1/2) = 1/2 - 1/4 = 0.25
        assert m.kl_divergence(P4, U4, base=2) == pytest.approx(0.25, abs=1e-15)

    def test_cross_entropy_q_p_is_2_25_bits(self):
        # -1/4 * (log2 1/2 + log2 1/4 + 2 log2 1/8) = (1 + 2 + 3 + 3) / 4 = 2.25
        assert m.cross_entropy(U4, P4, base=2) == pytest.approx(2.25, abs=1e-15)

    def test_kl_q_p_is_quarter_bit(self):
        # 1/4 * (log2(1/2) + log2(1) + 2 log2(2)) = 1/4 * (-1 + 0 + 2) = 0.25
        assert m.kl_divergence(U4, P4, base=2) == pytest.approx(0.25, abs=1e-15)

    def test_entropy_of_uniform_is_2_bits(self):
        assert m.entropy(U4, base=2) == pytest.approx(2.0, abs=1e-15)

    def test_js_by_hand(self):
        # m = (3/8, 1/4, 3/16, 3/16); JS = 1/2 KL(p||m) + 1/2 KL(q||m)
        mid = np.array([3 / 8, 1 / 4, 3 / 16, 3 / 16])
        kl_p = 0.5 * math.log2(0.5 / mid[0]) + 0.25 * 0 + 2 * 0.125 * math.log2(0.125 / mid[2])
        kl_q = sum(0.25 * math.log2(0.25 / v) for v in mid)
        assert m.js_divergence(P4, U4, base=2) == pytest.approx(0.5 * (kl_p + kl_q), abs=1e-15)


class TestCrossEntropy:
    def test_fair_coin_with_its_own_code_is_one_bit(self):
        assert m.cross_entropy([0.5, 0.5], [0.5, 0.5], base=2) == 1.0

    def test_missed_outcome_is_inf_not_nan_without_warning(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert m.cross_entropy([0.5, 0.5], [1.0, 0.0]) == np.inf
            assert m.cross_entropy([1.0, 0.0], [1.0, 0.0]) == 0.0  # 0 log 0 = 0

    def test_matches_scipy_entropy_plus_kl_on_random_input(self):
        rng = np.random.default_rng(1)
        p, q = random_distributions(rng, (6, 5), zeros=True), random_distributions(rng, (6, 5))
        expected = stats.entropy(p, axis=-1, base=2) + stats.entropy(p, q, axis=-1, base=2)
        np.testing.assert_allclose(m.cross_entropy(p, q, base=2), expected, rtol=1e-12)

    def test_broadcasts_one_p_against_batch_of_q(self):
        rng = np.random.default_rng(2)
        p, q = random_distributions(rng, (4,)), random_distributions(rng, (3, 4))
        batch = m.cross_entropy(p, q)
        assert batch.shape == (3,)
        np.testing.assert_allclose(batch, [m.cross_entropy(p, row) for row in q], rtol=1e-14)

    def test_outcome_axis_first(self):
        rng = np.random.default_rng(3)
        p, q = random_distributions(rng, (2, 3, 5)), random_distributions(rng, (3, 5))
        expected = m.cross_entropy(p, q)
        got = m.cross_entropy(np.moveaxis(p, -1, 0), np.moveaxis(q[None], -1, 0), axis=0)  # (5, 2, 3), (5, 1, 3)
        np.testing.assert_allclose(got, expected, rtol=1e-14)

    def test_normalize_applies_to_both_arguments(self):
        assert m.cross_entropy([1, 1], [9, 1], normalize=True) == pytest.approx(m.cross_entropy([0.5, 0.5], [0.9, 0.1]))

    @given(distribution_pairs())
    def test_equals_entropy_plus_kl(self, pq):
        p, q = pq
        h_pq, h_p, kl = m.cross_entropy(p, q), m.entropy(p), m.kl_divergence(p, q)
        if np.isinf(kl):
            assert np.isinf(h_pq)
        else:
            assert h_pq == pytest.approx(h_p + kl, rel=1e-9, abs=1e-12)

    @given(distribution_pairs(), st.sampled_from([2, 10, 0.5, math.e]))
    def test_base_result_is_nats_divided_by_ln_base(self, pq, base):
        p, q = pq
        for f in PAIR_FUNCTIONS:
            assert f(p, q, base=base) == pytest.approx(f(p, q) / math.log(base), rel=1e-12, abs=1e-15)


class TestKLDivergence:
    def test_is_zero_for_identical_distributions(self):
        assert m.kl_divergence(P4, P4) == 0.0

    def test_q_missing_an_outcome_of_p_is_inf_without_warning(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert m.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
            # the reverse direction is finite: p = 0 where q > 0 costs nothing
            assert m.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(LN2)

    def test_matches_scipy_rel_entr_and_stats_entropy(self):
        rng = np.random.default_rng(4)
        p, q = random_distributions(rng, (5, 9), zeros=True), random_distributions(rng, (5, 9))
        np.testing.assert_allclose(m.kl_divergence(p, q), special.rel_entr(p, q).sum(axis=-1), rtol=1e-12)
        np.testing.assert_allclose(m.kl_divergence(p.T, q.T, axis=0, base=2), stats.entropy(p.T, q.T, base=2, axis=0), rtol=1e-12)

    def test_argument_order_is_mathematical_not_pytorch(self):
        # D(p || q) with p the truth: sum p log(p/q)
        p, q = np.array([0.8, 0.2]), np.array([0.4, 0.6])
        assert m.kl_divergence(p, q) == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-14)
        assert m.kl_divergence(p, q) != pytest.approx(m.kl_divergence(q, p))

    @given(distribution_pairs())
    def test_is_non_negative(self, pq):
        assert m.kl_divergence(*pq) >= 0.0

    @given(distribution_pairs(), st.randoms())
    def test_is_permutation_invariant(self, pq, rnd):
        p, q = pq
        order = list(range(p.size))
        rnd.shuffle(order)
        for f in PAIR_FUNCTIONS:
            assert f(p[order], q[order]) == pytest.approx(f(p, q), rel=1e-9, abs=1e-12)

    @settings(max_examples=30, deadline=None)
    @given(hnp.arrays(np.float64, (3, 2, 4), elements=st.floats(1e-3, 1.0)), hnp.arrays(np.float64, (2, 4), elements=st.floats(1e-3, 1.0)))
    def test_batch_result_equals_per_row_results(self, p, q):
        p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
        for f in PAIR_FUNCTIONS:
            batch = f(p, q)
            assert batch.shape == (3, 2)
            for i in range(3):
                for j in range(2):
                    assert batch[i, j] == pytest.approx(f(p[i, j], q[j]), rel=1e-12, abs=1e-15)


class TestJSDivergence:
    def test_disjoint_coins_are_one_bit_apart(self):
        assert m.js_divergence([1.0, 0.0], [0.0, 1.0], base=2) == pytest.approx(1.0, abs=1e-15)

    def test_matches_square_of_scipy_jensenshannon(self):
        rng = np.random.default_rng(5)
        p, q = random_distributions(rng, (4, 6), zeros=True), random_distributions(rng, (4, 6), zeros=True)
        np.testing.assert_allclose(m.js_divergence(p, q), jensenshannon(p, q, axis=-1) ** 2, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(m.js_divergence(p, q, base=2), jensenshannon(p, q, base=2, axis=-1) ** 2, rtol=1e-10, atol=1e-15)

    def test_is_finite_even_when_supports_differ(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.isfinite(m.js_divergence([0.5, 0.5, 0.0], [0.0, 0.0, 1.0]))

    def test_subnormal_mass_is_not_lost_when_halving(self):
        # 0.5 * (0 + 5e-324) rounds to 0: forming m = (p + q) / 2 first gave inf.
        p, q = np.array([1.0, 0.0, 0.0]), np.array([0.5, 5e-324, 0.5])
        expected = 0.5 * (np.log(4 / 3) + 0.5 * np.log(2 / 3) + 0.5 * np.log(2.0))
        assert m.js_divergence(p, q) == pytest.approx(expected, rel=1e-14)

    @given(distribution_pairs())
    def test_is_symmetric_non_negative_and_at_most_ln2(self, pq):
        p, q = pq
        js = m.js_divergence(p, q)
        assert js == m.js_divergence(q, p)
        assert 0.0 <= js <= LN2 * (1 + 1e-12)


class TestPairValidation:
    @pytest.mark.parametrize("f", PAIR_FUNCTIONS)
    def test_non_broadcasting_shapes_name_both_shapes(self, f):
        with pytest.raises(ValueError, match=r"`p` and `q` must broadcast.*\(2, 3\) and \(4, 3\)"):
            f(np.full((2, 3), 1 / 3), np.full((4, 3), 1 / 3))

    @pytest.mark.parametrize("f", PAIR_FUNCTIONS)
    def test_different_outcome_counts_are_rejected(self, f):
        with pytest.raises(ValueError, match=r"same number of outcomes.*got 1 and 3"):
            f(np.ones((2, 1)), np.full((2, 3), 1 / 3))

    def test_missing_outcome_axis_is_rejected(self):
        with pytest.raises(ValueError, match=r"`p` with shape \(4,\) has no outcome axis 0"):
            m.kl_divergence(np.full(4, 0.25), np.full((3, 4), 0.25), axis=0)

    @pytest.mark.parametrize("f", PAIR_FUNCTIONS)
    def test_bad_q_is_named_q(self, f):
        with pytest.raises(ValueError, match=r"`q` must sum to 1 .* sums to 0\.9"):
            f([0.5, 0.5], [0.5, 0.4])
        with pytest.raises(ValueError, match="`q` must be non-negative"):
            f([0.5, 0.5], [1.5, -0.5])

    def test_bad_p_is_named_p(self):
        with pytest.raises(ValueError, match=r"`p` must lie in \[0, 1\]"):
            m.cross_entropy([0.0, 2.0], [0.5, 0.5])

    def test_scalar_is_rejected(self):
        with pytest.raises(ValueError, match="`q` must have at least one dimension"):
            m.kl_divergence([1.0], 1.0)


# ---------------------------------------------------------- joint tables


class TestJointTable:
    def test_two_independent_fair_coins(self):
        table = np.full((2, 2), 0.25)
        assert m.joint_entropy(table, base=2) == 2.0
        assert m.conditional_entropy(table, base=2) == 1.0
        assert m.mutual_information(table, base=2) == 0.0

    def test_copied_fair_coin(self):
        table = np.array([[0.5, 0.0], [0.0, 0.5]])
        assert m.joint_entropy(table, base=2) == 1.0
        assert m.conditional_entropy(table, base=2) == 0.0
        assert m.mutual_information(table, base=2) == 1.0

    def test_asymmetric_table_by_hand(self):
        # X = row, Y = column; p(x) = (1/2, 1/2), p(y) = (3/4, 1/4)
        table = np.array([[0.5, 0.0], [0.25, 0.25]])
        # H(X,Y) = 1/2*1 + 2 * 1/4*2 = 1.5 bits; H(X) = 1; H(Y|X) = 0.5
        assert m.joint_entropy(table, base=2) == pytest.approx(1.5, abs=1e-15)
        assert m.conditional_entropy(table, base=2) == pytest.approx(0.5, abs=1e-15)
        # H(X|Y) = H(X,Y) - H(Y) = 1.5 - H(3/4, 1/4)
        h_y = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
        assert m.conditional_entropy(table.T, base=2) == pytest.approx(1.5 - h_y, abs=1e-15)
        assert m.mutual_information(table, base=2) == pytest.approx(1 + h_y - 1.5, abs=1e-15)

    def test_counts_need_normalize(self):
        counts = [[2, 0], [1, 1]]
        assert m.joint_entropy(counts, base=2, normalize=True) == pytest.approx(1.5)
        with pytest.raises(ValueError, match=r"`pxy` must lie in \[0, 1\], got .*2.* at row 0, column 0"):
            m.joint_entropy(counts)

    def test_mutual_information_matches_sklearn_on_samples(self):
        rng = np.random.default_rng(6)
        x = rng.integers(0, 4, size=500)
        y = (x + rng.integers(0, 3, size=500)) % 5
        table, _, _ = m.joint_distribution(x, y)
        assert m.mutual_information(table) == pytest.approx(mutual_info_score(x, y), rel=1e-10)

    def test_joint_entropy_matches_scipy_on_flattened_table(self):
        rng = np.random.default_rng(7)
        table = random_distributions(rng, (12,), zeros=True).reshape(3, 4)
        assert m.joint_entropy(table, base=2) == pytest.approx(stats.entropy(table.ravel(), base=2), rel=1e-12)

    def test_mutual_information_of_subnormal_cells_does_not_overflow(self):
        # p(x,y) / p(x) / p(y) = 5e-324 / 1e-323 / 1e-323 exceeds the float range;
        # the log of the same ratio is only about 744.
        table = np.array([[1.0, 5e-324], [5e-324, 5e-324]])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mi = m.mutual_information(table)
        assert 0.0 <= mi < 1e-300

    @given(joint_tables())
    def test_mutual_information_is_non_negative_and_equals_entropy_identity(self, table):
        mi = m.mutual_information(table)
        # marginals may sum to 1 + ulp (a single cell 1.0000000000000002), so renormalise them
        h_x, h_y = m.entropy(table.sum(axis=1), normalize=True), m.entropy(table.sum(axis=0), normalize=True)
        assert mi >= 0.0
        assert mi == pytest.approx(h_x + h_y - m.joint_entropy(table), abs=1e-9)
        assert m.conditional_entropy(table) == pytest.approx(m.joint_entropy(table) - h_x, abs=1e-9)
        assert m.conditional_entropy(table) >= 0.0

    @pytest.mark.parametrize("f", TABLE_FUNCTIONS)
    def test_rejects_table_not_summing_to_one_and_shows_sum(self, f):
        with pytest.raises(ValueError, match=r"`pxy` must sum to 1 over all cells, got 0\.8"):
            f([[0.4, 0.2], [0.1, 0.1]])

    @pytest.mark.parametrize("f", TABLE_FUNCTIONS)
    def test_rejects_non_2d_table(self, f):
        with pytest.raises(ValueError, match=r"`pxy` must be a non-empty 2-D table.*\(4,\)"):
            f([0.25] * 4)

    @pytest.mark.parametrize("f", TABLE_FUNCTIONS)
    def test_rejects_negative_and_non_finite_cells(self, f):
        with pytest.raises(ValueError, match="`pxy` must be non-negative, got .* at row 1, column 0"):
            f([[0.5, 0.5], [-0.5, 0.5]], normalize=True)
        with pytest.raises(ValueError, match="`pxy` must be finite"):
            f([[0.5, np.nan], [0.0, 0.5]])

    def test_rejects_all_zero_counts(self):
        with pytest.raises(ValueError, match="`pxy` sums to 0"):
            m.mutual_information(np.zeros((2, 2)), normalize=True)


class TestJointDistribution:
    def test_builds_probability_table_with_sorted_values(self):
        table, xs, ys = m.joint_distribution(["b", "a", "a", "b"], [1, 0, 0, 0])
        assert xs.tolist() == ["a", "b"] and ys.tolist() == [0, 1]
        np.testing.assert_array_equal(table, [[0.5, 0.0], [0.25, 0.25]])
        assert table.sum() == 1.0

    def test_rejects_unpaired_samples(self):
        with pytest.raises(ValueError, match="same length, got 3 and 2"):
            m.joint_distribution([1, 2, 3], [1, 2])

    def test_rejects_empty_and_2d_samples(self):
        with pytest.raises(ValueError, match="`x` must be a non-empty 1-D"):
            m.joint_distribution([], [])
        with pytest.raises(ValueError, match="`y` must be a non-empty 1-D"):
            m.joint_distribution([1, 2], [[1, 2]])

    def test_rejects_nan_samples(self):
        with pytest.raises(ValueError, match=r"`x` contains NaN \(first at index 1\)"):
            m.joint_distribution([1.0, np.nan], [0, 1])


# ------------------------------------------------- dtypes, bases and extremes
#
# Plain float64 formulas, applied to the exactly converted values, are the
# references below.  Conditional entropy and MI are written through the
# identities H(Y|X) = H(X,Y) - H(X) and I = H(X) + H(Y) - H(X,Y), which hold
# term by term, so they also check the measures' own formulas.

EXTENSION_FLOATS = ["bfloat16", "float8_e4m3fn", "float8_e5m2"]
FLOAT_DTYPES = [np.float16, np.float32, np.float64, np.longdouble] + (["bfloat16"] if ml_dtypes else [])
BASES = [None, 2, np.uint8(2), np.int8(3), np.float16(10), np.float32(10), np.longdouble(2), Fraction(2), math.e]


def dtype_of(name):
    return np.dtype(getattr(ml_dtypes, name) if isinstance(name, str) else name)


def result_dtype(*dtypes):
    """float64 for float64/longdouble input, else float32 (float16, bfloat16, float8_*)."""
    return np.float64 if any(np.dtype(d) in (np.dtype(np.float64), np.dtype(np.longdouble)) for d in dtypes) else np.float32


def exact(x):
    """`x` as float64, through float32 for the extension floats (both conversions exact)."""
    x = np.asarray(x)
    return x.astype(np.float32 if x.dtype.kind == "V" or x.dtype.itemsize == 1 else x.dtype).astype(np.float64)


def entr_sum(x, axis=-1):
    return special.entr(x).sum(axis=axis)


def plain_js(p, q):
    total = p + q

    def term(x):  # x log(2x / (p + q)), the form that cannot lose a subnormal
        return special.xlogy(x, np.divide(2 * x, total, out=np.ones_like(total), where=total > 0))

    return 0.5 * (term(p) + term(q)).sum(-1)


PLAIN = {
    m.entropy: entr_sum,
    m.cross_entropy: lambda p, q: -special.xlogy(p, q).sum(-1),
    m.kl_divergence: lambda p, q: np.maximum(special.rel_entr(p, q).sum(-1), 0),
    m.js_divergence: lambda p, q: np.maximum(plain_js(p, q), 0),
    m.joint_entropy: lambda t: entr_sum(t, None),
    m.conditional_entropy: lambda t: max(entr_sum(t, None) - entr_sum(t.sum(1)), 0),
    m.mutual_information: lambda t: max(entr_sum(t.sum(1)) + entr_sum(t.sum(0)) - entr_sum(t, None), 0),
}
P3, Q3, TABLE = [0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [[0.1, 0.2], [0.3, 0.4]]
MEASURE_ARGS = [(m.entropy, (P3,)), (m.cross_entropy, (P3, Q3)), (m.kl_divergence, (P3, Q3)),
                (m.js_divergence, (P3, Q3)), (m.joint_entropy, (TABLE,)), (m.conditional_entropy, (TABLE,)),
                (m.mutual_information, (TABLE,))]
NORMALIZING = [f for f, _ in MEASURE_ARGS]
ids = [f.__name__ for f, _ in MEASURE_ARGS]


def tolerance(dtype):
    return {"rtol": 1e-12, "atol": 0} if dtype == np.float64 else {"rtol": 1e-6, "atol": 0}


def normalized(counts):
    """The exact quotients, rounded once to float64."""
    c = exact(counts) / exact(counts).max()
    return c / c.sum()


class TestNormalizeHugeCounts:
    """``normalize=True`` used to sum first: 1e308 + 1e308 = inf, and the measures returned 0.0."""

    @pytest.mark.parametrize("dtype, huge", [(np.float64, 1e308), (np.longdouble, 1e308), (np.float32, 3e38),
                                             (np.float16, 6e4), pytest.param("bfloat16", 3e38, marks=needs_ml_dtypes)])
    @pytest.mark.parametrize("f, args", MEASURE_ARGS, ids=ids)
    def test_result_is_exact_for_counts_near_the_largest_float(self, f, args, dtype, huge):
        # 5 : 3 : 1 makes quotients that float16 cannot hold: normalised float16
        # counts used to be rounded back to float16 (error 1e-4).
        patterns = [np.array([[5, 3], [1, 0]]), None] if f in TABLE_FUNCTIONS else [np.array([5, 3, 1]), np.array([1, 3, 5])]
        counts = [(pattern * (huge / 5)).astype(dtype_of(dtype)) for pattern in patterns[:len(args)]]
        got = f(*counts, normalize=True)
        out = result_dtype(dtype_of(dtype))
        assert got.dtype == out
        # the measure of the exact quotients, each rounded once to the compute dtype
        expected = f(*(normalized(c).astype(out) for c in counts))
        np.testing.assert_allclose(got, expected, **tolerance(out))

    @pytest.mark.parametrize("f", NORMALIZING)
    def test_subnormal_counts_normalise_exactly(self, f):
        counts = np.array([1.0, 2.0, 1.0, 0.0])
        args = (counts, counts[::-1]) if f in PAIR_FUNCTIONS else (counts.reshape(2, 2),) if f in TABLE_FUNCTIONS else (counts,)
        # 5e-324 is 2**-1074, so the subnormal counts are exactly 5e-324 times the small ones
        assert f(*(a * 5e-324 for a in args), normalize=True) == f(*args, normalize=True)


class TestBaseAsAnyRealNumber:
    """A NumPy scalar base used to give log(base) in its own precision: ``base=np.uint8(2)`` gave 0.9997 bits."""

    @pytest.mark.parametrize("base", BASES[2:], ids=repr)
    @pytest.mark.parametrize("f, args", MEASURE_ARGS + [(m.self_information, (P3,))], ids=ids + ["self_information"])
    def test_result_is_nats_over_float64_log_of_base(self, f, args, base):
        np.testing.assert_allclose(f(*args, base=base), f(*args) / math.log(float(base)), rtol=1e-15)

    @pytest.mark.parametrize("base", [Decimal(2), "2", True, 2j], ids=repr)
    @pytest.mark.parametrize("f, args", MEASURE_ARGS, ids=ids)
    def test_non_real_base_is_a_type_error_naming_base(self, f, args, base):
        with pytest.raises(TypeError, match=r"`base` must be a positive number or None, got "):
            f(*args, base=base)


@needs_ml_dtypes
class TestExtensionFloats:
    """bfloat16/float8 input used to be judged by float32's sum tolerance, so bfloat16 (0.1, 0.2, 0.7),
    which sums to 0.99951, was refused."""

    @pytest.mark.parametrize("name", EXTENSION_FLOATS)
    @pytest.mark.parametrize("f, args", MEASURE_ARGS, ids=ids)
    def test_result_is_the_float32_computation_on_the_same_values(self, f, args, name):
        arrays = [np.array(a, dtype=dtype_of(name)) for a in args]
        got = f(*arrays)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, PLAIN[f](*(exact(a) for a in arrays)), rtol=2e-6, atol=1e-7)

    @pytest.mark.parametrize("name", EXTENSION_FLOATS)
    @pytest.mark.parametrize("f", PAIR_FUNCTIONS)
    def test_batch_and_mixed_dtypes(self, f, name):
        p = np.array([P3, [0.25, 0.25, 0.5]], dtype=dtype_of(name))
        got = f(p, np.array(Q3))  # float64 q: a float64 result
        assert got.dtype == np.float64 and got.shape == (2,)
        np.testing.assert_allclose(got, PLAIN[f](exact(p), np.array(Q3)), rtol=1e-12)

    @pytest.mark.parametrize("name", EXTENSION_FLOATS)
    def test_counts_and_self_information(self, name):
        counts = np.array([1, 3, 4], dtype=dtype_of(name))
        assert m.entropy(counts, normalize=True) == pytest.approx(entr_sum(np.array([1, 3, 4]) / 8), rel=1e-6)
        info = m.self_information(np.array([0.5, 0.25], dtype=dtype_of(name)), base=2)
        assert info.dtype == np.float32 and info.tolist() == [1.0, 2.0]


class TestLongDouble:
    """longdouble input used to be computed in float32 (compute_dtype knew only float64)."""

    @pytest.mark.parametrize("f, args", MEASURE_ARGS + [(m.self_information, (P3,))], ids=ids + ["self_information"])
    def test_is_computed_and_returned_in_float64(self, f, args):
        got = f(*(np.array(a, dtype=np.longdouble) for a in args))
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, f(*args))


class TestJointDistributionErrors:
    """Each bad sample gives one line naming `x` or `y` and showing the value (issue "The house")."""

    @pytest.mark.parametrize("x, y, error, message", [
        ([1, None], ["a", "b"], TypeError, r"`x` contains None at index 1"),
        (["a", "b"], [None, 2], TypeError, r"`y` contains None at index 0"),
        ([1, "1"], [0, 1], TypeError, r"`x` mixes str samples with 1 \(int\) at index 0"),
        ([{}, {"a": 1}], [0, 1], TypeError, r"`x` must hold hashable values, got \{\} \(dict\) at index 0"),
        (np.array([1, "a"], dtype=object), [0, 1], TypeError, r"`x` mixes values that cannot be compared: 1 \(int\) and 'a'"),
        ([[1], {}], [0, 1], ValueError, r"`x` must be a non-empty 1-D sequence of samples, got \[\[1\], \{\}\]"),
        (5, [0], ValueError, r"`x` must be a non-empty 1-D sequence of samples, got 5"),
        ([], [], ValueError, r"`x` must be a non-empty 1-D sequence of samples, got shape \(0,\)"),
        ([1, 2, 3], [1, 2], ValueError, r"same length, got 3 and 2"),
        (np.array([1.0, np.nan], dtype=object), [0, 1], ValueError, r"`x` contains NaN \(first at index 1\)"),
        (np.array(["2020-01-01", "NaT"], dtype="datetime64[D]"), [0, 1], ValueError, r"`x` contains NaT \(first at index 1\)"),
    ])
    def test_bad_samples(self, x, y, error, message):
        with pytest.raises(error, match=message) as info:
            m.joint_distribution(x, y)
        assert "\n" not in str(info.value)

    def test_object_samples_of_one_kind_are_counted(self):
        table, xs, ys = m.joint_distribution([Fraction(1, 2), 2, Fraction(1, 2)], ["u", "u", "v"])
        assert xs.tolist() == [Fraction(1, 2), 2] and ys.tolist() == ["u", "v"]
        np.testing.assert_array_equal(table, np.array([[1, 1], [1, 0]]) / 3)


# ------------------------------------------------------------ probes
#
# Hypothesis and table-driven probes over every public function, with the
# inputs that break numerics: subnormals, counts near the largest float, zeros,
# one outcome, many outcomes, every float dtype, NumPy scalar bases, batches.

EXTREME_CASES = {
    "one outcome": np.array([1.0]),
    "zeros": np.array([0.0, 1.0, 0.0]),
    "float64 subnormal": np.array([1.0, 5e-324]),
    "float32 subnormal": np.array([1.0, 1e-45], dtype=np.float32),
    "float16 subnormal": np.array([1.0, 6e-8], dtype=np.float16),
    "many outcomes": np.full(100_000, 1e-5),
    "many float16 outcomes": np.full(4096, 2.0 ** -12, dtype=np.float16),
}


@pytest.mark.parametrize("name", EXTREME_CASES)
def test_probe_extreme_distributions_through_every_measure(name):
    p = EXTREME_CASES[name]
    uniform = np.full(p.shape, 1 / p.size, dtype=p.dtype)
    out = result_dtype(p.dtype)
    results = [m.entropy(p), m.self_information(p), m.joint_entropy(p[None]), m.joint_entropy(p[:, None]),
               m.conditional_entropy(p[None]), m.conditional_entropy(p[:, None]), m.mutual_information(p[None])]
    results += [f(a, b) for f in PAIR_FUNCTIONS for a, b in ((p, p), (p, uniform), (uniform, p))]
    for value in results:
        assert value.dtype == out and not np.isnan(value).any() and (value >= 0).all()
    assert m.entropy(p) <= math.log(p.size) * (1 + 1e-6) + 1e-12
    assert m.kl_divergence(p, p) == 0.0 and m.js_divergence(p, p) == 0.0
    assert m.entropy(p * 1e300 if p.dtype == np.float64 else p, normalize=True) == pytest.approx(m.entropy(p), rel=1e-6, abs=1e-7)


def finfo(dtype):
    return ml_dtypes.finfo(dtype) if dtype.kind == "V" else np.finfo(dtype)


@st.composite
def extreme_counts(draw, n, dtype):
    """Non-negative counts in `dtype`: zeros, subnormals, ordinary values and values near its largest."""
    info = finfo(dtype)
    largest = min(float(info.max), 1.7e308)
    scale = draw(st.sampled_from([1.0, float(info.smallest_subnormal), float(info.tiny), largest / n, largest]))
    weights = draw(hnp.arrays(np.float64, n, elements=st.one_of(st.sampled_from([0.0, 1.0, 1e-3]), st.floats(0, 1))))
    counts = np.minimum(weights * scale, largest).astype(dtype)
    if not (counts > 0).any():
        counts[0] = 1
    return counts


def probe_tolerance(*dtypes):
    return {"rtol": 1e-9, "atol": 1e-13} if result_dtype(*dtypes) == np.float64 else {"rtol": 2e-5, "atol": 1e-6}


class TestProbes:
    @given(st.data())
    def test_normalized_counts_every_dtype_and_base(self, data):
        dp, dq = (dtype_of(data.draw(st.sampled_from(FLOAT_DTYPES))) for _ in range(2))
        n = data.draw(st.sampled_from([1, 2, 3, 4, 6, 64]))
        p, q = data.draw(extreme_counts(n, dp)), data.draw(extreme_counts(n, dq))
        base = data.draw(st.sampled_from(BASES))
        unit = 1.0 if base is None else math.log(float(base))
        h = m.entropy(p, normalize=True, base=base)
        ce, kl, js = (f(p, q, normalize=True, base=base) for f in PAIR_FUNCTIONS)
        assert h.dtype == result_dtype(dp) and {ce.dtype, kl.dtype, js.dtype} == {np.dtype(result_dtype(dp, dq))}
        assert not any(np.isnan(v) for v in (h, ce, kl, js))
        tol = probe_tolerance(dp)  # the loosest of h's and the pair's
        assert h == pytest.approx(entr_sum(normalized(p).astype(result_dtype(dp))) / unit, rel=tol["rtol"], abs=tol["atol"])
        assert 0 <= h <= math.log(n) / unit * (1 + 1e-6) + 1e-6
        assert kl >= 0 and 0 <= js <= LN2 / unit * (1 + 1e-6)
        if np.isinf(kl):
            assert np.isinf(ce)
        else:
            assert ce == pytest.approx(h + kl, rel=10 * tol["rtol"], abs=tol["atol"])
        if n % 2 == 0:
            table = p.reshape(2, n // 2)
            hxy, hc, mi = (f(table, normalize=True, base=base) for f in TABLE_FUNCTIONS)
            exact_table = normalized(table).astype(result_dtype(dp)).astype(np.float64)
            h_x, h_y = entr_sum(exact_table.sum(1)) / unit, entr_sum(exact_table.sum(0)) / unit
            assert hc >= 0 and mi >= 0 and {hxy.dtype, hc.dtype, mi.dtype} == {np.dtype(result_dtype(dp))}
            assert mi == pytest.approx(h_x + h_y - hxy, abs=10 * tol["atol"] + 1e-12)
            assert hc == pytest.approx(hxy - h_x, abs=10 * tol["atol"] + 1e-12)
            assert mi <= min(h_x, h_y) + 10 * tol["atol"] + 1e-12

    @given(st.data())
    def test_distributions_every_dtype_batch_and_axis(self, data):
        dp, dq = (dtype_of(data.draw(st.sampled_from(FLOAT_DTYPES))) for _ in range(2))
        n = data.draw(st.sampled_from([1, 2, 3, 7, 300]))
        batch = data.draw(st.sampled_from([(), (2,), (0,), (3, 1)]))
        elements = st.one_of(st.sampled_from([0.0, 5e-324, 1e-45, 1e-310]), st.floats(0, 1))
        weights = data.draw(hnp.arrays(np.float64, batch + (n,), elements=elements))
        weights[..., 0] += weights.sum(-1) == 0
        p = (weights / weights.sum(-1, keepdims=True)).astype(dp)
        q = data.draw(distributions(n=n)).astype(dq)
        axis = data.draw(st.sampled_from([-1, 0]))
        base = data.draw(st.sampled_from(BASES))
        unit = 1.0 if base is None else math.log(float(base))
        if exact(p).sum(-1).min(initial=1) < 1 - 0.1:
            return  # every entry of a row rounded to 0 in float16/bfloat16: rightly refused
        moved = (lambda x: np.moveaxis(x, -1, 0)) if axis == 0 else (lambda x: x)
        pe, qe = exact(p).astype(result_dtype(dp)).astype(np.float64), exact(q)
        h = m.entropy(moved(p), axis=axis, base=base)
        assert h.dtype == result_dtype(dp) and h.shape == batch
        np.testing.assert_allclose(h, entr_sum(pe) / unit, **probe_tolerance(dp))
        info = m.self_information(p, base=base)
        assert info.dtype == result_dtype(dp) and info.shape == p.shape and not np.isnan(info).any()
        pe, qe = exact(p).astype(result_dtype(dp, dq)).astype(np.float64), exact(q).astype(result_dtype(dp, dq))
        q_moved = moved(q.reshape((1,) * len(batch) + (n,)))
        for f in PAIR_FUNCTIONS:
            got = f(moved(p), q_moved, axis=axis, base=base)
            assert got.dtype == result_dtype(dp, dq) and got.shape == batch and not np.isnan(got).any()
            np.testing.assert_allclose(got, PLAIN[f](pe, qe.astype(np.float64)) / unit, **probe_tolerance(dp, dq))

    @given(joint_tables(), st.sampled_from(FLOAT_DTYPES), st.sampled_from(BASES))
    def test_joint_tables_every_dtype(self, table, name, base):
        dtype = dtype_of(name)
        table = table.astype(dtype)
        unit = 1.0 if base is None else math.log(float(base))
        te = exact(table).astype(result_dtype(dtype)).astype(np.float64)
        if abs(te.sum() - 1) > 0.05:
            return  # cells rounded to 0 in a low-precision dtype
        for f in TABLE_FUNCTIONS:
            got = f(table, base=base)
            assert got.dtype == result_dtype(dtype) and not np.isnan(got) and got >= 0
            np.testing.assert_allclose(got, PLAIN[f](te) / unit, **probe_tolerance(dtype))

    @given(st.one_of(st.lists(st.integers(-3, 3), min_size=1, max_size=30),
                     st.lists(st.sampled_from(["a", "b", "ab", ""]), min_size=1, max_size=30)), st.data())
    def test_joint_distribution_counts_pairs(self, xs, data):
        ys = data.draw(st.lists(st.sampled_from([0.5, 1.0, -2.0]), min_size=len(xs), max_size=len(xs)))
        table, x_values, y_values = m.joint_distribution(xs, ys)
        assert x_values.tolist() == sorted(set(xs)) and y_values.tolist() == sorted(set(ys))
        expected = Counter(zip(xs, ys))
        for i, a in enumerate(x_values.tolist()):
            for j, b in enumerate(y_values.tolist()):
                assert table[i, j] == expected[(a, b)] / len(xs)
        assert m.mutual_information(table) >= 0


def test_entropy_of_an_entry_a_rounding_above_one_is_zero_not_negative():
    assert m.entropy([1.0000005, 0.0]) == 0.0
    assert m.entropy(np.array([1.0003, 0.0], np.float32)) == 0.0
    assert m.joint_entropy([[1.0000005]]) == 0.0
