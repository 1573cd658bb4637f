"""Experiments 1-6: the sigmoid, one neuron's gradients and loss surfaces, and the information measures.

Each function takes a :class:`~crossent.lab._common.Context`, draws its figure
into ``ctx.out_dir`` and returns its section record (numbers, tables, text).
"""

from __future__ import annotations

import numpy as np

from .. import losses, measures
from ._common import fmt, pct, section, table
from .figures import COLORS, new_figure, save
from .models import NEURON_LOSSES, Neuron, neuron_loss_and_grad_z

#: the saturated-neuron set-up of experiment 3 (Nielsen's example, the article's argument)
SATURATED = {"x": 1.0, "y": 0.0, "learning_rate": 0.15, "steps": 300, "starts": [(0.6, 0.9), (2.0, 2.0)]}


def sigmoid_and_derivative(ctx):
    """1. The sigmoid and its derivative over z in [-10, 10]."""
    z = np.linspace(-10.0, 10.0, 401)
    s, d = losses.sigmoid(z), losses.sigmoid_derivative(z)
    points = np.array([-10.0, -5.0, -2.0, 0.0, 2.0, 5.0, 10.0])
    t, tf = ctx.t, ctx.tf
    fig, ax = new_figure(width=7.5, height=3.6, layout=dict(left=0.075, right=0.99, bottom=0.135, top=0.93))
    ax.plot(z, s, color="#1f77b4", label="σ(z)")
    ax.plot(z, d, color="#d62728", label="σ′(z) = σ(z)(1 − σ(z))")
    ax.plot(points, losses.sigmoid_derivative(points), "o", color="#d62728", ms=4)
    ax.set(xlabel=tf("f.pre_activation"), ylabel=tf("f1.value"), title=tf("f1.title"))
    ax.legend(loc="center left")
    figure = save(fig, ctx.out_dir, "01_sigmoid")
    peak = float(d.max())
    d5, d10 = float(losses.sigmoid_derivative(5.0)), float(losses.sigmoid_derivative(10.0))
    numbers = {"derivative_peak": peak, "peak_at_z": float(z[d.argmax()]), "derivative_at_5": d5,
               "derivative_at_10": d10, "ratio_10_to_peak": d10 / peak}
    text = t("e1.text", peak=fmt(peak), at=fmt(z[d.argmax()]), d5=fmt(d5), d10=fmt(d10), ratio=fmt(d10 / peak))
    rows = [[p, float(losses.sigmoid(p)), float(losses.sigmoid_derivative(p))] for p in points]
    return section("sigmoid", t("e1.title"), figures=[figure], text=text,
                   tables=[table(t("e1.table"), ["z", "σ(z)", "σ′(z)"], rows)],
                   numbers=numbers, headline=t("e1.headline", d10=fmt(d10), ratio=fmt(d10 / peak), peak=fmt(peak)))


