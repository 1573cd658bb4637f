// The explorer's numbers: pure float64 functions, no DOM.  Each one mirrors a function of crossent
// (named in its comment) and is tested against that function's output in tests/js/math.test.mjs.

// ------------------------------------------------------------------ information measures (crossent.measures)

// nats -> the unit: "nats" leaves the value, "bits" divides by ln 2 (crossent's base=2).
export function toUnit(nats, unit) {
  return unit === "bits" ? nats / Math.LN2 : nats;
}

// H(p) = -sum p log p, with 0 log 0 = 0 (scipy's entr).
export function entropy(p, unit = "nats") {
  let total = 0;
  for (const pi of p) if (pi > 0) total -= pi * Math.log(pi);
  return toUnit(total, unit) + 0;
}

// H(p, q) = -sum p log q; a term with p = 0 is 0, one with p > 0 and q = 0 is +inf (scipy's xlogy).
export function crossEntropy(p, q, unit = "nats") {
  let total = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) continue;
    if (q[i] === 0) return Infinity;
    total -= p[i] * Math.log(q[i]);
  }
  return toUnit(total, unit) + 0;
}

// D(p || q) = sum p log(p / q) >= 0 (scipy's rel_entr; clipped at 0 like crossent).
export function klDivergence(p, q, unit = "nats") {
  let total = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) continue;
    if (q[i] === 0) return Infinity;
    // log(p/q), or log p - log q where the quotient overflows (a subnormal q) or underflows to 0
    const ratio = p[i] / q[i];
    total += p[i] * (ratio > 0 && ratio < Infinity ? Math.log(ratio) : Math.log(p[i]) - Math.log(q[i]));
  }
  return toUnit(Math.max(total, 0), unit) + 0;
}

// JS(p, q) = (D(p || m) + D(q || m)) / 2 with m = (p + q) / 2, each term x log(2x / (p + q)):
// 2x / (p + q) lies in [0, 2], so no subnormal m rounds to 0 (crossent.measures.js_divergence).
export function jsDivergence(p, q, unit = "nats") {
  let a = 0;
  let b = 0;
  for (let i = 0; i < p.length; i++) {
    const total = p[i] + q[i];
    if (p[i] > 0) a += p[i] * Math.log((2 * p[i]) / total);
    if (q[i] > 0) b += q[i] * Math.log((2 * q[i]) / total);
  }
  return toUnit(Math.max(0.5 * (a + b), 0), unit) + 0;
}

// -log p (crossent.measures.self_information); +inf at p = 0.
export function selfInformation(p, unit = "nats") {
  return p > 0 ? toUnit(0 - Math.log(p), unit) + 0 : Infinity;
}

// Every measure of section 1 at once.
export function informationMeasures(p, q, unit = "nats") {
  return {
    Hp: entropy(p, unit), Hq: entropy(q, unit),
    Hpq: crossEntropy(p, q, unit), Hqp: crossEntropy(q, p, unit),
    KLpq: klDivergence(p, q, unit), KLqp: klDivergence(q, p, unit),
    JS: jsDivergence(p, q, unit),
  };
}

// Set p[i] to `value` in [0, 1] and scale the others so that the sum stays 1
// (shared equally when the others are all 0).
export function setProbability(p, i, value) {
  const v = Math.min(1, Math.max(0, value));
  const rest = p.reduce((s, x, j) => (j === i ? s : s + x), 0);
  const out = p.map((x, j) => {
    if (j === i) return v;
    return rest > 0 ? (x * (1 - v)) / rest : (1 - v) / (p.length - 1);
  });
  const sum = out.reduce((s, x) => s + x, 0);
  return out.map((x) => x / sum);
}

// A small seeded generator (mulberry32): the sampling view draws the same outcomes for the same seed.
export function randomGenerator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Draw `n` outcomes from p; return the running mean of -log q(x) after each draw (converges to H(p, q)).
export function samplingRun(p, q, n, seed, unit = "nats") {
  const next = randomGenerator(seed);
  const means = [];
  let total = 0;
  for (let k = 1; k <= n; k++) {
    const u = next();
    let i = 0;
    let c = p[0];
    while (u >= c && i < p.length - 1) c += p[++i];
    while (p[i] === 0 && i > 0) i--; // rounding at the top end: never draw an impossible outcome
    total += selfInformation(q[i], unit);
    means.push(total / k);
  }
  return means;
}

// ------------------------------------------------------------------ the sigmoid (crossent.losses.activations)

