// The explorer page in headless Chromium (Debian's chromium, driven by playwright-core), from file://.
//
// Every control is moved by keyboard and by mouse; the shown numbers are read through data-testid and
// compared with crossent's test vectors (tests/js/vectors.json) or, for states the vectors do not hold,
// with the page's own math module, which tests/js checks against those vectors.  Any console error,
// page error or request other than the page itself fails the test.
//
// Environment: EXPLORER_PAGE (a built index.html; built with `python -m crossent explore` if unset),
// CHROMIUM (default /usr/bin/chromium), EXPLORER_SCREENSHOTS (folder for the two screenshots; a
// temporary folder if unset), PYTHON (for building the page).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, statSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import * as m from "../../src/crossent/lab/static/explorer/math.js";
import { DEFAULTS, formatState } from "../../src/crossent/lab/static/explorer/state.js";
import { translate, STRINGS } from "../../src/crossent/lab/static/explorer/i18n.js";
import { vectors, calibrationData, glossary, assertClose } from "../js/vectors.mjs";

const root = fileURLToPath(new URL("../../", import.meta.url));
const shots = process.env.EXPLORER_SCREENSHOTS || mkdtempSync(join(tmpdir(), "explorer-shots-"));
let pagePath = process.env.EXPLORER_PAGE;
let browser;
let url;
const problems = [];

before(async () => {
  if (!pagePath) {
    const out = mkdtempSync(join(tmpdir(), "explorer-page-"));
    execFileSync(process.env.PYTHON || "python3", ["-m", "crossent", "explore", "--out", out],
      { cwd: root, env: { ...process.env, PYTHONPATH: join(root, "src") }, stdio: "inherit" });
    pagePath = join(out, "index.html");
  }
  url = pathToFileURL(pagePath).href;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});

after(async () => {
  if (browser) await browser.close();
});

