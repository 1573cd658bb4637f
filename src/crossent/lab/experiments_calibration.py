"""Experiment 9: calibration of the digits networks, and temperature scaling as its fix.

The networks are experiment 7's N(0, 1) cross-entropy and sigmoid-MSE ones,
trained again on 90% of the training set: the other 10% is the validation set
that fits each network's temperature.  (Experiment 7 keeps the whole training
set; it trains these networks beside its own, in the same stack.)
"""

from __future__ import annotations

import numpy as np

from ._common import fmt, pct, section, table
from .experiments_network import CALIBRATED_HEADS, VALIDATION_FRACTION, calibration_specs, run_specs, sizes_for
from .figures import COLORS, integer_epochs, new_figure, save
from .temperature import temperature_scaling

#: the margins of both figures
LAYOUT = dict(left=0.04, right=0.995, bottom=0.119, top=0.89, wspace=0.195)
#: the two models whose reliability diagrams are drawn
DRAWN = CALIBRATED_HEADS


def _reliability(ax, bins, color, title, tf):
    """A reliability diagram: accuracy per confidence bin, the count of each bin above its bar."""
    centers = 0.5 * (bins["edges"][:-1] + bins["edges"][1:])
    filled = bins["count"] > 0
    ax.bar(centers[filled], bins["accuracy"][filled], width=1.0 / len(centers), edgecolor="black",
           color=color, alpha=0.7, label=tf("f9.accuracy_in_bin"))
    # bins with few examples say little: print each bin's count; a marker shows bins of accuracy 0
    for c, acc, count in zip(centers[filled], bins["accuracy"][filled], bins["count"][filled]):
        ax.text(c, min(acc, 0.93) + 0.02, f"{count}", ha="center", va="bottom", fontsize=7)
    zero = filled & (bins["accuracy"] == 0)
    ax.plot(centers[zero], np.zeros(zero.sum()), "v", color=color, ms=6, clip_on=False)
    ax.plot([0, 1], [0, 1], "--", color="#555555", label=tf("f9.perfect"))
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel=tf("f9.confidence"), ylabel=tf("f9.accuracy"), title=title)
    ax.legend(fontsize=8, loc="upper left")


