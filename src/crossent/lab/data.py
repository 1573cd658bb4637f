"""The lab's data sets: scikit-learn's bundled digits and breast-cancer sets (nothing is downloaded).

The files are read from scikit-learn's package folder and split by
:func:`stratified_split`, which gives the indices of scikit-learn's
``train_test_split(..., stratify=y, random_state=seed)`` (the tests check it
against scikit-learn) without importing scikit-learn, whose import alone
took longer than the whole quick report's training.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np


def _data_file(name):
    """A data file bundled with scikit-learn, found without importing it."""
    spec = importlib.util.find_spec("sklearn")  # locates the package; runs none of its code
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


@lru_cache(maxsize=8)
def _digits():
    table = np.loadtxt(_data_file("digits.csv.gz"), delimiter=",")  # 64 pixels in 0..16, then the digit
    return table[:, :-1] / 16.0, table[:, -1].astype(np.int64)


@lru_cache(maxsize=8)
def _breast_cancer():
    table = np.loadtxt(_data_file("breast_cancer.csv"), delimiter=",", skiprows=1)  # 30 features, then 0/1
    X = table[:, :-1]
    return (X - X.mean(axis=0)) / X.std(axis=0), table[:, -1].astype(np.int64)


def _apportion(counts, draws, rng):
    """Split `draws` among classes in proportion to `counts`: floors first, then the largest remainders.

    Ties between equal remainders are broken by `rng` (as scikit-learn's ``_approximate_mode``).
    """
    share = counts / counts.sum() * draws
    taken = np.floor(share)
    missing = int(draws - taken.sum())
    remainder = share - taken
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing <= 0:
            break
        tied = np.flatnonzero(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), missing), replace=False)
        taken[chosen] += 1
        missing -= len(chosen)
    return taken.astype(int)


def stratified_split(labels, test_fraction, seed):
    """``(train, test)`` index arrays: a stratified shuffle split, the one of scikit-learn's ``train_test_split``.

    ``ceil(test_fraction * n)`` test rows; each class gets its share of the
    training and test rows (:func:`_apportion`), drawn from a shuffle of its
    members; both index lists are shuffled last.  All draws come from
    ``np.random.RandomState(seed)`` in scikit-learn's order, so the split is
    the one ``train_test_split(..., test_size=test_fraction, stratify=labels,
    random_state=seed)`` returns.

    Examples:
        >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.5, 0)
        >>> sorted(np.asarray([0, 0, 0, 0, 1, 1, 1, 1])[test].tolist())  # two of each class
        [0, 0, 1, 1]
    """
    n = len(labels)
    n_test = math.ceil(test_fraction * n)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _apportion(counts, n - n_test, rng)
    test_counts = _apportion(counts - train_counts, n_test, rng)
    train, test = [], []
    for rows, k_train, k_test, count in zip(members, train_counts, test_counts, counts):
        shuffled = rows[rng.permutation(count)]
        train.extend(shuffled[:k_train])
        test.extend(shuffled[k_train : k_train + k_test])
    return rng.permutation(train), rng.permutation(test)


def _split(X, y, seed, test_fraction, train_limit):
    train, test = stratified_split(y, test_fraction, seed)
    X_train, y_train, X_test, y_test = X[train], y[train], X[test], y[test]
    if train_limit is not None:
        X_train, y_train = X_train[:train_limit], y_train[:train_limit]
    return X_train, y_train, X_test, y_test


def digits_split(seed=0, *, test_fraction=0.2, train_limit=None):
    """8×8 digits, pixels scaled to [0, 1]; a stratified split seeded by `seed`.

    Returns ``(X_train, y_train, X_test, y_test)``; `train_limit` keeps only the
    first examples of the training part (the quick report).

    Examples:
        >>> X_train, y_train, X_test, y_test = digits_split(0)
        >>> X_train.shape, X_test.shape, float(X_train.max())
        ((1437, 64), (360, 64), 1.0)
    """
    X, y = _digits()
    return _split(X, y, seed, test_fraction, train_limit)


def breast_cancer_split(seed=0, *, test_fraction=0.2, train_limit=None):
    """Wisconsin breast-cancer set (binary), features standardised; split like :func:`digits_split`.

    Examples:
        >>> X_train, y_train, X_test, y_test = breast_cancer_split(0)
        >>> X_train.shape[1], sorted(set(y_train.tolist()))
        (30, [0, 1])
    """
    X, y = _breast_cancer()
    return _split(X, y, seed, test_fraction, train_limit)


def validation_split(X_train, y_train, seed=0, *, fraction=0.1):
    """Hold out a stratified `fraction` of a training set for validation (temperature scaling).

    Returns ``(X_fit, y_fit, X_validation, y_validation)``.

    Examples:
        >>> X_train, y_train, _, _ = digits_split(0)
        >>> X_fit, y_fit, X_val, y_val = validation_split(X_train, y_train, 0)
        >>> X_fit.shape[0], X_val.shape[0]
        (1293, 144)
    """
    fit, held_out = stratified_split(y_train, fraction, seed)
    return X_train[fit], y_train[fit], X_train[held_out], y_train[held_out]