// A fresh page at `hash`, watched for console errors, page errors and any request but the page itself.
async function open(hash = "", viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
    else if (msg.type() === "warning") console.log(`# console warning (not a failure): ${msg.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => problems.push(`failed request: ${request.url()}`));
  page.on("request", (request) => { if (request.url().split("#")[0] !== url) problems.push(`request: ${request.url()}`); });
  await page.goto(url + hash);
  await page.waitForSelector("body[data-ready=true]");
  return page;
}

function noProblems() {
  assert.deepEqual(problems, [], "console errors, page errors or requests");
}

const shown = (page, id) => page.locator(`[data-testid="${id}"]`);

// The full float64 value behind a shown number (data-value), with "null" for "never".
async function value(page, id) {
  const text = await shown(page, id).getAttribute("data-value");
  assert.ok(text !== null, `no data-value on ${id}`);
  return text === "null" ? null : Number(text);
}

async function expectValues(page, expected, what) {
  for (const [id, v] of Object.entries(expected)) assertClose(await value(page, id), v, `${what}: ${id}`);
}

// Every shown number's text agrees with its data-value at the precision the text shows.
async function checkShownPrecision(page) {
  const lang = await page.evaluate(() => document.documentElement.lang.startsWith("zh") ? "zh" : "en");
  const items = await page.$$eval("[data-testid][data-value]", (els) => els.map((e) => [e.dataset.testid, e.dataset.value, e.textContent]));
  assert.ok(items.length > 60, `only ${items.length} numbers on the page`);
  for (const [id, v, text] of items) {
    if (v === "null") { assert.equal(text, translate("never", lang, glossary), id); continue; }
    if (v === "Infinity") { assert.equal(text, "∞", id); continue; }
    if (v === "NaN") { assert.equal(text, "—", id); continue; }
    const x = Number(v);
    const t = text.replace("−", "-");
    assert.match(t, /^-?\d+(\.\d+)?(e[-+]\d+)?$/, `${id}: ${text}`);
    const mantissa = t.replace(/^-/, "").split("e")[0].replace(".", "").replace(/^0+/, "");
    const digits = Math.max(1, mantissa.length);
    const s = Number(t);
    if (/^-?\d+$/.test(t) && Number.isInteger(x)) { assert.equal(s, x, id); continue; }
    const exponent = s === 0 ? Math.floor(Math.log10(Math.abs(x) || 1)) : Math.floor(Math.log10(Math.abs(s)));
    const tolerance = 0.5 * 10 ** (exponent - digits + 1) * (1 + 1e-9);
    assert.ok(Math.abs(s - x) <= tolerance, `${id}: shows ${text} for ${v}`);
  }
}

const information = (name) => vectors.information.find((c) => c.name === name);
const race = (w, b, eta, loss, rule = "true") => vectors.races.find((r) => r.w === w && r.b === b && r.eta === eta && r.loss === loss && r.rule === rule);
const stepsOf = (a) => { const k = a.findIndex((v) => v < 0.5); return k < 0 ? null : k; };
const expectInfo = (page, values, what) => expectValues(page, Object.fromEntries(Object.entries(values).map(([k, v]) => [`info-${k}`, v])), what);

async function pressTimes(page, selector, key, times) {
  await page.locator(selector).focus();
  for (let i = 0; i < times; i++) await page.keyboard.press(key);
}

test("loads from file:// with crossent's numbers in every section, no errors, and is measured", async () => {
  const started = Date.now();
  const page = await open();
  const wall = Date.now() - started;
  const ready = await page.evaluate(() => window.explorerReadyMs);
  const bytes = statSync(pagePath).size;
  const line = `explorer: page weight ${bytes} bytes (${(bytes / 1024).toFixed(1)} KiB, one file, no other request); ` +
    `time to interactive ${ready.toFixed(0)} ms after navigation start (load and first render; ${wall} ms wall for the test's load)`;
  console.log(line);
  if (process.env.EXPLORER_METRICS) writeFileSync(process.env.EXPLORER_METRICS, JSON.stringify({ bytes, time_to_interactive_ms: ready }) + "\n");

  await expectInfo(page, information("readme_4_outcomes").bits, "README example, bits");
  const mse = race(2, 2, 0.15, "mse");
  const ce = race(2, 2, 0.15, "cross_entropy");
  assert.equal(await value(page, "neuron-ce-steps"), 17);
  assert.equal(await value(page, "neuron-mse-steps"), 232);
  assert.equal(await shown(page, "neuron-ce-steps").textContent(), "17");
  assert.equal(await shown(page, "neuron-mse-steps").textContent(), "232");
  await expectValues(page, { "neuron-mse-a": mse.a[300], "neuron-ce-a": ce.a[300], "neuron-mse-loss": mse.loss_values[300],
    "neuron-ce-loss": ce.loss_values[300] }, "the race after 300 steps");
  const fr = vectors.surface_fractions;
  await expectValues(page, { "surface-mse-negative": fr.mse_161.negative, "surface-mse-plateau": fr.mse_161.plateau,
    "surface-ce-negative": fr.cross_entropy_161.negative, "surface-ce-plateau": fr.cross_entropy_161.plateau }, "surface fractions");
  const at = (w, b, loss) => vectors.surface.find((c) => c.w === w && c.b === b && c.loss === loss).J;
  // J at the start (2, 2) depends on w + b = 4 only; the vectors hold (4, 0)
  await expectValues(page, { "surface-mse-J": at(4, 0, "mse"), "surface-ce-J": at(4, 0, "cross_entropy") }, "J at the start");
  const z5 = vectors.neuron_loss.find((c) => c.z === 5 && c.y === 0);
  const s5 = vectors.sigmoid.find((c) => c.z === 5);
  await expectValues(page, { "vanish-sigmoid": s5.sigmoid, "vanish-derivative": s5.derivative, "vanish-ce-grad": z5.cross_entropy[1],
    "vanish-mse-grad": z5.mse[1], "vanish-ratio": z5.mse[1] / z5.cross_entropy[1] }, "z = 5");
  assertClose(await value(page, "vanish-ratio"), s5.derivative, "the ratio is sigma'(5)");
  const sm = vectors.softmax[0];
  await expectValues(page, { "softmax-loss": sm.loss, "softmax-twice-loss": sm.twice_loss, "softmax-floor": sm.twice_floor,
    ...Object.fromEntries(sm.p.map((v, k) => [`softmax-p${k}`, v])), ...Object.fromEntries(sm.twice_p.map((v, k) => [`softmax-twice-p${k}`, v])) }, "softmax");
  const cal = vectors.calibration.find((c) => c.T === 1);
  await expectValues(page, { "calib-ece": cal.ece, "calib-nll": cal.nll, "calib-accuracy": cal.accuracy, "calib-lab-ece": calibrationData.lab.ece }, "calibration T = 1");
  const heads = vectors.heads.find((c) => c.margin === 10);
  await expectValues(page, Object.fromEntries(m.HEADS.map((h) => [`relu-grad-${h}`, heads.grad[h]])), "heads at margin 10");
  const hidden = vectors.hidden.find((c) => c.z === -1);
  await expectValues(page, { "relu-hidden-sigmoid": hidden.sigmoid, "relu-hidden-tanh": hidden.tanh, "relu-hidden-relu": hidden.relu }, "hidden z = -1");
  await checkShownPrecision(page);
  noProblems();
  await page.context().close();
});

test("section 1 by keyboard and mouse: presets, units, sliders, dragged bars, infinity, sampling", async () => {
  const page = await open();
  // presets by keyboard (focus, Enter or Space)
  await page.locator("#preset-coin").focus();
  await page.keyboard.press("Enter");
  await expectInfo(page, information("fair_coin_vs_rigged").bits, "coin preset");
  await page.locator("#preset-lab").focus();
  await page.keyboard.press("Space");
  await expectInfo(page, information("lab_experiment_6").bits, "lab preset");
  // unit by mouse
  await page.locator("#unit-nats").click();
  await expectInfo(page, information("lab_experiment_6").nats, "lab preset in nats");
  await page.locator("#preset-zero").click();
  await expectInfo(page, information("q_zero_where_p_positive").nats, "q = 0 where p > 0");
  assert.equal(await shown(page, "info-Hpq").textContent(), "∞");
  assert.equal(await page.locator("#info-infinite").isVisible(), true, "the page says why it is infinite");
  // a slider by keyboard: p1 up by one step of 0.01, the others rescaled
  await page.locator("#preset-readme").click();
  await pressTimes(page, "#p-0", "ArrowRight", 3);
  const p = await Promise.all([0, 1, 2, 3].map((i) => value(page, `info-p-${i}`)));
  const q = await Promise.all([0, 1, 2, 3].map((i) => value(page, `info-q-${i}`)));
  assertClose(p[0], 0.53, "p1 after three steps");
  assertClose(p.reduce((a, b) => a + b, 0), 1, "p sums to 1");
  await expectInfo(page, m.informationMeasures(p, q, "nats"), "after the keyboard");
  // a bar dragged with the mouse: q1 pulled up to about 0.8
  await page.locator("#bars-q").scrollIntoViewIfNeeded();
  const box = await page.locator("#bars-q").boundingBox();
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.6);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.25, { steps: 5 });
  await page.mouse.up();
  const q2 = await Promise.all([0, 1, 2, 3].map((i) => value(page, `info-q-${i}`)));
  assert.ok(q2[0] > 0.6 && q2[0] < 0.95, `q1 dragged to ${q2[0]}`);
  await expectInfo(page, m.informationMeasures(p, q2, "nats"), "after the drag");
  // outcomes: 8 by typing
  await page.locator("#info-n").fill("8");
  await page.locator("#info-n").press("Enter");
  assert.equal(await page.locator("#sliders-p input").count(), 8);
  await page.locator("#preset-readme").click();
  // sampling: 1 + 100 + 1000 draws, the running mean equals the math module's and nears H(p, q)
  for (const id of ["#draw-1", "#draw-100", "#draw-1000"]) await page.locator(id).click();
  assert.equal(await value(page, "info-draws"), 1101);
  const means = m.samplingRun([0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25], 1101, 1, "nats");
  assertClose(await value(page, "info-running-mean"), means[1100], "running mean");
  assertClose(await value(page, "info-running-mean"), information("readme_4_outcomes").nats.Hpq, "uniform q: every draw costs log 4");
  await page.locator("#draw-reset").click();
  assert.equal(await value(page, "info-draws"), 0);
  await checkShownPrecision(page);
  noProblems();
  await page.context().close();
});

