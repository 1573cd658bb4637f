// The page's other modules: the strings in both languages, the state in the address, the number format.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LANGUAGES, STRINGS, translate } from "../../src/crossent/lab/static/explorer/i18n.js";
import { DEFAULTS, formatState, parseState } from "../../src/crossent/lab/static/explorer/state.js";
import { formatNumber } from "../../src/crossent/lab/static/explorer/format.js";
import { playedStep } from "../../src/crossent/lab/static/explorer/sec_neuron.js";
import { glossary } from "./vectors.mjs";

test("every string exists in both languages and every term comes from the glossary", () => {
  for (const [key, entry] of Object.entries(STRINGS)) {
    for (const lang of LANGUAGES) {
      assert.equal(typeof entry[lang], "string", `${key} ${lang}`);
      const text = translate(key, lang, glossary, { k: "₁", name: "MSE" });
      assert.doesNotMatch(text, /[{}]/, `${key} ${lang}: an unfilled slot`);
    }
  }
  assert.equal(translate("m_Hpq", "en", glossary), "Cross-entropy H(p, q)");
  assert.equal(translate("m_Hpq", "zh", glossary), `${glossary.cross_entropy.zh} H(p, q)`);
  assert.throws(() => translate("no_such_key", "en", glossary), /no string/);
});

test("the page's filled-in labels are Chinese in Chinese: a term passed to a slot comes from the glossary", async () => {
  const { readFileSync } = await import("node:fs");
  const html = readFileSync(new URL("../../src/crossent/lab/static/explorer/page.html", import.meta.url), "utf8");
  const uses = [...html.matchAll(/data-i18n(?:-label)?="(\w+)" data-i18n-vars='([^']*)'/g)];
  assert.ok(uses.length >= 6);
  for (const [, key, vars] of uses) {
    const zh = translate(key, "zh", glossary, JSON.parse(vars));
    const terms = Object.values(glossary).filter((t) => t && t.zh).map((t) => t.zh);
    // the glossary's own Chinese terms, and "logit" (a symbol's name that Chinese texts keep), may be Latin
    const rest = [...terms, "logit"].reduce((text, term) => text.split(term).join(" "), zh);
    assert.doesNotMatch(rest, /[a-z]{4,}/, `${key} with ${vars} in Chinese: ${zh}`);
  }
  assert.equal(translate("surface_label", "zh", glossary, { name: "{cross_entropy}" }),
    `${glossary.cross_entropy.zh}的${glossary.loss_surface.zh}：方向键移动起点`);
  assert.match(translate("surface_label", "en", glossary, { name: "{cross_entropy}" }), /of cross-entropy:/);
});

test("the glossary keeps its format: key -> {en, zh}", () => {
  for (const [key, term] of Object.entries(glossary)) {
    if (key.startsWith("_")) continue;
    assert.deepEqual(Object.keys(term).sort(), ["en", "zh"], key);
  }
});

test("the state survives the address, and a bad address falls back to the defaults", () => {
  assert.deepEqual(parseState(""), DEFAULTS);
  assert.equal(formatState(DEFAULTS), "");
  const state = { ...DEFAULTS, lang: "zh", unit: "nats", p: [0.1, 0.2, 0.7], q: [1 / 3, 1 / 3, 1 / 3], draws: 12,
    w: -1.5, b: 3, eta: 0.6, nielsen: true, t: 17, z: -40, logits: [1, 2, 3, 4], T: 0.25, target: 1, calT: 1.5, margin: 20, hz: 0.5 };
  assert.deepEqual(parseState(formatState(state)), state);
  const bad = parseState("#lang=fr&p=0.5,x&w=99&eta=-1&t=1e9&logits=1,2&target=7&z=nan");
  assert.equal(bad.lang, "en");
  assert.deepEqual(bad.p, DEFAULTS.p);
  assert.equal(bad.w, 4);
  assert.equal(bad.eta, 0.005);
  assert.equal(bad.t, 300);
  assert.deepEqual(bad.logits, DEFAULTS.logits);
  assert.equal(bad.target, 3);
  assert.equal(bad.z, DEFAULTS.z);
  // p and q of different lengths cannot be a pair
  const mismatch = parseState("#p=0.5,0.5&q=0.2,0.3,0.5");
  assert.deepEqual([mismatch.p, mismatch.q], [DEFAULTS.p, DEFAULTS.q]);
  // weights are normalised
  assert.deepEqual(parseState("#p=1,3&q=1,1").p, [0.25, 0.75]);
});

test("huge weights still give a distribution that sums to 1, and blank entries are not zeros", () => {
  // 1e308 + 1e308 overflows to Infinity: dividing by that sum gave p = [0, 0]
  const huge = parseState("#p=1e308,1e308&q=1e308,3e307");
  assert.deepEqual(huge.p, [0.5, 0.5]);
  assert.ok(Math.abs(huge.q.reduce((a, x) => a + x, 0) - 1) < 1e-15 && huge.q.every((x) => x > 0));
  // "1,,1", " ,1" and a trailing comma are garbage, not a 0 hidden in the address
  for (const hash of ["#p=1,,1&q=1,1,1", "#p=%20,1&q=1,1", "#p=1,1,&q=1,1,1"]) {
    assert.deepEqual([parseState(hash).p, parseState(hash).q], [DEFAULTS.p, DEFAULTS.q], hash);
  }
  assert.deepEqual(parseState("#logits=1,2,3,").logits, DEFAULTS.logits);
});

test("numbers are shown at four significant digits, infinity as ∞", () => {
  assert.equal(formatNumber(Infinity), "∞");
  assert.equal(formatNumber(NaN), "—");
  assert.equal(formatNumber(232), "232");
  assert.equal(formatNumber(0.0120087), "0.01201");
  assert.equal(formatNumber(4.248354255291589e-18), "4.248e-18");
  assert.equal(formatNumber(1.75), "1.750");
});

test("Play's step stays within the race whatever the frame clock gives", () => {
  // a busy machine's first animation frame can carry a timestamp before the click's: never a step -1
  assert.deepEqual([-50, -4, 0, 4, 6, 1500, 2995, 3000, 1e9].map(playedStep), [0, 0, 0, 0, 1, 150, 300, 300, 300]);
});

test("a shared link restores a distribution bit for bit (no renormalising of a sum a rounding off 1)", () => {
  const p = [0.07000000000000002, 0.4650000000000001, 0.2325, 0.2325];  // the page's own, summing to 1 + 2 ulp
  const q = [0.1, 0.2, 0.3, 0.4];
  const state = parseState(formatState({ ...DEFAULTS, p, q }));
  assert.deepEqual([state.p, state.q], [p, q]);
  assert.deepEqual(parseState("#p=2,2,4,8&q=1,1,1,1").p, [0.125, 0.125, 0.25, 0.5]);  // weights still normalised
});
