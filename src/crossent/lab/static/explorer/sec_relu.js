// Section 7: the push back a confidently wrong output gets under each output/loss pair, and the factor a
// hidden unit (sigmoid, tanh, ReLU) passes back.
import { HEADS, hiddenFactor, wrongStartGradients } from "./math.js";
import { showNumber } from "./format.js";
import { clear, scale, svgElement } from "./draw.js";

const COLORS = { softmax_ce: "#1f77b4", sigmoid_bce: "#17becf", softmax_mse: "#ff7f0e", sigmoid_mse: "#d62728", linear_mse: "#7f7f7f" };

export function mountRelu(ctx) {
  const byId = (id) => document.getElementById(id);
  const out = (name) => document.querySelector(`[data-testid="${name}"]`);
  byId("relu-margin").addEventListener("input", (e) => ctx.set({ margin: Number(e.target.value) }));
  byId("relu-hz").addEventListener("input", (e) => ctx.set({ hz: Number(e.target.value) }));
  const table = byId("relu-table");
  for (const head of HEADS) {
    const row = table.insertRow();
    const th = document.createElement("th");
    th.dataset.i18n = `head_${head}`;
    row.append(th);
    const output = document.createElement("output");
    output.dataset.testid = `relu-grad-${head}`;
    row.insertCell().append(output);
  }

  return function render(state) {
    byId("relu-margin").value = String(state.margin);
    showNumber(out("relu-margin"), state.margin, 3);
    byId("relu-hz").value = String(state.hz);
    showNumber(out("relu-hz"), state.hz, 3);
    const g = wrongStartGradients(state.margin);
    for (const head of HEADS) showNumber(out(`relu-grad-${head}`), g[head]);
    for (const hidden of ["sigmoid", "tanh", "relu"]) showNumber(out(`relu-hidden-${hidden}`), hiddenFactor(state.hz, hidden));
    const svg = byId("relu-chart");
    clear(svg);
    // log scale from 1e-18 to 10
    const x = scale(-18, 1, 230, 630);
    const rowH = 200 / HEADS.length;
    for (const e of [-18, -12, -6, 0]) {
      svgElement("line", { x1: x(e), x2: x(e), y1: 0, y2: 190, stroke: "#ddd" }, svg);
      svgElement("text", { x: x(e), y: 198, "text-anchor": "middle" }, svg).textContent = `1e${e}`;
    }
    HEADS.forEach((head, i) => {
      const v = g[head];
      const e = v > 0 ? Math.max(-18, Math.log10(v)) : -18;
      svgElement("rect", { x: x(-18), y: i * rowH + 6, width: x(e) - x(-18), height: rowH - 14, fill: COLORS[head] }, svg);
      svgElement("text", { x: 224, y: i * rowH + rowH / 2 + 2, "text-anchor": "end" }, svg).textContent = ctx.t(`head_${head}`);
    });
  };
}