test("sections 2 and 3: start and η by keyboard, Nielsen's rule, the surface by mouse and keys, play", async () => {
  const page = await open();
  await page.locator("#neuron-nielsen-preset").focus();
  await page.keyboard.press("Enter");
  const nielsen = race(2, 2, 0.005, "cross_entropy", "nielsen");
  const slow = race(2, 2, 0.005, "cross_entropy");
  assert.equal(await value(page, "neuron-ce-steps"), stepsOf(nielsen.a));
  await expectValues(page, { "neuron-ce-a": nielsen.a[300], "neuron-true-final": slow.a[300] }, "Nielsen's picture");
  assert.equal(await shown(page, "neuron-true-final").textContent(), "0.7796");
  assert.equal(await page.locator("#nielsen-note").isVisible(), true);
  // the switch itself by keyboard (Space toggles a checkbox)
  await page.locator("#neuron-nielsen").focus();
  await page.keyboard.press("Space");
  await expectValues(page, { "neuron-ce-a": slow.a[300], "neuron-mse-a": race(2, 2, 0.005, "mse").a[300] }, "true gradients at η = 0.005");
  assert.equal(await value(page, "neuron-ce-steps"), null);
  // η, w and b by keyboard: η 0.005 -> 0.03, w 2 -> 1.5, b 2 -> 2.3; the race follows the math module
  await pressTimes(page, "#neuron-eta", "ArrowRight", 5);
  await pressTimes(page, "#neuron-w", "ArrowLeft", 5);
  await pressTimes(page, "#neuron-b", "ArrowRight", 3);
  const [w, b, eta] = [await value(page, "neuron-w"), await value(page, "neuron-b"), await value(page, "neuron-eta")];
  assert.deepEqual([w, b, eta], [1.5, 2.3, 0.03]);
  for (const loss of ["mse", "cross_entropy"]) {
    const h = m.trainNeuron({ w, b, eta, steps: 300, loss });
    const name = loss === "mse" ? "mse" : "ce";
    await expectValues(page, { [`neuron-${name}-a`]: h.a[300], [`neuron-${name}-loss`]: h.loss[300] }, `race from (${w}, ${b}) at η ${eta}`);
    assert.equal(await value(page, `neuron-${name}-steps`), m.stepsUntilBelow(h.a));
  }
  // the shown step by keyboard: Home goes to step 0, the starting output
  await page.locator("#neuron-t").focus();
  await page.keyboard.press("Home");
  assert.equal(await value(page, "neuron-t"), 0);
  assertClose(await value(page, "neuron-ce-a"), m.sigmoid(w + b), "a at step 0");
  // the surface: a click sets the start (the canvas centre is (0, 0)), arrow keys move it
  const canvas = page.locator("#surface-ce");
  await canvas.scrollIntoViewIfNeeded();
  const box = await canvas.boundingBox();
  await canvas.click({ position: { x: box.width * 0.75, y: box.height * 0.25 } });
  assertClose(await value(page, "neuron-w"), 2, "w from the click");
  assertClose(await value(page, "neuron-b"), 2, "b from the click");
  await page.locator("#surface-mse").focus();
  await page.keyboard.press("ArrowUp");
  await page.keyboard.press("ArrowLeft");
  assertClose(await value(page, "neuron-w"), 1.9, "w from the arrow key");
  assertClose(await value(page, "neuron-b"), 2.1, "b from the arrow key");
  await expectValues(page, { "surface-mse-J": m.surfacePoint(1.9, 2.1, 1, 0, "mse").J,
    "surface-ce-J": m.surfacePoint(1.9, 2.1, 1, 0, "cross_entropy").J }, "J at the new start");
  // play: the animation reaches step 300, also where the frames' timestamps lag the click's clock (a busy
  // machine: the first frame's timestamp can precede performance.now() in the click handler)
  await page.evaluate(() => { const now = performance.now.bind(performance); performance.now = () => now() + 50; });
  await page.locator("#neuron-play").click();
  await page.waitForFunction(() => document.querySelector('[data-testid="neuron-t"]').dataset.value === "300", null, { timeout: 10000 });
  await checkShownPrecision(page);
  noProblems();
  await page.context().close();
});

