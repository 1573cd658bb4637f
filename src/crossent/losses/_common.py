"""Helpers shared by the loss families: dtypes, weights and the reduction."""

from __future__ import annotations

import numpy as np

from .._rules import in_dtype
from .._validate import as_float_array, check_same_shape, check_weights


def _result_dtype(arr: np.ndarray) -> np.dtype:
    """float64 for 64-bit (and wider) floats, float32 for float32 and narrower."""
    return np.dtype(np.float64) if arr.dtype.itemsize >= 8 else np.dtype(np.float32)


def _prepare(x, name: str) -> tuple[np.ndarray, np.dtype]:
    """`x` as a float64 array, and the dtype its results come back in."""
    arr = as_float_array(x, name)
    return arr.astype(np.float64, copy=False), _result_dtype(arr)


def _prepare_pair(x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """`x` and `y` as float64 arrays of one shape, and the dtype results come back in (set by `x`)."""
    x, dtype = _prepare(x, x_name)
    y, _ = _prepare(y, y_name)
    check_same_shape(x, y, x_name, y_name)
    return x, y, dtype


def _broadcast_weight(weight, name: str, shape: tuple) -> np.ndarray | None:
    """Finite non-negative weights that broadcast to `shape` without enlarging it."""
    if weight is None:
        return None
    weight = check_weights(weight, name).astype(np.float64, copy=False)
    try:
        joint = np.broadcast_shapes(weight.shape, shape)
    except ValueError:
        joint = None
    if joint != tuple(shape):
        raise ValueError(f"`{name}` of shape {weight.shape} does not broadcast to the input's shape {tuple(shape)}.")
    return weight


def _reduce(losses, grads, reduction: str, denominator: float, dtype: np.dtype):
    """Reduce elementwise losses; `grads` are the elementwise derivatives."""
    if reduction == "none":
        return in_dtype(losses, dtype), grads.astype(dtype)
    total = np.sum(losses, dtype=np.float64)
    if reduction == "mean":
        if denominator == 0:  # nothing counted (empty input or zero total weight)
            return dtype.type(0.0), np.zeros(grads.shape, dtype)
        return in_dtype(total / denominator, dtype), (grads / denominator).astype(dtype)
    return in_dtype(total, dtype), grads.astype(dtype)


def _smooth_binary(labels: np.ndarray, label_smoothing: float) -> np.ndarray:
    """Binary label smoothing as in optax/Keras: ``y(1 - eps) + eps/2``."""
    return labels * (1.0 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else labels


def _activation_input(z) -> np.ndarray:
    arr = as_float_array(z, "z")
    return arr.astype(_result_dtype(arr), copy=False)
