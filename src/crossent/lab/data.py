"""The lab's data sets: scikit-learn's bundled digits and breast-cancer sets (nothing is downloaded)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data / 16.0, bunch.target.astype(np.int64)


@lru_cache(maxsize=8)
def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    X = bunch.data
    return (X - X.mean(axis=0)) / X.std(axis=0), bunch.target.astype(np.int64)


def _split(X, y, seed, test_fraction, train_limit):
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, stratify=y, random_state=seed
    )
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
    from sklearn.model_selection import train_test_split

    X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=fraction, stratify=y_train,
                                                  random_state=seed)
    return X_fit, y_fit, X_val, y_val
