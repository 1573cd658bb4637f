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
import numbers
import warnings

import numpy as np

from .. import losses
from .._validate import as_float_array, check_finite, check_integer_labels, show
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
    sigmoids.  Computed in log space: ``log_sigmoid`` keeps the order of the
    sigmoids, which tie at 1.0 beyond z/T ≈ 37, up to z/T ≈ 745 (beyond, it
    rounds to -0 and large scores tie too; :func:`calibration_metrics`
    therefore reads each prediction from `z` itself).  One output
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


def _check_inputs(logits, labels, head):
    """Validated ``(logits, labels)``: ``(n, C)`` finite float64 logits of a softmax or sigmoid head, n >= 1,
    and n class indices (two classes for one output unit)."""
    if not isinstance(head, str) or not head.startswith(("softmax", "sigmoid")):
        raise ValueError(f"`head` must be a softmax or sigmoid head for temperature scaling, got {head!r}.")
    logits = as_float_array(logits, "logits").astype(np.float64, copy=False)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"`logits` must be a non-empty (examples, outputs) array, got shape {logits.shape}.")
    check_finite(logits, "logits")
    labels = np.asarray(labels)
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` must have one class index per row of `logits`, shape {logits.shape[:1]}, "
                         f"got {labels.shape}.")
    check_integer_labels(labels, max(logits.shape[1], 2), "labels")
    return logits, labels


def _check_temperatures(temperature, logits, name="temperature", *, scalar=False):
    """`temperature` as float64 (a scalar, or 1-D unless `scalar`), each positive and finite, ``logits / T`` finite."""
    if isinstance(temperature, (bool, np.bool_)) or not (isinstance(temperature, numbers.Real)
                                                         or isinstance(temperature, np.ndarray)):
        raise TypeError(f"`{name}` must be a positive real number, got {temperature!r}.")
    values = np.asarray(temperature, dtype=np.float64)
    if scalar and values.ndim:
        raise ValueError(f"`{name}` must be one number, got an array of shape {values.shape}.")
    if values.ndim > 1 or not (np.isfinite(values) & (values > 0)).all():
        raise ValueError(f"`{name}` must be positive and finite (a number, or a 1-D array of them), got {show(values)}.")
    with np.errstate(over="ignore"):
        overflows = values.size and not np.isfinite(np.abs(logits).max() / values.min())
    if overflows:
        raise ValueError(f"`logits` up to {np.abs(logits).max()!r} are too large to divide by the temperature "
                         f"{values.min()!r}: z / T overflows.")
    return values


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
    logits, labels = _check_inputs(logits, labels, head)
    temperatures = _check_temperatures(temperature, logits)
    if temperatures.ndim == 0:
        return float(_nll(logits, labels, head, temperatures[None])[0])
    return _nll(logits, labels, head, temperatures)


def _nll(logits, labels, head, temperatures):
    """:func:`negative_log_likelihood` of checked inputs at the 1-D `temperatures`."""
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
    array computation (six rounds).  It finds the best grid point of the
    whole interval, where a bracketing search (SciPy's ``minimize_scalar``)
    assumes one minimum, and it needs no ``scipy.optimize`` (whose import took
    0.2-0.4 s, a tenth of the quick report).

    Two cases have no minimum inside the interval, and each gives a
    ``RuntimeWarning``: an NLL that does not depend on T (all-zero logits, one
    softmax output) returns T = 1, no change; an NLL still falling at an end of
    the interval (validation data the model separates perfectly: the NLL falls
    as T -> 0) returns that end.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.integers(0, 3, 4000)
        >>> x = rng.normal(size=(4000, 3)) + 2.0 * np.eye(3)[labels]  # unit Gaussians, mean 2 at the label
        >>> # the true posterior is softmax(2 x); logits 6 x are three times too confident
        >>> T = fit_temperature(6.0 * x, labels, "softmax_ce")
        >>> bool(2.7 < T < 3.3)
        True
    """
    logits, labels = _check_inputs(logits, labels, head)
    _check_temperatures(np.array(TEMPERATURE_BOUNDS), logits, "TEMPERATURE_BOUNDS")
    ends = low, high = tuple(math.log(t) for t in TEMPERATURE_BOUNDS)
    while True:
        grid = np.linspace(low, high, SEARCH_POINTS)  # its first and last points are low and high exactly
        nll = _nll(logits, labels, head, np.exp(grid))
        if (low, high) == ends and nll.min() == nll.max():
            warnings.warn("the validation NLL is the same at every temperature: returning T = 1 (no change).",
                          RuntimeWarning, stacklevel=2)
            return 1.0
        best = int(np.argmin(nll))
        if high - low <= 1e-6 * (SEARCH_POINTS - 1):
            break
        # the minimum of the curve lies between the best point's neighbours
        low, high = grid[max(best - 1, 0)], grid[min(best + 1, SEARCH_POINTS - 1)]
    if grid[best] in ends:
        end = TEMPERATURE_BOUNDS[ends.index(grid[best])]
        warnings.warn(f"the validation NLL is lowest at the end T = {end:g} of the search interval "
                      f"{TEMPERATURE_BOUNDS}: it keeps falling beyond (a perfectly separated validation set?).",
                      RuntimeWarning, stacklevel=2)
        return end
    return math.exp(grid[best])


def predictions(logits):
    """The class each row of `logits` predicts, whatever the temperature: the argmax (one output unit: z > 0).

    Softmax and normalised sigmoids both keep the order of the logits, so this
    is the argmax of the head's probabilities at every T > 0; computed from the
    logits, it stays so where the scaled scores or probabilities round to ties.

    Examples:
        >>> predictions(np.array([[40.0, 45.0, -3.0], [0.5, -1.0, 0.0]])).tolist(), predictions(np.array([[-2.0], [3.0]])).tolist()
        ([1, 0], [0, 1])
    """
    logits = np.asarray(logits)
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(np.int64)
    return logits.argmax(axis=-1)


def calibration_metrics(logits, labels, head, temperature=1.0):
    """Accuracy, NLL (nats), ECE and reliability bins of the head's probabilities of ``logits / temperature``.

    The ECE is :func:`~crossent.lab.models.expected_calibration_error` (15
    equal-width bins closed on the right: confidence the largest probability,
    correct where :func:`predictions` is the label) and the NLL the library's
    softmax cross-entropy of :func:`scaled_log_scores`: the numbers of
    :func:`crossent.metrics.evaluate` of those scores (the tests check them),
    without its exact summation (which loads Numba, a second of the quick
    report).  They differ only where scores tie in float64 (two sigmoid units
    beyond z/T ≈ 745, or their probabilities beyond z/T ≈ 37), which `evaluate`
    resolves by position and this function by the logits; so the accuracy
    cannot change with the temperature.

    Examples:
        >>> z = np.array([[3.0, 0.0], [0.0, 1.0], [2.0, 0.0]]); y = np.array([0, 1, 1])
        >>> r = calibration_metrics(z, y, "softmax_ce")
        >>> r["accuracy"], round(r["nll"], 4)
        (0.6666666666666666, 0.8296)
    """
    logits, labels = _check_inputs(logits, labels, head)
    temperature = float(_check_temperatures(temperature, logits, scalar=True))
    scores = scaled_log_scores(logits, head, temperature)
    predicted = predictions(logits)
    probs = losses.softmax(scores, axis=-1)
    ece, bins = expected_calibration_error(probs, labels, bins=15, predictions=predicted)
    return {"accuracy": float(np.mean(predicted == labels)),
            "nll": float(losses.softmax_cross_entropy(scores, labels, backend="reference")), "ece": ece, "bins": bins}


def temperature_scaling(outputs, head):
    """Fit T on the validation logits of `outputs`; the test metrics before and after.

    `outputs` has ``validation_logits``, ``validation_labels``, ``test_logits``,
    ``test_labels``.  The accuracy is the same before and after: the
    predictions do not depend on T (see :func:`calibration_metrics`).
    """
    T = fit_temperature(outputs["validation_logits"], outputs["validation_labels"], head)
    before = calibration_metrics(outputs["test_logits"], outputs["test_labels"], head)
    after = calibration_metrics(outputs["test_logits"], outputs["test_labels"], head, T)
    return {"temperature": T, "before": before, "after": after}