// sigma(z) as scipy's expit: exp never overflows on either side.
export function sigmoid(z) {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

// sigma'(z) = sigma(z) sigma(-z): 1 - sigma(z) would cancel to 0 at z = 40 (crossent.sigmoid_derivative).
export function sigmoidDerivative(z) {
  return sigmoid(z) * sigmoid(-z);
}

// log sigma(z) (scipy's log_expit): exact for any finite z.
export function logSigmoid(z) {
  return z < 0 ? z - Math.log1p(Math.exp(z)) : -Math.log1p(Math.exp(-z));
}

// ------------------------------------------------------------------ one neuron (crossent.lab.models)

// [loss, dL/dz] of a sigmoid neuron at pre-activation z with target y (neuron_loss_and_grad_z).
// "mse": L = (a - y)^2 / 2, dL/dz = (a - y) sigma'(z); "cross_entropy": the logit form, dL/dz = a - y.
export function neuronLossAndGradZ(z, y, loss) {
  if (loss === "mse") {
    const d = sigmoid(z) - y;
    return [0.5 * (d * d), 0.5 * (2 * d) * sigmoidDerivative(z)];
  }
  const value = 0 - (y * logSigmoid(z) + (1 - y) * logSigmoid(-z));
  return [value, (1 - y) * sigmoid(z) - y * sigmoid(-z)];
}

// Nielsen's chapter-3 animation steps by dC/da = (a - y) / (a (1 - a)) = (a - y) / sigma'(z), which for the
// page's y = 0 is 1 / (1 - a) = 1 / sigma(-z), where the true gradient dC/dz is a: it divides by sigma'(z)
// a second time.  1 / sigma(-z) stays finite (1 + e^z) where 1 - a rounds to 0.
export function nielsenGradZ(z) {
  return 1 / sigmoid(-z);
}

// Gradient descent on one neuron (Neuron.train): one row per step, the state before each update, then
// the final state.  `rule` "true" uses dL/dz, "nielsen" uses nielsenGradZ (cross-entropy loss only).
export function trainNeuron({ w, b, x = 1, y = 0, eta, steps, loss, rule = "true" }) {
  const h = { w: [], b: [], a: [], loss: [], gradB: [] };
  for (let step = 0; step <= steps; step++) {
    const z = w * x + b;
    const [value, g] = neuronLossAndGradZ(z, y, loss);
    const gz = rule === "nielsen" ? nielsenGradZ(z) : g;
    h.w.push(w); h.b.push(b); h.a.push(sigmoid(z)); h.loss.push(value); h.gradB.push(gz);
    if (step < steps) {
      w -= eta * (gz * x);
      b -= eta * gz;
    }
  }
  return h;
}

// The first step at which the output is below `threshold`, or null (experiments_neuron._steps_until).
export function stepsUntilBelow(values, threshold = 0.5) {
  const i = values.findIndex((v) => v < threshold);
  return i < 0 ? null : i;
}

// ------------------------------------------------------------------ the loss surface J(w, b)

// J, |grad J| and the smaller Hessian eigenvalue at (w, b).  J depends on z = wx + b only, so the
// Hessian is f''(z) [[x^2, x], [x, 1]] with eigenvalues 0 and f''(z)(1 + x^2) (the lab takes the same
// eigenvalue by central differences).  f'' = sigma' for cross-entropy, sigma'(sigma' + (a - y)(1 - 2a)) for MSE.
export function surfacePoint(w, b, x, y, loss) {
  const z = w * x + b;
  const [J, g] = neuronLossAndGradZ(z, y, loss);
  const s = sigmoidDerivative(z);
  const a = sigmoid(z);
  const second = loss === "mse" ? s * (s + (a - y) * (1 - 2 * a)) : s;
  return { J, gradNorm: Math.hypot(g * x, g), minEig: Math.min(0, second * (1 + x * x)), a };
}

// Grid over [lo, hi]^2 with n points a side, as numpy's linspace; counts of the lab's two regions:
// negative curvature (eigenvalue < -1e-8) and plateau (|grad J| < 0.01 while a > 0.5).
export function linspace(lo, hi, n) {
  const step = (hi - lo) / (n - 1);
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? hi : lo + i * step));
}

export function surfaceGrid({ x = 1, y = 0, loss, n = 161, lo = -4, hi = 4 }) {
  const axis = linspace(lo, hi, n);
  const J = new Float64Array(n * n);
  const negative = new Uint8Array(n * n);
  const plateau = new Uint8Array(n * n);
  let negativeCount = 0;
  let plateauCount = 0;
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      const pt = surfacePoint(axis[c], axis[r], x, y, loss); // row r: bias b, column c: weight w
      const k = r * n + c;
      J[k] = pt.J;
      if (pt.minEig < -1e-8) { negative[k] = 1; negativeCount++; }
      if (pt.gradNorm < 1e-2 && pt.a > 0.5) { plateau[k] = 1; plateauCount++; }
    }
  }
  return { n, axis, J, negative, plateau, negativeFraction: negativeCount / (n * n), plateauFraction: plateauCount / (n * n) };
}

// ------------------------------------------------------------------ softmax (crossent.losses)

// softmax(z) (scipy.special.softmax): the maximum is subtracted first, nothing overflows.
export function softmax(z) {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, v) => a + v, 0);
  return e.map((v) => v / s);
}

