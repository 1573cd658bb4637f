"""Experiments 7-9: networks on the digits (and breast-cancer) data.

Every training run is described by a plain dict (a "spec"); :func:`run_specs`
trains the specs of an experiment as stacks of networks (:class:`MLPStack`)
by :func:`train_stack`, a top-level function, so that ``ctx.map`` can send
stacks to a process pool.  Each spec carries its own seeds: the numbers do not
depend on which process ran it, in which order, or beside which others.
"""

from __future__ import annotations

import numpy as np

from .. import losses
from ._common import fmt, pct, section, table
from .data import breast_cancer_split, digits_split, stratified_split
from .figures import COLORS, integer_epochs, new_figure, save
from .models import HEADS, MLP, head_loss_and_grad
from .stack import MLPStack

DIGITS_SIZES = (64, 30, 10)
SIGMOID_HEADS = ("softmax_ce", "sigmoid_bce", "softmax_mse", "sigmoid_mse")
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


#: networks per stack at most: with --jobs 1 an experiment's networks of one architecture are one stack
STACK_SIZE = 100
#: share of the digits training set that experiment 9's networks hold out to fit their temperature
VALIDATION_FRACTION = 0.1
#: the heads of the networks experiment 9 calibrates
CALIBRATED_HEADS = ("softmax_ce", "sigmoid_mse")


def _data(spec):
    split = digits_split if spec["dataset"] == "digits" else breast_cancer_split
    return split(spec["split_seed"])


def _rows(spec, y_train):
    """The training rows of a spec's network and its validation rows (None without ``validation``)."""
    if not spec.get("validation"):
        return np.arange(len(y_train)), None
    return stratified_split(y_train, spec["validation"], spec["split_seed"])


def _stack_key(spec):
    """What the networks of one stack share: the data set and split, the architecture and the schedule."""
    return tuple(spec.get(k) for k in ("dataset", "split_seed", "sizes", "hidden", "batch_size", "epochs"))


def train_stack(specs):
    """Train the networks described by `specs` (same :func:`_stack_key`) together; one history each.

    Each history has the per-epoch test numbers and the extras its spec asks
    for; a spec with ``validation`` trains on the training set less that
    share, and ``keep_outputs`` adds the final logits on the validation and test sets.

    Examples:
        >>> a, b = train_stack([_spec(head="softmax_ce", seed=0, epochs=1), _spec(head="sigmoid_mse", seed=0, epochs=1)])
        >>> len(a["test_accuracy"]), a["test_accuracy"][0] > b["test_accuracy"][0]
        (1, True)
    """
    first = specs[0]
    if any(_stack_key(s) != _stack_key(first) for s in specs):
        raise ValueError("`specs` of one stack must share data, sizes, hidden activation, batch size and epochs.")
    X_train, y_train, X_test, y_test = _data(first)
    nets, extras, rows = [], [], []
    for spec in specs:
        net = MLP(spec["sizes"], hidden=spec["hidden"], head=spec["head"], init=spec["init"], seed=spec["seed"])
        fit_rows, validation_rows = _rows(spec, y_train)
        extra = {}
        if spec.get("wrong_bias"):
            net.biases[-1][0] += spec["wrong_bias"]
            # why it recovers or not: the biased unit's |dℓ/dz₀| at the start, mean over training examples
            # (the library's gradient of the mean loss is the per-example gradient / n)
            _, grad = head_loss_and_grad(net.logits(X_train[fit_rows]), y_train[fit_rows], net.head)
            extra["initial_unit0_gradient"] = float(np.abs(grad[:, 0]).sum())
            extra["initial_accuracy"] = net.evaluate(X_test, y_test)[0]
        nets.append(net)
        extras.append(extra)
        rows.append((fit_rows, validation_rows))
    stack = MLPStack(nets)
    histories = stack.fit(X_train, y_train, X_test, y_test, epochs=first["epochs"], batch_size=first["batch_size"],
                          learning_rates=[s["learning_rate"] for s in specs], seeds=[s["seed"] + 1000 for s in specs],
                          rows=[fit for fit, _ in rows])
    test_logits = stack.logits(X_test)
    for m, (spec, history, extra, (fit_rows, validation_rows)) in enumerate(zip(specs, histories, extras, rows)):
        if spec["hidden"] == "relu" and not history["diverged"]:
            extra["dead_hidden_fraction"] = dead_unit_fraction(stack.net(m), X_train[fit_rows])
        if spec.get("keep_outputs") and not history["diverged"]:
            extra["outputs"] = {"validation_logits": stack.net(m).logits(X_train[validation_rows]),
                                "validation_labels": y_train[validation_rows],
                                "test_logits": test_logits[m], "test_labels": y_test}
        history.update(extra)
    return histories


