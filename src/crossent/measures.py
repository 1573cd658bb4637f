"""Information measures: self-information, entropy, cross-entropy, KL, JS, MI.

A distribution lies along `axis` (default the last one); every function
broadcasts over the other axes, and `p` and `q` broadcast against each other.
``base=None`` gives nats, ``base=2`` bits, any other positive ``base != 1``
(int, float, Fraction or NumPy scalar) the matching unit (the nats result
divided by ``ln base``, taken in float64).  A reduction over
1-D input returns a NumPy float; batched input returns an array.

Inputs must already be probability distributions.  Non-negative weights or
counts are accepted only with the explicit opt-in ``normalize=True``; nothing
is normalised silently.  Zeros follow the conventions of information theory:
``0 log 0 = 0`` and ``p log(p / 0) = +inf`` for ``p > 0``, with no NaN and no
warning (the SciPy building blocks ``entr``, ``xlogy`` and ``rel_entr`` are
defined that way).

float16 and float32 input, and the bfloat16/float8 formats of ``ml_dtypes``
(read exactly as float32), is computed and returned in float32; float64 and
longdouble in float64, the widest type those SciPy functions take.  A sum is
checked against the tolerance of the dtype it was given in, so a bfloat16
distribution is judged by bfloat16's precision.  ``normalize=True`` scales
by a power of two before summing, so any finite counts can be normalised.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ._rules import safe_log
from ._samples import check_samples
from ._validate import (
    as_float_array,
    check_base,
    check_distribution,
    check_distribution_pair,
    check_flag,
    check_joint_table,
    check_unit_interval,
    compute_dtype,
    to_base,
)

__all__ = [
    "self_information",
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "js_divergence",
    "joint_entropy",
    "conditional_entropy",
    "mutual_information",
    "joint_distribution",
]


def self_information(p, *, base=None):
    r"""Self-information (surprisal) of events with probability `p`, elementwise.

    .. math::

        I(p) = -\log p

    Args:
        p: probabilities in [0, 1], any shape.
        base: logarithm base; ``None`` for nats, ``2`` for bits.

    Returns:
        An array of the shape of `p` (a NumPy float for a scalar `p`).
        ``p = 0`` gives ``+inf`` (an impossible event would be infinitely
        surprising), without a warning; ``p = 1`` gives 0.

    Notes:
        Information is additive over independent events,
        ``I(p1 p2) = I(p1) + I(p2)``, which is what forces the logarithm.
        The rarer the event, the more information its occurrence carries.

    Examples:
        A fair coin landing heads carries exactly one bit:

        >>> float(self_information(0.5, base=2))
        1.0

        "The exam is held as usual" (almost certain) tells us little;
        "the exam is cancelled" (probability 1%) tells us much more:

        >>> usual, cancelled = self_information([0.99, 0.01], base=2)
        >>> bool(cancelled > usual)
        True
        >>> round(float(cancelled), 4)
        6.6439
    """
    log_base = check_base(base)
    p = as_float_array(p, "p")
    check_unit_interval(p, "p")
    p = p.astype(compute_dtype(p.dtype), copy=False)
    # log only where p > 0, so p = 0 yields +inf without a divide-by-zero warning.
    return _finish(0.0 - safe_log(p), log_base)


def entropy(p, *, axis=-1, base=None, normalize=False):
    r"""Shannon entropy of the distribution(s) `p` along `axis`.

    .. math::

        H(p) = -\sum_i p_i \log p_i, \qquad 0 \log 0 = 0

    Args:
        p: probabilities along `axis` (each distribution sums to 1).
        axis: the axis the outcomes lie along; other axes are a batch.
        base: logarithm base; ``None`` for nats, ``2`` for bits.
        normalize: treat `p` as non-negative weights or counts and divide
            each distribution by its sum first.

    Returns:
        The entropy, a NumPy float for 1-D `p`, else an array without `axis`.

    Notes:
        Entropy is the expected self-information: the average number of
        bits (or nats) needed to remove the uncertainty about an outcome
        drawn from `p`, using the best code for `p` itself.

    Examples:
        The outcome of a fair coin is the most uncertain, one bit:

        >>> float(entropy([0.5, 0.5], base=2))
        1.0

        A biased coin is more predictable, and a sure thing carries nothing:

        >>> bool(entropy([0.9, 0.1], base=2) < 1.0), float(entropy([1.0, 0.0]))
        (True, 0.0)

        Counts need the explicit opt-in:

        >>> round(float(entropy([3, 1, 0], base=2, normalize=True)), 4)  # (3/4, 1/4, 0)
        0.8113
    """
    log_base = check_base(base)
    normalize = check_flag(normalize, "normalize")
    p = check_distribution(p, "p", axis, normalize)
    p = p.astype(compute_dtype(p.dtype), copy=False)
    # entr(x) = -x log x with entr(0) = 0 exactly: no 0 * (-inf) = NaN.  At least 0: an entry a rounding
    # above 1, which the distribution check accepts, would make it a hair negative (as KL's clip below).
    return _finish(np.maximum(special.entr(p).sum(axis=axis), 0), log_base)


def cross_entropy(p, q, *, axis=-1, base=None, normalize=False):
    r"""Cross-entropy of `q` relative to the true distribution `p`.

    .. math::

        H(p, q) = -\sum_i p_i \log q_i = H(p) + D_{\mathrm{KL}}(p \,\|\, q)

    Args:
        p: the true distribution(s) along `axis`.
        q: the model distribution(s); broadcast against `p`.
        axis: the axis the outcomes lie along; other axes are a batch.
        base: logarithm base; ``None`` for nats, ``2`` for bits.
        normalize: treat `p` and `q` as weights or counts and normalise both.

    Returns:
        The cross-entropy, a NumPy float for 1-D input, else an array.
        It is ``+inf`` where some ``p_i > 0`` has ``q_i = 0``.

    Notes:
        The cost of coding outcomes of `p` with a code built for `q`.  It
        equals the entropy of `p` (fixed by the data) plus the KL divergence,
        so minimising cross-entropy over `q` is the same as minimising
        ``D(p || q)``: this is why it serves as the classification loss.

    Examples:
        Coding a fair coin with the right code costs one bit; with a code
        for a 90/10 coin it costs more, and the excess is exactly the KL:

        >>> p, q = [0.5, 0.5], [0.9, 0.1]
        >>> float(cross_entropy(p, p, base=2))
        1.0
        >>> h_pq = cross_entropy(p, q, base=2)
        >>> round(float(h_pq), 6)
        1.736966
        >>> bool(np.isclose(h_pq, entropy(p, base=2) + kl_divergence(p, q, base=2)))
        True
    """
    log_base = check_base(base)
    p, q, axis = check_distribution_pair(p, q, axis, normalize)
    # xlogy(0, 0) = 0; xlogy(p > 0, 0) = -inf, so a missed outcome is +inf, never NaN.
    return _finish(-special.xlogy(p, q).sum(axis=axis), log_base)


def kl_divergence(p, q, *, axis=-1, base=None, normalize=False):
    r"""Kullback-Leibler divergence (relative entropy) of `q` from `p`.

    .. math::

        D_{\mathrm{KL}}(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i}

    Args:
        p: the true distribution(s) along `axis` (first argument, as in
            the mathematical notation).
        q: the approximating distribution(s); broadcast against `p`.
        axis: the axis the outcomes lie along; other axes are a batch.
        base: logarithm base; ``None`` for nats, ``2`` for bits.
        normalize: treat `p` and `q` as weights or counts and normalise both.

    Returns:
        The divergence (>= 0, 0 only when ``p == q``), a NumPy float for
        1-D input, else an array.  ``+inf`` where ``p_i > 0`` has ``q_i = 0``.

    Notes:
        The argument order is the mathematical one, ``D(p || q)`` with `p`
        the truth.  PyTorch's ``torch.nn.functional.kl_div(input, target)``
        takes the reverse order and log-probabilities: ``input = log q``,
        ``target = p``.  KL is not symmetric; it is the extra cost of coding
        `p` with a code built for `q`: ``D(p || q) = H(p, q) - H(p)``.
        A sum of terms of mixed sign can round a few ulps below 0, so the
        result is clipped at 0, which is exact in real arithmetic.

    Examples:
        Coding p = (1/2, 1/4, 1/8, 1/8) with a uniform code wastes 1/4 bit:

        >>> p, q = [0.5, 0.25, 0.125, 0.125], [0.25] * 4
        >>> float(kl_divergence(p, q, base=2))
        0.25

        It is not symmetric.  A model that rules out an outcome the truth
        allows costs infinitely much; the reverse costs one bit:

        >>> float(kl_divergence([0.5, 0.5], [1.0, 0.0], base=2))
        inf
        >>> float(kl_divergence([1.0, 0.0], [0.5, 0.5], base=2))
        1.0
    """
    log_base = check_base(base)
    p, q, axis = check_distribution_pair(p, q, axis, normalize)
    # rel_entr(0, q) = 0 and rel_entr(p > 0, 0) = +inf, by definition.
    divergence = np.maximum(special.rel_entr(p, q).sum(axis=axis), 0)
    return _finish(divergence, log_base)


def js_divergence(p, q, *, axis=-1, base=None, normalize=False):
    r"""Jensen-Shannon divergence between `p` and `q` (not its square root).

    .. math::

        \mathrm{JS}(p, q) = \tfrac12 D_{\mathrm{KL}}(p \,\|\, m)
        + \tfrac12 D_{\mathrm{KL}}(q \,\|\, m), \qquad m = \tfrac12 (p + q)

    Args:
        p: distribution(s) along `axis`.
        q: distribution(s) broadcast against `p`.
        axis: the axis the outcomes lie along; other axes are a batch.
        base: logarithm base; ``None`` for nats, ``2`` for bits.
        normalize: treat `p` and `q` as weights or counts and normalise both.

    Returns:
        The divergence, symmetric in `p` and `q`, always finite, between 0
        and ``ln 2`` nats (1 bit); a NumPy float for 1-D input, else an array.

    Notes:
        ``scipy.spatial.distance.jensenshannon`` returns the square root of
        this quantity (a metric); square it to compare.  Since ``m > 0``
        wherever ``p > 0`` or ``q > 0``, no term is infinite.

    Examples:
        Two coins that never agree are as far apart as possible, one bit:

        >>> float(js_divergence([1.0, 0.0], [0.0, 1.0], base=2))
        1.0
        >>> bool(js_divergence([0.5, 0.5], [0.9, 0.1]) == js_divergence([0.9, 0.1], [0.5, 0.5]))
        True
    """
    log_base = check_base(base)
    p, q, axis = check_distribution_pair(p, q, axis, normalize)
    # D(p || m) = sum p log(p / m) with m = (p + q) / 2. Halving p + q can
    # round a subnormal to 0 (m = 0 where p > 0 would give inf), so each term
    # is formed as p log(2p / (p + q)) instead: 2p / (p + q) lies in [0, 2].
    total = p + q
    divergence = 0.5 * (_log_ratio_term(p, total).sum(axis=axis) + _log_ratio_term(q, total).sum(axis=axis))
    return _finish(np.maximum(divergence, 0), log_base)


def joint_entropy(pxy, *, base=None, normalize=False):
    r"""Entropy of the joint distribution table `pxy` (rows X, columns Y).

    .. math::

        H(X, Y) = -\sum_{x, y} p(x, y) \log p(x, y)

    Args:
        pxy: a 2-D table of joint probabilities summing to 1 over all cells
            (or counts, with ``normalize=True``).
        base: logarithm base; ``None`` for nats, ``2`` for bits.
        normalize: divide the table by its total first.

    Returns:
        The joint entropy, a NumPy float.

    Examples:
        Two independent fair coins carry two bits together:

        >>> float(joint_entropy([[0.25, 0.25], [0.25, 0.25]], base=2))
        2.0
    """
    log_base = check_base(base)
    pxy = check_joint_table(pxy, normalize)
    return _finish(np.maximum(special.entr(pxy).sum(), 0), log_base)  # at least 0, as entropy


def conditional_entropy(pxy, *, base=None, normalize=False):
    r"""Conditional entropy H(Y | X) of the columns given the rows of `pxy`.

    .. math::

        H(Y \mid X) = H(X, Y) - H(X) = -\sum_{x, y} p(x, y) \log \frac{p(x, y)}{p(x)}

    Args:
        pxy: a 2-D joint table, rows X and columns Y, summing to 1 (or
            counts, with ``normalize=True``).  For H(X | Y) pass ``pxy.T``.
        base: logarithm base; ``None`` for nats, ``2`` for bits.
        normalize: divide the table by its total first.

    Returns:
        The remaining uncertainty about Y once X is known, a NumPy float >= 0.

    Notes:
        Computed term by term from ``p(y | x) = p(x, y) / p(x) <= 1``, so every
        term is >= 0 and no cancellation between two entropies occurs.

    Examples:
        If Y copies a fair coin X, knowing X leaves nothing to learn:

        >>> float(conditional_entropy([[0.5, 0.0], [0.0, 0.5]], base=2))
        0.0

        If Y is an independent fair coin, knowing X does not help:

        >>> float(conditional_entropy([[0.25, 0.25], [0.25, 0.25]], base=2))
        1.0
    """
    log_base = check_base(base)
    pxy = check_joint_table(pxy, normalize)
    px = pxy.sum(axis=1, keepdims=True)
    # p(y|x) only where p(x, y) > 0 (then p(x) > 0): no 0/0 warning.
    py_given_x = np.divide(pxy, px, out=np.ones_like(pxy), where=pxy > 0)
    return _finish(-special.xlogy(pxy, py_given_x).sum(), log_base)


def mutual_information(pxy, *, base=None, normalize=False):
    r"""Mutual information I(X; Y) of the joint distribution table `pxy`.

    .. math::

        I(X; Y) = \sum_{x, y} p(x, y) \log \frac{p(x, y)}{p(x)\, p(y)}
                = H(X) + H(Y) - H(X, Y)

    Args:
        pxy: a 2-D joint table, rows X and columns Y, summing to 1 (or
            counts, with ``normalize=True``).
        base: logarithm base; ``None`` for nats, ``2`` for bits.
        normalize: divide the table by its total first.

    Returns:
        The mutual information, a NumPy float >= 0 (0 exactly when X and Y
        are independent, up to rounding).

    Notes:
        It is the KL divergence of the joint from the product of the
        marginals: how many nats knowing one variable saves on the other.
        Each term is ``p(x, y) [log p(y|x) - log p(y)]``: the conditional
        ``p(x, y) / p(x)`` is at most 1 and the division by ``p(y)`` becomes a
        difference of logs, so subnormal tables neither underflow nor
        overflow; the sum is clipped at 0 against rounding.

    Examples:
        A copied fair coin shares one bit with its copy; independent coins
        share nothing:

        >>> float(mutual_information([[0.5, 0.0], [0.0, 0.5]], base=2))
        1.0
        >>> float(mutual_information([[0.25, 0.25], [0.25, 0.25]], base=2))
        0.0
    """
    log_base = check_base(base)
    pxy = check_joint_table(pxy, normalize)
    px = pxy.sum(axis=1, keepdims=True)
    py = pxy.sum(axis=0, keepdims=True)
    mask = pxy > 0
    # p(y|x) = p(x, y) / p(x) <= 1 cannot overflow; dividing it by a tiny
    # p(y) could (5e-324 / 1e-323 / 1e-323 exceeds the float range), so the
    # second division is a subtraction of logs instead. Both logs are finite
    # where p(x, y) > 0, because then p(x) and p(y) are positive too.
    py_given_x = np.divide(pxy, px, out=np.ones_like(pxy), where=mask)
    log_ratio = np.log(py_given_x) - safe_log(py, at_zero=0.0)
    terms = np.multiply(pxy, log_ratio, out=np.zeros_like(pxy), where=mask)
    return _finish(np.maximum(terms.sum(), 0), log_base)


def joint_distribution(x, y):
    r"""Empirical joint distribution of paired samples `x` and `y`.

    .. math::

        \hat p(a, b) = \frac{\#\{k : x_k = a,\ y_k = b\}}{n}

    Args:
        x: 1-D sequence of n samples of X, of one kind (numbers, strings,
            ...); None, NaN and NaT are refused, as are strings mixed with numbers.
        y: 1-D sequence of n samples of Y, paired with `x`.

    Returns:
        ``(table, x_values, y_values)``: ``table[i, j]`` is the fraction of
        pairs with ``x == x_values[i]`` and ``y == y_values[j]`` (a
        probability table summing to 1, ready for :func:`mutual_information`);
        ``x_values`` and ``y_values`` are the sorted distinct values.

    Examples:
        >>> table, xs, ys = joint_distribution(["a", "a", "b", "b"], [0, 0, 1, 0])
        >>> table
        array([[0.5 , 0.  ],
               [0.25, 0.25]])
        >>> xs.tolist(), ys.tolist()
        (['a', 'b'], [0, 1])
    """
    x_codes, x_values = check_samples(x, "x")
    y_codes, y_values = check_samples(y, "y")
    if x_codes.size != y_codes.size:
        raise ValueError(f"`x` and `y` must be paired samples of the same length, got {x_codes.size} and {y_codes.size}.")
    table = np.zeros((x_values.size, y_values.size))
    np.add.at(table, (x_codes, y_codes), 1.0)
    return table / x_codes.size, x_values, y_values


# --------------------------------------------------------------------- helpers


def _log_ratio_term(x, total):
    """``x log(2x / total)``, 0 where ``x == 0``; ``total >= x`` elementwise."""
    ratio = np.divide(2 * x, total, out=np.ones(np.broadcast(x, total).shape, dtype=total.dtype), where=total > 0)
    return special.xlogy(x, ratio)


def _finish(nats, log_base):
    """Convert to the requested unit; 0-d arrays become NumPy scalars."""
    # `+ 0.0` turns the -0.0 of entr(1) or -log(1) into 0.0.
    out = np.asarray(to_base(nats, log_base)) + 0.0
    return out[()] if out.ndim == 0 else out
