"""Experiments 7-9: networks on the digits (and breast-cancer) data.

Every training run is described by a plain dict (a "spec") and executed by
:func:`train_run`, a top-level function, so that ``ctx.map`` can send runs to
a process pool.  Each spec carries its own seeds: the numbers do not depend on
which process ran it or in which order.
"""

from __future__ import annotations

import numpy as np

from .. import losses
from ._common import fmt, pct, section, table
from .data import breast_cancer_split, digits_split
from .figures import COLORS, integer_epochs, new_figure, save
from .models import HEAD_LABELS, HEADS, MLP, expected_calibration_error, head_loss_and_grad, head_probabilities

DIGITS_SIZES = (64, 30, 10)
SIGMOID_HEADS = ("softmax_ce", "sigmoid_bce", "softmax_mse", "sigmoid_mse")
SHORT_LABELS = {"softmax_ce": "softmax\nCE", "sigmoid_bce": "sigmoid\nBCE", "softmax_mse": "softmax\nMSE",
                "sigmoid_mse": "sigmoid\nMSE", "linear_mse": "linear\nMSE"}
SATURATED_Z = 4.0  # |z| beyond which a sigmoid unit counts as saturated: σ′(4) = 0.018, 7% of σ′(0)
RELU_LEARNING_RATES = (0.01, 0.1, 0.5)
WRONG_BIAS = 10.0  # the "confidently wrong" start: this is added to output unit 0's bias
WRONG_LEARNING_RATE = 0.1
FAST_RECOVERY_EPOCHS = 3  # "recovered quickly": back to 90% of the clean start's accuracy within this many epochs


def sizes_for(quick):
    """Epochs and seed counts for the full and the quick report."""
    if quick:
        return {"epochs": 6, "seeds": 3, "relu_epochs": 4, "relu_seeds": 1, "bc_epochs": 10}
    return {"epochs": 30, "seeds": 10, "relu_epochs": 20, "relu_seeds": 3, "bc_epochs": 30}


def train_run(spec):
    """Train one network described by `spec`; return its per-epoch history (plus extras the spec asks for).

    Examples:
        >>> h = train_run(_spec(head="softmax_ce", seed=0, epochs=1))
        >>> len(h["test_accuracy"]), h["test_accuracy"][0] > 0.5
        (1, True)
    """
    split = digits_split if spec["dataset"] == "digits" else breast_cancer_split
    X_train, y_train, X_test, y_test = split(spec["split_seed"])
    net = MLP(spec["sizes"], hidden=spec["hidden"], head=spec["head"], init=spec["init"], seed=spec["seed"])
    extra = {}
    if spec.get("wrong_bias"):
        net.biases[-1][0] += spec["wrong_bias"]
        # why it recovers or not: the biased unit's |dℓ/dz₀| at the start, mean over training examples
        # (the library's gradient of the mean loss is the per-example gradient / n)
        _, grad = head_loss_and_grad(net.logits(X_train), y_train, net.head)
        extra["initial_unit0_gradient"] = float(np.abs(grad[:, 0]).sum())
        extra["initial_accuracy"] = net.evaluate(X_test, y_test)[0]
    history = net.fit(X_train, y_train, X_test, y_test, epochs=spec["epochs"], batch_size=spec["batch_size"],
                      learning_rate=spec["learning_rate"], seed=spec["seed"] + 1000)
    if spec["hidden"] == "relu" and not history["diverged"]:
        extra["dead_hidden_fraction"] = dead_unit_fraction(net, X_train)
    if spec.get("reliability") and not history["diverged"]:
        _, bins = expected_calibration_error(head_probabilities(net.logits(X_test), net.head), y_test)
        extra["reliability"] = bins
    history.update(extra)
    return history


