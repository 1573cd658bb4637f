"""Models trained by plain gradient descent: one sigmoid neuron and a small MLP.

Every loss value and every gradient of a loss comes from :mod:`crossent.losses`;
this module only applies the chain rule through the activations (and the
activations' derivatives come from the library too, except tanh, ReLU and the
softmax Jacobian-vector product, which are not loss math).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .. import losses, measures
from .._rules import CrossEntropyOptions
from ..losses.binary import sigmoid_bce_terms
from ..losses.regression import squared_error_terms
from ..losses.softmax_ce import softmax_ce_2d

_PER_EXAMPLE = CrossEntropyOptions(reduction="none")

NEURON_LOSSES = ("mse", "cross_entropy")
HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu")
HEADS = ("softmax_ce", "sigmoid_bce", "softmax_mse", "sigmoid_mse", "linear_mse")
HEAD_LABELS = {
    "softmax_ce": "softmax + cross-entropy",
    "sigmoid_bce": "sigmoid + binary cross-entropy",
    "softmax_mse": "softmax + MSE",
    "sigmoid_mse": "sigmoid + MSE",
    "linear_mse": "linear + MSE",
}
INITS = ("normal", "scaled")


def _choice(value, allowed, name):
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
    return value


def _positive(value, name):
    if isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
    return value


# --------------------------------------------------------------------------- one neuron


def neuron_loss_and_grad_z(z, y, loss):
    r"""Loss of a sigmoid neuron with pre-activation `z` and target `y`, and ``dL/dz``.

    * ``"mse"``: :math:`L = \tfrac12 (a - y)^2` with :math:`a = \sigma(z)` (the
      article's form).  The library's ``mean_squared_error`` is :math:`(a-y)^2`,
      so we take ``reduction="none"`` and halve both the loss and ``dL/da``; then
      the chain rule through the activation gives
      :math:`dL/dz = dL/da \cdot \sigma'(z)` with the library's
      ``sigmoid_derivative`` -- the factor the article is about.
    * ``"cross_entropy"``: the library's ``sigmoid_binary_cross_entropy_with_grad``
      on the logit `z`, whose gradient is :math:`a - y` (no :math:`\sigma'`).

    Works elementwise on arrays (`z`, `y` broadcast).

    Examples:
        >>> loss, g = neuron_loss_and_grad_z(0.0, 0.0, "mse")
        >>> float(loss), float(g)  # a = 1/2: 1/8, (1/2)(1/4)
        (0.125, 0.125)
        >>> float(neuron_loss_and_grad_z(0.0, 0.0, "cross_entropy")[1])
        0.5
    """
    _choice(loss, NEURON_LOSSES, "loss")
    z, y = np.broadcast_arrays(np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if loss == "mse":
        a = losses.sigmoid(z)
        squared, d_squared = losses.mean_squared_error_with_grad(a, y, reduction="none")
        return 0.5 * squared, 0.5 * d_squared * losses.sigmoid_derivative(z)
    return losses.sigmoid_binary_cross_entropy_with_grad(z, y, reduction="none")


@dataclass
class Neuron:
    """One sigmoid neuron ``a = sigmoid(w x + b)`` trained on one sample ``(x, y)``.

    `history` gets one row per step (the state *before* the update, then the
    final state): ``w, b, a, loss, dL/dw, dL/db``.

    Examples:
        >>> n = Neuron(w=2.0, b=2.0, loss="cross_entropy")
        >>> h = n.train(x=1.0, y=0.0, learning_rate=0.15, steps=3)
        >>> len(h["w"]), bool(h["a"][-1] < h["a"][0])
        (4, True)
    """

    w: float
    b: float
    loss: str = "cross_entropy"
    history: dict = field(default_factory=dict)

    def __post_init__(self):
        _choice(self.loss, NEURON_LOSSES, "loss")

    def loss_and_grads(self, x, y):
        """Return ``(a, loss, dL/dw, dL/db)`` at the current parameters."""
        z = self.w * x + self.b
        loss, grad_z = neuron_loss_and_grad_z(z, y, self.loss)
        return float(losses.sigmoid(z)), float(loss), float(grad_z * x), float(grad_z)

    def train(self, *, x, y, learning_rate, steps):
        """Run `steps` updates ``w -= lr dL/dw, b -= lr dL/db``; return the history."""
        _positive(learning_rate, "learning_rate")
        self.history = {key: [] for key in ("w", "b", "a", "loss", "grad_w", "grad_b")}
        for step in range(int(steps) + 1):
            a, loss, grad_w, grad_b = self.loss_and_grads(x, y)
            for key, value in zip(self.history, (self.w, self.b, a, loss, grad_w, grad_b)):
                self.history[key].append(value)
            if step < steps:
                self.w -= learning_rate * grad_w
                self.b -= learning_rate * grad_b
        return self.history


# --------------------------------------------------------------------------- the MLP


def _targets(labels, n_out):
    """One-hot targets (or a 0/1 column for a single output unit)."""
    if n_out == 1:
        return labels.astype(np.float64)[..., None]
    return _identity(n_out)[labels]


@lru_cache(maxsize=None)
def _identity(n):
    """The n x n identity (read-only: shared by every training step)."""
    eye = np.eye(n)
    eye.flags.writeable = False
    return eye


def head_loss_and_grad(z, labels, head):
    r"""Mean-over-examples loss of an output head and its gradient w.r.t. the logits `z`.

    With one-hot targets :math:`t` and the head's output :math:`a = f(z)`
    (softmax, sigmoid or identity), per example:

    .. math::

        L_{\mathrm{MSE}} = \tfrac12\sum_k (a_k - t_k)^2, \qquad
        \frac{\partial L}{\partial z} = J_f(z)^\top (a - t)

    (library MSE per element, halved, then the chain rule through :math:`f`:
    :math:`\sigma'(z)` elementwise, the softmax Jacobian, or 1).  The
    cross-entropy heads are the library's softmax cross-entropy and the
    per-unit sigmoid binary cross-entropy summed over units, whose gradients
    are :math:`a - t` with no activation derivative.  All heads average over the
    `n` examples.  `z` is ``(..., n, C)`` and `labels` ``(..., n)``: leading axes
    are independent models (the loss then has shape ``(...)``).

    Examples:
        >>> z = np.array([[0.0, 0.0]]); labels = np.array([1])
        >>> loss, grad = head_loss_and_grad(z, labels, "softmax_ce")
        >>> round(float(loss), 6), grad.tolist()  # log 2, softmax - one-hot
        (0.693147, [[0.5, -0.5]])
        >>> head_loss_and_grad(z, labels, "sigmoid_mse")[1].tolist()  # (a - t) * 1/4
        [[0.125, -0.125]]
    """
    n, n_out = z.shape[-2:]
    if head == "softmax_ce":
        # backend="reference": the float64 NumPy reference (deterministic and
        # safe inside a fork()ed process pool; batches here are tiny anyway).
        if n_out == 1:
            raise ValueError("`head`='softmax_ce' needs at least 2 output units.")
        # the library's float64 reference core without its checks (z is finite, the labels are class indices):
        # the per-step cost of a small batch is mostly the checks; the numbers are the public function's
        loss, grad = softmax_ce_2d(np.ascontiguousarray(z, dtype=np.float64).reshape(-1, n_out),
                                   labels.reshape(-1).astype(np.int64, copy=False), None, _PER_EXAMPLE)
        return loss.reshape(z.shape[:-1]).mean(axis=-1), grad.reshape(z.shape) / n
    targets = _targets(labels, n_out)
    if head == "sigmoid_bce":
        loss, grad = sigmoid_bce_terms(z, targets, targets)  # sigmoid_binary_cross_entropy_with_grad, unchecked
        return loss.sum(axis=-1).mean(axis=-1), grad / n
    if head == "sigmoid_mse":
        a = losses.sigmoid(z)
    elif head == "softmax_mse":
        a = losses.softmax(z, axis=-1)
    else:
        a = z
    loss, grad_a = squared_error_terms(a, targets)  # mean_squared_error_with_grad, unchecked
    loss, grad_a = 0.5 * loss.sum(axis=-1).mean(axis=-1), 0.5 * grad_a / n
    if head == "sigmoid_mse":
        return loss, grad_a * losses.sigmoid_derivative(z)
    if head == "softmax_mse":
        # softmax Jacobian-vector product: da_k/dz_j = a_k([k=j] - a_j)
        return loss, a * (grad_a - np.sum(grad_a * a, axis=-1, keepdims=True))
    return loss, grad_a


def head_probabilities(z, head):
    """Class probabilities read from the head's outputs (for accuracy, NLL and ECE).

    `z` is ``(..., n, C)``.  Softmax heads: the softmax.  Sigmoid heads: the sigmoids normalised to sum
    to 1 (one unit: ``[1-a, a]``).  The linear head: outputs clipped to
    ``[1e-6, 1]`` and normalised -- MSE heads are not trained to give
    probabilities, which is what the calibration numbers show.
    """
    if head.startswith("softmax"):
        return losses.softmax(z, axis=-1)
    a = losses.sigmoid(z) if head.startswith("sigmoid") else z
    if a.shape[-1] == 1:
        a = np.clip(a, 0.0, 1.0)
        a = np.concatenate([1.0 - a, a], axis=-1)
    a = np.clip(a, 1e-6, 1.0)
    return a / a.sum(axis=-1, keepdims=True)


def expected_calibration_error(probs, labels, *, bins=15, predictions=None):
    r"""ECE: :math:`\sum_b \frac{|B_b|}{n}\,|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)|` over confidence bins.

    The confidence is each row's largest probability, and a row is correct
    where its prediction -- `predictions`, by default the argmax of `probs` --
    is its label.  Returns ``(ece, table)`` where `table` has per-bin count,
    mean confidence, accuracy.

    Examples:
        >>> ece, _ = expected_calibration_error(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]))
        >>> round(float(ece), 6)  # confidence 0.9, accuracy 0.5
        0.4
    """
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) if predictions is None else predictions) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    filled = count > 0
    mean_conf = np.where(filled, conf_sum / np.maximum(count, 1), np.nan)
    accuracy = np.where(filled, acc_sum / np.maximum(count, 1), np.nan)
    ece = float(np.sum(np.abs(acc_sum - conf_sum)) / len(labels))
    return ece, {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def activate(hidden, z):
    """The hidden activation `hidden` of the pre-activations `z`."""
    if hidden == "sigmoid":
        return losses.sigmoid(z)
    if hidden == "tanh":
        return np.tanh(z)
    return np.maximum(z, 0.0)


def activation_derivative(hidden, z, a):
    r"""Its derivative at `z`; ``a`` is the activation there, which the sigmoid's and tanh's derivatives reuse.

    Sigmoid: :math:`\sigma'(z) = \sigma(z)\,\sigma(-z)`, the formula of the library's
    ``sigmoid_derivative`` (stable: no ``1 - sigma(z)``), with :math:`\sigma(z) = a`
    from the forward pass: the same bits with one sigmoid fewer.

    Examples:
        >>> z = np.array([-40.0, 0.0, 3.0])
        >>> bool(np.array_equal(activation_derivative("sigmoid", z, losses.sigmoid(z)), losses.sigmoid_derivative(z)))
        True
    """
    if hidden == "sigmoid":
        return a * losses.sigmoid(-z)
    if hidden == "tanh":
        return 1.0 - a * a
    return (z > 0).astype(np.float64)


class MLP:
    """A multilayer perceptron trained by mini-batch SGD (NumPy, vectorised, seeded).

    Args:
        sizes: layer widths, e.g. ``(64, 30, 10)``.
        hidden: hidden activation, one of ``"sigmoid"``, ``"tanh"``, ``"relu"``.
        head: output head, one of :data:`HEADS`.
        init: ``"normal"`` (weights and biases N(0, 1), the large init) or
            ``"scaled"`` (weights N(0, 1/fan_in), He's N(0, 2/fan_in) for ReLU; zero biases).
        seed: seed of ``np.random.default_rng`` for the initial weights.

    Examples:
        >>> net = MLP((4, 3, 2), hidden="relu", head="softmax_ce", init="scaled", seed=0)
        >>> X = np.eye(4); y = np.array([0, 1, 0, 1])
        >>> h = net.fit(X, y, X, y, epochs=2, batch_size=2, learning_rate=0.1, seed=0)
        >>> sorted(h)
        ['diverged', 'test_accuracy', 'test_ece', 'test_nll', 'train_loss']
    """

    def __init__(self, sizes, *, hidden="sigmoid", head="softmax_ce", init="normal", seed=0):
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"`sizes` must list at least 2 positive layer widths, got {sizes!r}.")
        self.sizes = tuple(int(s) for s in sizes)
        self.hidden = _choice(hidden, HIDDEN_ACTIVATIONS, "hidden")
        self.head = _choice(head, HEADS, "head")
        self.init = _choice(init, INITS, "init")
        rng = np.random.default_rng(seed)
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            if init == "normal":
                self.weights.append(rng.standard_normal((fan_in, fan_out)))
                self.biases.append(rng.standard_normal(fan_out))
            else:
                gain = 2.0 if hidden == "relu" else 1.0
                self.weights.append(rng.standard_normal((fan_in, fan_out)) * np.sqrt(gain / fan_in))
                self.biases.append(np.zeros(fan_out))

    def _activate(self, z):
        return activate(self.hidden, z)

    def logits(self, X):
        """Output pre-activations for inputs `X` (n, sizes[0])."""
        a = X
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            a = self._activate(a @ W + b)
        return a @ self.weights[-1] + self.biases[-1]

    def hidden_preactivations(self, X):
        """The pre-activations ``z`` of each hidden layer for inputs `X`, a list of (n, width) arrays."""
        zs, a = [], X
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            zs.append(a @ W + b)
            a = self._activate(zs[-1])
        return zs

    def sgd_step(self, X, labels, learning_rate):
        """One gradient step on the batch; returns the batch loss, or None if the logits blew up.

        The step is :meth:`MLPStack.sgd_step <crossent.lab.stack.MLPStack.sgd_step>` on a stack of one.
        """
        from .stack import MLPStack

        stack = MLPStack([self])
        loss, finite = stack.sgd_step(X[None], labels[None], np.array([float(learning_rate)]), np.array([True]))
        if not finite[0]:
            return None
        self.weights, self.biases = stack.net(0).weights, stack.net(0).biases
        return float(loss[0])

    def evaluate(self, X, labels):
        """Return ``(accuracy, nll_nats, ece)`` on a labelled set."""
        probs = head_probabilities(self.logits(X), self.head)
        accuracy = float(np.mean(probs.argmax(axis=1) == labels))
        # negative log-likelihood = mean self-information of the true class (nats),
        # its probability floored at 1e-12 so that one hopeless example stays finite
        true_class = np.maximum(probs[np.arange(len(labels)), labels], 1e-12)
        nll = float(np.mean(measures.self_information(true_class)))
        return accuracy, nll, expected_calibration_error(probs, labels)[0]

    def fit(self, X, y, X_test, y_test, *, epochs, batch_size, learning_rate, seed):
        """Mini-batch SGD; per epoch record training loss and test accuracy, NLL (nats) and ECE.

        Stops early (``diverged=True``) if the logits overflow.  This is
        :meth:`MLPStack.fit <crossent.lab.stack.MLPStack.fit>` on a stack of one network.
        """
        from .stack import MLPStack

        _positive(learning_rate, "learning_rate")
        stack = MLPStack([self])
        history = stack.fit(X, y, X_test, y_test, epochs=epochs, batch_size=batch_size,
                            learning_rates=[learning_rate], seeds=[seed])[0]
        self.weights, self.biases = stack.net(0).weights, stack.net(0).biases
        return history
