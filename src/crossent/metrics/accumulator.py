r"""A streaming, mergeable accumulator of cross-entropy metrics whose sums are exact.

Each row (an example) gives, once and for all, its NLL, entropy, Brier score,
confidence, top-1 hit and top-k hit (:mod:`crossent.metrics.kernel`); those
values depend on the row alone.  The accumulator keeps their weighted sums
exactly (:mod:`crossent.metrics._exact`: integers), so that ``result()`` is
bitwise the same for any split of the same rows into batches, processes and
merge orders -- the property a Dask reduction (``chunk`` = update, ``combine``
= merge, ``aggregate`` = result) needs.  The state is O(bins) big integers,
independent of the number of rows, and travels as plain JSON.
"""

from __future__ import annotations

import math
import numbers
import re

import numpy as np

from .._rules import check_ignore_index, times
from .._validate import check_base
from . import _exact
from ._exact import ExactSum, ratio
from ._inputs import as_floats, as_labels, as_sample_weight, check_labels, prob_row_stats
from .kernel import logit_row_stats

FORMAT = "crossent.metrics.Accumulator"
VERSION = 1
_SUMS = ("nll", "entropy", "brier", "top_k")  # weighted sums over the kept rows
_BIN_SUMS = ("weight", "confidence", "correct")  # per bin
_BATCH_BYTES = 64 << 20  # rows converted (float16, bfloat16) and summed per step


class _DefaultTopK(int):
    """The default ``top_k=5``: lowered to the number of classes when there are fewer (an explicit k is not)."""

    def __repr__(self) -> str:
        return "5"


DEFAULT_TOP_K = _DefaultTopK(5)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


