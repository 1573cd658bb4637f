"""Tests of crossent.lab.stack: many networks trained together give each network's own numbers."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from crossent.lab.models import HEADS, MLP, head_loss_and_grad  # noqa: E402
from crossent.lab.stack import MLPStack  # noqa: E402


def _data(n=40, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, classes, n)


def test_head_loss_and_grad_with_a_model_axis_is_each_models_own():
    rng = np.random.default_rng(2)
    z, labels = rng.normal(size=(4, 6, 3)) * 3, rng.integers(0, 3, (4, 6))
    for head in HEADS:
        loss, grad = head_loss_and_grad(z, labels, head)
        assert loss.shape == (4,) and grad.shape == z.shape
        for m in range(4):
            loss_m, grad_m = head_loss_and_grad(z[m], labels[m], head)
            assert float(loss_m) == loss[m]
            np.testing.assert_array_equal(grad_m, grad[m])


@pytest.mark.parametrize("hidden", ["sigmoid", "relu"])
def test_a_network_trains_to_the_same_bits_alone_or_in_any_stack(hidden):
    X, y = _data()
    X_test, y_test = _data(seed=1)
    specs = [(head, seed, lr) for head in ("softmax_ce", "sigmoid_mse", "sigmoid_bce") for seed, lr in ((0, 0.3), (1, 0.1))]

    def nets(chosen):
        return [MLP((5, 4, 3), hidden=hidden, head=h, init="scaled", seed=s) for h, s, _ in chosen]

    def fit(chosen):
        stack = MLPStack(nets(chosen))
        histories = stack.fit(X, y, X_test, y_test, epochs=3, batch_size=7, learning_rates=[lr for *_, lr in chosen],
                              seeds=[s + 100 for _, s, _ in chosen])
        return histories, stack

    together, stack = fit(specs)
    reversed_half, _ = fit(specs[::-2])
    for i, spec in enumerate(specs):
        alone, alone_stack = fit([spec])
        assert alone[0] == together[i]
        for W, W_alone in zip(stack.weights, alone_stack.weights):
            np.testing.assert_array_equal(W[i], W_alone[0])
    assert reversed_half == [together[i] for i in range(len(specs))[::-2]]
    # and MLP.fit is a stack of one
    net = MLP((5, 4, 3), hidden=hidden, head="softmax_ce", init="scaled", seed=0)
    assert net.fit(X, y, X_test, y_test, epochs=3, batch_size=7, learning_rate=0.3, seed=100) == together[0]
    np.testing.assert_array_equal(net.weights[0], stack.weights[0][0])


def test_a_diverging_network_stops_alone():
    X, y = np.full((8, 2), 50.0), np.array([0, 1] * 4)
    nets = [MLP((2, 3, 2), hidden="relu", head="linear_mse", init="normal", seed=0),
            MLP((2, 3, 2), hidden="relu", head="softmax_ce", init="scaled", seed=1)]
    histories = MLPStack(nets).fit(X, y, X, y, epochs=50, batch_size=8, learning_rates=[10.0, 0.01], seeds=[0, 1])
    assert histories[0]["diverged"] and not histories[1]["diverged"] and len(histories[1]["test_accuracy"]) == 50
    alone = MLPStack([MLP((2, 3, 2), hidden="relu", head="softmax_ce", init="scaled", seed=1)]).fit(
        X, y, X, y, epochs=50, batch_size=8, learning_rates=[0.01], seeds=[1])
    assert alone[0] == histories[1]


def test_net_returns_copies_and_logits_match():
    nets = [MLP((3, 4, 2), head="sigmoid_bce", seed=s) for s in range(3)]
    stack = MLPStack(nets)
    X = np.random.default_rng(0).normal(size=(5, 3))
    for m, net in enumerate(nets):
        np.testing.assert_allclose(stack.logits(X)[m], net.logits(X), rtol=1e-13)
        copy = stack.net(m)
        copy.weights[0][:] = 0
        assert stack.weights[0][m].any()


def test_stacks_need_one_architecture():
    with pytest.raises(ValueError, match="`nets`"):
        MLPStack([MLP((3, 4, 2)), MLP((3, 5, 2))])
    with pytest.raises(ValueError, match="`nets`"):
        MLPStack([])


def test_networks_with_their_own_training_rows_train_as_if_alone():
    X, y = _data(n=47)
    X_test, y_test = _data(seed=1)
    rows = [np.arange(47), np.arange(47), np.arange(0, 47, 2), np.arange(0, 47, 2), np.arange(5, 36)]
    nets = [MLP((5, 4, 3), head=h, init="scaled", seed=s) for s, h in enumerate(["softmax_ce", "sigmoid_mse"] * 2 + ["sigmoid_bce"])]
    together = MLPStack(nets).fit(X, y, X_test, y_test, epochs=3, batch_size=10, learning_rates=[0.3] * 5,
                                  seeds=[10, 11, 12, 13, 14], rows=rows)
    for m, r in enumerate(rows):
        net = MLP((5, 4, 3), head=nets[m].head, init="scaled", seed=m)
        alone = MLPStack([net]).fit(X[r], y[r], X_test, y_test, epochs=3, batch_size=10, learning_rates=[0.3],
                                    seeds=[10 + m])
        assert alone[0] == together[m], m
