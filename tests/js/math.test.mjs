// The explorer's math module against crossent's numbers (tests/js/vectors.json), to 1e-12 relative.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as m from "../../src/crossent/lab/static/explorer/math.js";
import { vectors, calibrationData, assertClose, assertAllClose } from "./vectors.mjs";

test("information measures equal crossent.measures in nats and bits, zeros and q = 0 included", () => {
  for (const c of vectors.information) {
    for (const unit of ["nats", "bits"]) {
      const got = m.informationMeasures(c.p, c.q, unit);
      for (const [key, expected] of Object.entries(c[unit])) assertClose(got[key], expected, `${c.name} ${unit} ${key}`);
    }
  }
  const inf = vectors.information.find((c) => c.name === "q_zero_where_p_positive");
  assert.equal(inf.nats.Hpq, Infinity);
  assert.equal(m.crossEntropy(inf.p, inf.q), Infinity);
});

test("self-information equals crossent.measures.self_information, infinite at 0", () => {
  for (const c of vectors.self_information) {
    assertClose(m.selfInformation(c.p, "nats"), c.nats, `I(${c.p}) nats`);
    assertClose(m.selfInformation(c.p, "bits"), c.bits, `I(${c.p}) bits`);
  }
});

test("sigmoid, its derivative and log-sigmoid equal crossent.losses, at ±40 too", () => {
  for (const c of vectors.sigmoid) {
    assertClose(m.sigmoid(c.z), c.sigmoid, `sigmoid(${c.z})`);
    assertClose(m.sigmoidDerivative(c.z), c.derivative, `sigmoid'(${c.z})`);
    assertClose(m.logSigmoid(c.z), c.log_sigmoid, `log sigmoid(${c.z})`);
  }
  // relative agreement where the value is tiny: sigma(-40) and sigma'(40) keep their digits
  const far = vectors.sigmoid.find((c) => c.z === 40);
  assert.ok(Math.abs(m.sigmoidDerivative(40) / far.derivative - 1) < 1e-12);
  assert.ok(m.sigmoidDerivative(40) > 0);
});

test("the neuron's loss and dL/dz equal the lab's neuron_loss_and_grad_z", () => {
  for (const c of vectors.neuron_loss) {
    for (const loss of ["mse", "cross_entropy"]) {
      assertAllClose(m.neuronLossAndGradZ(c.z, c.y, loss), c[loss], `${loss} z=${c.z} y=${c.y}`);
    }
  }
});

test("the neuron race follows the lab's Neuron.train step by step: 17 against 232 from (2, 2)", () => {
  for (const r of vectors.races) {
    const h = m.trainNeuron({ w: r.w, b: r.b, eta: r.eta, steps: r.steps, loss: r.loss, rule: r.rule });
    const what = `${r.loss} ${r.rule} from (${r.w}, ${r.b}) eta ${r.eta}`;
    assertAllClose(h.a, r.a, `${what} a`);
    if (r.rule === "true") {
      assertAllClose(h.loss, r.loss_values, `${what} loss`);
      assertAllClose(h.w, r.w_path, `${what} w`);
      assertAllClose(h.b, r.b_path, `${what} b`);
    }
    const expected = r.a.findIndex((a) => a < 0.5);
    assert.equal(m.stepsUntilBelow(h.a), expected < 0 ? null : expected, what);
  }
  const race = (loss) => m.stepsUntilBelow(m.trainNeuron({ w: 2, b: 2, eta: 0.15, steps: 300, loss }).a);
  assert.equal(race("cross_entropy"), 17);
  assert.equal(race("mse"), 232);
  // Nielsen's eta = 0.005 with the true gradient: still 0.78 after 300 steps
  const slow = m.trainNeuron({ w: 2, b: 2, eta: 0.005, steps: 300, loss: "cross_entropy" });
  assert.equal(slow.a[300].toFixed(2), "0.78");
});

test("the loss surface: J and |grad J| equal the lab's, the curvature its central difference", () => {
  for (const c of vectors.surface) {
    const pt = m.surfacePoint(c.w, c.b, 1, 0, c.loss);
    assertClose(pt.J, c.J, `J ${c.loss} (${c.w}, ${c.b})`);
    assertClose(pt.gradNorm, c.grad_norm, `|grad J| ${c.loss} (${c.w}, ${c.b})`);
    // the lab differentiates its gradient numerically (step 1e-4): agreement to its truncation error
    assert.ok(Math.abs(pt.minEig - c.min_eig_fd) < 1e-7, `min eigenvalue ${c.loss} (${c.w}, ${c.b}): ${pt.minEig} vs ${c.min_eig_fd}`);
  }
  for (const n of [81, 161]) {
    for (const loss of ["mse", "cross_entropy"]) {
      const grid = m.surfaceGrid({ loss, n });
      const expected = vectors.surface_fractions[`${loss}_${n}`];
      assert.equal(grid.negativeFraction, expected.negative, `${loss} ${n} negative-curvature fraction`);
      assert.equal(grid.plateauFraction, expected.plateau, `${loss} ${n} plateau fraction`);
    }
  }
});