def dead_unit_fraction(net, X):
    """Fraction of the first hidden layer's ReLU units that output 0 for every row of `X`.

    Such a unit passes no gradient to its weights for any of these inputs, so
    gradient descent on them cannot revive it.

    Examples:
        >>> net = MLP((4, 6, 2), hidden="relu", init="scaled", seed=0)
        >>> net.biases[0][:] = [-1e3, -1e3, -1e3, 1e3, 1e3, 1e3]  # three far below zero, three far above
        >>> dead_unit_fraction(net, np.random.default_rng(0).random((50, 4)))
        0.5
    """
    z = net.hidden_preactivations(X)[0]
    return float(np.all(z <= 0, axis=0).mean())


def _spec(**kwargs):
    base = {"dataset": "digits", "sizes": DIGITS_SIZES, "hidden": "sigmoid", "init": "normal",
            "batch_size": 10, "learning_rate": 0.5, "split_seed": 0}
    base.update(kwargs)
    return base


def _epochs(n):
    return f"{n} epoch" + ("" if n == 1 else "s")


def _mean_or_none(values):
    return None if any(v is None for v in values) or not values else float(np.mean(values))


def _final(history, key="test_accuracy"):
    return history[key][-1] if history[key] and not history["diverged"] else float("nan")


def initial_saturation(init, seeds, split_seed):
    """How saturated the sigmoid hidden layer is before training: over the training set and `seeds`.

    Returns the fraction of hidden pre-activations with ``|z| > SATURATED_Z`` and the mean ``σ′(z)``.

    Examples:
        >>> normal, scaled = initial_saturation("normal", [0], 0), initial_saturation("scaled", [0], 0)
        >>> normal["mean_sigmoid_derivative"] < scaled["mean_sigmoid_derivative"] <= 0.25
        True
    """
    X_train = digits_split(split_seed)[0]
    z = np.concatenate([MLP(DIGITS_SIZES, init=init, seed=s).hidden_preactivations(X_train)[0].ravel() for s in seeds])
    return {"saturated_fraction": float(np.mean(np.abs(z) > SATURATED_Z)),
            "mean_sigmoid_derivative": float(np.mean(losses.sigmoid_derivative(z)))}


