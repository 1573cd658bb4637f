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