test("softmax with temperature, its loss, and the softmax-twice mistake equal crossent.losses", () => {
  for (const c of vectors.softmax) {
    const got = m.softmaxSection(c.logits, c.T, c.target);
    const what = `logits ${c.logits} T ${c.T} target ${c.target}`;
    assertAllClose(got.p, c.p, `${what} p`);
    assertClose(got.loss, c.loss, `${what} loss`);
    assertClose(got.twiceLoss, c.twice_loss, `${what} twice`);
    assertClose(got.twiceFloor, c.twice_floor, `${what} floor`);
    assertAllClose(got.twiceP, c.twice_p, `${what} twice p`);
    assert.ok(got.twiceLoss >= got.twiceFloor);
  }
});

test("calibration: bins, ECE, NLL and accuracy equal the lab's at every temperature", () => {
  const { logits, labels } = calibrationData;
  for (const c of vectors.calibration) {
    const got = m.calibration(logits, labels, c.T);
    assertAllClose(got.edges, c.edges, `T ${c.T} edges`);
    assert.deepEqual(got.count, c.count, `T ${c.T} counts`);
    assertAllClose(got.confidence, c.confidence, `T ${c.T} mean confidence`);
    assertAllClose(got.accuracy, c.bin_accuracy, `T ${c.T} bin accuracy`);
    assertClose(got.ece, c.ece, `T ${c.T} ECE`);
    assertClose(got.nll, c.nll, `T ${c.T} NLL`);
    assertClose(got.accuracyTotal, c.accuracy, `T ${c.T} accuracy`);
  }
  // the rounded logits reproduce the lab's own numbers for the model
  const atOne = m.calibration(logits, labels, 1);
  assert.ok(Math.abs(atOne.ece - calibrationData.lab.ece) < 1e-6);
  assert.equal(atOne.accuracyTotal, calibrationData.lab.accuracy);
});

test("the confidently wrong output's gradient under each head equals head_loss_and_grad", () => {
  for (const c of vectors.heads) {
    const got = m.wrongStartGradients(c.margin, c.classes);
    for (const head of m.HEADS) assertClose(got[head], c.grad[head], `${head} margin ${c.margin}`);
  }
  for (const c of vectors.hidden) {
    for (const hidden of ["sigmoid", "tanh", "relu"]) assertClose(m.hiddenFactor(c.z, hidden), c[hidden], `${hidden} z ${c.z}`);
  }
});

test("setProbability keeps a distribution, and sampling converges to H(p, q)", () => {
  const p = m.setProbability([0.5, 0.25, 0.125, 0.125], 0, 0.7);
  assertClose(p.reduce((a, b) => a + b, 0), 1, "sum");
  assertClose(p[0], 0.7, "set value");
  assertClose(p[1] / p[2], 2, "others keep their ratios");
  assert.deepEqual(m.setProbability([1, 0, 0], 0, 0.4).map((v) => +v.toFixed(12)), [0.4, 0.3, 0.3]);
  const means = m.samplingRun([0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25], 2000, 1);
  assertClose(means[1999], 2 * Math.LN2, "uniform q: every draw costs log 4");
  const run = m.samplingRun([0.5, 0.5], [0.9, 0.1], 20000, 7);
  assert.ok(Math.abs(run[19999] - m.crossEntropy([0.5, 0.5], [0.9, 0.1])) < 0.05);
  assert.ok(m.samplingRun([0, 1], [0.5, 0.5], 100, 3).every((v) => Number.isFinite(v)), "never draws an impossible outcome");
});

test("KL stays finite where q is subnormal and p / q would overflow (as scipy's rel_entr)", () => {
  // 0.7 (ln 0.7 - ln 5e-324) + 0.3 ln 0.3, in bits: crossent.measures gives 750.9187...
  const expected = (0.7 * (Math.log(0.7) - Math.log(5e-324)) + 0.3 * Math.log(0.3)) / Math.LN2;
  assertClose(m.klDivergence([0.7, 0.3], [5e-324, 1], "bits"), expected, "KL with q = 5e-324", 1e-12);
  assert.ok(Number.isFinite(m.klDivergence([0.7, 0.3], [1e-310, 1])));
});