test("sections 4 to 7 by keyboard and mouse: z at ±40, temperature, target, calibration, margins", async () => {
  const page = await open();
  for (const z of [40, -40]) {
    await page.locator("#vanish-z-exact").fill(String(z));
    await page.locator("#vanish-z-exact").press("Tab");
    const s = vectors.sigmoid.find((c) => c.z === z);
    const g = vectors.neuron_loss.find((c) => c.z === z && c.y === 0);
    await expectValues(page, { "vanish-sigmoid": s.sigmoid, "vanish-derivative": s.derivative, "vanish-ce-grad": g.cross_entropy[1], "vanish-mse-grad": g.mse[1] }, `z = ${z}`);
    assert.ok((await value(page, "vanish-derivative")) > 0, "sigma'(±40) keeps its digits");
  }
  // the slider by keyboard: End goes to z = 12, seven steps back to 11.3
  await page.locator("#vanish-z").focus();
  await page.keyboard.press("End");
  await pressTimes(page, "#vanish-z", "ArrowLeft", 7);
  assert.equal(await page.locator("#vanish-z-exact").inputValue(), "11.3");
  await expectValues(page, { "vanish-derivative": m.sigmoidDerivative(11.3), "vanish-mse-grad": m.neuronLossAndGradZ(11.3, 0, "mse")[1] }, "z = 11.3");
  // softmax: T 1 -> 0.25 by keyboard, target class 2 by keyboard on the select
  await pressTimes(page, "#softmax-T", "ArrowLeft", 15);
  await page.locator("#softmax-target").focus();
  await page.keyboard.press("ArrowUp"); // class 3 -> class 2
  const sm = vectors.softmax.find((c) => c.T === 0.25);
  await expectValues(page, { "softmax-loss": sm.loss, "softmax-twice-loss": sm.twice_loss, "softmax-floor": sm.twice_floor,
    ...Object.fromEntries(sm.p.map((v, k) => [`softmax-p${k}`, v])) }, "softmax at T = 0.25, target 2");
  // a logit by mouse: click the slider at three quarters of its width
  const slider = page.locator("#logit-1");
  await slider.scrollIntoViewIfNeeded();
  const logit = await slider.boundingBox();
  await slider.click({ position: { x: logit.width * 0.75, y: logit.height / 2 } });
  const logits = await Promise.all([0, 1, 2, 3].map((k) => value(page, `logit-${k}`)));
  assert.ok(logits[1] > 3 && logits[1] < 7, `logit 2 clicked to ${logits[1]}`);
  const s = m.softmaxSection(logits, 0.25, 1);
  await expectValues(page, { "softmax-loss": s.loss, "softmax-twice-loss": s.twiceLoss }, "after the click");
  assert.ok((await value(page, "softmax-twice-loss")) >= (await value(page, "softmax-floor")));
  // calibration: T to 1.5 and to 0.5 by keyboard; the accuracy never moves
  const accuracy = await value(page, "calib-accuracy");
  for (const [key, times, T] of [["ArrowRight", 10, 1.5], ["ArrowLeft", 20, 0.5]]) {
    await pressTimes(page, "#calib-T", key, times);
    const c = vectors.calibration.find((v) => v.T === T);
    await expectValues(page, { "calib-ece": c.ece, "calib-nll": c.nll, "calib-accuracy": c.accuracy }, `calibration T = ${T}`);
    assert.equal(await value(page, "calib-accuracy"), accuracy);
  }
  await page.locator("#calib-reset").click();
  assertClose(await value(page, "calib-ece"), vectors.calibration.find((v) => v.T === 1).ece, "T = 1 again");
  // the ReLU question: margin 10 -> 20 by keyboard; hidden z by keyboard
  await pressTimes(page, "#relu-margin", "ArrowRight", 20);
  const heads = vectors.heads.find((c) => c.margin === 20);
  await expectValues(page, Object.fromEntries(m.HEADS.map((h) => [`relu-grad-${h}`, heads.grad[h]])), "heads at margin 20");
  await pressTimes(page, "#relu-hz", "ArrowRight", 15);
  const hz = await value(page, "relu-hz");
  assertClose(hz, 0.5, "hidden z");
  const hidden = vectors.hidden.find((c) => c.z === 0.5);
  await expectValues(page, { "relu-hidden-sigmoid": hidden.sigmoid, "relu-hidden-relu": hidden.relu }, "hidden z = 0.5");
  assertClose(await value(page, "relu-hidden-tanh"), hidden.tanh, "tanh factor");
  await checkShownPrecision(page);
  noProblems();
  await page.context().close();
});