def gradient_factor(ctx):
    """2. |dL/dz| under MSE and cross-entropy for y = 0 and y = 1, and their ratio."""
    t, tf = ctx.t, ctx.tf
    z = np.linspace(-10.0, 10.0, 401)
    fig, axes = new_figure(3, width=12.0, height=3.8,
                           layout=dict(left=0.057, right=0.995, bottom=0.125, top=0.935, wspace=0.22))
    worst, rows = 0.0, []
    for y, ax in zip((0.0, 1.0), axes[:2]):
        grads = {loss: np.abs(neuron_loss_and_grad_z(z, y, loss)[1]) for loss in NEURON_LOSSES}
        ratio = grads["mse"] / grads["cross_entropy"]
        # the σ'(z) factor, measured: relative deviation of the ratio from the library's σ'(z)
        worst = max(worst, float(np.max(np.abs(ratio / losses.sigmoid_derivative(z) - 1.0))))
        for loss in NEURON_LOSSES:
            ax.semilogy(z, grads[loss], color=COLORS[loss], label=tf(f"loss.{loss}"))
        ax.set(xlabel=tf("f.pre_activation"), ylabel=tf("f2.grad_label"), title=tf("f2.target", y=int(y)))
        ax.legend(loc="lower center" if y == 0 else "lower center")
        axes[2].semilogy(z, ratio, color="#555555" if y == 0 else "#bbbbbb",
                         ls="-" if y == 0 else "--", lw=3 if y == 0 else 1.5, label=tf("f2.ratio_label", y=int(y)))
        for p in (-5.0, 0.0, 5.0):
            g_mse = float(np.abs(neuron_loss_and_grad_z(p, y, "mse")[1]))
            g_ce = float(np.abs(neuron_loss_and_grad_z(p, y, "cross_entropy")[1]))
            rows.append([y, p, g_ce, g_mse, g_mse / g_ce, float(losses.sigmoid_derivative(p))])
    axes[2].semilogy(z, losses.sigmoid_derivative(z), ":", color="#d62728", lw=2, label="σ′(z)")
    axes[2].set(xlabel=tf("f.pre_activation"), ylabel=tf("f2.ratio"), title=tf("f2.ratio_title"))
    axes[2].legend(loc="lower center")
    figure = save(fig, ctx.out_dir, "02_gradient_factor")
    wrong = [r for r in rows if r[0] == 0.0 and r[1] == 5.0][0]
    numbers = {"max_relative_deviation_of_ratio_from_sigmoid_derivative": worst,
               "y0_z5_ce_gradient": wrong[2], "y0_z5_mse_gradient": wrong[3], "y0_z5_ratio": wrong[4]}
    text = t("e2.text", ce=fmt(wrong[2]), mse=fmt(wrong[3]), worst=fmt(worst, 2))
    return section("gradient_factor", t("e2.title"), figures=[figure], text=text,
                   tables=[table(t("e2.table"), ["y", "z", "CE", "MSE", "MSE / CE", "σ′(z)"], rows)],
                   numbers=numbers, headline=t("e2.headline", ratio=fmt(wrong[4])))


def train_neuron(w, b, loss, setup=SATURATED):
    """Train one neuron from ``(w, b)`` with the experiment-3 set-up; return its history."""
    return Neuron(w=w, b=b, loss=loss).train(
        x=setup["x"], y=setup["y"], learning_rate=setup["learning_rate"], steps=setup["steps"])


def _steps_until(values, threshold):
    below = np.flatnonzero(np.asarray(values) < threshold)
    return int(below[0]) if below.size else None


