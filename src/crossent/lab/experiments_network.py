"""Experiments 7-9: networks on the digits (and breast-cancer) data.

Every training run is described by a plain dict (a "spec") and executed by
:func:`train_run`, a top-level function, so that ``ctx.map`` can send runs to
a process pool.  Each spec carries its own seeds: the numbers do not depend on
which process ran it or in which order.
"""

from __future__ import annotations

import numpy as np

from ._common import fmt, pct, section, table
from .data import breast_cancer_split, digits_split
from .figures import COLORS, integer_epochs, new_figure, save
from .models import HEAD_LABELS, HEADS, MLP, expected_calibration_error, head_loss_and_grad, head_probabilities

DIGITS_SIZES = (64, 30, 10)
SIGMOID_HEADS = ("softmax_ce", "sigmoid_bce", "sigmoid_mse")
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
    if spec.get("reliability") and not history["diverged"]:
        _, bins = expected_calibration_error(head_probabilities(net.logits(X_test), net.head), y_test)
        extra["reliability"] = bins
    history.update(extra)
    return history


def _spec(**kwargs):
    base = {"dataset": "digits", "sizes": DIGITS_SIZES, "hidden": "sigmoid", "init": "normal",
            "batch_size": 10, "learning_rate": 0.5, "split_seed": 0}
    base.update(kwargs)
    return base