def digits_sigmoid(ctx):
    """7. Digits, 64-30-10 sigmoid network: cross-entropy against MSE heads, N(0,1) and scaled init."""
    size = sizes_for(ctx.quick)
    seeds = [ctx.seed + i for i in range(size["seeds"])]
    specs = [_spec(head=head, init=init, seed=s, epochs=size["epochs"], split_seed=ctx.seed)
             for init in ("normal", "scaled") for head in SIGMOID_HEADS for s in seeds]
    bc_specs = [_spec(dataset="breast_cancer", sizes=(30, 10, 1), head=head, seed=s, epochs=size["bc_epochs"],
                      split_seed=ctx.seed) for head in ("sigmoid_bce", "sigmoid_mse") for s in seeds]
    histories = ctx.map(train_run, specs + bc_specs)
    runs, bc_runs = histories[: len(specs)], histories[len(specs):]
    fig, axes = new_figure(3, width=14.0, height=5.2)
    numbers, rows = {"seeds": seeds, "epochs": size["epochs"], "learning_rate": 0.5, "batch_size": 10}, []
    epochs = np.arange(1, size["epochs"] + 1)
    for i, init in enumerate(("normal", "scaled")):
        numbers[init] = {}
        for j, head in enumerate(SIGMOID_HEADS):
            group = [h for h, sp in zip(runs, specs) if sp["init"] == init and sp["head"] == head]
            curves = np.array([h["test_accuracy"] for h in group])
            finals = curves[:, -1]
            style = "-" if init == "normal" else "--"
            axes[0].plot(epochs, curves.mean(axis=0), style, color=COLORS[head], label=f"{HEAD_LABELS[head]}, {init} init")
            x = j + (0.0 if init == "normal" else len(SIGMOID_HEADS) + 0.5)
            axes[1].plot(np.full(len(finals), x), finals, "o", color=COLORS[head], alpha=0.7, ms=5)
            axes[1].plot([x - 0.3, x + 0.3], [finals.mean()] * 2, color="black", lw=1.5)
            numbers[init][head] = {"final_accuracy": finals, "mean_final_accuracy": finals.mean(),
                                   "std_final_accuracy": finals.std(), "mean_final_nll": np.mean([h["test_nll"][-1] for h in group]),
                                   "mean_final_ece": np.mean([h["test_ece"][-1] for h in group]),
                                   "mean_accuracy_curve": curves.mean(axis=0)}
            rows.append([init, HEAD_LABELS[head], finals.mean(), finals.std(), finals.min(), finals.max(),
                         numbers[init][head]["mean_final_nll"], numbers[init][head]["mean_final_ece"]])
    axes[0].set(xlabel="epoch", ylabel="test accuracy (mean over seeds)",
                title="learning curves (solid: N(0,1) init, dashed: scaled)")
    axes[0].legend(fontsize=7, loc="lower right", ncol=1)
    k = len(SIGMOID_HEADS)
    axes[1].set_xticks([j + off for off in (0.0, k + 0.5) for j in range(k)],
                       [SHORT_LABELS[h] for _ in range(2) for h in SIGMOID_HEADS], fontsize=7)
    axes[1].set(ylabel="final test accuracy", title="final accuracy, one dot per seed, bar = mean\nN(0,1) init  |  scaled init")
    axes[1].axvline(k - 0.25, color="#999999", lw=0.8)
    bc_rows = []
    numbers["breast_cancer"] = {}
    for j, head in enumerate(("sigmoid_bce", "sigmoid_mse")):
        group = [h for h, sp in zip(bc_runs, bc_specs) if sp["head"] == head]
        curves = np.array([h["test_accuracy"] for h in group])
        axes[2].plot(np.arange(1, curves.shape[1] + 1), curves.mean(axis=0), color=COLORS[head], label=HEAD_LABELS[head])
        numbers["breast_cancer"][head] = {"final_accuracy": curves[:, -1], "mean_final_accuracy": curves[:, -1].mean(),
                                          "mean_accuracy_after_1_epoch": curves[:, 0].mean()}
        bc_rows.append([HEAD_LABELS[head], curves[:, 0].mean(), curves[:, -1].mean(), curves[:, -1].std()])
    axes[2].set(xlabel="epoch", ylabel="test accuracy (mean over seeds)", title="breast cancer, 30-10-1, N(0,1) init",
                ylim=(0.5, 1.0))
    axes[2].legend(fontsize=8, loc="lower right")
    integer_epochs(axes[0], axes[2])
    figure = save(fig, ctx.out_dir, "07_digits_sigmoid")
    normal, scaled = numbers["normal"], numbers["scaled"]
    gap = normal["softmax_ce"]["mean_final_accuracy"] - normal["sigmoid_mse"]["mean_final_accuracy"]
    scaled_gap = scaled["softmax_ce"]["mean_final_accuracy"] - scaled["sigmoid_mse"]["mean_final_accuracy"]
    numbers["normal_init_ce_minus_mse"] = gap
    numbers["scaled_init_ce_minus_mse"] = scaled_gap
    sat = {init: initial_saturation(init, seeds, ctx.seed) for init in ("normal", "scaled")}
    numbers["initial_saturation"] = dict(sat, threshold_abs_z=SATURATED_Z)
    bc = numbers["breast_cancer"]
    text = (f"Before training, {pct(sat['normal']['saturated_fraction'])} of the hidden pre-activations lie beyond "
            f"|z| > {SATURATED_Z:g} with N(0,1) weights (mean σ′ {fmt(sat['normal']['mean_sigmoid_derivative'])}), against "
            f"{pct(sat['scaled']['saturated_fraction'])} with scaled weights (mean σ′ "
            f"{fmt(sat['scaled']['mean_sigmoid_derivative'])}). After {size['epochs']} epochs at η = 0.5 the "
            f"softmax cross-entropy head reaches {pct(normal['softmax_ce']['mean_final_accuracy'])} test accuracy on "
            f"average over {len(seeds)} seeds, softmax MSE {pct(normal['softmax_mse']['mean_final_accuracy'])} and "
            f"sigmoid MSE {pct(normal['sigmoid_mse']['mean_final_accuracy'])}. "
            f"With scaled initialisation the gap between softmax CE and sigmoid MSE is {100 * scaled_gap:.1f} "
            f"percentage points instead of {100 * gap:.1f}. "
            f"On the binary breast-cancer set BCE is ahead early (after one epoch "
            f"{pct(bc['sigmoid_bce']['mean_accuracy_after_1_epoch'])} against {pct(bc['sigmoid_mse']['mean_accuracy_after_1_epoch'])} "
            f"for MSE), and after {size['bc_epochs']} epochs the two are at {pct(bc['sigmoid_bce']['mean_final_accuracy'])} "
            f"and {pct(bc['sigmoid_mse']['mean_final_accuracy'])}: an easy problem, where the loss mostly sets the speed.")
    return section("digits_sigmoid", "7. Digits, sigmoid network", figures=[figure], text=text,
                   tables=[table(f"digits 64-30-10, final test accuracy over {len(seeds)} seeds",
                                 ["init", "head", "mean", "std", "min", "max", "mean test NLL (nats)", "mean ECE"], rows),
                           table("breast cancer 30-10-1, N(0,1) init", ["head", "accuracy after 1 epoch", "final mean", "final std"],
                                 bc_rows)],
                   numbers=numbers,
                   headline=(f"N(0,1) init: CE {pct(normal['softmax_ce']['mean_final_accuracy'])} vs MSE "
                             f"{pct(normal['sigmoid_mse']['mean_final_accuracy'])} mean final test accuracy."))


