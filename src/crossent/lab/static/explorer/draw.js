// Small SVG and canvas helpers: no library, just elements and linear scales.

const NS = "http://www.w3.org/2000/svg";

export function svgElement(tag, attrs = {}, parent = null) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (parent) parent.appendChild(el);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

// A linear map from [d0, d1] to [r0, r1].
export function scale(d0, d1, r0, r1) {
  const f = (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
  f.invert = (r) => d0 + ((r - r0) / (r1 - r0)) * (d1 - d0);
  return f;
}

// An SVG path through the points (xs[i], ys[i]) after the scales; non-finite points break the line.
export function pathData(xs, ys, sx, sy) {
  let d = "";
  let pen = false;
  for (let i = 0; i < xs.length; i++) {
    const x = sx(xs[i]);
    const y = sy(ys[i]);
    if (!Number.isFinite(x) || !Number.isFinite(y)) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${x.toFixed(2)},${y.toFixed(2)}`;
    pen = true;
  }
  return d;
}

// Axes with a few ticks: `x` and `y` are {scale, ticks, label, format}.
export function axes(svg, { x, y, width, height, margin }) {
  const g = svgElement("g", { class: "axes" }, svg);
  svgElement("line", { x1: margin.left, x2: width - margin.right, y1: height - margin.bottom, y2: height - margin.bottom }, g);
  svgElement("line", { x1: margin.left, x2: margin.left, y1: margin.top, y2: height - margin.bottom }, g);
  for (const t of x.ticks) {
    const text = svgElement("text", { x: x.scale(t), y: height - margin.bottom + 14, "text-anchor": "middle" }, g);
    text.textContent = x.format ? x.format(t) : String(t);
  }
  for (const t of y.ticks) {
    const text = svgElement("text", { x: margin.left - 4, y: y.scale(t) + 4, "text-anchor": "end" }, g);
    text.textContent = y.format ? y.format(t) : String(t);
  }
  if (x.label) svgElement("text", { x: (margin.left + width - margin.right) / 2, y: height - 2, "text-anchor": "middle" }, g).textContent = x.label;
  if (y.label) svgElement("text", { x: 10, y: margin.top - 6, "text-anchor": "start" }, g).textContent = y.label;
  return g;
}

// A viridis-like colour for t in [0, 1], as [r, g, b].
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
export function colormap(t) {
  const u = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(u));
  const f = u - i;
  return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
}
