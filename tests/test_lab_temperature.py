"""Tests of crossent.lab.temperature: the fitted temperature, the scaled probabilities and the metrics."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from crossent import losses  # noqa: E402
from crossent.lab.models import expected_calibration_error, head_probabilities  # noqa: E402
from crossent.lab.temperature import (  # noqa: E402
    calibration_metrics,
    fit_temperature,
    negative_log_likelihood,
    scaled_log_scores,
    temperature_scaling,
)


def _overconfident(n=3000, classes=4, factor=3.0, seed=0):
    """Logits `factor` times the true log-posterior of Gaussian classes: the best T is `factor`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    return factor * 1.5 * x, labels


def test_fitted_temperature_is_the_nll_minimum_on_a_grid():
    z, y = _overconfident()
    T = fit_temperature(z, y, "softmax_ce")
    grid = np.exp(np.linspace(np.log(0.5), np.log(10), 400))
    best = grid[np.argmin([negative_log_likelihood(z, y, "softmax_ce", t) for t in grid])]
    assert T == pytest.approx(best, rel=0.02) and T == pytest.approx(3.0, rel=0.1)
    assert negative_log_likelihood(z, y, "softmax_ce", T) <= min(negative_log_likelihood(z, y, "softmax_ce", t) for t in grid) + 1e-9


def test_softmax_nll_is_the_hand_value():
    z, y = np.array([[1.0, 0.0, -1.0]]), np.array([2])
    expected = -np.log(np.exp(-0.5) / (np.exp(0.5) + 1 + np.exp(-0.5)))
    assert negative_log_likelihood(z, y, "softmax_mse", 2.0) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("head", ["sigmoid_mse", "sigmoid_bce"])
def test_sigmoid_scores_give_the_normalised_sigmoids(head):
    z = np.random.default_rng(1).normal(size=(6, 4)) * 4
    for T in (0.3, 1.0, 5.0):
        p = losses.softmax(scaled_log_scores(z, head, T), axis=-1)
        s = losses.sigmoid(z / T)
        np.testing.assert_allclose(p, s / s.sum(axis=1, keepdims=True), rtol=1e-12)
    # one output unit: the two-class probabilities (1 - a, a), as head_probabilities
    one = np.array([[-2.0], [0.5]])
    np.testing.assert_allclose(losses.softmax(scaled_log_scores(one, head), axis=-1), head_probabilities(one, head),
                               rtol=1e-12)


def test_accuracy_unchanged_even_where_the_sigmoids_saturate():
    z = np.array([[40.0, 45.0, -3.0], [-50.0, -60.0, -55.0], [1.0, 2.0, 3.0]])
    y = np.array([1, 0, 2])
    outputs = {"validation_logits": z, "validation_labels": y, "test_logits": z, "test_labels": y}
    result = temperature_scaling(outputs, "sigmoid_mse")
    assert result["before"]["accuracy"] == result["after"]["accuracy"] == 1.0


@pytest.mark.parametrize("head", ["softmax_ce", "sigmoid_mse"])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_the_numbers_are_crossent_metrics_numbers(head, temperature):
    from crossent.metrics import evaluate

    z, y = _overconfident(n=500, factor=2.0, seed=3)
    r = calibration_metrics(z, y, head, temperature)
    reference = evaluate(logits=scaled_log_scores(z, head, temperature), labels=y, bins=15)
    assert r["ece"] == pytest.approx(reference["ece"], rel=1e-12, abs=1e-15)
    assert r["nll"] == pytest.approx(reference["nll"], rel=1e-12)
    assert r["accuracy"] == reference["accuracy"] == np.mean(z.argmax(axis=1) == y)
    np.testing.assert_array_equal(r["bins"]["count"], reference["bins"]["count"])
    ece, _ = expected_calibration_error(losses.softmax(scaled_log_scores(z, head, temperature), axis=-1), y)
    assert r["ece"] == ece


def test_temperature_scaling_repairs_an_overconfident_model():
    z, y = _overconfident(n=4000, factor=4.0, seed=4)
    outputs = {"validation_logits": z[:2000], "validation_labels": y[:2000], "test_logits": z[2000:], "test_labels": y[2000:]}
    r = temperature_scaling(outputs, "softmax_ce")
    assert r["temperature"] == pytest.approx(4.0, rel=0.15)
    assert r["after"]["ece"] < 0.5 * r["before"]["ece"] and r["after"]["nll"] < r["before"]["nll"]
    assert r["after"]["accuracy"] == r["before"]["accuracy"]


def test_linear_head_is_refused():
    with pytest.raises(ValueError, match="`head`"):
        scaled_log_scores(np.zeros((2, 3)), "linear_mse")


