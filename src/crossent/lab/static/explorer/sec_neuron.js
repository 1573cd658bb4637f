// Sections 2 and 3: the saturated neuron's race, and the loss surfaces it runs on (same start, same η).
import { stepsUntilBelow, surfaceGrid, surfacePoint, trainNeuron } from "./math.js";
import { showNumber } from "./format.js";
import { axes, clear, colormap, pathData, scale, svgElement } from "./draw.js";

const STEPS = 300;
const PLAY_MS = 3000; // Play shows the 300 steps in 3 s
const COLORS = { mse: "#d62728", cross_entropy: "#1f77b4", nielsen: "#9467bd" };
const round1 = (v) => Math.round(v * 10) / 10;
const clamp4 = (v) => Math.min(4, Math.max(-4, v));

// The step Play shows `elapsed` ms after its first frame: 0 to STEPS whatever the clock gives (never a
// negative step or one past the race, which have no values to show).
export function playedStep(elapsed) {
  return Math.min(STEPS, Math.max(0, Math.round((elapsed / PLAY_MS) * STEPS)));
}

// Both races of the state: MSE and cross-entropy (Nielsen's rule if switched on), and the true-gradient
// cross-entropy run at the same η for the comparison under Nielsen's picture.
export function races(state) {
  const common = { w: state.w, b: state.b, eta: state.eta, steps: STEPS };
  const mse = trainNeuron({ ...common, loss: "mse" });
  const trueCe = trainNeuron({ ...common, loss: "cross_entropy" });
  const ce = state.nielsen ? trainNeuron({ ...common, loss: "cross_entropy", rule: "nielsen" }) : trueCe;
  return { mse, ce, trueCe };
}

function surfaceImage(grid) {
  const { n, J, negative, plateau } = grid;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of J) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const image = new ImageData(2 * n, 2 * n);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      const k = r * n + c;
      let rgb = colormap((J[k] - lo) / (hi - lo));
      if (negative[k] && (r + c) % 6 < 2) rgb = rgb.map((v) => Math.round(v + 0.6 * (255 - v))); // hatching
      if (plateau[k]) rgb = [Math.round(0.45 * rgb[0] + 0.55 * 255), Math.round(0.45 * rgb[1] + 0.55 * 40), Math.round(0.45 * rgb[2] + 0.55 * 40)];
      for (let dy = 0; dy < 2; dy++) {
        for (let dx = 0; dx < 2; dx++) {
          const i = 4 * ((2 * (n - 1 - r) + dy) * 2 * n + 2 * c + dx); // b grows upwards
          image.data.set([rgb[0], rgb[1], rgb[2], 255], i);
        }
      }
    }
  }
  return image;
}