def saturated_neuron(ctx):
    """3. x = 1, y = 0 from (0.6, 0.9) and (2, 2): output and loss against the step for both losses."""
    t, tf = ctx.t, ctx.tf
    fig, axes = new_figure(2, width=11.0, height=3.8,
                           layout=dict(left=0.052, right=0.995, bottom=0.125, top=0.88, wspace=0.155))
    numbers, rows = {}, []
    for (w, b), style in zip(SATURATED["starts"], ("-", "--")):
        for loss in NEURON_LOSSES:
            h = train_neuron(w, b, loss)
            label = tf("f3.label", loss=tf(f"loss.{loss}"), w=f"{w:g}", b=f"{b:g}")
            axes[0].plot(h["a"], style, color=COLORS[loss], label=label)
            axes[1].plot(h["loss"], style, color=COLORS[loss], label=label)
            z0 = w * SATURATED["x"] + b
            key = f"{loss}_from_{w:g}_{b:g}"
            numbers[key] = {"z0": z0, "a0": h["a"][0], "initial_grad_b": h["grad_b"][0],
                            "steps_to_a_below_half": _steps_until(h["a"], 0.5),
                            "final_a": h["a"][-1], "final_loss": h["loss"][-1]}
            rows.append([f"({w:g}, {b:g})", t(f"loss.{loss}"), h["a"][0], h["grad_b"][0],
                         numbers[key]["steps_to_a_below_half"] if numbers[key]["steps_to_a_below_half"] is not None
                         else t("word.never"), h["a"][-1], h["loss"][-1]])
        ratio = numbers[f"mse_from_{w:g}_{b:g}"]["initial_grad_b"] / numbers[f"cross_entropy_from_{w:g}_{b:g}"]["initial_grad_b"]
        numbers[f"initial_gradient_ratio_from_{w:g}_{b:g}"] = ratio
        numbers[f"sigmoid_derivative_at_start_{w:g}_{b:g}"] = float(losses.sigmoid_derivative(z0))
    axes[0].axhline(0.5, color="#999999", lw=0.8)
    axes[0].set(xlabel=tf("f3.step"), ylabel=tf("f3.output"), title=tf("f3.output_title"))
    axes[1].set(xlabel=tf("f3.step"), ylabel=tf("f3.loss"), title=tf("f3.loss_title"), yscale="log")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=7, loc="lower left")
    figure = save(fig, ctx.out_dir, "03_saturated_neuron")
    hard_mse, hard_ce = numbers["mse_from_2_2"], numbers["cross_entropy_from_2_2"]
    never = t("word.never")
    text = t("e3.text", a0=fmt(hard_ce["a0"]), ce=fmt(hard_ce["steps_to_a_below_half"], never=never),
             ratio=fmt(numbers["initial_gradient_ratio_from_2_2"]), mse=fmt(hard_mse["steps_to_a_below_half"], never=never),
             final=fmt(hard_mse["final_a"]), steps=SATURATED["steps"])
    steps = hard_mse["steps_to_a_below_half"]
    return section("saturated_neuron", t("e3.title"), figures=[figure], text=text,
                   tables=[table(t("e3.table", lr=SATURATED["learning_rate"], steps=SATURATED["steps"]),
                                 [t("col.start"), t("col.loss"), "a₀", t("col.grad_b_start"), t("col.steps_below_half"),
                                  t("col.final_a"), t("col.final_loss")], rows)],
                   numbers=numbers,
                   headline=t("e3.headline" if steps is not None else "e3.headline_never",
                              ce=fmt(hard_ce["steps_to_a_below_half"], never=never), mse=fmt(steps, never=never)))


def surface_curvature(w, b, x, y, loss, h=1e-4):
    """J, |∇J| and the smaller Hessian eigenvalue on a (w, b) grid.

    The gradient is the library's (through :func:`neuron_loss_and_grad_z`); the
    Hessian is its central difference with step `h`, symmetrised.
    """

    def grad(w_, b_):
        g = neuron_loss_and_grad_z(w_ * x + b_, y, loss)[1]
        return g * x, g

    J = neuron_loss_and_grad_z(w * x + b, y, loss)[0]
    gw, gb = grad(w, b)
    gw_wp, gb_wp = grad(w + h, b)
    gw_wm, gb_wm = grad(w - h, b)
    gw_bp, gb_bp = grad(w, b + h)
    gw_bm, gb_bm = grad(w, b - h)
    h_ww, h_bb = (gw_wp - gw_wm) / (2 * h), (gb_bp - gb_bm) / (2 * h)
    h_wb = 0.5 * ((gw_bp - gw_bm) / (2 * h) + (gb_wp - gb_wm) / (2 * h))
    # eigenvalues of [[h_ww, h_wb], [h_wb, h_bb]]
    min_eig = 0.5 * (h_ww + h_bb) - np.sqrt(0.25 * (h_ww - h_bb) ** 2 + h_wb**2)
    return J, np.hypot(gw, gb), min_eig


