"""Tests of crossent.lab.data: scikit-learn's data sets and splits, read and made without importing it."""

import numpy as np
import pytest

sklearn_datasets = pytest.importorskip("sklearn.datasets")
from sklearn.model_selection import train_test_split  # noqa: E402

from crossent.lab import data  # noqa: E402


def test_the_files_hold_scikit_learns_data_sets():
    X, y = data._digits()
    bunch = sklearn_datasets.load_digits()
    np.testing.assert_array_equal(X, bunch.data / 16.0)
    np.testing.assert_array_equal(y, bunch.target)
    X, y = data._breast_cancer()
    bunch = sklearn_datasets.load_breast_cancer()
    np.testing.assert_array_equal(X, (bunch.data - bunch.data.mean(axis=0)) / bunch.data.std(axis=0))
    np.testing.assert_array_equal(y, bunch.target)


@pytest.mark.parametrize("seed", [0, 1, 7, 123, 2**32 - 1])
@pytest.mark.parametrize("fraction", [0.2, 0.1, 0.33])
def test_the_split_is_train_test_split(seed, fraction):
    for X, y in (data._digits(), data._breast_cancer()):
        expected = train_test_split(X, y, test_size=fraction, stratify=y, random_state=seed)
        train, test = data.stratified_split(y, fraction, seed)
        for got, want in zip((X[train], X[test], y[train], y[test]), expected):
            np.testing.assert_array_equal(got, want)


def test_ties_in_the_class_shares_are_broken_as_scikit_learn_does():
    y = np.repeat(np.arange(7), [3, 3, 3, 2, 2, 5, 3])  # many equal remainders
    X = np.arange(len(y))[:, None]
    for seed in range(20):
        expected = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
        train, test = data.stratified_split(y, 0.3, seed)
        np.testing.assert_array_equal(X[train], expected[0])
        np.testing.assert_array_equal(X[test], expected[1])


def test_the_validation_split_is_train_test_split_of_the_training_set():
    X_train, y_train, _, _ = data.digits_split(3)
    expected = train_test_split(X_train, y_train, test_size=0.1, stratify=y_train, random_state=3)
    X_fit, y_fit, X_val, y_val = data.validation_split(X_train, y_train, 3)
    for got, want in zip((X_fit, X_val, y_fit, y_val), expected):
        np.testing.assert_array_equal(got, want)
