// Section 1: p and q as draggable bars, every measure live, presets, and the sampling view.
import { informationMeasures, samplingRun, setProbability } from "./math.js";
import { showNumber } from "./format.js";
import { axes, clear, pathData, scale, svgElement } from "./draw.js";

export const PRESETS = {
  coin: { p: [0.5, 0.5], q: [0.9, 0.1] },
  readme: { p: [0.5, 0.25, 0.125, 0.125], q: [0.25, 0.25, 0.25, 0.25] },
  lab: { p: [0.5, 0.25, 0.125, 0.125], q: [0.05, 0.15, 0.4, 0.4] },
  zero: { p: [0.2, 0.3, 0.5], q: [0.5, 0.5, 0] },
};
const SEED = 1;
const SUBSCRIPTS = "₁₂₃₄₅₆₇₈";
const W = 320;
const H = 130;
const M = { left: 30, right: 6, top: 8, bottom: 22 };

// n outcomes: p uniform, q proportional to 1 / (i + 1), so that the two differ.
export function resized(n) {
  const q = Array.from({ length: n }, (_, i) => 1 / (i + 1));
  const s = q.reduce((a, v) => a + v, 0);
  return { p: Array(n).fill(1 / n), q: q.map((v) => v / s) };
}

export function mountInformation(ctx) {
  const byId = (id) => document.getElementById(id);
  const out = (name) => document.querySelector(`[data-testid="${name}"]`);
  const sx = (n) => scale(0, n, M.left, W - M.right);
  const sy = scale(0, 1, H - M.bottom, M.top);

  byId("info-n").addEventListener("change", (e) => {
    const n = Math.round(Number(e.target.value));
    if (n >= 2 && n <= 8 && n !== ctx.state().p.length) ctx.set({ ...resized(n), draws: 0 });
  });
  for (const [name, preset] of Object.entries(PRESETS)) {
    byId(`preset-${name}`).addEventListener("click", () => ctx.set({ p: preset.p.slice(), q: preset.q.slice(), draws: 0 }));
  }
  const draw = (k) => () => ctx.set({ draws: Math.min(100000, ctx.state().draws + k) });
  byId("draw-1").addEventListener("click", draw(1));
  byId("draw-100").addEventListener("click", draw(100));
  byId("draw-1000").addEventListener("click", draw(1000));
  byId("draw-reset").addEventListener("click", () => ctx.set({ draws: 0 }));

  // dragging a bar sets that outcome's probability to the pointer's height
  for (const key of ["p", "q"]) {
    const svg = byId(`bars-${key}`);
    const at = (event) => {
      const box = svg.getBoundingClientRect();
      const x = ((event.clientX - box.left) / box.width) * W;
      const y = ((event.clientY - box.top) / box.height) * H;
      const n = ctx.state()[key].length;
      const i = Math.min(n - 1, Math.max(0, Math.floor(sx(n).invert(x))));
      const value = Math.round(Math.min(1, Math.max(0, sy.invert(y))) * 100) / 100;
      ctx.set({ [key]: setProbability(ctx.state()[key], i, value), draws: 0 });
    };
    svg.addEventListener("pointerdown", (e) => { svg.setPointerCapture(e.pointerId); at(e); });
    svg.addEventListener("pointermove", (e) => { if (svg.hasPointerCapture(e.pointerId)) at(e); });
  }

  function sliders(key, values) {
    const box = byId(`sliders-${key}`);
    if (box.childElementCount !== values.length * 3) {
      clear(box);
      values.forEach((_, i) => {
        const id = `${key}-${i}`;
        const label = document.createElement("label");
        label.htmlFor = id;
        label.textContent = key + SUBSCRIPTS[i];
        const input = Object.assign(document.createElement("input"), { type: "range", id, min: 0, max: 1, step: 0.01 });
        input.addEventListener("input", () => ctx.set({ [key]: setProbability(ctx.state()[key], i, Number(input.value)), draws: 0 }));
        const output = document.createElement("output");
        output.dataset.testid = `info-${key}-${i}`;
        box.append(label, input, output);
      });
    }
    values.forEach((v, i) => {
      const input = byId(`${key}-${i}`);
      if (Math.abs(Number(input.value) - v) > 0.005) input.value = String(v);
      showNumber(out(`info-${key}-${i}`), v, 3);
    });
  }

  function bars(key, values) {
    const svg = byId(`bars-${key}`);
    clear(svg);
    const x = sx(values.length);
    axes(svg, { x: { scale: (i) => x(i + 0.5), ticks: values.map((_, i) => i), format: (i) => SUBSCRIPTS[i].normalize("NFKC") },
      y: { scale: sy, ticks: [0, 0.5, 1] }, width: W, height: H, margin: M });
    values.forEach((v, i) => {
      svgElement("rect", { x: x(i) + 3, width: x(i + 1) - x(i) - 6, y: sy(v), height: sy(0) - sy(v),
        fill: key === "p" ? "#1f77b4" : "#ff7f0e" }, svg);
    });
  }

  function samplingChart(means, target, unit) {
    const svg = byId("sampling-chart");
    clear(svg);
    const w = 640;
    const h = 200;
    const m = { left: 40, right: 10, top: 14, bottom: 22 };
    const n = Math.max(means.length, 10);
    const finite = means.filter(Number.isFinite);
    const top = Math.max(1, ...(Number.isFinite(target) ? [target * 1.5] : []), ...finite.slice(Math.min(5, finite.length)));
    const x = scale(1, n, m.left, w - m.right);
    const y = scale(0, top, h - m.bottom, m.top);
    axes(svg, { x: { scale: x, ticks: [1, n] }, y: { scale: y, ticks: [0, +(top / 2).toPrecision(2), +top.toPrecision(2)], label: unit },
      width: w, height: h, margin: m });
    if (Number.isFinite(target)) {
      svgElement("line", { x1: x(1), x2: x(n), y1: y(target), y2: y(target), stroke: "#1f77b4", "stroke-dasharray": "5 4" }, svg);
    }
    const every = Math.max(1, Math.floor(means.length / 600));
    const xs = [];
    const ys = [];
    for (let i = 0; i < means.length; i += every) { xs.push(i + 1); ys.push(Math.min(means[i], top)); }
    svgElement("path", { d: pathData(xs, ys, x, y), fill: "none", stroke: "#444", "stroke-width": 1.5 }, svg);
  }

  return function render(state) {
    const { p, q, unit } = state;
    byId("info-n").value = String(p.length);
    sliders("p", p);
    sliders("q", q);
    bars("p", p);
    bars("q", q);
    const v = informationMeasures(p, q, unit);
    for (const key of ["Hp", "Hq", "Hpq", "Hqp", "KLpq", "KLqp", "JS"]) showNumber(out(`info-${key}`), v[key]);
    const residual = Number.isFinite(v.Hpq) ? v.Hpq - v.Hp - v.KLpq : NaN;
    showNumber(out("info-identity"), residual, 2);
    byId("info-infinite").hidden = Number.isFinite(v.Hpq) && Number.isFinite(v.Hqp);
    const means = samplingRun(p, q, state.draws, SEED, unit);
    showNumber(out("info-draws"), state.draws);
    showNumber(out("info-running-mean"), means.length ? means[means.length - 1] : NaN);
    samplingChart(means, v.Hpq, unit);
  };
}