def loss_surfaces(ctx):
    """4. J(w, b) for both losses with the gradient-descent paths; flat and non-convex regions."""
    t, tf = ctx.t, ctx.tf
    n = 81 if ctx.quick else 161
    w, b = np.meshgrid(np.linspace(-4.0, 4.0, n), np.linspace(-4.0, 4.0, n))
    x, y = SATURATED["x"], SATURATED["y"]
    fig, axes = new_figure(2, width=11.0, height=4.6,
                           layout=dict(left=0.05, right=0.955, bottom=0.105, top=0.9, wspace=0.2))
    numbers, rows, surfaces = {"grid_points": n * n, "grid": "w, b in [-4, 4]"}, [], {}
    for loss, ax in zip(NEURON_LOSSES, axes):
        J, grad_norm, min_eig = surface_curvature(w, b, x, y, loss)
        paths = [train_neuron(w0, b0, loss) for w0, b0 in SATURATED["starts"]]
        surfaces[loss] = (J, paths)
        a = losses.sigmoid(w * x + b)
        negative = min_eig < -1e-8
        plateau = (grad_norm < 1e-2) & (a > 0.5)  # flat while the output is still wrong
        cs = ax.contourf(w, b, J, levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, label=tf(f"f.J_{loss}"))
        if negative.any():
            ax.contourf(w, b, negative.astype(float), levels=[0.5, 1.5], colors="none", hatches=["///"])
            ax.contour(w, b, negative.astype(float), levels=[0.5], colors="white", linewidths=1.0)
        if plateau.any():
            ax.contour(w, b, plateau.astype(float), levels=[0.5], colors="#ff4444", linewidths=1.5)
        for hist, style in zip(paths, ("-", "--")):
            ax.plot(hist["w"], hist["b"], style, color="white", lw=2)
            ax.plot(hist["w"][0], hist["b"][0], "o", color="white", ms=5)
            ax.plot(hist["w"][-1], hist["b"][-1], "x", color="#ff4444", ms=7, mew=2)
        title = tf("f4.convex") if not negative.any() else tf("f4.nonconvex")
        ax.set(xlabel=tf("f.weight_w"), ylabel=tf("f.bias_b"), title=title)
        ax.grid(False)
        numbers[loss] = {"min_hessian_eigenvalue": float(min_eig.min()), "negative_curvature_fraction": float(negative.mean()),
                         "plateau_fraction": float(plateau.mean()), "max_J": float(J.max())}
        rows.append([t(f"loss.{loss}"), float(min_eig.min()), float(negative.mean()), float(plateau.mean())])
    figure = save(fig, ctx.out_dir, "04_loss_surfaces")
    figure_3d = _surfaces_3d(ctx, w, b, surfaces)
    mse, ce = numbers["mse"], numbers["cross_entropy"]
    text = t("e4.text", steps=SATURATED["steps"], ce_eig=fmt(ce["min_hessian_eigenvalue"], 2),
             neg=pct(mse["negative_curvature_fraction"]), mse_eig=fmt(mse["min_hessian_eigenvalue"]),
             plateau=pct(mse["plateau_fraction"]), ce_plateau=pct(ce["plateau_fraction"]))
    return section("loss_surfaces", t("e4.title"), figures=[figure, figure_3d], text=text,
                   tables=[table(t("e4.table", n=n), [t("col.loss"), t("col.min_eigenvalue"), t("col.negative_fraction"),
                                                      t("col.plateau_fraction")], rows)],
                   numbers=numbers,
                   headline=t("e4.headline", ce_eig=fmt(ce["min_hessian_eigenvalue"], 2),
                              neg=pct(mse["negative_curvature_fraction"]), plateau=pct(mse["plateau_fraction"])))