@pytest.mark.parametrize("head", ["softmax_ce", "sigmoid_mse"])
def test_nll_of_many_temperatures_is_each_temperatures_nll(head, monkeypatch):
    import crossent.lab.temperature as temperature

    z, y = _overconfident(n=50, factor=2.0, seed=5)
    temperatures = np.exp(np.linspace(-2.0, 2.0, 7))
    whole = negative_log_likelihood(z, y, head, temperatures)
    monkeypatch.setattr(temperature, "_BLOCK_ELEMENTS", 2 * z.size)  # blocks of 2 temperatures, the last of 1
    blocks = negative_log_likelihood(z, y, head, temperatures)
    one_by_one = [negative_log_likelihood(z, y, head, float(t)) for t in temperatures]
    np.testing.assert_array_equal(blocks, whole)
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-14)
    assert isinstance(one_by_one[0], float)


def test_saturated_sigmoid_scores_do_not_change_the_prediction():
    # a validation set the model separates: the NLL keeps falling as T -> 0, so T ends at the interval's end
    separable = np.array([[3.0, -3, -3], [-3, 3, -3], [-3, -3, 3]])
    with pytest.warns(RuntimeWarning, match="lowest at the end"):
        T = fit_temperature(separable, np.array([0, 1, 2]), "sigmoid_mse")
    assert T == 0.05
    # at z / T = 800 and 900 both log-sigmoid scores round to -0: the prediction still comes from z
    outputs = {"validation_logits": separable, "validation_labels": np.array([0, 1, 2]),
               "test_logits": np.array([[40.0, 45, -3], [2.0, 2.5, -1], [2.5, 2.0, -1]]), "test_labels": np.array([1, 1, 0])}
    with pytest.warns(RuntimeWarning):
        result = temperature_scaling(outputs, "sigmoid_mse")
    assert result["before"]["accuracy"] == result["after"]["accuracy"] == 1.0
    # rows 2 and 3: probabilities 1/2 and 1/2 (they round to a tie), both correct, so the ECE is |1 - 1/2|
    after = calibration_metrics(outputs["test_logits"][1:], outputs["test_labels"][1:], "sigmoid_mse", T)
    assert after["accuracy"] == 1.0 and after["ece"] == pytest.approx(0.5, rel=1e-6)
    assert after["bins"]["accuracy"][np.flatnonzero(after["bins"]["count"])].tolist() == [1.0]


def test_an_nll_that_does_not_depend_on_t_gives_t_1_with_a_warning():
    for logits, labels, head in ((np.zeros((4, 3)), np.array([0, 1, 2, 0]), "softmax_ce"),
                                 (np.array([[1.0], [2.0]]), np.array([0, 0]), "softmax_ce")):
        with pytest.warns(RuntimeWarning, match="same at every temperature"):
            assert fit_temperature(logits, labels, head) == 1.0


@pytest.mark.parametrize("function", [fit_temperature, negative_log_likelihood, calibration_metrics])
def test_bad_inputs_are_clear_errors(function):
    z, y = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([0, 1])
    cases = [((np.zeros((0, 3)), np.zeros(0, int), "softmax_ce"), ValueError, "`logits`"),
             ((z, y[:, None], "softmax_ce"), ValueError, "`labels`"),
             ((z, y[:1], "softmax_ce"), ValueError, "`labels`"),
             ((z, np.array([0, 2]), "softmax_ce"), ValueError, "`labels`"),
             ((z, y.astype(float), "softmax_ce"), TypeError, "`labels`"),
             ((z[0], y[:1], "softmax_ce"), ValueError, "`logits`"),
             ((np.array([[np.nan, 0.0], [0.0, 1.0]]), y, "softmax_ce"), ValueError, "`logits`"),
             ((z, y, None), ValueError, "`head`"),
             ((z, y, "linear_mse"), ValueError, "`head`")]
    if function is fit_temperature:  # z / 0.05, the smallest temperature tried, would overflow
        cases.append(((np.array([[1e308, 0.0], [0.0, 1.0]]), y, "softmax_ce"), ValueError, "too large"))
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            function(*args)


@pytest.mark.parametrize("function", [negative_log_likelihood, calibration_metrics])
def test_bad_temperatures_are_clear_errors(function):
    z, y = np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([0, 1])
    for bad in (0.0, -1.0, np.inf, np.nan, np.array([[1.0]])):
        with pytest.raises(ValueError, match="`temperature`"):
            function(z, y, "softmax_ce", bad)
    for bad in (True, "2", None):
        with pytest.raises(TypeError, match="`temperature`"):
            function(z, y, "softmax_ce", bad)
    with pytest.raises(ValueError, match="`temperature`"):
        calibration_metrics(z, y, "softmax_ce", np.array([1.0, 2.0]))  # one temperature per call
    nll = (lambda r: r) if function is negative_log_likelihood else (lambda r: r["nll"])
    assert nll(function(z, y, "softmax_ce", np.float32(2.0))) == nll(function(z, y, "softmax_ce", 2.0))