def calibration(ctx):
    """9. Reliability diagrams, ECE and NLL of the digits models; temperature scaling before and after."""
    t, tf = ctx.t, ctx.tf
    size = sizes_for(ctx.quick)
    seeds = [ctx.seed + i for i in range(size["seeds"])]
    specs = calibration_specs(ctx)  # trained beside experiment 7's networks when it ran first
    runs = {(sp["head"], sp["seed"]): h for sp, h in zip(specs, run_specs(ctx, specs))}
    scaled = {key: temperature_scaling(h["outputs"], key[0]) for key, h in runs.items()}
    numbers = {"epochs": size["epochs"], "seed": ctx.seed, "seeds": seeds, "validation_fraction": VALIDATION_FRACTION,
               "validation_examples": len(runs[(DRAWN[0], ctx.seed)]["outputs"]["validation_labels"]),
               "temperature_scaling": {}}
    fig, axes = new_figure(3, width=14.0, height=4.0, layout=LAYOUT)
    rows = []
    for head, ax in zip(DRAWN, axes[:2]):
        h, ts = runs[(head, ctx.seed)], scaled[(head, ctx.seed)]
        bins = ts["before"]["bins"]
        total = int(bins["count"].sum())
        _reliability(ax, bins, COLORS[head], tf("f9.reliability_title", head=tf(f"head.{head}"),
                                                ece=f"{ts['before']['ece']:.3g}", n=total), tf)
        top = int(np.flatnonzero(bins["count"] > 0)[-1])
        numbers[head] = {"top_bin_share": float(bins["count"][top] / total), "top_bin_lower_edge": float(bins["edges"][top]),
                         "final_ece": h["test_ece"][-1], "final_nll": h["test_nll"][-1],
                         "final_accuracy": h["test_accuracy"][-1], "nll_curve": h["test_nll"],
                         "accuracy_curve": h["test_accuracy"], "best_nll_epoch": int(np.argmin(h["test_nll"])) + 1}
        rows.append([t(f"head.{head}"), h["test_accuracy"][-1], h["test_nll"][-1], h["test_ece"][-1],
                     numbers[head]["best_nll_epoch"]])
    ce = runs[("softmax_ce", ctx.seed)]
    epochs = np.arange(1, len(ce["test_nll"]) + 1)
    # both fall as the model improves, so they share one log axis (no twin axes)
    axes[2].semilogy(epochs, ce["test_nll"], color=COLORS["softmax_ce"], label=tf("f9.test_nll"))
    axes[2].semilogy(epochs, 1.0 - np.asarray(ce["test_accuracy"]), color="#555555", ls="--", label=tf("f9.error_rate"))
    axes[2].set(xlabel=tf("f.epoch"), ylabel=tf("f9.nll_and_error"), title=tf("f9.nll_title"))
    axes[2].legend(fontsize=8, loc="upper right")
    integer_epochs(axes[2])
    figure = save(fig, ctx.out_dir, "09_calibration")

    # temperature scaling: the same two models after, and every head's mean ECE before and after
    fig, axes = new_figure(3, width=14.0, height=4.0, layout=LAYOUT)
    for head, ax in zip(DRAWN, axes[:2]):
        ts = scaled[(head, ctx.seed)]
        _reliability(ax, ts["after"]["bins"], COLORS[head],
                     tf("f9.after_title", head=tf(f"head.{head}"), T=f"{ts['temperature']:.3g}",
                        ece=f"{ts['after']['ece']:.3g}"), tf)
    ts_rows = []
    for j, head in enumerate(DRAWN):
        group = [scaled[(head, s)] for s in seeds]
        T = np.array([g["temperature"] for g in group])
        stats = {when: {key: np.array([g[when][key] for g in group]) for key in ("accuracy", "nll", "ece")}
                 for when in ("before", "after")}
        numbers["temperature_scaling"][head] = {
            "temperatures": T, "mean_temperature": T.mean(),
            **{f"{key}_{when}": stats[when][key] for when in stats for key in ("accuracy", "nll", "ece")},
            **{f"mean_{key}_{when}": stats[when][key].mean() for when in stats for key in ("accuracy", "nll", "ece")}}
        for k, when in enumerate(("before", "after")):
            axes[2].bar(j + (k - 0.5) * 0.38, stats[when]["ece"].mean(), width=0.38, color=COLORS[head],
                        alpha=0.45 if when == "before" else 0.95, edgecolor="black",
                        label=tf(f"f9.{when}") if j == 0 else None)
        ts_rows.append([t(f"head.{head}"), T.mean(), stats["before"]["accuracy"].mean(), stats["before"]["nll"].mean(),
                        stats["after"]["nll"].mean(), stats["before"]["ece"].mean(), stats["after"]["ece"].mean()])
    axes[2].set_xticks(range(len(DRAWN)), [tf(f"head.{h}") for h in DRAWN])
    axes[2].set(ylabel=tf("f9.mean_ece"), title=tf("f9.ece_title", n=len(seeds)))
    axes[2].legend(fontsize=8, loc="upper left")
    figure_ts = save(fig, ctx.out_dir, "09b_temperature_scaling")

    c, m = numbers["softmax_ce"], numbers["sigmoid_mse"]
    tsn = numbers["temperature_scaling"]
    tc, tm = tsn["softmax_ce"], tsn["sigmoid_mse"]
    text = t("e9.text", seed=ctx.seed, epochs=size["epochs"], ece=fmt(c["final_ece"]), nll=fmt(c["final_nll"]),
             acc=pct(c["final_accuracy"]), best=c["best_nll_epoch"], top=pct(c["top_bin_share"]),
             edge=fmt(c["top_bin_lower_edge"], 2), m_acc=pct(m["final_accuracy"]), m_ece=fmt(m["final_ece"]),
             m_nll=fmt(m["final_nll"]))
    text += " " + t("e9.ts_text", frac=pct(VALIDATION_FRACTION, 0), n_val=numbers["validation_examples"], seed=ctx.seed,
                    n=len(seeds), T_ce=fmt(tc["mean_temperature"]), ece_ce_b=fmt(tc["mean_ece_before"]),
                    ece_ce_a=fmt(tc["mean_ece_after"]), nll_ce_b=fmt(tc["mean_nll_before"]),
                    nll_ce_a=fmt(tc["mean_nll_after"]), T_m=fmt(tm["mean_temperature"]),
                    ece_m_b=fmt(tm["mean_ece_before"]), ece_m_a=fmt(tm["mean_ece_after"]),
                    nll_m_b=fmt(tm["mean_nll_before"]), nll_m_a=fmt(tm["mean_nll_after"]),
                    acc_m=pct(tm["mean_accuracy_before"]))
    lower = [h for h in DRAWN if tsn[h]["mean_ece_after"] < tsn[h]["mean_ece_before"]]
    numbers["ece_lower_after_scaling"] = lower
    text += " " + t("e9.ts_verdict", n_val=numbers["validation_examples"], lower=t("word.list_sep").join(t(f"head.{h}") for h in lower) or t("word.none"),
                    higher=t("word.list_sep").join(t(f"head.{h}") for h in DRAWN if h not in lower) or t("word.none"))
    return section("calibration", t("e9.title"), figures=[figure, figure_ts], text=text,
                   tables=[table(t("e9.table"), [t("col.head"), t("col.accuracy"), t("col.nll"), t("col.ece"),
                                                 t("col.best_nll_epoch")], rows),
                           table(t("e9.ts_table", n=len(seeds), frac=pct(VALIDATION_FRACTION, 0)),
                                 [t("col.head"), t("col.mean_T"), t("col.accuracy_both"), t("col.nll_before"),
                                  t("col.nll_after"), t("col.ece_before"), t("col.ece_after")], ts_rows)],
                   numbers=numbers,
                   headline=t("e9.headline", acc=pct(c["final_accuracy"]), ece=fmt(c["final_ece"]),
                              nll=fmt(c["final_nll"]), m_acc=pct(m["final_accuracy"]), m_ece=fmt(m["final_ece"]),
                              ece_ce_a=fmt(tc["mean_ece_after"]), ece_m_a=fmt(tm["mean_ece_after"]),
                              ece_ce_b=fmt(tc["mean_ece_before"]), ece_m_b=fmt(tm["mean_ece_before"])))


calibration.specs = calibration_specs  # what it trains (see experiments_network)

EXPERIMENTS = [calibration]