def _surfaces_3d(ctx, w, b, surfaces):
    """The article's picture: each surface J(w, b) in 3-D with its descent paths (``surfaces[loss] = (J, paths)``) on it."""
    tf = ctx.tf
    fig, axes = new_figure(2, width=11.0, height=4.8, subplot_kw={"projection": "3d"},
                           layout=dict(left=0.044, right=0.956, bottom=0.01, top=0.95, wspace=0.22))
    stride = max(1, w.shape[0] // 40)
    for (loss, (J, paths)), ax in zip(surfaces.items(), axes):
        ax.plot_surface(w, b, J, rstride=stride, cstride=stride, cmap="viridis", linewidth=0, alpha=0.75)
        for hist, style in zip(paths, ("-", "--")):
            ax.plot(hist["w"], hist["b"], hist["loss"], style, color="#ff4444", lw=2, zorder=5)
            ax.scatter([hist["w"][0]], [hist["b"][0]], [hist["loss"][0]], color="#ff4444", s=20, depthshade=False)
        ax.set(xlabel=tf("f.weight_w"), ylabel=tf("f.bias_b"), zlabel=tf(f"f.J_{loss}"), title=tf(f"loss.{loss}"))
        ax.view_init(elev=28, azim=-125)
    return save(fig, ctx.out_dir, "04b_loss_surfaces_3d")


def one_parameter(ctx):
    """5. J(w) with b fixed and the article's red dots: successive updates w <- w - eta dJ/dw."""
    t, tf = ctx.t, ctx.tf
    x, y, b, w0, eta, steps = 1.0, 0.0, 0.0, 4.0, 1.0, 10
    grid = np.linspace(-6.0, 6.0, 400)
    fig, axes = new_figure(2, width=11.0, height=3.8,
                           layout=dict(left=0.052, right=0.995, bottom=0.125, top=0.935, wspace=0.1))
    numbers, rows = {"b": b, "w0": w0, "learning_rate": eta, "steps": steps}, []
    for loss, ax in zip(NEURON_LOSSES, axes):
        ax.plot(grid, neuron_loss_and_grad_z(grid * x + b, y, loss)[0], color=COLORS[loss], label=f"J(w), b = {b:g}")
        h = Neuron(w=w0, b=b, loss=loss)
        ws = [w0]
        for _ in range(steps):  # only w moves
            ws.append(ws[-1] - eta * h.loss_and_grads(x, y)[2])
            h.w = ws[-1]
        ws = np.array(ws)
        Js = neuron_loss_and_grad_z(ws * x + b, y, loss)[0]
        ax.plot(ws, Js, "o", color="#e41a1c", ms=6, label=tf("f5.updates", steps=steps, eta=f"{eta:g}"))
        ax.set(xlabel=tf("f.weight_w"), ylabel=tf(f"f.J_{loss}"), title=tf(f"loss.{loss}"))
        ax.legend(loc="upper left")
        numbers[loss] = {"first_step": float(ws[0] - ws[1]), "total_moved": float(ws[0] - ws[-1]),
                         "final_w": float(ws[-1]), "J_start": float(Js[0]), "J_end": float(Js[-1])}
        rows.append([t(f"loss.{loss}"), float(ws[0] - ws[1]), float(ws[0] - ws[-1]), float(Js[0]), float(Js[-1])])
    figure = save(fig, ctx.out_dir, "05_one_parameter")
    mse, ce = numbers["mse"], numbers["cross_entropy"]
    numbers["first_step_ratio"] = mse["first_step"] / ce["first_step"]
    text = t("e5.text", w0=f"{w0:g}", b=f"{b:g}", eta=f"{eta:g}", moved=fmt(ce["total_moved"]), steps=steps,
             J0=fmt(ce["J_start"]), J1=fmt(ce["J_end"]), mse=fmt(mse["total_moved"]), ratio=fmt(numbers["first_step_ratio"]))
    return section("one_parameter", t("e5.title"), figures=[figure], text=text,
                   tables=[table(t("e5.table"), [t("col.loss"), t("col.first_step"), t("col.moved", steps=steps),
                                                 t("col.J_start"), t("col.J_end")], rows)],
                   numbers=numbers,
                   headline=t("e5.headline", steps=steps, ce=fmt(ce["total_moved"]), mse=fmt(mse["total_moved"])))


def information_measures(ctx):
    """6. Self-information, binary entropy (bits), asymmetry of cross-entropy and KL, H(p,q) = H(p) + KL."""
    t, tf = ctx.t, ctx.tf
    probs = np.logspace(-4, 0, 300)
    events = {"exam cancelled": 0.01, "exam as usual": 0.99}
    p = np.array([0.5, 0.25, 0.125, 0.125])
    q = np.array([0.05, 0.15, 0.4, 0.4])
    fig, axes = new_figure(3, width=13.0, height=3.8,
                           layout=dict(left=0.04, right=0.995, bottom=0.135, top=0.88, wspace=0.16))
    axes[0].semilogx(probs, measures.self_information(probs, base=2), color="#1f77b4")
    for name, pe in events.items():
        info = float(measures.self_information(pe, base=2))
        axes[0].plot(pe, info, "o", color="#d62728")
        axes[0].annotate(tf("f6.event", name=tf(f"f6.{name.replace(' ', '_')}"), p=f"{pe:g}", bits=f"{info:.3g}"),
                         (pe, info), textcoords="offset points",
                         xytext=(8, 6) if pe < 0.5 else (-150, 4), fontsize=8)
    axes[0].set(xlabel=tf("f6.probability"), ylabel=tf("f6.self_information"), title=tf("f6.rare"))
    grid = np.linspace(0.0, 1.0, 201)
    binary = measures.entropy(np.stack([grid, 1.0 - grid], axis=-1), base=2)
    axes[1].plot(grid, binary, color="#1f77b4")
    axes[1].set(xlabel=tf("f6.heads"), ylabel=tf("f6.entropy"), title=tf("f6.binary_entropy"))
    H = {"H(p)": measures.entropy(p, base=2), "H(q)": measures.entropy(q, base=2),
         "H(p, q)": measures.cross_entropy(p, q, base=2), "H(q, p)": measures.cross_entropy(q, p, base=2),
         "KL(p‖q)": measures.kl_divergence(p, q, base=2), "KL(q‖p)": measures.kl_divergence(q, p, base=2),
         "JS(p, q)": measures.js_divergence(p, q, base=2)}
    H = {key: float(value) for key, value in H.items()}
    axes[2].bar(list(H), list(H.values()), color=["#888888", "#888888", "#1f77b4", "#1f77b4", "#d62728", "#d62728", "#2ca02c"])
    axes[2].set(ylabel=tf("f6.bits"), title=f"p = {p.tolist()}\nq = {q.tolist()}")
    axes[2].tick_params(axis="x", rotation=45, labelsize=8)
    figure = save(fig, ctx.out_dir, "06_information")
    residual_pq = H["H(p, q)"] - (H["H(p)"] + H["KL(p‖q)"])
    residual_qp = H["H(q, p)"] - (H["H(q)"] + H["KL(q‖p)"])
    numbers = {"self_information_bits": {k: float(measures.self_information(v, base=2)) for k, v in events.items()},
               "binary_entropy_max_bits": float(binary.max()), "binary_entropy_argmax": float(grid[binary.argmax()]),
               "p": p, "q": q, "measures_bits": H,
               "identity_residual_pq": residual_pq, "identity_residual_qp": residual_qp}
    bits = numbers["self_information_bits"]
    text = t("e6.text", cancelled=fmt(bits["exam cancelled"]), usual=fmt(bits["exam as usual"]),
             argmax=fmt(numbers["binary_entropy_argmax"]), max=fmt(numbers["binary_entropy_max_bits"]),
             pq=fmt(H["H(p, q)"]), qp=fmt(H["H(q, p)"]), residual=fmt(residual_pq, 2))
    rows = [[key, value] for key, value in H.items()]
    rows += [["H(p, q) − H(p) − KL(p‖q)", residual_pq], ["H(q, p) − H(q) − KL(q‖p)", residual_qp]]
    return section("information", t("e6.title"), figures=[figure], text=text,
                   tables=[table(t("e6.table"), [t("col.quantity"), t("col.bits")], rows)],
                   numbers=numbers,
                   headline=t("e6.headline", pq=fmt(H["H(p, q)"]), qp=fmt(H["H(q, p)"]), residual=fmt(residual_pq, 2)))


EXPERIMENTS = [sigmoid_and_derivative, gradient_factor, saturated_neuron, loss_surfaces, one_parameter, information_measures]