def relu_question(ctx):
    """8. ReLU hidden layer with every head over a learning-rate grid, and the confidently wrong start."""
    size = sizes_for(ctx.quick)
    seeds = [ctx.seed + i for i in range(size["relu_seeds"])]
    common = {"hidden": "relu", "init": "scaled", "epochs": size["relu_epochs"], "split_seed": ctx.seed}
    grid_specs = [_spec(head=head, learning_rate=lr, seed=s, **common)
                  for head in HEADS for lr in RELU_LEARNING_RATES for s in seeds]
    wrong_specs = [_spec(head=head, learning_rate=WRONG_LEARNING_RATE, seed=s, wrong_bias=WRONG_BIAS, **common)
                   for head in HEADS for s in seeds]
    histories = ctx.map(train_run, grid_specs + wrong_specs)
    grid, wrong = histories[: len(grid_specs)], histories[len(grid_specs):]
    numbers = {"seeds": seeds, "epochs": size["relu_epochs"], "learning_rates": RELU_LEARNING_RATES,
               "wrong_bias": WRONG_BIAS, "wrong_learning_rate": WRONG_LEARNING_RATE, "grid": {}, "wrong_start": {}}
    fig, axes = new_figure(2, width=13.5, height=4.0)
    grid_rows, wrong_rows = [], []
    for head in HEADS:
        accs = []
        for lr in RELU_LEARNING_RATES:
            group = [h for h, sp in zip(grid, grid_specs) if sp["head"] == head and sp["learning_rate"] == lr]
            finals = [_final(h) for h in group]
            accs.append(float(np.mean(finals)) if not any(h["diverged"] for h in group) else None)
        numbers["grid"][head] = dict(zip([f"lr_{lr:g}" for lr in RELU_LEARNING_RATES], accs))
        grid_rows.append([HEAD_LABELS[head]] + [a if a is not None else "diverged" for a in accs])
        axes[0].plot(RELU_LEARNING_RATES, [a if a is not None else np.nan for a in accs], "o-",
                     color=COLORS[head], label=HEAD_LABELS[head])
        group = [h for h, sp in zip(wrong, wrong_specs) if sp["head"] == head]
        clean = numbers["grid"][head][f"lr_{WRONG_LEARNING_RATE:g}"]
        final = float(np.mean([_final(h) for h in group]))
        # recovered: first epoch whose accuracy reaches 90% of the clean start's final accuracy
        curve = np.mean([h["test_accuracy"] for h in group], axis=0) if not any(h["diverged"] for h in group) else np.array([])
        reached = np.flatnonzero(curve >= 0.9 * clean) if clean is not None else np.array([], dtype=int)
        recover_epoch = int(reached[0]) + 1 if reached.size else None
        grad0 = float(np.mean([h["initial_unit0_gradient"] for h in group]))
        clean_group = [h for h, sp in zip(grid, grid_specs) if sp["head"] == head and sp["learning_rate"] == WRONG_LEARNING_RATE]
        dead = _mean_or_none([h.get("dead_hidden_fraction") for h in group])
        dead_clean = _mean_or_none([h.get("dead_hidden_fraction") for h in clean_group])
        numbers["wrong_start"][head] = {"initial_accuracy": float(np.mean([h["initial_accuracy"] for h in group])),
                                        "accuracy_after_1_epoch": float(np.mean([h["test_accuracy"][0] for h in group])),
                                        "final_accuracy": final, "clean_start_final_accuracy": clean,
                                        "epochs_to_recover": recover_epoch, "initial_unit0_gradient": grad0,
                                        "dead_hidden_fraction": dead, "clean_start_dead_hidden_fraction": dead_clean}
        axes[1].plot(np.arange(1, len(curve) + 1), curve, "o-", ms=3, color=COLORS[head], label=HEAD_LABELS[head])
        wrong_rows.append([HEAD_LABELS[head], grad0, numbers["wrong_start"][head]["accuracy_after_1_epoch"], final,
                           recover_epoch if recover_epoch is not None else "never",
                           dead_clean if dead_clean is not None else "diverged", dead if dead is not None else "diverged"])
    axes[0].set(xscale="log", xlabel="learning rate η", ylabel="final test accuracy",
                title=f"ReLU 64-30-10, He init, {size['relu_epochs']} epochs")
    axes[0].set_xticks(RELU_LEARNING_RATES, [f"{lr:g}" for lr in RELU_LEARNING_RATES])
    axes[0].minorticks_off()
    axes[1].set(xlabel="epoch", ylabel="test accuracy",
                title=f"confidently wrong start: +{WRONG_BIAS:g} on output bias 0, η = {WRONG_LEARNING_RATE:g}")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="output head (both panels)")
    integer_epochs(axes[1])
    figure = save(fig, ctx.out_dir, "08_relu_question")
    ws = numbers["wrong_start"]
    epochs_to = {h: ws[h]["epochs_to_recover"] for h in HEADS}
    fast = [h for h in HEADS if epochs_to[h] is not None and epochs_to[h] <= FAST_RECOVERY_EPOCHS]
    slow = [h for h in HEADS if epochs_to[h] is not None and epochs_to[h] > FAST_RECOVERY_EPOCHS]
    never = [h for h in HEADS if epochs_to[h] is None]
    numbers.update(recovered_quickly=fast, recovered_slowly=slow, never_recovered=never,
                   fast_recovery_epochs=FAST_RECOVERY_EPOCHS)
    best = {h: max((a for a in numbers["grid"][h].values() if a is not None), default=None) for h in HEADS}
    numbers["best_accuracy_over_grid"] = best

    def names(heads):
        return ", ".join(HEAD_LABELS[h] for h in heads) or "none"

    answer = (f"From the confidently wrong start (back to 90% of the clean start's accuracy), recovered within "
              f"{FAST_RECOVERY_EPOCHS} epochs: "
              + (", ".join(f"{HEAD_LABELS[h]} ({_epochs(epochs_to[h])})" for h in fast) or "none") + "; slowly: "
              + (", ".join(f"{HEAD_LABELS[h]} ({_epochs(epochs_to[h])})" for h in slow) or "none")
              + f"; not within {size['relu_epochs']} epochs: {names(never)}. ")
    # stuck heads whose output has no saturating non-linearity: ReLU's own zero gradient is the suspect
    stuck = [h for h in slow + never
             if h not in ("sigmoid_mse", "softmax_mse") and ws[h]["dead_hidden_fraction"] is not None]
    dead_text = "".join(
        f" {HEAD_LABELS[h]}: its biased unit starts with |∂ℓ/∂z₀| = {fmt(ws[h]['initial_unit0_gradient'])}, and after "
        f"training {pct(ws[h]['dead_hidden_fraction'])} of the ReLU units are dead (zero for every training example, so "
        f"they pass no gradient), against {pct(ws[h]['clean_start_dead_hidden_fraction'])} from the clean start."
        for h in stuck)
    numbers["stuck_with_dead_units"] = stuck
    text = (f"With ReLU hidden units and a clean start, the best accuracy over the η grid is "
            f"{pct(best['softmax_ce'])} for softmax cross-entropy and {pct(best['sigmoid_mse'])} for sigmoid MSE. "
            + answer +
            f"At the start the biased unit's |∂ℓ/∂z₀| (mean per training example) is {fmt(ws['sigmoid_mse']['initial_unit0_gradient'])} "
            f"with sigmoid MSE against {fmt(ws['sigmoid_bce']['initial_unit0_gradient'])} with sigmoid BCE: ReLU removes saturation "
            "in the hidden layer, not at a sigmoid or softmax output."
            + (" A head can also stay stuck for the opposite reason, through ReLU's own zero-gradient region." + dead_text
               if dead_text else ""))
    numbers["answer"] = answer
    return section("relu_question", "8. The ReLU question", figures=[figure], text=text,
                   tables=[table("clean start: mean final test accuracy", ["head"] + [f"η = {lr:g}" for lr in RELU_LEARNING_RATES],
                                 grid_rows),
                           table(f"confidently wrong start (+{WRONG_BIAS:g} on output bias 0, η = {WRONG_LEARNING_RATE:g})",
                                 ["head", "mean |∂ℓ/∂z₀| at start", "accuracy after 1 epoch", "final accuracy", "epochs to 90% of clean",
                                  "dead ReLU units, clean start", "dead ReLU units, wrong start"],
                                 wrong_rows)],
                   numbers=numbers, headline=answer.strip())