class Accumulator:
    r"""Exact streaming cross-entropy metrics: ``update`` with batches, ``merge`` partial states, read ``result``.

    Over the kept rows :math:`i` (label not `ignore_index`) with weights
    :math:`w_i` (`sample_weight`, else 1) and :math:`W = \sum_i w_i`:
    ``nll`` :math:`= \frac1W\sum_i w_i(-\log p_{i,y_i})`, ``perplexity`` :math:`= e^{\mathrm{nll}}`,
    ``entropy`` :math:`= \frac1W\sum_i w_i H(p_i)`, ``brier`` :math:`= \frac1W\sum_i w_i\sum_c (p_{ic} - [c = y_i])^2`,
    ``accuracy`` (the first maximum is the prediction), ``top_k_accuracy`` (fewer than k classes score
    strictly higher than the label), and top-label calibration over equal-width confidence bins closed
    on the right (:math:`(\frac{b}{B}, \frac{b+1}{B}]`, confidence 0 in the first bin):
    ``ece`` :math:`= \frac1W\sum_b |A_b - C_b|`, ``mce`` :math:`= \max_b |A_b - C_b| / W_b`,
    with :math:`A_b, C_b, W_b` the weighted hits, confidences and weights of bin b.

    Args:
        num_classes: C, or None to take it from the first batch (a 1-D batch is binary: C = 2).
        bins: number of confidence bins (15, as in Guo et al. 2017 and the lab).
        top_k: k of ``top_k_accuracy``; an explicit ``k > C`` is a `ValueError`, the default 5 is
            lowered to C when C < 5.
        ignore_index: label of rows that do not count (None: every row counts).
        base: also report ``nll_base``, the NLL in log-`base` units (2: bits).
        num_threads, backend: of the logits kernel (:func:`crossent.metrics.kernel.logit_row_stats`).
            The backends round differently in the last bits: merge states made with one backend.

    ``result()`` returns the floats above and ``count`` (kept rows), ``ignored``, ``total_weight``
    (:math:`W`) and ``bins`` (edges, count, weight, mean confidence and accuracy per bin).  A label
    of probability exactly 0 makes ``nll`` infinite (no clipping); with :math:`W = 0` the means are NaN.

    Examples:
        A confident right answer and a hesitant wrong one:

        >>> acc = Accumulator(bins=10)
        >>> acc.update(probs=np.array([[0.9, 0.1], [0.6, 0.4]]), labels=np.array([0, 1]))
        >>> r = acc.result()
        >>> round(r["nll"], 4), r["accuracy"], round(r["ece"], 4), r["count"]
        (0.5108, 0.5, 0.35, 2)
        >>> other = Accumulator.from_dict(acc.to_dict())  # plain JSON, exactly
        >>> other.merge(acc).result()["nll"] == r["nll"]
        True
    """

    def __init__(self, num_classes=None, *, bins=15, top_k=DEFAULT_TOP_K, ignore_index=None, base=None,
                 num_threads=None, backend="auto"):
        self.num_classes = None if num_classes is None else _positive_int(num_classes, "num_classes")
        self.bins = _positive_int(bins, "bins")
        self.top_k = top_k if isinstance(top_k, _DefaultTopK) else _positive_int(top_k, "top_k")
        self.ignore_index = check_ignore_index(ignore_index)
        check_base(base)
        self.base = None if base is None else float(base)
        self.num_threads, self.backend = num_threads, backend
        if self.num_classes is not None:
            self._check_top_k(self.num_classes)
        self.count = 0
        self.ignored = 0
        self.sums = {name: ExactSum() for name in _SUMS}
        self.bin_count = [0] * self.bins
        self.bin_sums = {name: [ExactSum() for _ in range(self.bins)] for name in _BIN_SUMS}

    # ------------------------------------------------------------- options

    def options(self) -> dict:
        """The options that decide the state's meaning (merging needs them equal)."""
        return {"num_classes": self.num_classes, "bins": self.bins, "top_k": int(self.top_k),
                "top_k_default": isinstance(self.top_k, _DefaultTopK), "ignore_index": self.ignore_index,
                "base": self.base}

    def _check_top_k(self, num_classes: int) -> None:
        if not isinstance(self.top_k, _DefaultTopK) and self.top_k > num_classes:
            raise ValueError(f"`top_k`={self.top_k} is larger than the number of classes ({num_classes}).")

    def _k(self) -> int:
        return min(int(self.top_k), self.num_classes) if isinstance(self.top_k, _DefaultTopK) else self.top_k

    @property
    def top_k_used(self) -> int:
        """The k of ``top_k_accuracy``: `top_k`, or the default 5 lowered to the number of classes.

        Examples:
            >>> acc = Accumulator(); acc.update(logits=np.zeros((2, 3)), labels=np.array([0, 1])); acc.top_k_used
            3
        """
        return int(self.top_k) if self.num_classes is None else int(self._k())

    def _set_num_classes(self, num_classes: int, name: str, shape) -> None:
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f"`{name}` of shape {shape} has {num_classes} classes; this accumulator has "
                             f"num_classes={self.num_classes}.")
        self._check_top_k(num_classes)
        self.num_classes = num_classes

    # -------------------------------------------------------------- update

    def update(self, *, logits=None, probs=None, labels, sample_weight=None) -> None:
        """Add a batch: (N, C) `logits` or `probs`, or (N,) binary ones (of class 1), and (N,) integer `labels`.

        NumPy arrays (np.memmap included) and CPU torch tensors are read without a copy; float16,
        bfloat16, float32 and float64 are accepted.  Invalid input (NaN or ``+inf`` logits, a counted
        row of ``-inf`` logits, probabilities off [0, 1] or not summing to 1, labels out of range, bad
        shapes) is a `ValueError`/`TypeError` naming the parameter, and leaves the state unchanged.
        """
        if (logits is None) == (probs is None):
            raise ValueError("pass exactly one of `logits` and `probs`.")
        name = "logits" if probs is None else "probs"
        x = as_floats(logits if probs is None else probs, name)
        if x.ndim not in (1, 2):
            raise ValueError(f"`{name}` must be (N, C), or (N,) for binary predictions; got shape {x.shape}.")
        n = x.shape[0]
        num_classes = 2 if x.ndim == 1 else x.shape[1]
        if num_classes == 0:
            raise ValueError(f"`{name}` must have at least one class, got shape {x.shape}.")
        labels = as_labels(labels, n)
        weight = as_sample_weight(sample_weight, n)
        kept = np.ones(n, dtype=bool) if self.ignore_index is None else labels != self.ignore_index
        check_labels(labels, kept, num_classes, self.ignore_index, 0)
        previous = self.num_classes
        self._set_num_classes(num_classes, name, x.shape)
        try:
            partial = self._empty()
            row_bytes = num_classes * 8
            batch = max(1, min(1 << 18, _BATCH_BYTES // row_bytes))
            for lo in range(0, n, batch):
                hi = min(lo + batch, n)
                stats = self._row_stats(x, name, labels[lo:hi], kept[lo:hi], lo, hi)
                partial._add(stats, kept[lo:hi], None if weight is None else weight[lo:hi])
        except BaseException:
            self.num_classes = previous
            raise
        self.merge(partial)

    def _row_stats(self, x, name, labels, kept, lo, hi):
        block = x.rows(lo, hi)
        safe = np.where(kept, labels, 0).astype(np.int64)
        if name == "probs":
            return prob_row_stats(block, safe, kept, lo, x.sum_tolerance())
        if block.ndim == 1:  # binary logits: the two-class logits (0, x), p = (1 - sigmoid(x), sigmoid(x))
            block = np.stack([np.zeros_like(block), block], axis=1)
        try:
            return logit_row_stats(block, safe, kept, num_threads=self.num_threads, backend=self.backend)
        except ValueError as exc:  # name the row in the caller's array, not in the batch
            raise ValueError(shift_rows_in_message(str(exc), lo)) from None

    def _add(self, stats, kept, weight) -> None:
        """Add the kept rows' per-row values to the exact sums."""
        n_kept = int(np.count_nonzero(kept))
        self.count += n_kept
        self.ignored += kept.size - n_kept
        if n_kept == 0:
            return
        if n_kept < kept.size:
            stats = type(stats)(*(s[kept] for s in stats))
            weight = None if weight is None else weight[kept]
        edges = bin_edges(self.bins)
        # Closed on the right, (e_b, e_{b+1}], as the lab's expected_calibration_error; 0 goes to bin 0.
        which = np.clip(np.searchsorted(edges, stats.confidence, side="left") - 1, 0, self.bins - 1)
        in_top_k = stats.rank < self._k()
        first_bin = len(_SUMS)  # groups: nll, entropy, brier, top_k, then per bin: weight, confidence, correct
        if weight is None:
            # Unit weights: the weights, hits and top-k hits are counts, exact as integers already.
            values = [stats.nll, stats.entropy, stats.brier, stats.confidence]
            groups = [0, 1, 2, first_bin + 3 * which + 1]
            self.sums["top_k"] += _counted(np.count_nonzero(in_top_k))
            for b, (rows, hits) in enumerate(zip(np.bincount(which, minlength=self.bins),
                                                 np.bincount(which[stats.correct], minlength=self.bins))):
                self.bin_sums["weight"][b] += _counted(rows)
                self.bin_sums["correct"][b] += _counted(hits)
        else:
            w = weight
            values = [times(w, stats.nll), w * stats.entropy, w * stats.brier, np.where(in_top_k, w, 0.0), w,
                      w * stats.confidence, np.where(stats.correct, w, 0.0)]
            groups = [0, 1, 2, 3, first_bin + 3 * which, first_bin + 3 * which + 1, first_bin + 3 * which + 2]
        groups = np.concatenate([np.full(n_kept, g) if isinstance(g, int) else g for g in groups])
        sums = _exact.grouped_sums(np.concatenate(values), groups, first_bin + 3 * self.bins)
        for g, name in enumerate(_SUMS):
            self.sums[name] += sums[g]
        for b in range(self.bins):
            for j, name in enumerate(_BIN_SUMS):
                self.bin_sums[name][b] += sums[first_bin + 3 * b + j]
        for b, c in enumerate(np.bincount(which, minlength=self.bins)):
            self.bin_count[b] += int(c)

    def _empty(self) -> Accumulator:
        other = Accumulator.__new__(Accumulator)
        other.__dict__.update(self.__dict__)
        other.count = other.ignored = 0
        other.sums = {name: ExactSum() for name in _SUMS}
        other.bin_count = [0] * self.bins
        other.bin_sums = {name: [ExactSum() for _ in range(self.bins)] for name in _BIN_SUMS}
        return other

    # --------------------------------------------------------------- merge

    def merge(self, other: Accumulator) -> Accumulator:
        """Add `other`'s rows to this accumulator (exact: any order gives the same state); return self."""
        if not isinstance(other, Accumulator):
            raise TypeError(f"`other` must be an Accumulator, got {type(other).__name__}.")
        mine, theirs = self.options(), other.options()
        if mine["num_classes"] is None or theirs["num_classes"] is None:
            mine["num_classes"] = theirs["num_classes"] = mine["num_classes"] or theirs["num_classes"]
        if mine != theirs:
            diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
            raise ValueError(f"cannot merge accumulators with different options (this, other): {diff}.")
        self.num_classes = mine["num_classes"]
        self.count += other.count
        self.ignored += other.ignored
        for name in _SUMS:
            self.sums[name] += other.sums[name]
        for name in _BIN_SUMS:
            for b in range(self.bins):
                self.bin_sums[name][b] += other.bin_sums[name][b]
        self.bin_count = [a + b for a, b in zip(self.bin_count, other.bin_count)]
        return self

    # -------------------------------------------------------------- result

    def result(self) -> dict:
        """The metrics (floats, each the correctly rounded value of the exact sums) and the bins."""
        weight = [s.scaled for s in self.bin_sums["weight"]]
        conf = [s.scaled for s in self.bin_sums["confidence"]]
        hits = [s.scaled for s in self.bin_sums["correct"]]
        total = sum(weight)

        def mean(s: ExactSum) -> float:
            special = s.special()
            if special is not None:
                return special if total > 0 else math.nan
            return ratio(s.scaled, total) if total > 0 else math.nan

        gaps = [abs(h - c) for h, c in zip(hits, conf)]
        nll = mean(self.sums["nll"])
        out = {
            "nll": nll,
            "perplexity": _exp(nll),
            "accuracy": ratio(sum(hits), total) if total > 0 else math.nan,
            "top_k_accuracy": mean(self.sums["top_k"]),
            "entropy": mean(self.sums["entropy"]),
            "brier": mean(self.sums["brier"]),
            "ece": ratio(sum(gaps), total) if total > 0 else math.nan,
            "mce": max((ratio(g, w) for g, w in zip(gaps, weight) if w > 0), default=math.nan),
        }
        if self.base is not None:
            out["nll_base"] = nll / math.log(self.base)
        out["bins"] = {
            "edges": bin_edges(self.bins),
            "count": np.array(self.bin_count, dtype=np.int64),
            "weight": np.array([s.value() for s in self.bin_sums["weight"]]),
            "confidence": np.array([ratio(c, w) if w > 0 else math.nan for c, w in zip(conf, weight)]),
            "accuracy": np.array([ratio(h, w) if w > 0 else math.nan for h, w in zip(hits, weight)]),
        }
        out.update(count=self.count, ignored=self.ignored, total_weight=ratio(total, 1 << _exact.SCALE_BITS))
        return out

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> dict:
        """The whole state as plain JSON-serialisable data (exact sums as strings)."""
        return {
            "format": FORMAT, "version": VERSION, "options": self.options(),
            "count": self.count, "ignored": self.ignored,
            "sums": {name: self.sums[name].to_json() for name in _SUMS},
            "bins": {"count": list(self.bin_count),
                     **{name: [s.to_json() for s in self.bin_sums[name]] for name in _BIN_SUMS}},
        }

    @classmethod
    def from_dict(cls, data: dict, *, num_threads=None, backend="auto") -> Accumulator:
        """An accumulator from :meth:`to_dict`'s output; anything malformed is a `ValueError`."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not an accumulator state of version {VERSION}: format={_get(data, 'format')!r}, "
                             f"version={_get(data, 'version')!r}.")
        try:
            opt = dict(data["options"])
            top_k = DEFAULT_TOP_K if opt.pop("top_k_default") else opt["top_k"]
            acc = cls(opt["num_classes"], bins=opt["bins"], top_k=top_k, ignore_index=opt["ignore_index"],
                      base=opt["base"], num_threads=num_threads, backend=backend)
            if int(top_k) != opt["top_k"]:
                raise ValueError("top_k")
            acc.count, acc.ignored = _count(data["count"]), _count(data["ignored"])
            acc.sums = {name: ExactSum.from_json(data["sums"][name]) for name in _SUMS}
            bins = data["bins"]
            acc.bin_count = [_count(c) for c in bins["count"]]
            acc.bin_sums = {name: [ExactSum.from_json(s) for s in bins[name]] for name in _BIN_SUMS}
            if any(len(v) != acc.bins for v in [acc.bin_count, *acc.bin_sums.values()]):
                raise ValueError("bins")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed accumulator state ({type(exc).__name__}: {exc}).") from None
        return acc

    def __repr__(self) -> str:
        return f"Accumulator(count={self.count}, ignored={self.ignored}, options={self.options()})"


def _get(data, key):
    return data.get(key) if isinstance(data, dict) else None


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a count must be a non-negative integer, got {value!r}")
    return value


def _counted(n) -> ExactSum:
    """The exact sum of `n` ones."""
    return ExactSum(int(n) << _exact.SCALE_BITS)


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def bin_edges(bins: int) -> np.ndarray:
    """The confidence bin edges: ``np.linspace(0, 1, bins + 1)`` (the lab's)."""
    return np.linspace(0.0, 1.0, bins + 1)


def shift_rows_in_message(message: str, offset: int) -> str:
    """Errors from a batch name rows from 0; add the batch's offset so that they name the caller's row.

    Examples:
        >>> shift_rows_in_message("`logits` contains NaN (first at index (2, 5)).", 100)
        '`logits` contains NaN (first at index (102, 5)).'
    """
    if offset == 0:
        return message
    for pattern in (r"(index \()(\d+)", r"(at index )(\d+)", r"(\brow )(\d+)"):
        message = re.sub(pattern, lambda m: f"{m.group(1)}{int(m.group(2)) + offset}", message)
    return message


def evaluate(*, logits=None, probs=None, labels, sample_weight=None, **options) -> dict:
    """The metrics of one set of predictions: ``Accumulator(**options)``, one update, its result.

    Examples:
        >>> r = evaluate(logits=np.array([[2.0, 0.0], [0.0, 0.0]]), labels=np.array([0, 1]), base=2)
        >>> r["accuracy"], r["count"], round(r["nll_base"], 4)
        (0.5, 2, 0.5916)
    """
    acc = Accumulator(**options)
    acc.update(logits=logits, probs=probs, labels=labels, sample_weight=sample_weight)
    return acc.result()