// -log softmax(z)[c] in the frame shifted by the maximum m: log S - (z_c - m) with S = sum exp(z - m);
// a confident row (S < 2) takes log S = log1p(S - 1) from the terms without the maxima, keeping its digits.
export function softmaxCrossEntropy(z, c) {
  const m = Math.max(...z);
  let rest = 0;
  let maxima = 0;
  for (const v of z) {
    if (v === m) maxima++;
    else rest += Math.exp(v - m);
  }
  const S = maxima + rest;
  const logS = S < 2 ? Math.log1p(maxima - 1 + rest) : Math.log(S);
  return logS - (z[c] - m);
}

// Section 5: probabilities at temperature T, the loss, the loss when softmax is applied twice (the
// probabilities fed in as logits), and that mistake's floor: a one-hot input still costs log(e + C - 1) - 1.
export function softmaxSection(logits, T, target) {
  const scaled = logits.map((v) => v / T);
  const p = softmax(scaled);
  const floorInput = logits.map((_, i) => (i === target ? 1 : 0));
  return {
    p,
    loss: softmaxCrossEntropy(scaled, target),
    twiceLoss: softmaxCrossEntropy(p, target),
    twiceFloor: softmaxCrossEntropy(floorInput, target),
    twiceP: softmax(p),
  };
}

// ------------------------------------------------------------------ calibration (crossent.lab.models)

// Reliability bins, ECE, NLL (nats, true-class probability floored at 1e-12) and accuracy of the logits
// (rows) at temperature T, as expected_calibration_error and MLP.evaluate compute them.
export function calibration(logits, labels, T, bins = 15) {
  const edges = linspace(0, 1, bins + 1);
  const count = new Array(bins).fill(0);
  const confSum = new Array(bins).fill(0);
  const accSum = new Array(bins).fill(0);
  let nll = 0;
  let correct = 0;
  for (let r = 0; r < logits.length; r++) {
    const p = softmax(logits[r].map((v) => v / T));
    let best = 0;
    for (let k = 1; k < p.length; k++) if (p[k] > p[best]) best = k;
    const confidence = p[best];
    const right = best === labels[r] ? 1 : 0;
    // numpy's searchsorted(edges, confidence, side="left") - 1, clipped to the bins
    let first = edges.findIndex((e) => e >= confidence);
    if (first < 0) first = edges.length;
    const bin = Math.min(bins - 1, Math.max(0, first - 1));
    count[bin]++; confSum[bin] += confidence; accSum[bin] += right;
    correct += right;
    nll += -Math.log(Math.max(p[labels[r]], 1e-12));
  }
  let ece = 0;
  for (let k = 0; k < bins; k++) ece += Math.abs(accSum[k] - confSum[k]);
  const n = logits.length;
  return {
    edges, count,
    confidence: count.map((c, k) => (c > 0 ? confSum[k] / c : NaN)),
    accuracy: count.map((c, k) => (c > 0 ? accSum[k] / c : NaN)),
    ece: ece / n, nll: nll / n, accuracyTotal: correct / n,
  };
}

// ------------------------------------------------------------------ the ReLU question (crossent.lab.models)

export const HEADS = ["softmax_ce", "sigmoid_bce", "softmax_mse", "sigmoid_mse", "linear_mse"];

// dℓ/dz of one example under an output head (head_loss_and_grad with n = 1), one-hot target.
export function headGradient(z, target, head) {
  const t = z.map((_, k) => (k === target ? 1 : 0));
  if (head === "softmax_ce") {
    const p = softmax(z);
    return p.map((v, k) => v - t[k]);
  }
  if (head === "sigmoid_bce") return z.map((v, k) => (1 - t[k]) * sigmoid(v) - t[k] * sigmoid(-v));
  const a = head === "sigmoid_mse" ? z.map(sigmoid) : head === "softmax_mse" ? softmax(z) : z.slice();
  const gradA = a.map((v, k) => 0.5 * (2 * (v - t[k])));
  if (head === "sigmoid_mse") return gradA.map((g, k) => g * sigmoidDerivative(z[k]));
  if (head === "softmax_mse") {
    const dot = gradA.reduce((s, g, k) => s + g * a[k], 0);
    return a.map((v, k) => v * (gradA[k] - dot));
  }
  return gradA;
}

// The confidently wrong output: unit 0 has logit `margin`, the others 0, the true class is 1 of `classes`.
export function wrongStartGradients(margin, classes = 10) {
  const z = Array.from({ length: classes }, (_, k) => (k === 0 ? margin : 0));
  return Object.fromEntries(HEADS.map((head) => [head, Math.abs(headGradient(z, 1, head)[0])]));
}

// What a hidden unit passes back: sigma'(z) for sigmoid, 1 - tanh^2 for tanh, [z > 0] for ReLU.
export function hiddenFactor(z, hidden) {
  if (hidden === "sigmoid") return sigmoidDerivative(z);
  if (hidden === "tanh") { const t = Math.tanh(z); return 1 - t * t; }
  return z > 0 ? 1 : 0;
}
