"""Many small networks trained together: a leading model axis on every weight array.

An experiment trains dozens of 64-30-10 networks (seeds, heads, learning
rates).  One at a time, each SGD step is a handful of tiny matrix products
and Python overhead dominates; stacked, one step of all M networks is one
batched ``np.matmul`` per layer.  Each network keeps its own initial weights,
its own data order (its own ``default_rng(seed)``), its own head and learning
rate, and stops on its own when its logits overflow.  A network's numbers do
not depend on which others share its stack: the batched products and sums
work on each model's slice alone.
"""

from __future__ import annotations

import numpy as np

from .. import measures
from .models import (
    MLP,
    activate,
    activation_derivative,
    expected_calibration_error,
    head_loss_and_grad,
    head_probabilities,
)

#: logits at or beyond this size (or NaN) mean the network diverged
DIVERGED_LOGIT = 1e8


class MLPStack:
    """M networks of the same layer sizes and hidden activation, stacked along a leading axis.

    Weights are ``(M, fan_in, fan_out)``, biases ``(M, 1, fan_out)``; the heads
    (one per network) may differ.

    Examples:
        >>> nets = [MLP((4, 3, 2), hidden="relu", head=h, init="scaled", seed=s) for h, s in (("softmax_ce", 0), ("sigmoid_mse", 1))]
        >>> stack = MLPStack(nets)
        >>> stack.weights[0].shape, stack.logits(np.eye(4)).shape
        ((2, 4, 3), (2, 4, 2))
        >>> bool(np.allclose(stack.logits(np.eye(4))[1], nets[1].logits(np.eye(4))))
        True
    """

    def __init__(self, nets):
        nets = list(nets)
        if not nets or any(n.sizes != nets[0].sizes or n.hidden != nets[0].hidden for n in nets):
            raise ValueError("`nets` must be a non-empty list of MLPs with the same `sizes` and `hidden`.")
        self.sizes, self.hidden = nets[0].sizes, nets[0].hidden
        self.heads = [n.head for n in nets]
        self.weights = [np.stack([n.weights[k] for n in nets]) for k in range(len(self.sizes) - 1)]
        self.biases = [np.stack([n.biases[k] for n in nets])[:, None, :] for k in range(len(self.sizes) - 1)]
        self._groups = {}  # (first, stop) -> the heads of models first..stop-1 and where they are in that range

    def __len__(self):
        return len(self.heads)

    def groups(self, first=0, stop=None):
        """``[(head, where)]`` for the models ``first .. stop-1``, `where` relative to `first`.

        `where` is a slice where a head's models are contiguous (a view, no
        copies; the report orders each stack by head), else an index array.
        """
        stop = len(self) if stop is None else stop
        if (first, stop) not in self._groups:
            heads = np.array(self.heads[first:stop])
            found = []
            for head in dict.fromkeys(heads.tolist()):
                where = np.flatnonzero(heads == head)
                contiguous = where[-1] - where[0] + 1 == len(where)
                found.append((head, slice(int(where[0]), int(where[-1]) + 1) if contiguous else where))
            self._groups[first, stop] = found
        return self._groups[first, stop]

    def net(self, m):
        """Network `m` as a separate :class:`MLP` (copies of its weights)."""
        net = object.__new__(MLP)
        net.sizes, net.hidden, net.head, net.init = self.sizes, self.hidden, self.heads[m], None
        net.weights = [W[m].copy() for W in self.weights]
        net.biases = [b[m, 0].copy() for b in self.biases]
        return net

    def logits(self, X):
        """Output pre-activations ``(M, n, C)`` for inputs `X`: ``(n, d)`` shared, or ``(M, n, d)``."""
        a = X
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            a = activate(self.hidden, np.matmul(a, W) + b)
        return np.matmul(a, self.weights[-1]) + self.biases[-1]

    def sgd_step(self, X, labels, learning_rates, active, first=0, stop=None):
        """One gradient step of networks ``first .. stop-1`` (all by default) on their batches.

        ``X[m]`` ``(M', B, d)`` and ``labels[m]`` ``(M', B)`` are the batch of network
        ``first + m``, and `learning_rates`, `active` have one entry per network of
        the range.  Networks with ``active[m]`` False, or whose logits blow up now,
        are not updated.  Returns ``(loss, finite)``: each network's batch loss and
        whether its logits were finite (below :data:`DIVERGED_LOGIT`).
        """
        stop = len(self) if stop is None else stop
        weights = [W[first:stop] for W in self.weights]  # views: the updates below write into the stack
        biases = [b[first:stop] for b in self.biases]
        zs, acts = [], [X]
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected below
            for W, b in zip(weights[:-1], biases[:-1]):
                zs.append(np.matmul(acts[-1], W) + b)
                acts.append(activate(self.hidden, zs[-1]))
            z_out = np.matmul(acts[-1], weights[-1]) + biases[-1]
            finite = np.all(np.abs(z_out) < DIVERGED_LOGIT, axis=(1, 2))
        if not finite.all():  # blown-up networks compute on zeros from here on: no inf or NaN anywhere
            for array in (*zs, *acts[1:], z_out):
                array[~finite] = 0.0
        loss, delta = np.empty(stop - first), np.empty_like(z_out)
        for head, idx in self.groups(first, stop):
            loss[idx], delta[idx] = head_loss_and_grad(z_out[idx], labels[idx], head)
        step = (np.asarray(learning_rates, dtype=np.float64) * (finite & active))[:, None, None]
        for layer in range(len(weights) - 1, -1, -1):
            grad_W = np.matmul(acts[layer].transpose(0, 2, 1), delta)
            grad_b = delta.sum(axis=1, keepdims=True)
            if layer > 0:
                delta = np.matmul(delta, weights[layer].transpose(0, 2, 1))
                delta *= activation_derivative(self.hidden, zs[layer - 1], acts[layer])
            # W -= lr * grad, in place (the same rounding as the expression, without its temporaries)
            weights[layer] -= np.multiply(step, grad_W, out=grad_W)
            biases[layer] -= np.multiply(step, grad_b, out=grad_b)
        return loss, finite

    def evaluate(self, X, labels):
        """Per network: ``(accuracy, nll_nats, ece)`` on a labelled set, three ``(M,)`` arrays (as :meth:`MLP.evaluate`)."""
        z = self.logits(X)
        accuracy, nll, ece = np.empty(len(self)), np.empty(len(self)), np.empty(len(self))
        for head, idx in self.groups():
            probs = head_probabilities(z[idx], head)
            accuracy[idx] = np.mean(probs.argmax(axis=-1) == labels, axis=-1)
            # NLL = mean self-information of the true class, floored at 1e-12 (as MLP.evaluate)
            true_class = np.maximum(np.take_along_axis(probs, np.broadcast_to(labels[:, None], probs.shape[:-1] + (1,)),
                                                       axis=-1)[..., 0], 1e-12)
            nll[idx] = np.mean(measures.self_information(true_class), axis=-1)
            ece[idx] = [expected_calibration_error(p, labels)[0] for p in probs]
        return accuracy, nll, ece

    def fit(self, X, y, X_test, y_test, *, epochs, batch_size, learning_rates, seeds, rows=None):
        """Mini-batch SGD of every network; one history per network (as :meth:`MLP.fit`).

        Network m trains on the rows ``rows[m]`` of `X` (all rows by default),
        shuffled each epoch with ``default_rng(seeds[m])``, and steps with
        ``learning_rates[m]``.  Networks with fewer rows wait, unchanged, for
        the epoch's end; at a step where the networks' batches differ in size
        (a last, short batch), each run of neighbours with equal batches steps
        on its own.  A network whose logits overflow stops (``diverged=True``;
        its history ends with the last full epoch), the others go on.
        """
        M = len(self)
        rows = [np.arange(len(X))] * M if rows is None else [np.asarray(r) for r in rows]
        sizes = np.array([len(r) for r in rows])
        rngs = [np.random.default_rng(seed) for seed in seeds]
        lr = np.asarray(learning_rates, dtype=np.float64)
        histories = [{"train_loss": [], "test_accuracy": [], "test_nll": [], "test_ece": [], "diverged": False}
                     for _ in range(M)]
        active = np.ones(M, dtype=bool)
        uniform = bool((sizes == sizes[0]).all())  # every network has as many rows: one run per step
        orders = np.zeros((M, sizes.max()), dtype=np.int64)  # row m: network m's order, padded past sizes[m]
        for _ in range(int(epochs)):
            for m, (rng, r) in enumerate(zip(rngs, rows)):
                orders[m, : len(r)] = r[rng.permutation(len(r))]
            losses = np.full((-(-sizes.max() // batch_size), M), np.nan)
            for k, start in enumerate(range(0, sizes.max(), batch_size)):
                for first, stop, n in _equal_batches(sizes, start, batch_size, uniform):
                    idx = orders[first:stop, start : start + n]
                    loss, finite = self.sgd_step(X[idx], y[idx], lr[first:stop], active[first:stop], first, stop)
                    losses[k, first:stop] = loss
                    if not finite.all() and (active[first:stop] & ~finite).any():
                        stopped = np.zeros(M, dtype=bool)
                        stopped[first:stop] = active[first:stop] & ~finite
                        active &= ~stopped
                        for m in np.flatnonzero(stopped):
                            histories[m]["diverged"] = True
                        for array in (*self.weights, *self.biases):  # keep the stopped networks finite
                            array[stopped] = 0.0
            if not active.any():
                break
            accuracy, nll, ece = self.evaluate(X_test, y_test)
            # one contiguous row per network: each mean sums in the same order whatever the stack
            per_network = np.ascontiguousarray(losses.T)
            for m in np.flatnonzero(active):
                h = histories[m]
                h["train_loss"].append(float(per_network[m, : -(-sizes[m] // batch_size)].mean()))
                h["test_accuracy"].append(float(accuracy[m]))
                h["test_nll"].append(float(nll[m]))
                h["test_ece"].append(float(ece[m]))
        return histories


def _equal_batches(sizes, start, batch_size, uniform):
    """The runs ``(first, stop, n)`` of neighbouring networks with equal batches of ``n > 0`` rows at `start`."""
    if uniform:
        return [(0, len(sizes), min(batch_size, int(sizes[0]) - start))]
    batch = np.clip(sizes - start, 0, batch_size)  # each network's batch at this step (0: waits)
    edges = [0, *(np.flatnonzero(np.diff(batch)) + 1).tolist(), len(sizes)]
    return [(first, stop, int(batch[first])) for first, stop in zip(edges[:-1], edges[1:]) if batch[first] > 0]
