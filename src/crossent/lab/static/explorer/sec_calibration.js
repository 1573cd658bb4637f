// Section 6: the lab's digits model, its reliability diagram, ECE and NLL under a temperature.
import { calibration } from "./math.js";
import { showNumber } from "./format.js";
import { axes, clear, scale, svgElement } from "./draw.js";

export function mountCalibration(ctx) {
  const byId = (id) => document.getElementById(id);
  const out = (name) => document.querySelector(`[data-testid="${name}"]`);
  const { logits, labels, lab } = ctx.data.calibration;
  byId("calib-T").addEventListener("input", (e) => ctx.set({ calT: Number(e.target.value) }));
  byId("calib-reset").addEventListener("click", () => ctx.set({ calT: 1 }));

  return function render(state) {
    byId("calib-T").value = String(state.calT);
    showNumber(out("calib-T"), state.calT, 3);
    const c = calibration(logits, labels, state.calT);
    showNumber(out("calib-ece"), c.ece);
    showNumber(out("calib-nll"), c.nll);
    showNumber(out("calib-accuracy"), c.accuracyTotal);
    showNumber(out("calib-lab-ece"), lab.ece);
    const svg = byId("calib-chart");
    clear(svg);
    const m = { left: 36, right: 10, top: 16, bottom: 34 };
    const x = scale(0, 1, m.left, 350);
    const y = scale(0, 1, 320 - m.bottom, m.top);
    axes(svg, { x: { scale: x, ticks: [0, 0.5, 1], label: ctx.t("conf_axis") },
      y: { scale: y, ticks: [0, 0.5, 1], label: ctx.t("v_accuracy") }, width: 360, height: 320, margin: m });
    svgElement("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: "#888", "stroke-dasharray": "4 4" }, svg);
    c.count.forEach((n, k) => {
      if (!n) return;
      const x0 = x(c.edges[k]) + 1;
      const width = x(c.edges[k + 1]) - x(c.edges[k]) - 2;
      svgElement("rect", { x: x0, width, y: y(c.accuracy[k]), height: y(0) - y(c.accuracy[k]), fill: "#1f77b4", opacity: 0.75 }, svg);
      svgElement("rect", { x: x0, width, y: y(Math.max(c.accuracy[k], c.confidence[k])),
        height: Math.abs(y(c.accuracy[k]) - y(c.confidence[k])), fill: "#d62728", opacity: 0.35 }, svg);
      svgElement("text", { x: x0 + width / 2, y: y(c.accuracy[k]) - 3, "text-anchor": "middle" }, svg).textContent = String(n);
    });
  };
}