def _final(history, key="test_accuracy"):
    return history[key][-1] if history[key] and not history["diverged"] else float("nan")


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
            x = j + (0.0 if init == "normal" else 3.5)
            axes[1].plot(np.full(len(finals), x), finals, "o", color=COLORS[head], alpha=0.7, ms=5)
            axes[1].plot([x - 0.3, x + 0.3], [finals.mean()] * 2, color="black", lw=1.5)
            numbers[init][head] = {"final_accuracy": finals, "mean_final_accuracy": finals.mean(),
                                   "std_final_accuracy": finals.std(), "mean_final_nll": np.mean([h["test_nll"][-1] for h in group]),
                                   "mean_final_ece": np.mean([h["test_ece"][-1] for h in group]),
                                   "mean_accuracy_curve": curves.mean(axis=0)}
            rows.append([init, HEAD_LABELS[head], finals.mean(), finals.std(), finals.min(), finals.max(),
                         numbers[init][head]["mean_final_nll"]])
    axes[0].set(xlabel="epoch", ylabel="test accuracy (mean over seeds)", title="learning curves")
    axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    axes[1].set_xticks([0, 1, 2, 3.5, 4.5, 5.5], ["CE", "BCE", "MSE", "CE", "BCE", "MSE"])
    axes[1].set(ylabel="final test accuracy", title="final accuracy per seed: N(0,1) init | scaled init")
    axes[1].axvline(2.75, color="#999999", lw=0.8)
    bc_rows = []
    numbers["breast_cancer"] = {}
    for j, head in enumerate(("sigmoid_bce", "sigmoid_mse")):
        group = [h for h, sp in zip(bc_runs, bc_specs) if sp["head"] == head]
        curves = np.array([h["test_accuracy"] for h in group])
        axes[2].plot(np.arange(1, curves.shape[1] + 1), curves.mean(axis=0), color=COLORS[head], label=HEAD_LABELS[head])
        numbers["breast_cancer"][head] = {"final_accuracy": curves[:, -1], "mean_final_accuracy": curves[:, -1].mean(),
                                          "mean_accuracy_after_1_epoch": curves[:, 0].mean()}
        bc_rows.append([HEAD_LABELS[head], curves[:, 0].mean(), curves[:, -1].mean(), curves[:, -1].std()])
    axes[2].set(xlabel="epoch", ylabel="test accuracy (mean over seeds)", title="breast cancer, 30-10-1, N(0,1) init")
    axes[2].legend(fontsize=8, loc="lower right")
    integer_epochs(axes[0], axes[2])
    figure = save(fig, ctx.out_dir, "07_digits_sigmoid")
    normal, scaled = numbers["normal"], numbers["scaled"]
    gap = normal["softmax_ce"]["mean_final_accuracy"] - normal["sigmoid_mse"]["mean_final_accuracy"]
    numbers["normal_init_ce_minus_mse"] = gap
    text = (f"With N(0,1) weights the sigmoid units start saturated. After {size['epochs']} epochs at η = 0.5 the "
            f"softmax cross-entropy head reaches {pct(normal['softmax_ce']['mean_final_accuracy'])} test accuracy on "
            f"average over {len(seeds)} seeds and the sigmoid MSE head {pct(normal['sigmoid_mse']['mean_final_accuracy'])}. "
            f"With scaled initialisation the gap is "
            f"{100 * (scaled['softmax_ce']['mean_final_accuracy'] - scaled['sigmoid_mse']['mean_final_accuracy']):.1f} "
            f"percentage points instead of {100 * gap:.1f}. "
            f"On the binary breast-cancer set, after one epoch BCE is at "
            f"{pct(numbers['breast_cancer']['sigmoid_bce']['mean_accuracy_after_1_epoch'])} and MSE at "
            f"{pct(numbers['breast_cancer']['sigmoid_mse']['mean_accuracy_after_1_epoch'])}.")
    return section("digits_sigmoid", "7. Digits, sigmoid network", figures=[figure], text=text,
                   tables=[table(f"digits 64-30-10, final test accuracy over {len(seeds)} seeds",
                                 ["init", "head", "mean", "std", "min", "max", "mean test NLL (nats)"], rows),
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
        numbers["wrong_start"][head] = {"initial_accuracy": float(np.mean([h["initial_accuracy"] for h in group])),
                                        "accuracy_after_1_epoch": float(np.mean([h["test_accuracy"][0] for h in group])),
                                        "final_accuracy": final, "clean_start_final_accuracy": clean,
                                        "epochs_to_recover": recover_epoch, "initial_unit0_gradient": grad0}
        axes[1].plot(np.arange(1, len(curve) + 1), curve, "o-", ms=3, color=COLORS[head], label=HEAD_LABELS[head])
        wrong_rows.append([HEAD_LABELS[head], grad0, numbers["wrong_start"][head]["accuracy_after_1_epoch"], final,
                           recover_epoch if recover_epoch is not None else "never"])
    axes[0].set(xscale="log", xlabel="learning rate η", ylabel="final test accuracy",
                title=f"ReLU 64-30-10, He init, {size['relu_epochs']} epochs")
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
              + (", ".join(f"{HEAD_LABELS[h]} ({epochs_to[h]})" for h in fast) or "none") + "; slowly: "
              + (", ".join(f"{HEAD_LABELS[h]} ({epochs_to[h]} epochs)" for h in slow) or "none")
              + f"; not within {size['relu_epochs']} epochs: {names(never)}. ")
    text = (f"With ReLU hidden units and a clean start, the best accuracy over the η grid is "
            f"{pct(best['softmax_ce'])} for softmax cross-entropy and {pct(best['sigmoid_mse'])} for sigmoid MSE. "
            + answer +
            f"At the start the biased unit's |∂ℓ/∂z₀| (mean per training example) is {fmt(ws['sigmoid_mse']['initial_unit0_gradient'])} "
            f"with sigmoid MSE against {fmt(ws['sigmoid_bce']['initial_unit0_gradient'])} with sigmoid BCE: ReLU removes saturation "
            "in the hidden layer, not at a sigmoid or softmax output.")
    numbers["answer"] = answer
    return section("relu_question", "8. The ReLU question", figures=[figure], text=text,
                   tables=[table("clean start: mean final test accuracy", ["head"] + [f"η = {lr:g}" for lr in RELU_LEARNING_RATES],
                                 grid_rows),
                           table(f"confidently wrong start (+{WRONG_BIAS:g} on output bias 0, η = {WRONG_LEARNING_RATE:g})",
                                 ["head", "mean |∂ℓ/∂z₀| at start", "accuracy after 1 epoch", "final accuracy", "epochs to 90% of clean"],
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
        ax.bar(centers[filled], bins["accuracy"][filled], width=1.0 / len(centers), edgecolor="black",
               color=COLORS[head], alpha=0.7, label="accuracy in bin")
        ax.plot([0, 1], [0, 1], "--", color="#555555", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy",
               title=f"{HEAD_LABELS[head]}: ECE = {h['test_ece'][-1]:.3g}")
        ax.legend(fontsize=8, loc="upper left")
        numbers[head] = {"final_ece": h["test_ece"][-1], "final_nll": h["test_nll"][-1],
                         "final_accuracy": h["test_accuracy"][-1], "nll_curve": h["test_nll"],
                         "accuracy_curve": h["test_accuracy"], "best_nll_epoch": int(np.argmin(h["test_nll"])) + 1}
        rows.append([HEAD_LABELS[head], h["test_accuracy"][-1], h["test_nll"][-1], h["test_ece"][-1],
                     numbers[head]["best_nll_epoch"]])
    ce = histories["softmax_ce"]
    epochs = np.arange(1, len(ce["test_nll"]) + 1)
    axes[2].plot(epochs, ce["test_nll"], color="#1f77b4", label="test NLL (nats)")
    axes[2].set(xlabel="epoch", ylabel="test NLL (nats)", title="cross-entropy model: NLL and accuracy")
    twin = axes[2].twinx()
    twin.plot(epochs, ce["test_accuracy"], color="#2ca02c", label="test accuracy")
    twin.set_ylabel("test accuracy")
    lines = axes[2].get_lines() + twin.get_lines()
    axes[2].legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center right")
    integer_epochs(axes[2])
    figure = save(fig, ctx.out_dir, "09_calibration")
    c, m = numbers["softmax_ce"], numbers["sigmoid_mse"]
    text = (f"The cross-entropy model (seed {ctx.seed}, N(0,1) init, {size['epochs']} epochs) has ECE {fmt(c['final_ece'])} "
            f"and test NLL {fmt(c['final_nll'])} nats at {pct(c['final_accuracy'])} accuracy; its NLL is lowest at epoch "
            f"{c['best_nll_epoch']}. The sigmoid-MSE model's normalised outputs have ECE {fmt(m['final_ece'])} and NLL "
            f"{fmt(m['final_nll'])} nats.")
    return section("calibration", "9. Calibration", figures=[figure], text=text,
                   tables=[table("final epoch, test set", ["head", "accuracy", "NLL (nats)", "ECE", "epoch of lowest NLL"], rows)],
                   numbers=numbers,
                   headline=f"CE model: ECE {fmt(c['final_ece'])}, NLL {fmt(c['final_nll'])} nats; MSE model: ECE {fmt(m['final_ece'])}.")


EXPERIMENTS = [digits_sigmoid, relu_question, calibration]