def train_run(spec):
    """Train one network described by `spec` (a stack of one); return its history."""
    return train_stack([spec])[0]


def spec_key(spec):
    """The key of a spec in ``ctx.runs``: the spec's items, sorted (specs are plain dicts of plain values)."""
    return repr(sorted(spec.items()))


def stacks(specs, pieces=1):
    """`specs` as the stacks they train in: one per :func:`_stack_key`, ordered by head, cut into `pieces`.

    Each stack has at most :data:`STACK_SIZE` networks.  A network's numbers do
    not depend on its stack (the tests check it bit for bit), so neither do
    the results on how the specs are cut.
    """
    groups = {}
    # networks of one training set side by side, and within them each head's networks
    for spec in sorted(specs, key=lambda s: (s.get("validation") or 0.0, HEADS.index(s["head"]))):
        groups.setdefault(_stack_key(spec), []).append(spec)
    chunks = []
    for group in groups.values():
        size = min(STACK_SIZE, -(-len(group) // pieces))
        chunks += [group[i : i + size] for i in range(0, len(group), size)]
    return chunks


def run_specs(ctx, specs):
    """The histories of `specs`: taken from ``ctx.runs``, or trained in stacks (through ``ctx.map``).

    The stacks are cut into ``ctx.jobs`` pieces, one per process (:func:`stacks`).
    """
    todo = list({spec_key(s): s for s in specs if spec_key(s) not in ctx.runs}.values())
    chunks = stacks(todo, ctx.jobs)
    for chunk, histories in zip(chunks, ctx.map(train_stack, chunks)):
        ctx.runs.update(zip(map(spec_key, chunk), histories))
    return [ctx.runs[spec_key(s)] for s in specs]


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


def _epochs(t, n):
    return t("unit.epoch" if n == 1 else "unit.epochs", n=n)


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


def digits_spec(ctx, init, head, seed, *, validation=None):
    """The spec of a digits network of experiment 7; with `validation`, experiment 9's (trained on the rest)."""
    size = sizes_for(ctx.quick)
    extra = {"validation": validation, "keep_outputs": True} if validation else {}
    return _spec(head=head, init=init, seed=seed, epochs=size["epochs"], split_seed=ctx.seed, **extra)


def calibration_specs(ctx):
    """Experiment 9's networks: experiment 7's N(0,1) ones of two heads, on 90% of the training set."""
    seeds = [ctx.seed + i for i in range(sizes_for(ctx.quick)["seeds"])]
    return [digits_spec(ctx, "normal", head, s, validation=VALIDATION_FRACTION) for head in CALIBRATED_HEADS
            for s in seeds]


def _digits_sigmoid_specs(ctx):
    """Experiment 7's digits networks, its breast-cancer networks, and experiment 9's networks.

    Experiment 9's networks share the digits networks' architecture and
    schedule: they train in the same stack, as neighbours (their epochs are
    10% shorter), and experiment 9 finds them in ``ctx.runs``.
    """
    size = sizes_for(ctx.quick)
    seeds = [ctx.seed + i for i in range(size["seeds"])]
    specs = [digits_spec(ctx, init, head, s) for init in ("normal", "scaled") for head in SIGMOID_HEADS for s in seeds]
    bc_specs = [_spec(dataset="breast_cancer", sizes=(30, 10, 1), head=head, seed=s, epochs=size["bc_epochs"],
                      split_seed=ctx.seed) for head in ("sigmoid_bce", "sigmoid_mse") for s in seeds]
    return specs, bc_specs, calibration_specs(ctx)


def digits_sigmoid(ctx):
    """7. Digits, 64-30-10 sigmoid network: cross-entropy against MSE heads, N(0,1) and scaled init."""
    t, tf = ctx.t, ctx.tf
    size = sizes_for(ctx.quick)
    seeds = [ctx.seed + i for i in range(size["seeds"])]
    specs, bc_specs, calibration = _digits_sigmoid_specs(ctx)
    histories = run_specs(ctx, specs + bc_specs + calibration)
    runs, bc_runs = histories[: len(specs)], histories[len(specs): len(specs) + len(bc_specs)]
    fig, axes = new_figure(3, width=14.0, height=5.2,
                           layout=dict(left=0.04, right=0.995, bottom=0.092, top=0.915, wspace=0.15))
    numbers = {"seeds": seeds, "epochs": size["epochs"], "learning_rate": 0.5, "batch_size": 10}
    rows = []
    epochs = np.arange(1, size["epochs"] + 1)
    for i, init in enumerate(("normal", "scaled")):
        numbers[init] = {}
        for j, head in enumerate(SIGMOID_HEADS):
            group = [h for h, sp in zip(runs, specs) if sp["init"] == init and sp["head"] == head]
            curves = np.array([h["test_accuracy"] for h in group])
            finals = curves[:, -1]
            style = "-" if init == "normal" else "--"
            axes[0].plot(epochs, curves.mean(axis=0), style, color=COLORS[head],
                         label=tf("f7.curve_label", head=tf(f"head.{head}"), init=tf(f"init.{init}")))
            x = j + (0.0 if init == "normal" else len(SIGMOID_HEADS) + 0.5)
            axes[1].plot(np.full(len(finals), x), finals, "o", color=COLORS[head], alpha=0.7, ms=5)
            axes[1].plot([x - 0.3, x + 0.3], [finals.mean()] * 2, color="black", lw=1.5)
            nll, ece = [h["test_nll"][-1] for h in group], [h["test_ece"][-1] for h in group]
            numbers[init][head] = {"final_accuracy": finals, "mean_final_accuracy": finals.mean(),
                                   "std_final_accuracy": finals.std(), "final_nll": nll, "mean_final_nll": np.mean(nll),
                                   "std_final_nll": np.std(nll), "final_ece": ece, "mean_final_ece": np.mean(ece),
                                   "std_final_ece": np.std(ece), "mean_accuracy_curve": curves.mean(axis=0)}
            rows.append([t(f"init.{init}"), t(f"head.{head}"), finals.mean(), finals.std(), finals.min(), finals.max(),
                         numbers[init][head]["mean_final_nll"], numbers[init][head]["mean_final_ece"]])
    axes[0].set(xlabel=tf("f.epoch"), ylabel=tf("f.mean_test_accuracy"), title=tf("f7.curves_title"))
    axes[0].legend(fontsize=7, loc="lower right", ncol=1)
    k = len(SIGMOID_HEADS)
    axes[1].set_xticks([j + off for off in (0.0, k + 0.5) for j in range(k)],
                       [tf(f"short.{h}") for _ in range(2) for h in SIGMOID_HEADS], fontsize=7)
    axes[1].set(ylabel=tf("f.final_test_accuracy"), title=tf("f7.dots_title"))
    axes[1].axvline(k - 0.25, color="#999999", lw=0.8)
    bc_rows = []
    numbers["breast_cancer"] = {}
    for j, head in enumerate(("sigmoid_bce", "sigmoid_mse")):
        group = [h for h, sp in zip(bc_runs, bc_specs) if sp["head"] == head]
        curves = np.array([h["test_accuracy"] for h in group])
        axes[2].plot(np.arange(1, curves.shape[1] + 1), curves.mean(axis=0), color=COLORS[head], label=tf(f"head.{head}"))
        numbers["breast_cancer"][head] = {"final_accuracy": curves[:, -1], "mean_final_accuracy": curves[:, -1].mean(),
                                          "std_final_accuracy": curves[:, -1].std(),
                                          "accuracy_after_1_epoch": curves[:, 0],
                                          "mean_accuracy_after_1_epoch": curves[:, 0].mean()}
        bc_rows.append([t(f"head.{head}"), curves[:, 0].mean(), curves[:, -1].mean(), curves[:, -1].std()])
    axes[2].set(xlabel=tf("f.epoch"), ylabel=tf("f.mean_test_accuracy"), title=tf("f7.bc_title"), ylim=(0.5, 1.0))
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
    text = t("e7.text", sat_n=pct(sat["normal"]["saturated_fraction"]), z=f"{SATURATED_Z:g}",
             d_n=fmt(sat["normal"]["mean_sigmoid_derivative"]), sat_s=pct(sat["scaled"]["saturated_fraction"]),
             d_s=fmt(sat["scaled"]["mean_sigmoid_derivative"]), epochs=size["epochs"], ce=pct(normal["softmax_ce"]["mean_final_accuracy"]), n=len(seeds),
             smse=pct(normal["softmax_mse"]["mean_final_accuracy"]), mse=pct(normal["sigmoid_mse"]["mean_final_accuracy"]),
             gap_s=f"{100 * scaled_gap:.1f}", gap=f"{100 * gap:.1f}",
             bce1=pct(bc["sigmoid_bce"]["mean_accuracy_after_1_epoch"]),
             mse1=pct(bc["sigmoid_mse"]["mean_accuracy_after_1_epoch"]), bc_epochs=size["bc_epochs"],
             bce=pct(bc["sigmoid_bce"]["mean_final_accuracy"]), bmse=pct(bc["sigmoid_mse"]["mean_final_accuracy"]))
    return section("digits_sigmoid", t("e7.title"), figures=[figure], text=text,
                   tables=[table(t("e7.table", n=len(seeds)),
                                 [t("col.init"), t("col.head"), t("col.mean"), t("col.std"), t("col.min"), t("col.max"),
                                  t("col.mean_nll"), t("col.mean_ece")], rows),
                           table(t("e7.bc_table"), [t("col.head"), t("col.accuracy_1_epoch"), t("col.final_mean"),
                                                    t("col.final_std")], bc_rows)],
                   numbers=numbers,
                   headline=t("e7.headline", ce=pct(normal["softmax_ce"]["mean_final_accuracy"]),
                              mse=pct(normal["sigmoid_mse"]["mean_final_accuracy"])))


def _relu_specs(ctx):
    """Experiment 8's networks: the learning-rate grid, and the confidently wrong starts."""
    size = sizes_for(ctx.quick)
    seeds = [ctx.seed + i for i in range(size["relu_seeds"])]
    common = {"hidden": "relu", "init": "scaled", "epochs": size["relu_epochs"], "split_seed": ctx.seed}
    grid_specs = [_spec(head=head, learning_rate=lr, seed=s, **common)
                  for head in HEADS for lr in RELU_LEARNING_RATES for s in seeds]
    wrong_specs = [_spec(head=head, learning_rate=WRONG_LEARNING_RATE, seed=s, wrong_bias=WRONG_BIAS, **common)
                   for head in HEADS for s in seeds]
    return grid_specs, wrong_specs


def relu_question(ctx):
    """8. ReLU hidden layer with every head over a learning-rate grid, and the confidently wrong start."""
    t, tf = ctx.t, ctx.tf
    size = sizes_for(ctx.quick)
    seeds = [ctx.seed + i for i in range(size["relu_seeds"])]
    grid_specs, wrong_specs = _relu_specs(ctx)
    histories = run_specs(ctx, grid_specs + wrong_specs)
    grid, wrong = histories[: len(grid_specs)], histories[len(grid_specs):]
    numbers = {"seeds": seeds, "epochs": size["relu_epochs"], "learning_rates": RELU_LEARNING_RATES,
               "wrong_bias": WRONG_BIAS, "wrong_learning_rate": WRONG_LEARNING_RATE, "grid": {}, "grid_per_seed": {},
               "wrong_start": {}}
    fig, axes = new_figure(2, width=13.5, height=4.0,
                           layout=dict(left=0.041, right=0.824, bottom=0.119, top=0.94, wspace=0.13))
    grid_rows, wrong_rows = [], []
    diverged, never = t("word.diverged"), t("word.never")
    for head in HEADS:
        accs, per_seed = [], {}
        for lr in RELU_LEARNING_RATES:
            group = [h for h, sp in zip(grid, grid_specs) if sp["head"] == head and sp["learning_rate"] == lr]
            finals = [_final(h) for h in group]
            per_seed[f"lr_{lr:g}"] = finals
            accs.append(float(np.mean(finals)) if not any(h["diverged"] for h in group) else None)
        numbers["grid"][head] = dict(zip([f"lr_{lr:g}" for lr in RELU_LEARNING_RATES], accs))
        numbers["grid_per_seed"][head] = per_seed
        grid_rows.append([t(f"head.{head}")] + [a if a is not None else diverged for a in accs])
        axes[0].plot(RELU_LEARNING_RATES, [a if a is not None else np.nan for a in accs], "o-",
                     color=COLORS[head], label=tf(f"head.{head}"))
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
                                        "final_accuracy": final, "final_accuracy_per_seed": [_final(h) for h in group],
                                        "clean_start_final_accuracy": clean,
                                        "epochs_to_recover": recover_epoch, "initial_unit0_gradient": grad0,
                                        "dead_hidden_fraction": dead, "clean_start_dead_hidden_fraction": dead_clean}
        axes[1].plot(np.arange(1, len(curve) + 1), curve, "o-", ms=3, color=COLORS[head], label=tf(f"head.{head}"))
        wrong_rows.append([t(f"head.{head}"), grad0, numbers["wrong_start"][head]["accuracy_after_1_epoch"], final,
                           recover_epoch if recover_epoch is not None else never,
                           dead_clean if dead_clean is not None else diverged, dead if dead is not None else diverged])
    axes[0].set(xscale="log", xlabel=tf("f8.learning_rate"), ylabel=tf("f.final_test_accuracy"),
                title=tf("f8.grid_title", epochs=size["relu_epochs"]))
    axes[0].set_xticks(RELU_LEARNING_RATES, [f"{lr:g}" for lr in RELU_LEARNING_RATES])
    axes[0].minorticks_off()
    axes[1].set(xlabel=tf("f.epoch"), ylabel=tf("f.test_accuracy"),
                title=tf("f8.wrong_title", bias=f"{WRONG_BIAS:g}", lr=f"{WRONG_LEARNING_RATE:g}"))
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title=tf("f8.legend_title"))
    integer_epochs(axes[1])
    figure = save(fig, ctx.out_dir, "08_relu_question")
    ws = numbers["wrong_start"]
    epochs_to = {h: ws[h]["epochs_to_recover"] for h in HEADS}
    fast = [h for h in HEADS if epochs_to[h] is not None and epochs_to[h] <= FAST_RECOVERY_EPOCHS]
    slow = [h for h in HEADS if epochs_to[h] is not None and epochs_to[h] > FAST_RECOVERY_EPOCHS]
    never_heads = [h for h in HEADS if epochs_to[h] is None]
    numbers.update(recovered_quickly=fast, recovered_slowly=slow, never_recovered=never_heads,
                   fast_recovery_epochs=FAST_RECOVERY_EPOCHS)
    best = {h: max((a for a in numbers["grid"][h].values() if a is not None), default=None) for h in HEADS}
    numbers["best_accuracy_over_grid"] = best

    def names(heads, with_epochs=False):
        parts = [t("e8.head_epochs", head=t(f"head.{h}"), epochs=_epochs(t, epochs_to[h])) if with_epochs
                 else t(f"head.{h}") for h in heads]
        return t("word.list_sep").join(parts) or t("word.none")

    answer = t("e8.answer", fast_epochs=FAST_RECOVERY_EPOCHS, fast=names(fast, True), slow=names(slow, True),
               epochs=size["relu_epochs"], never=names(never_heads))
    # stuck heads whose output has no saturating non-linearity: ReLU's own zero gradient is the suspect
    stuck = [h for h in slow + never_heads
             if h not in ("sigmoid_mse", "softmax_mse") and ws[h]["dead_hidden_fraction"] is not None]
    dead_text = "".join(t("e8.dead_text", head=t(f"head.{h}"), grad=fmt(ws[h]["initial_unit0_gradient"]),
                          dead=pct(ws[h]["dead_hidden_fraction"]), clean=pct(ws[h]["clean_start_dead_hidden_fraction"]))
                        for h in stuck)
    numbers["stuck_with_dead_units"] = stuck
    text = (t("e8.text", ce=pct(best["softmax_ce"]), mse=pct(best["sigmoid_mse"])) + answer
            + t("e8.gradient_text", mse=fmt(ws["sigmoid_mse"]["initial_unit0_gradient"]),
                bce=fmt(ws["sigmoid_bce"]["initial_unit0_gradient"]))
            + (t("e8.stuck_text") + dead_text if dead_text else ""))
    numbers["answer"] = answer
    return section("relu_question", t("e8.title"), figures=[figure], text=text,
                   tables=[table(t("e8.grid_table"), [t("col.head")] + [f"η = {lr:g}" for lr in RELU_LEARNING_RATES],
                                 grid_rows),
                           table(t("e8.wrong_table", bias=f"{WRONG_BIAS:g}", lr=f"{WRONG_LEARNING_RATE:g}"),
                                 [t("col.head"), t("col.grad0"), t("col.accuracy_1_epoch"), t("col.final_accuracy"),
                                  t("col.epochs_to_90"), t("col.dead_clean"), t("col.dead_wrong")],
                                 wrong_rows)],
                   numbers=numbers, headline=answer.strip())


# what each experiment trains, so that a process pool can start the training before the experiment runs
digits_sigmoid.specs = lambda ctx: [s for part in _digits_sigmoid_specs(ctx) for s in part]
relu_question.specs = lambda ctx: [s for part in _relu_specs(ctx) for s in part]

EXPERIMENTS = [digits_sigmoid, relu_question]
