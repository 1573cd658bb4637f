"""Tests of crossent.lab.models: the neuron, the MLP's heads and backpropagation, ECE."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from crossent import losses  # noqa: E402
from crossent.lab.models import (  # noqa: E402
    HEADS,
    MLP,
    Neuron,
    expected_calibration_error,
    head_loss_and_grad,
    head_probabilities,
    neuron_loss_and_grad_z,
)

from _numerics import numerical_gradient  # noqa: E402


class TestNeuronLossAndGradZ:
    def test_hand_values_at_zero(self):
        # a = 1/2, y = 1: MSE 1/2 (1/2)^2 = 1/8, dL/dz = (a - y) a (1 - a) = -1/8; CE log 2, a - y = -1/2
        loss, grad = neuron_loss_and_grad_z(0.0, 1.0, "mse")
        assert float(loss) == 0.125 and float(grad) == -0.125
        loss, grad = neuron_loss_and_grad_z(0.0, 1.0, "cross_entropy")
        assert float(loss) == pytest.approx(np.log(2.0), rel=1e-15) and float(grad) == -0.5

    @pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
    @pytest.mark.parametrize("y", [0.0, 1.0])
    def test_gradient_matches_finite_differences(self, loss, y):
        z = np.array([-6.0, -1.3, 0.0, 0.7, 4.0])
        numeric = numerical_gradient(lambda v: float(np.sum(neuron_loss_and_grad_z(v, y, loss)[0])), z)
        np.testing.assert_allclose(neuron_loss_and_grad_z(z, y, loss)[1], numeric, rtol=1e-6, atol=1e-10)

    def test_mse_gradient_is_ce_gradient_times_sigmoid_derivative(self):
        z = np.linspace(-8, 8, 33)
        for y in (0.0, 1.0):
            ratio = neuron_loss_and_grad_z(z, y, "mse")[1] / neuron_loss_and_grad_z(z, y, "cross_entropy")[1]
            np.testing.assert_allclose(ratio, losses.sigmoid_derivative(z), rtol=1e-12)

    def test_unknown_loss_is_rejected(self):
        with pytest.raises(ValueError, match="`loss`"):
            neuron_loss_and_grad_z(0.0, 0.0, "hinge")


class TestNeuron:
    def test_saturated_start_gradient_ratio_is_sigmoid_derivative(self):
        # the article's claim at (w, b) = (2, 2), x = 1, y = 0: z = 4
        mse = Neuron(w=2.0, b=2.0, loss="mse").loss_and_grads(1.0, 0.0)
        ce = Neuron(w=2.0, b=2.0, loss="cross_entropy").loss_and_grads(1.0, 0.0)
        assert mse[2] / ce[2] == pytest.approx(float(losses.sigmoid_derivative(4.0)), rel=1e-12)
        assert mse[3] / ce[3] == pytest.approx(float(losses.sigmoid_derivative(4.0)), rel=1e-12)
        assert ce[3] == pytest.approx(float(losses.sigmoid(4.0)), rel=1e-15)  # a - y

    def test_history_records_every_step_and_update_rule(self):
        h = Neuron(w=0.6, b=0.9, loss="mse").train(x=1.0, y=0.0, learning_rate=0.15, steps=5)
        assert all(len(v) == 6 for v in h.values())
        np.testing.assert_allclose(np.diff(h["w"]), -0.15 * np.array(h["grad_w"][:-1]), rtol=1e-14)
        np.testing.assert_allclose(h["a"], losses.sigmoid(np.array(h["w"]) + np.array(h["b"])), rtol=1e-15)

    def test_cross_entropy_leaves_the_saturated_start_faster(self):
        a_mse = Neuron(w=2.0, b=2.0, loss="mse").train(x=1.0, y=0.0, learning_rate=0.15, steps=50)["a"]
        a_ce = Neuron(w=2.0, b=2.0, loss="cross_entropy").train(x=1.0, y=0.0, learning_rate=0.15, steps=50)["a"]
        assert a_ce[-1] < 0.1 < 0.9 < a_mse[-1]

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`loss`"):
            Neuron(w=0.0, b=0.0, loss="l1")
        with pytest.raises(ValueError, match="`learning_rate`"):
            Neuron(w=0.0, b=0.0).train(x=1.0, y=0.0, learning_rate=-1.0, steps=1)


class TestHeads:
    @pytest.mark.parametrize("head", HEADS)
    def test_head_gradient_matches_finite_differences(self, head):
        rng = np.random.default_rng(1)
        z = rng.normal(size=(4, 3)) * 2
        labels = np.array([0, 2, 1, 2])
        numeric = numerical_gradient(lambda v: float(head_loss_and_grad(v, labels, head)[0]), z)
        np.testing.assert_allclose(head_loss_and_grad(z, labels, head)[1], numeric, rtol=1e-6, atol=1e-9)

    def test_softmax_ce_head_is_the_library_loss(self):
        z = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]])
        labels = np.array([2, 0])
        expected = -np.mean(losses.log_softmax(z)[np.arange(2), labels])
        assert float(head_loss_and_grad(z, labels, "softmax_ce")[0]) == pytest.approx(expected, rel=1e-14)

    @pytest.mark.parametrize("head", HEADS)
    def test_heads_are_the_public_losses_bit_for_bit(self, head):
        """The heads call the losses' unchecked cores: the same bits as the public, checked functions."""
        rng = np.random.default_rng(7)
        z = rng.normal(size=(3, 6, 4)) * np.array([1.0, 8.0, 40.0])[:, None, None]  # incl. saturated logits
        labels = rng.integers(0, 4, size=(3, 6))
        loss, grad = head_loss_and_grad(z, labels, head)
        n, targets = z.shape[-2], np.eye(4)[labels]
        if head == "softmax_ce":
            rows, g = losses.softmax_cross_entropy_with_grad(z, labels, reduction="none", backend="reference")
            expected = rows.mean(axis=-1), g / n
        elif head == "sigmoid_bce":
            rows, g = losses.sigmoid_binary_cross_entropy_with_grad(z, targets, reduction="none")
            expected = rows.sum(axis=-1).mean(axis=-1), g / n
        else:
            a = {"sigmoid_mse": losses.sigmoid, "softmax_mse": lambda v: losses.softmax(v, axis=-1),
                 "linear_mse": lambda v: v}[head](z)
            rows, g = losses.mean_squared_error_with_grad(a, targets, reduction="none")
            expected = 0.5 * rows.sum(axis=-1).mean(axis=-1), None
        np.testing.assert_array_equal(loss, expected[0])
        if expected[1] is not None:
            np.testing.assert_array_equal(grad, expected[1])

    def test_probabilities_are_distributions(self):
        z = np.random.default_rng(0).normal(size=(5, 4)) * 5
        for head in HEADS:
            p = head_probabilities(z, head)
            assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0)