export function mountNeuron(ctx) {
  const byId = (id) => document.getElementById(id);
  const out = (name) => document.querySelector(`[data-testid="${name}"]`);
  const grids = { mse: surfaceGrid({ loss: "mse" }), cross_entropy: surfaceGrid({ loss: "cross_entropy" }) };
  const images = { mse: surfaceImage(grids.mse), cross_entropy: surfaceImage(grids.cross_entropy) };
  let playing = null;

  for (const [id, key] of [["neuron-w", "w"], ["neuron-b", "b"], ["neuron-eta", "eta"], ["neuron-t", "t"]]) {
    byId(id).addEventListener("input", (e) => ctx.set({ [key]: Number(e.target.value) }));
  }
  byId("neuron-nielsen").addEventListener("change", (e) => ctx.set({ nielsen: e.target.checked }));
  byId("neuron-nielsen-preset").addEventListener("click", () => ctx.set({ nielsen: true, eta: 0.005, w: 2, b: 2 }));
  byId("neuron-play").addEventListener("click", () => {
    if (playing) cancelAnimationFrame(playing);
    // one clock: the frames' own timestamps (the first frame's can precede performance.now() here)
    let start = null;
    const frame = (now) => {
      start ??= now;
      const t = playedStep(now - start);
      ctx.set({ t });
      playing = t < STEPS ? requestAnimationFrame(frame) : null;
    };
    playing = requestAnimationFrame(frame);
  });

  for (const [loss, id] of [["mse", "surface-mse"], ["cross_entropy", "surface-ce"]]) {
    const canvas = byId(id);
    const n = grids[loss].n;
    canvas.addEventListener("click", (e) => {
      const box = canvas.getBoundingClientRect();
      const w = -4 + (8 * (e.clientX - box.left)) / box.width;
      const b = 4 - (8 * (e.clientY - box.top)) / box.height;
      ctx.set({ w: clamp4(round1(w)), b: clamp4(round1(b)), t: STEPS });
    });
    canvas.addEventListener("keydown", (e) => {
      const moves = { ArrowLeft: [-0.1, 0], ArrowRight: [0.1, 0], ArrowUp: [0, 0.1], ArrowDown: [0, -0.1] };
      if (!(e.key in moves)) return;
      e.preventDefault();
      const s = ctx.state();
      ctx.set({ w: clamp4(round1(s.w + moves[e.key][0])), b: clamp4(round1(s.b + moves[e.key][1])), t: STEPS });
    });
    canvas.width = 2 * n;
    canvas.height = 2 * n;
  }

  function raceChart(r, state) {
    const svg = byId("race-chart");
    clear(svg);
    const W = 640;
    const H = 220;
    const m = { left: 40, right: 10, top: 14, bottom: 24 };
    const x = scale(0, STEPS, m.left, W - m.right);
    const y = scale(0, 1, H - m.bottom, m.top);
    axes(svg, { x: { scale: x, ticks: [0, 100, 200, 300] }, y: { scale: y, ticks: [0, 0.5, 1], label: "a" }, width: W, height: H, margin: m });
    svgElement("line", { x1: x(0), x2: x(STEPS), y1: y(0.5), y2: y(0.5), stroke: "#bbb", "stroke-dasharray": "4 4" }, svg);
    const steps = Array.from({ length: STEPS + 1 }, (_, i) => i);
    const lines = [["mse", r.mse], [state.nielsen ? "nielsen" : "cross_entropy", r.ce]];
    if (state.nielsen) lines.push(["cross_entropy", r.trueCe]);
    for (const [name, h] of lines) {
      svgElement("path", { d: pathData(steps, h.a, x, y), fill: "none", stroke: COLORS[name], "stroke-width": 2,
        "stroke-dasharray": name === "cross_entropy" && state.nielsen ? "6 4" : "none" }, svg);
      const k = stepsUntilBelow(h.a);
      if (k !== null) svgElement("circle", { cx: x(k), cy: y(h.a[k]), r: 4, fill: COLORS[name] }, svg);
    }
    const legend = [["mse", "name_mse"], [state.nielsen ? "nielsen" : "cross_entropy", state.nielsen ? "name_nielsen" : "name_ce"]];
    legend.forEach(([name, key], i) => {
      svgElement("text", { x: W - m.right - 4, y: m.top + 12 + 14 * i, "text-anchor": "end", fill: COLORS[name] }, svg).textContent = ctx.t(key);
    });
    svgElement("line", { x1: x(state.t), x2: x(state.t), y1: y(0), y2: y(1), stroke: "#444" }, svg);
  }

  function surface(loss, id, h, t) {
    const canvas = byId(id);
    const g = canvas.getContext("2d");
    g.putImageData(images[loss], 0, 0);
    const n = grids[loss].n;
    const px = scale(-4, 4, 1, 2 * n - 1);
    const py = scale(-4, 4, 2 * n - 1, 1);
    g.strokeStyle = "#fff";
    g.lineWidth = 2;
    g.beginPath();
    for (let i = 0; i <= t; i++) (i ? g.lineTo(px(h.w[i]), py(h.b[i])) : g.moveTo(px(h.w[i]), py(h.b[i]))); // up to the shown step
    g.stroke();
    g.fillStyle = "#fff";
    g.beginPath();
    g.arc(px(h.w[0]), py(h.b[0]), 4, 0, 2 * Math.PI);
    g.fill();
  }

  return function render(state) {
    for (const [id, key] of [["neuron-w", "w"], ["neuron-b", "b"], ["neuron-eta", "eta"], ["neuron-t", "t"]]) {
      byId(id).value = String(state[key]);
      showNumber(out(id), state[key], 3);
    }
    byId("neuron-nielsen").checked = state.nielsen;
    const r = races(state);
    for (const [name, h] of [["mse", r.mse], ["ce", r.ce]]) {
      showNumber(out(`neuron-${name}-a`), h.a[state.t]);
      showNumber(out(`neuron-${name}-loss`), h.loss[state.t]);
      const k = stepsUntilBelow(h.a);
      showNumber(out(`neuron-${name}-steps`), k, 4, k === null ? ctx.t("never") : null);
    }
    byId("neuron-ce-name").textContent = ctx.t(state.nielsen ? "name_nielsen" : "name_ce");
    byId("neuron-ce-name").dataset.i18n = state.nielsen ? "name_nielsen" : "name_ce";
    byId("nielsen-note").hidden = !state.nielsen;
    showNumber(out("neuron-true-final"), r.trueCe.a[STEPS]);
    raceChart(r, state);
    surface("mse", "surface-mse", r.mse, state.t);
    surface("cross_entropy", "surface-ce", state.nielsen ? r.trueCe : r.ce, state.t);
    for (const [name, loss] of [["mse", "mse"], ["ce", "cross_entropy"]]) {
      showNumber(out(`surface-${name}-negative`), grids[loss].negativeFraction);
      showNumber(out(`surface-${name}-plateau`), grids[loss].plateauFraction);
      showNumber(out(`surface-${name}-J`), surfacePoint(state.w, state.b, 1, 0, loss).J);
    }
  };
}