test("a URL with state restores every control, and the language switches both ways", async () => {
  const state = { ...DEFAULTS, lang: "zh", unit: "nats", p: [0.5, 0.5], q: [0.9, 0.1], w: 0.6, b: 0.9, z: -40, T: 4,
    target: 3, calT: 2, margin: 5, hz: 3 };
  const page = await open(formatState(state));
  assert.equal(await page.evaluate(() => document.documentElement.lang), "zh-CN");
  assert.equal(await page.locator("h1").textContent(), translate("page_title", "zh", glossary));
  assert.ok((await page.locator("h1").textContent()).includes(glossary.cross_entropy.zh));
  assert.equal(await page.locator("#unit-nats").isChecked(), true);
  await expectInfo(page, information("fair_coin_vs_rigged").nats, "restored coin in nats");
  assert.equal(await value(page, "neuron-ce-steps"), stepsOf(race(0.6, 0.9, 0.15, "cross_entropy").a));
  assert.equal(await value(page, "neuron-mse-steps"), stepsOf(race(0.6, 0.9, 0.15, "mse").a));
  assert.equal(await page.locator("#neuron-w").inputValue(), "0.6");
  for (const loss of ["mse", "cross_entropy"]) {
    assertClose(await value(page, loss === "mse" ? "neuron-mse-a" : "neuron-ce-a"), race(0.6, 0.9, 0.15, loss).a[300], `${loss} from (0.6, 0.9)`);
  }
  // a second address: the start (-1.5, 3) at η = 0.6
  const other = await open(formatState({ ...DEFAULTS, w: -1.5, b: 3, eta: 0.6 }));
  for (const [loss, name] of [["mse", "mse"], ["cross_entropy", "ce"]]) {
    const ref = race(-1.5, 3, 0.6, loss);
    assert.equal(await value(other, `neuron-${name}-steps`), stepsOf(ref.a));
    assertClose(await value(other, `neuron-${name}-a`), ref.a[300], `${loss} from (-1.5, 3) at η 0.6`);
  }
  assert.equal(await other.locator("#neuron-eta").inputValue(), "0.6");
  await other.context().close();
  assert.equal(await page.locator("#vanish-z-exact").inputValue(), "-40");
  assertClose(await value(page, "vanish-sigmoid"), vectors.sigmoid.find((c) => c.z === -40).sigmoid, "z = -40");
  const sm = vectors.softmax.find((c) => c.T === 4);
  assertClose(await value(page, "softmax-loss"), sm.loss, "softmax T = 4 target 4");
  assert.equal(await page.locator("#softmax-target").inputValue(), "3");
  const c2 = vectors.calibration.find((c) => c.T === 2);
  await expectValues(page, { "calib-ece": c2.ece, "calib-nll": c2.nll }, "calibration T = 2");
  const heads = vectors.heads.find((c) => c.margin === 5);
  await expectValues(page, Object.fromEntries(m.HEADS.map((h) => [`relu-grad-${h}`, heads.grad[h]])), "heads at margin 5");
  assertClose(await value(page, "relu-hidden-sigmoid"), vectors.hidden.find((c) => c.z === 3).sigmoid, "hidden z = 3");
  // every translated element shows the Chinese string; then back to English by keyboard
  const keys = await page.$$eval("[data-i18n]", (els) => els.map((e) => [e.dataset.i18n, e.dataset.i18nVars || "{}", e.textContent]));
  for (const [key, vars, text] of keys) assert.equal(text, translate(key, "zh", glossary, JSON.parse(vars)), key);
  await checkShownPrecision(page);
  await page.locator("#lang-en").focus();
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.documentElement.lang), "en");
  assert.ok(page.url().includes("unit=nats") && !page.url().includes("lang="), page.url());
  for (const [key, vars] of keys) {
    const text = await page.locator(`[data-i18n="${key}"]`).first().textContent();
    if (!vars.includes("k") && !vars.includes("name")) assert.equal(text, translate(key, "en", glossary, JSON.parse(vars)), key);
  }
  assert.equal(await page.locator("#lang-en").getAttribute("aria-pressed"), "true");
  // the address now holds the state: reopening it gives the same numbers
  const again = await open(new URL(page.url()).hash);
  assert.equal(await value(again, "calib-ece"), await value(page, "calib-ece"));
  assert.equal(await value(again, "info-KLpq"), await value(page, "info-KLpq"));
  noProblems();
  await again.context().close();
  await page.context().close();
});