class TestMLP:
    @pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu"])
    @pytest.mark.parametrize("head", ["softmax_ce", "sigmoid_mse", "softmax_mse"])
    def test_backprop_matches_finite_differences(self, hidden, head):
        rng = np.random.default_rng(3)
        X, y = rng.normal(size=(6, 5)), np.array([0, 1, 2, 0, 1, 2])
        net = MLP((5, 4, 3), hidden=hidden, head=head, init="scaled", seed=2)
        W0 = [w.copy() for w in net.weights]

        def loss_at(W_first):
            probe = MLP((5, 4, 3), hidden=hidden, head=head, init="scaled", seed=2)
            probe.weights[0] = W_first
            return float(head_loss_and_grad(probe.logits(X), y, head)[0])

        numeric = numerical_gradient(loss_at, W0[0])
        net.sgd_step(X, y, learning_rate=1.0)  # with lr = 1 the update is minus the gradient
        np.testing.assert_allclose(W0[0] - net.weights[0], numeric, rtol=1e-5, atol=1e-9)

    def test_same_seed_same_history(self):
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
        runs = [MLP((4, 5, 3), seed=7).fit(X, y, X, y, epochs=3, batch_size=4, learning_rate=0.3, seed=1) for _ in range(2)]
        assert runs[0] == runs[1]
        assert len(runs[0]["test_accuracy"]) == 3 and not runs[0]["diverged"]

    def test_init_scales(self):
        normal = MLP((400, 300, 2), init="normal", seed=0)
        scaled = MLP((400, 300, 2), hidden="sigmoid", init="scaled", seed=0)
        he = MLP((400, 300, 2), hidden="relu", init="scaled", seed=0)
        assert normal.weights[0].std() == pytest.approx(1.0, rel=0.02)
        assert scaled.weights[0].std() == pytest.approx(np.sqrt(1 / 400), rel=0.02)
        assert he.weights[0].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
        assert not scaled.biases[0].any()

    def test_divergence_is_reported_not_raised(self):
        X, y = np.full((8, 2), 50.0), np.array([0, 1] * 4)
        h = MLP((2, 3, 2), hidden="relu", head="linear_mse", init="normal", seed=0).fit(
            X, y, X, y, epochs=50, batch_size=8, learning_rate=10.0, seed=0)
        assert h["diverged"]

    @pytest.mark.parametrize("kwargs, name", [({"hidden": "gelu"}, "hidden"), ({"head": "hinge"}, "head"),
                                              ({"init": "xavier"}, "init")])
    def test_bad_options(self, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`"):
            MLP((2, 2), **kwargs)
        with pytest.raises(ValueError, match="`sizes`"):
            MLP((3,))


class TestECE:
    def test_hand_value(self):
        probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        labels = np.array([0, 1, 0, 1])
        # bins: 0.9 -> acc 1/2 (gap 0.4, weight 2/4); 0.6 -> acc 1 (gap 0.4); 0.7 -> acc 1 (gap 0.3)
        ece, bins = expected_calibration_error(probs, labels, bins=10)
        assert ece == pytest.approx(0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.3, rel=1e-12)
        assert bins["count"].sum() == 4

    def test_calibrated_predictions_have_small_ece(self):
        rng = np.random.default_rng(0)
        confidence = rng.uniform(0.5, 1.0, 20000)
        labels = (rng.uniform(size=20000) > confidence).astype(int)  # class 0 right with prob = confidence
        ece, _ = expected_calibration_error(np.stack([confidence, 1 - confidence], 1), labels)
        assert ece < 0.02