def calibration(ctx):
    """9. Reliability diagram and ECE of the cross-entropy digits model; test NLL next to accuracy."""
    size = sizes_for(ctx.quick)
    heads = ("softmax_ce", "sigmoid_mse")
    specs = [_spec(head=head, seed=ctx.seed, epochs=size["epochs"], reliability=True, split_seed=ctx.seed) for head in heads]
    histories = dict(zip(heads, ctx.map(train_run, specs)))
    fig, axes = new_figure(3, width=14.0, height=4.0)
    numbers, rows = {"epochs": size["epochs"], "seed": ctx.seed}, []
    for head, ax in zip(heads, axes[:2]):
        h = histories[head]
        bins = h["reliability"]
        centers = 0.5 * (bins["edges"][:-1] + bins["edges"][1:])
        filled = bins["count"] > 0
        total = bins["count"].sum()
        ax.bar(centers[filled], bins["accuracy"][filled], width=1.0 / len(centers), edgecolor="black",
               color=COLORS[head], alpha=0.7, label="accuracy in bin")
        # bins with few examples say little: print each bin's count; a marker shows bins of accuracy 0
        for c, acc, count in zip(centers[filled], bins["accuracy"][filled], bins["count"][filled]):
            ax.text(c, min(acc, 0.93) + 0.02, f"{count}", ha="center", va="bottom", fontsize=7)
        empty_acc = filled & (bins["accuracy"] == 0)
        ax.plot(centers[empty_acc], np.zeros(empty_acc.sum()), "v", color=COLORS[head], ms=6, clip_on=False)
        ax.plot([0, 1], [0, 1], "--", color="#555555", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence (max probability)", ylabel="accuracy",
               title=f"{HEAD_LABELS[head]}: ECE = {h['test_ece'][-1]:.3g}\n(numbers: test examples per bin, of {total})")
        ax.legend(fontsize=8, loc="upper left")
        top = int(np.flatnonzero(filled)[-1])
        numbers[head] = {"top_bin_share": float(bins["count"][top] / total), "top_bin_lower_edge": float(bins["edges"][top]),
                         "final_ece": h["test_ece"][-1], "final_nll": h["test_nll"][-1],
                         "final_accuracy": h["test_accuracy"][-1], "nll_curve": h["test_nll"],
                         "accuracy_curve": h["test_accuracy"], "best_nll_epoch": int(np.argmin(h["test_nll"])) + 1}
        rows.append([HEAD_LABELS[head], h["test_accuracy"][-1], h["test_nll"][-1], h["test_ece"][-1],
                     numbers[head]["best_nll_epoch"]])
    ce = histories["softmax_ce"]
    epochs = np.arange(1, len(ce["test_nll"]) + 1)
    # both fall as the model improves, so they share one log axis (no twin axes)
    axes[2].semilogy(epochs, ce["test_nll"], color=COLORS["softmax_ce"], label="test NLL (nats)")
    axes[2].semilogy(epochs, 1.0 - np.asarray(ce["test_accuracy"]), color="#555555", ls="--", label="test error rate (1 − accuracy)")
    axes[2].set(xlabel="epoch", ylabel="NLL (nats) and error rate", title="cross-entropy model: NLL next to the error rate")
    axes[2].legend(fontsize=8, loc="upper right")
    integer_epochs(axes[2])
    figure = save(fig, ctx.out_dir, "09_calibration")
    c, m = numbers["softmax_ce"], numbers["sigmoid_mse"]
    text = (f"The cross-entropy model (seed {ctx.seed}, N(0,1) init, {size['epochs']} epochs) has ECE {fmt(c['final_ece'])} "
            f"and test NLL {fmt(c['final_nll'])} nats at {pct(c['final_accuracy'])} accuracy; its NLL is lowest at epoch "
            f"{c['best_nll_epoch']}. {pct(c['top_bin_share'])} of its test examples fall in the top confidence bin "
            f"(≥ {fmt(c['top_bin_lower_edge'], 2)}), so the other bars rest on a handful of examples each (counts on the bars). "
            f"The sigmoid-MSE model of the same seed reaches {pct(m['final_accuracy'])} accuracy; its normalised outputs have "
            f"ECE {fmt(m['final_ece'])} and NLL {fmt(m['final_nll'])} nats. One seed mixes fit and calibration; "
            "experiment 7's table gives both heads' ECE averaged over all its seeds.")
    return section("calibration", "9. Calibration", figures=[figure], text=text,
                   tables=[table("final epoch, test set", ["head", "accuracy", "NLL (nats)", "ECE", "epoch of lowest NLL"], rows)],
                   numbers=numbers,
                   headline=(f"CE model ({pct(c['final_accuracy'])} accurate): ECE {fmt(c['final_ece'])}, NLL {fmt(c['final_nll'])} "
                             f"nats; sigmoid-MSE model ({pct(m['final_accuracy'])} accurate): ECE {fmt(m['final_ece'])}."))


EXPERIMENTS = [digits_sigmoid, relu_question, calibration]
