"""The one list of conformance cases: all-pairs of the option axes, then the hand-picked extremes.

A case is (N, C) logits of one dtype, labels (int64 class indices or
probability targets of the logits' dtype) and the options.  Its `features`
name what an implementation may declare unsupported.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

DTYPES = {
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
IGNORE = -100  # the ignore_index of the cases that ignore rows (PyTorch's default)


@dataclass(frozen=True, eq=False)
class Case:
    id: str
    logits: np.ndarray  # (N, C), possibly read-only
    labels: np.ndarray  # int64 (N,) or (N, C) probability targets of the logits' dtype
    class_weight: np.ndarray | None = None  # float64, values exact in bfloat16
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    reduction: str = "mean"
    raises: type | None = None  # the rule's error, if the case is invalid input
    features: frozenset = field(init=False)

    def __post_init__(self):
        found = {self.dtype_name}
        found |= {"probability_targets"} if self.probability_targets else set()
        found |= {"class_weight"} if self.class_weight is not None else set()
        found |= {"z_loss"} if self.z_loss else set()
        found |= {"label_smoothing"} if self.label_smoothing else set()
        with np.errstate(invalid="ignore"):
            found |= {"masked"} if np.isneginf(self.logits.astype(np.float64)).any() else set()
        object.__setattr__(self, "features", frozenset(found))

    @property
    def dtype_name(self) -> str:
        return next(name for name, dtype in DTYPES.items() if dtype == self.logits.dtype)

    @property
    def probability_targets(self) -> bool:
        return self.labels.dtype.kind not in "iu"

    @property
    def options(self) -> dict:
        return dict(class_weight=self.class_weight, ignore_index=self.ignore_index,
                    label_smoothing=self.label_smoothing, z_loss=self.z_loss, reduction=self.reduction)

    def __repr__(self):
        return self.id


# --------------------------------------------------------------------------- all-pairs


AXES = {
    "dtype": ["float32", "float64", "float16", "bfloat16"],
    "n": [0, 1, 3, 7],
    "c": [1, 2, 5, 33],
    "targets": ["int", "prob"],
    "label_smoothing": [0.0, 0.1, 1.0],
    "class_weight": ["none", "positive", "zeros"],
    "ignore_index": ["none", "some", "all"],
    "z_loss": [0.0, 1e-3],
    "reduction": ["none", "sum", "mean"],
}


def _allowed(row: dict) -> bool:
    """Probability targets have no ignored rows."""
    return not (row.get("targets") == "prob" and row.get("ignore_index", "none") != "none")


def all_pairs(axes: dict, allowed=_allowed) -> list[dict]:
    """Rows that together hold every allowed pair of values of any two axes (greedy, deterministic)."""
    names = list(axes)
    uncovered = set()
    for a, b in itertools.combinations(names, 2):
        for u, v in itertools.product(range(len(axes[a])), range(len(axes[b]))):
            if allowed({a: axes[a][u], b: axes[b][v]}):
                uncovered.add(((a, u), (b, v)))
    rows = []
    while uncovered:
        (a, u), (b, v) = min(uncovered)
        chosen = {a: u, b: v}
        for name in names:
            if name in chosen:
                continue

            def gain(k, name=name):
                trial = {**chosen, name: k}
                if not allowed({n: axes[n][i] for n, i in trial.items()}):
                    return -1
                return sum(tuple(sorted([(name, k), (n, i)], key=lambda p: names.index(p[0]))) in uncovered
                           for n, i in chosen.items())

            chosen[name] = max(range(len(axes[name])), key=lambda k: (gain(k), -k))
        pairs = itertools.combinations(sorted(chosen.items(), key=lambda p: names.index(p[0])), 2)
        uncovered -= set(pairs)
        rows.append({name: axes[name][chosen[name]] for name in names})
    return rows


def _in_dtype(values, dtype_name: str) -> np.ndarray:
    return np.asarray(values, np.float64).astype(DTYPES[dtype_name])


def _pairwise_case(k: int, row: dict) -> Case:
    rng = np.random.default_rng(1000 + k)
    n, c, dtype = row["n"], row["c"], row["dtype"]
    logits = _in_dtype(rng.uniform(-3, 3, (n, c)), dtype)
    if row["targets"] == "prob":  # multiples of 1/128: exact in every dtype and summing to exactly 1
        labels = _in_dtype(rng.multinomial(128, np.full(c, 1 / c), size=n) / 128, dtype)
    else:
        labels = rng.integers(0, c, n).astype(np.int64)
        if row["ignore_index"] == "some":
            labels[1::2] = IGNORE
        elif row["ignore_index"] == "all":
            labels[:] = IGNORE
    weight = None
    if row["class_weight"] != "none":
        weight = 0.25 * rng.integers(1, 13, c)  # exact in bfloat16
        if row["class_weight"] == "zeros":
            weight[::2] = 0.0
    name = (f"pairs{k:02d}-{dtype}-n{n}c{c}-{row['targets']}-ls{row['label_smoothing']:g}-w_{row['class_weight']}"
            f"-ignore_{row['ignore_index']}-z{row['z_loss']:g}-{row['reduction']}")
    return Case(name, logits, labels, class_weight=weight,
                ignore_index=None if row["ignore_index"] == "none" else IGNORE,
                label_smoothing=row["label_smoothing"], z_loss=row["z_loss"], reduction=row["reduction"])


PAIRWISE = [_pairwise_case(k, row) for k, row in enumerate(all_pairs(AXES))]


# --------------------------------------------------------------------------- hand-picked extremes


def _case(id, logits, labels, dtype="float32", *, readonly=None, **options) -> Case:
    logits = _in_dtype(logits, dtype)
    labels = np.asarray(labels)
    labels = _in_dtype(labels, dtype) if labels.dtype.kind == "f" else labels.astype(np.int64)
    if readonly == "frombuffer":  # a view of immutable bytes
        logits = np.frombuffer(logits.tobytes(), logits.dtype).reshape(logits.shape)
        labels = np.frombuffer(labels.tobytes(), labels.dtype).reshape(labels.shape)
    elif readonly == "setflags":
        logits.setflags(write=False)
        labels.setflags(write=False)
    if options.get("class_weight") is not None:
        options["class_weight"] = np.asarray(options["class_weight"], np.float64)
    return Case(f"{id}-{dtype}", logits, labels, **options)


def _offset_logits(offset, ulp, shape, seed):
    """`offset` plus small multiples of `ulp` (exactly representable at that offset)."""
    return offset + ulp * np.random.default_rng(seed).integers(-40, 41, shape)


inf = np.inf
F32_MAX, F64_MAX = float(np.finfo(np.float32).max), float(np.finfo(np.float64).max)
F32_TINY, F64_TINY = float(np.finfo(np.float32).smallest_subnormal), float(np.finfo(np.float64).smallest_subnormal)
_rng = np.random.default_rng(7)
_WIDE_C = 4099  # more than two Numba chunks of 2048 classes
_wide_logits = np.linspace(-4, 4, 3 * _WIDE_C).reshape(3, _WIDE_C)  # the row maximum grows chunk by chunk
_wide_logits[1, 3000] = -inf
_wide_probs = np.zeros((3, _WIDE_C))
_wide_probs[:, [5, 2100, 4098]] = [0.25, 0.5, 0.25]
_prob3 = [[0.5, 0.25, 0.25, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0], [0.125, 0.125, 0.25, 0.5, 0.0]]

EXTREMES = [
    # huge equal logits: the loss is log 2 (lse - x rounds to 0 outside the shifted frame)
    _case("huge_equal", [[1e30, 1e30]], [0], "float32"),
    _case("huge_equal", [[1e17, 1e17]], [1], "float64"),
    _case("huge_equal_smoothing_none", [[1e30, 1e30, 1e30], [1e30, 1e30, -1e30]], [2, 0], "float32",
          label_smoothing=0.1, reduction="none"),
    _case("huge_equal_smoothing_none", [[1e17, 1e17, 1e17], [1e17, 1e17, -1e17]], [2, 0], "float64",
          label_smoothing=0.1, reduction="none"),
    # a large common offset
    _case("offset_1e5_prob", _offset_logits(1e5, 2**-7, (3, 5), 1), _prob3, "float32"),
    _case("offset_1e6_prob", _offset_logits(1e6, 2**-4, (3, 5), 2), _prob3, "float32", label_smoothing=0.1),
    _case("offset_1e5_prob_z_loss", _offset_logits(1e5, 2**-7, (3, 5), 3), _prob3, "float32", z_loss=1e-3),
    _case("offset_1e12_int", _offset_logits(1e12, 2**-12, (4, 6), 4), [0, 5, 2, 3], "float64"),
    _case("offset_1e12_int_smoothing_sum", _offset_logits(1e12, 2**-12, (4, 6), 5), [0, 5, 2, 3], "float64",
          label_smoothing=0.1, class_weight=[1, 2, 0.5, 1, 3, 1], reduction="sum"),
    _case("one_class_prob", [[6.5], [-3.25], [0.0]], [[1.0], [1.0], [1.0]], "float32", label_smoothing=0.1,
          reduction="none"),
    _case("one_class_prob", [[6.5], [-3.25], [0.0]], [[1.0], [1.0], [1.0]], "float64", reduction="sum"),
    # near the largest finite logits, and differences at the smallest subnormal
    _case("near_max_sum", [[F32_MAX / 2, -F32_MAX / 2], [F32_MAX / 2, -F32_MAX / 2]], [0, 1], "float32",
          reduction="sum"),
    _case("near_max_sum", [[F64_MAX / 2, -F64_MAX / 2], [F64_MAX / 2, -F64_MAX / 2]], [0, 1], "float64",
          reduction="sum"),
    _case("near_max_smoothing_none", [[F32_MAX / 2, -F32_MAX / 2, 0.0]], [1], "float32", label_smoothing=0.1,
          reduction="none"),
    _case("near_max_smoothing_none", [[F64_MAX / 2, -F64_MAX / 2, 0.0]], [1], "float64", label_smoothing=0.1,
          reduction="none"),
    _case("subnormal_differences", [[0.0, F32_TINY, 2 * F32_TINY], [F32_TINY, 0.0, -F32_TINY]], [2, 1], "float32",
          reduction="none"),
    _case("subnormal_differences", [[0.0, F64_TINY, 2 * F64_TINY], [F64_TINY, 0.0, -F64_TINY]], [2, 1], "float64",
          reduction="none"),
    # confident rows: a loss near 0 (needs log1p of the non-maximal mass)
    _case("confident_row", [[12.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [0, 1], "float32", reduction="none"),
    _case("confident_row", [[30.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [0, 1], "float64", reduction="none"),
    _case("z_loss_lse_near_zero", [[-1.0, -2.0, -2.0, -2.0, -2.0]], [0], "float32", class_weight=[0.0] * 5,
          z_loss=1e-3, reduction="none"),  # lse = -0.095: the loss is z_loss * lse**2 alone
    # -inf masks
    _case("mask_non_target", [[0.0, -inf, 1.0], [2.0, 0.0, -inf]], [0, 1], "float32"),
    _case("mask_non_target", [[0.0, -inf, 1.0], [2.0, 0.0, -inf]], [0, 1], "float64", z_loss=1e-3),
    _case("mask_target_weight_zero", [[0.0, -inf, 1.0], [2.0, 0.0, -inf]], [1, 0], "float32",
          class_weight=[1.0, 0.0, 2.0]),
    _case("mask_target_weight_zero", [[0.0, -inf, 1.0], [2.0, 0.0, -inf]], [1, 0], "float64",
          class_weight=[1.0, 0.0, 2.0], reduction="none"),
    _case("mask_target", [[0.0, -inf, 1.0], [2.0, 0.0, 1.0]], [1, 0], "float32", reduction="none"),
    _case("mask_target", [[0.0, -inf, 1.0], [2.0, 0.0, 1.0]], [1, 0], "float64"),
    _case("mask_target_smoothing_1", [[0.0, -inf, 1.0], [2.0, 0.0, 1.0]], [1, 0], "float32", label_smoothing=1.0,
          reduction="none"),
    _case("mask_target_smoothing_1", [[0.0, -inf, 1.0], [2.0, 0.0, 1.0]], [1, 0], "float64", label_smoothing=1.0),
    _case("mask_smoothing_weight_zero", [[0.0, -inf, 1.0], [2.0, 0.0, 1.0]], [0, 2], "float32",
          label_smoothing=0.1, class_weight=[1.0, 0.0, 2.0], reduction="sum"),
    _case("mask_smoothing_weight_zero", [[0.0, -inf, 1.0], [2.0, 0.0, 1.0]], [0, 2], "float64",
          label_smoothing=0.1, class_weight=[1.0, 0.0, 2.0]),
    _case("mask_prob_zero_mass", [[0.0, -inf, 1.0], [2.0, 0.0, 1.0]], [[0.5, 0.0, 0.5], [0.25, 0.25, 0.5]],
          "float32"),
    _case("mask_prob_zero_mass", [[0.0, -inf, 1.0], [2.0, 0.0, 1.0]], [[0.5, 0.0, 0.5], [0.25, 0.25, 0.5]],
          "float64", reduction="none"),
    _case("mask_prob_target_smoothing_1", [[-inf, 0.0, 1.0], [2.0, 0.0, 1.0]], [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]],
          "float32", label_smoothing=1.0, reduction="none"),
    _case("mask_prob_target_smoothing_1", [[-inf, 0.0, 1.0], [2.0, 0.0, 1.0]], [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]],
          "float64", label_smoothing=1.0, reduction="sum"),
    _case("mask_ignored_all_masked_row", [[-inf, -inf, -inf], [2.0, 0.0, 1.0]], [IGNORE, 0], "float32",
          ignore_index=IGNORE),
    _case("mask_ignored_all_masked_row", [[-inf, -inf, -inf], [2.0, 0.0, 1.0]], [IGNORE, 0], "float64",
          ignore_index=IGNORE, label_smoothing=0.1, z_loss=1e-3, reduction="none"),
    _case("mask_ignored_row_class0_masked", [[-inf, 0.0, 1.0], [0.0, 1.0, 2.0]], [IGNORE, 2], "float32",
          ignore_index=IGNORE),
    _case("mask_ignored_row_class0_masked", [[-inf, 0.0, 1.0], [0.0, 1.0, 2.0]], [IGNORE, 2], "float64",
          ignore_index=IGNORE, reduction="none"),
    _case("mask_kept_all_masked_row", [[-inf, -inf, -inf], [2.0, 0.0, 1.0]], [1, 0], "float32", raises=ValueError),
    _case("mask_kept_all_masked_row", [[-inf, -inf, -inf], [2.0, 0.0, 1.0]], [1, 0], "float64", raises=ValueError),
    _case("mask_kept_all_masked_one_class", [[-inf], [0.0]], [0, 0], "float32", raises=ValueError),
    _case("mask_prob_all_masked_row", [[-inf, -inf, -inf], [2.0, 0.0, 1.0]], [[1.0, 0, 0], [0, 1.0, 0]], "float32",
          raises=ValueError),
    # more than one Numba chunk of classes
    _case("wide_rows", _wide_logits, [0, 2100, 4098], "float32", label_smoothing=0.1, z_loss=1e-3,
          class_weight=1 + np.arange(_WIDE_C) % 3),
    _case("wide_rows", _wide_logits, [0, 2100, 4098], "float64", label_smoothing=0.1, reduction="none"),
    _case("wide_rows_prob", np.linspace(-4, 4, 3 * _WIDE_C).reshape(3, _WIDE_C), _wide_probs, "float32"),
    # invalid logits
    _case("nan_logit", [[0.0, np.nan], [1.0, 2.0]], [0, 1], "float32", raises=ValueError),
    _case("nan_logit", [[0.0, np.nan], [1.0, 2.0]], [0, 1], "float64", raises=ValueError),
    _case("nan_logit_ignored_row", [[0.0, np.nan], [1.0, 2.0]], [IGNORE, 1], "float32", ignore_index=IGNORE,
          raises=ValueError),
    _case("plus_inf_logit", [[0.0, inf], [1.0, 2.0]], [0, 1], "float32", raises=ValueError),
    _case("plus_inf_logit", [[0.0, inf], [1.0, 2.0]], [0, 1], "float64", raises=ValueError),
    _case("plus_inf_logit_prob", [[0.0, inf], [1.0, 2.0]], [[0.5, 0.5], [1.0, 0.0]], "float32", raises=ValueError),
    # probability targets and ignore_index: a negative one is dropped, a class index is refused
    _case("prob_ignore_index_negative", [[0.0, 1.0, 2.0], [1.0, 0.0, -1.0]], [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]],
          "float64", ignore_index=IGNORE),
    _case("prob_ignore_index_class", [[0.0, 1.0, 2.0], [1.0, 0.0, -1.0]], [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]],
          "float64", ignore_index=0, raises=ValueError),
    # zero total weight: the empty mean, although the rows cost something
    _case("zero_total_weight_mean", [[0.0, 1.0, 2.0], [1.0, 0.0, -1.0]], [0, 0], "float32", label_smoothing=0.1,
          class_weight=[0.0, 1.0, 1.0], z_loss=1e-3),
    _case("zero_total_weight_mean_masked", [[0.0, -inf, 1.0], [1.0, 0.0, -1.0]], [0, 0], "float32",
          label_smoothing=0.1, class_weight=[0.0, 0.5, 1.0]),
    _case("zero_total_weight_mean_masked", [[0.0, -inf, 1.0], [1.0, 0.0, -1.0]], [0, 0], "float64",
          label_smoothing=0.1, class_weight=[0.0, 0.5, 1.0]),
    # read-only logits (and labels)
    _case("readonly_frombuffer", _rng.uniform(-3, 3, (4, 5)), [0, 4, 2, IGNORE], "float32", readonly="frombuffer",
          ignore_index=IGNORE),
    _case("readonly_frombuffer", _rng.uniform(-3, 3, (4, 5)), [0, 4, 2, 1], "float64", readonly="frombuffer"),
    _case("readonly_setflags", _rng.uniform(-3, 3, (4, 5)), [0, 4, 2, 1], "float32", readonly="setflags",
          label_smoothing=0.1, reduction="sum"),
    _case("readonly_setflags_prob", _rng.uniform(-3, 3, (3, 5)), _prob3, "float32", readonly="setflags"),
    _case("readonly_setflags", _rng.uniform(-3, 3, (4, 5)), [0, 4, 2, 1], "float16", readonly="setflags"),
]

CASES = PAIRWISE + EXTREMES
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"