test("every control has a label and is reachable from the keyboard; every string exists in both languages", async () => {
  const page = await open();
  const unlabelled = await page.$$eval("input, select, button, canvas", (els) => els.filter((e) => {
    const name = e.getAttribute("aria-label") || (e.labels && [...e.labels].map((l) => l.textContent).join("").trim()) || e.textContent.trim();
    const reachable = e.tabIndex >= 0 && !e.disabled;
    return !name || !reachable;
  }).map((e) => e.id || e.outerHTML.slice(0, 80)));
  assert.deepEqual(unlabelled, []);
  for (const [key, entry] of Object.entries(STRINGS)) {
    for (const lang of ["en", "zh"]) assert.ok(entry[lang] && translate(key, lang, glossary, { k: "1", name: "x" }), `${key} ${lang}`);
  }
  noProblems();
  await page.context().close();
});

test("screenshots at a desktop and a phone width, no sideways scrolling on the phone", async () => {
  const desktop = await open("", { width: 1280, height: 900 });
  // the desktop shot: sections 2 and 3, the race and the surfaces it runs on
  const [top, bottom] = await desktop.evaluate(() => [document.getElementById("neuron").getBoundingClientRect().top + scrollY,
    document.getElementById("surface").getBoundingClientRect().bottom + scrollY]);
  await desktop.screenshot({ path: join(shots, "explorer-desktop.png"), fullPage: true, clip: { x: 0, y: top, width: 1280, height: bottom - top } });
  // the phone shot: the top of the page in Chinese
  const phone = await open(formatState({ ...DEFAULTS, lang: "zh" }), { width: 390, height: 844 });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(overflow <= 390, `the page is ${overflow} px wide on a 390 px phone`);
  await phone.screenshot({ path: join(shots, "explorer-phone.png") });
  for (const name of ["explorer-desktop.png", "explorer-phone.png"]) {
    const png = readFileSync(join(shots, name));
    assert.equal(png.subarray(1, 4).toString(), "PNG");
    assert.ok(png.length > 10000, `${name} is ${png.length} bytes`);
  }
  console.log(`explorer: screenshots in ${shots}`);
  noProblems();
  await desktop.context().close();
  await phone.context().close();
});
