r"""Temperature scaling (Guo et al. 2017): one number that recalibrates a trained classifier.

The output pre-activations are divided by a temperature :math:`T > 0` fitted
on held-out validation data by minimising the negative log-likelihood; the
argmax, and so the accuracy, cannot change.  For a softmax head the
probabilities are :math:`\mathrm{softmax}(z / T)`; for a sigmoid head they are
the normalised sigmoids :math:`\sigma(z_k / T) / \sum_j \sigma(z_j / T)` of
:func:`~crossent.lab.models.head_probabilities` (here computed in log space,
without its 1e-6 floor).  The test-set ECE uses 15 equal-width bins closed on
the right and the NLL is in nats: the numbers of :func:`crossent.metrics.evaluate`
(the tests compare them).

Reference: C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of
Modern Neural Networks", ICML 2017.
"""

from __future__ import annotations

import math

import numpy as np

from .. import losses
from .models import expected_calibration_error

#: the search interval of T (log-spaced): far beyond what a trained network needs
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: temperatures tried in each round of :func:`fit_temperature`
SEARCH_POINTS = 33
#: the most scores held at once (a block of temperatures times the logits' size)
_BLOCK_ELEMENTS = 2**21


def scaled_log_scores(logits, head, temperature=1.0):
    r"""Scores whose softmax is the head's probabilities at temperature `temperature`.

    Softmax heads: :math:`z / T`.  Sigmoid heads: :math:`\log\sigma(z / T)`, whose
    softmax is :math:`\sigma(z_k / T) / \sum_j \sigma(z_j / T)`, the normalised
    sigmoids.  Computed in log space (``log_sigmoid`` never rounds to 0 or to a
    tie of 1.0, as the sigmoids themselves do beyond |z/T| ≈ 37), so the
    argmax of the scores is the argmax of `z` for every T > 0.  One output
    unit (binary) counts as the two scores :math:`(\log\sigma(-z/T), \log\sigma(z/T))`.

    Examples:
        >>> z = np.array([[40.0, 45.0, -3.0]])
        >>> np.argmax(scaled_log_scores(z, "sigmoid_mse")), np.argmax(losses.sigmoid(z))  # sigmoids tie at 1.0
        (np.int64(1), np.int64(0))
        >>> p = losses.softmax(scaled_log_scores(np.array([[1.0, -1.0]]), "sigmoid_mse", 2.0))
        >>> bool(np.allclose(p, losses.sigmoid(np.array([0.5, -0.5])) / losses.sigmoid(np.array([0.5, -0.5])).sum()))
        True
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if head.startswith("softmax"):
        return scaled
    if not head.startswith("sigmoid"):
        raise ValueError(f"`head` must be a softmax or sigmoid head for temperature scaling, got {head!r}.")
    if scaled.shape[-1] == 1:
        scaled = np.concatenate([-scaled, scaled], axis=-1)
    return losses.log_sigmoid(scaled)


def negative_log_likelihood(logits, labels, head, temperature=1.0):
    r"""Mean NLL (nats) of `labels` under the head's probabilities of ``logits / temperature``.

    The library's softmax cross-entropy of :func:`scaled_log_scores` (log-sum-exp:
    stable for any T); `temperature` may be a 1-D array, which gives one NLL per temperature.

    Examples:
        >>> z = np.array([[2.0, 0.0], [0.0, 2.0]]); y = np.array([0, 0])
        >>> round(negative_log_likelihood(z, y, "softmax_ce"), 6)  # (log(1 + e^-2) + log(1 + e^2)) / 2
        1.126928
        >>> round(negative_log_likelihood(z, y, "softmax_ce", 1e9), 6)  # T -> inf: uniform, log 2
        0.693147
        >>> negative_log_likelihood(z, y, "softmax_ce", np.array([1.0, 1e9])).round(6).tolist()
        [1.126928, 0.693147]
    """
    if np.ndim(temperature) == 0:
        return float(negative_log_likelihood(logits, labels, head, np.array([temperature]))[0])
    temperatures = np.asarray(temperature, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    nll = np.empty(len(temperatures))
    step = max(1, _BLOCK_ELEMENTS // max(logits.size, 1))  # temperatures per block of scores
    for start in range(0, len(temperatures), step):
        scores = scaled_log_scores(logits, head, temperatures[start : start + step, None, None])
        per_example = losses.softmax_cross_entropy(scores, np.broadcast_to(labels, scores.shape[:-1]),
                                                   reduction="none", backend="reference")
        nll[start : start + step] = per_example.mean(axis=-1)
    return nll


def fit_temperature(logits, labels, head):
    r"""The temperature :math:`T^\ast = \arg\min_T \mathrm{NLL}(z / T)` on a validation set.

    A grid search over :math:`\log T` in :data:`TEMPERATURE_BOUNDS`, refined
    around the best point until the grid's step is below 1e-6 in :math:`\log T`:
    :data:`SEARCH_POINTS` temperatures per round, evaluated together in one
    array computation (seven rounds).  It finds the best grid point of the
    whole interval, where a bracketing search (SciPy's ``minimize_scalar``)
    assumes one minimum, and it needs no ``scipy.optimize`` (whose import took
    0.2-0.4 s, a tenth of the quick report).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.integers(0, 3, 4000)
        >>> x = rng.normal(size=(4000, 3)) + 2.0 * np.eye(3)[labels]  # unit Gaussians, mean 2 at the label
        >>> # the true posterior is softmax(2 x); logits 6 x are three times too confident
        >>> T = fit_temperature(6.0 * x, labels, "softmax_ce")
        >>> bool(2.7 < T < 3.3)
        True
    """
    low, high = (math.log(t) for t in TEMPERATURE_BOUNDS)
    while True:
        grid = np.linspace(low, high, SEARCH_POINTS)
        best = int(np.argmin(negative_log_likelihood(logits, labels, head, np.exp(grid))))
        if high - low <= 1e-6 * (SEARCH_POINTS - 1):
            return math.exp(grid[best])
        # the minimum of the curve lies between the best point's neighbours
        low, high = grid[max(best - 1, 0)], grid[min(best + 1, SEARCH_POINTS - 1)]


def calibration_metrics(logits, labels, head, temperature=1.0):
    """Accuracy, NLL (nats), ECE and reliability bins of the head's probabilities of ``logits / temperature``.

    The ECE is :func:`~crossent.lab.models.expected_calibration_error` (15
    equal-width bins closed on the right) and the NLL the library's softmax
    cross-entropy of :func:`scaled_log_scores`: the numbers of
    :func:`crossent.metrics.evaluate`, which the tests check, without its
    exact summation (which loads Numba, a second of the quick report).

    Examples:
        >>> z = np.array([[3.0, 0.0], [0.0, 1.0], [2.0, 0.0]]); y = np.array([0, 1, 1])
        >>> r = calibration_metrics(z, y, "softmax_ce")
        >>> r["accuracy"], round(r["nll"], 4)
        (0.6666666666666666, 0.8296)
    """
    scores = scaled_log_scores(logits, head, temperature)
    probs = losses.softmax(scores, axis=-1)
    ece, bins = expected_calibration_error(probs, labels, bins=15)
    return {"accuracy": float(np.mean(scores.argmax(axis=-1) == labels)),
            "nll": float(losses.softmax_cross_entropy(scores, labels, backend="reference")), "ece": ece, "bins": bins}


def temperature_scaling(outputs, head):
    """Fit T on the validation logits of `outputs`; the test metrics before and after.

    `outputs` has ``validation_logits``, ``validation_labels``, ``test_logits``,
    ``test_labels``.  Raises RuntimeError if the accuracy changed, which a
    positive temperature cannot do.
    """
    T = fit_temperature(outputs["validation_logits"], outputs["validation_labels"], head)
    before = calibration_metrics(outputs["test_logits"], outputs["test_labels"], head)
    after = calibration_metrics(outputs["test_logits"], outputs["test_labels"], head, T)
    if before["accuracy"] != after["accuracy"]:
        raise RuntimeError(f"temperature {T} changed the accuracy of a {head} model: "
                           f"{before['accuracy']} -> {after['accuracy']}")
    return {"temperature": T, "before": before, "after": after}
