// The state of every control, kept in the address's fragment (#lang=zh&p=0.5,0.5&...) so that a view
// can be shared.  parseState never trusts the address: each value is checked and clamped, and a bad one
// falls back to its default.

export const DEFAULTS = {
  lang: "en", unit: "bits",
  p: [0.5, 0.25, 0.125, 0.125], q: [0.25, 0.25, 0.25, 0.25], draws: 0,
  w: 2, b: 2, eta: 0.15, nielsen: false, t: 300,
  z: 5,
  logits: [2.5, -1, 3.2, 0.5], T: 1, target: 2,
  calT: 1,
  margin: 10, hz: -1,
};

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

function number(text, lo, hi, fallback) {
  const v = Number(text);
  return text !== null && text !== "" && Number.isFinite(v) ? clamp(v, lo, hi) : fallback;
}

// Numbers separated by commas; a blank entry ("1,,2", a trailing comma) makes the list garbage, not a 0.
function numbers(text) {
  const parts = String(text || "").split(",");
  return parts.some((x) => x.trim() === "") ? [] : parts.map(Number);
}

function distribution(text, fallback) {
  const v = numbers(text);
  if (v.length < 2 || v.length > 8 || v.some((x) => !Number.isFinite(x) || x < 0)) return fallback;
  const total = v.reduce((a, x) => a + x, 0);
  // already a distribution up to rounding (the page's own, from a shared link): kept bit for bit
  if (Math.abs(total - 1) <= 4 * v.length * Number.EPSILON) return v;
  // huge weights (1e308, 1e308) overflow their sum to ∞: then divide by the largest first
  const scaled = Number.isFinite(total) ? v : v.map((x) => x / Math.max(...v));
  const sum = scaled.reduce((a, x) => a + x, 0);
  return sum > 0 ? scaled.map((x) => x / sum) : fallback;
}

// The state described by a fragment such as "#lang=zh&w=1.5" (missing keys take their defaults).
export function parseState(hash) {
  const s = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const d = DEFAULTS;
  let p = distribution(s.get("p"), d.p);
  let q = distribution(s.get("q"), d.q);
  if (p.length !== q.length) { p = d.p; q = d.q; }
  const logits = numbers(s.get("logits"));
  return {
    lang: s.get("lang") === "zh" ? "zh" : "en",
    unit: s.get("unit") === "nats" ? "nats" : "bits",
    p, q, draws: Math.round(number(s.get("draws"), 0, 100000, d.draws)),
    w: number(s.get("w"), -4, 4, d.w), b: number(s.get("b"), -4, 4, d.b),
    eta: number(s.get("eta"), 0.005, 2, d.eta), nielsen: s.get("nielsen") === "1",
    t: Math.round(number(s.get("t"), 0, 300, d.t)),
    z: number(s.get("z"), -50, 50, d.z),
    logits: logits.length === 4 && logits.every(Number.isFinite) ? logits.map((v) => clamp(v, -10, 10)) : d.logits,
    T: number(s.get("T"), 0.05, 10, d.T), target: Math.round(number(s.get("target"), 0, 3, d.target)),
    calT: number(s.get("calT"), 0.05, 10, d.calT),
    margin: number(s.get("margin"), 0, 40, d.margin), hz: number(s.get("hz"), -10, 10, d.hz),
  };
}

// The fragment for `state`: only the values that differ from the defaults, full float64 digits.
export function formatState(state) {
  const s = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    const text = Array.isArray(value) ? value.join(",") : typeof value === "boolean" ? (value ? "1" : "0") : String(value);
    const fallback = DEFAULTS[key];
    const base = Array.isArray(fallback) ? fallback.join(",") : typeof fallback === "boolean" ? (fallback ? "1" : "0") : String(fallback);
    if (text !== base) s.set(key, text);
  }
  const text = s.toString();
  return text ? "#" + text : "";
}
