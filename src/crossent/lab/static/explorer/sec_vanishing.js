// Section 4: sigma(z), sigma'(z), the two gradients and their ratio at a chosen z.
import { neuronLossAndGradZ, sigmoid, sigmoidDerivative } from "./math.js";
import { showNumber } from "./format.js";
import { axes, clear, pathData, scale, svgElement } from "./draw.js";

export function vanishing(z) {
  const ce = neuronLossAndGradZ(z, 0, "cross_entropy")[1];
  const mse = neuronLossAndGradZ(z, 0, "mse")[1];
  return { sigmoid: sigmoid(z), derivative: sigmoidDerivative(z), ce, mse, ratio: mse / ce };
}

export function mountVanishing(ctx) {
  const byId = (id) => document.getElementById(id);
  const out = (name) => document.querySelector(`[data-testid="${name}"]`);
  byId("vanish-z").addEventListener("input", (e) => ctx.set({ z: Number(e.target.value) }));
  byId("vanish-z-exact").addEventListener("change", (e) => {
    const z = Number(e.target.value);
    if (e.target.value !== "" && Number.isFinite(z)) ctx.set({ z: Math.min(50, Math.max(-50, z)) });
  });
  const zs = Array.from({ length: 241 }, (_, i) => -12 + i * 0.1);

  return function render(state) {
    const { z } = state;
    byId("vanish-z").value = String(z);
    if (document.activeElement !== byId("vanish-z-exact")) byId("vanish-z-exact").value = String(z);
    const v = vanishing(z);
    showNumber(out("vanish-sigmoid"), v.sigmoid);
    showNumber(out("vanish-derivative"), v.derivative);
    showNumber(out("vanish-ce-grad"), v.ce);
    showNumber(out("vanish-mse-grad"), v.mse);
    showNumber(out("vanish-ratio"), v.ratio);
    const svg = byId("vanish-chart");
    clear(svg);
    const m = { left: 40, right: 10, top: 14, bottom: 22 };
    const x = scale(-12, 12, m.left, 630);
    const y = scale(0, 1, 178, m.top);
    axes(svg, { x: { scale: x, ticks: [-12, -6, 0, 6, 12] }, y: { scale: y, ticks: [0, 0.25, 0.5, 1] }, width: 640, height: 200, margin: m });
    svgElement("path", { d: pathData(zs, zs.map(sigmoid), x, y), fill: "none", stroke: "#1f77b4", "stroke-width": 2 }, svg);
    svgElement("path", { d: pathData(zs, zs.map(sigmoidDerivative), x, y), fill: "none", stroke: "#d62728", "stroke-width": 2 }, svg);
    const shown = Math.min(12, Math.max(-12, z));
    svgElement("line", { x1: x(shown), x2: x(shown), y1: y(0), y2: y(1), stroke: "#444" }, svg);
    svgElement("circle", { cx: x(shown), cy: y(sigmoidDerivative(shown)), r: 4, fill: "#d62728" }, svg);
    svgElement("text", { x: x(-11.5), y: y(0.9) }, svg).textContent = "σ(z)";
    svgElement("text", { x: x(1), y: y(0.3), fill: "#d62728" }, svg).textContent = "σ′(z)";
  };
}
