// The test vectors exported by `python -m crossent.lab.explorer --export-vectors`, and the comparison rule.
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";

const here = new URL(".", import.meta.url);
// JSON has no infinities: the export writes them as the strings "Infinity", "-Infinity", "NaN".
const revive = (key, value) => (value === "Infinity" || value === "-Infinity" || value === "NaN" ? Number(value) : value);

export const vectors = JSON.parse(readFileSync(new URL("vectors.json", here), "utf8"), revive);
export const calibrationData = JSON.parse(
  readFileSync(new URL("../../src/crossent/lab/static/explorer/data/calibration.json", here), "utf8"), revive);
export const glossary = JSON.parse(
  readFileSync(new URL("../../src/crossent/lab/i18n/glossary.json", here), "utf8"));

// |a - b| <= 1e-12 max(1, |b|) in float64; infinities and NaN must match exactly.
export function assertClose(actual, expected, what) {
  if (!Number.isFinite(expected)) {
    assert.ok(Object.is(actual, expected), `${what}: got ${actual}, expected ${expected}`);
    return;
  }
  const tolerance = 1e-12 * Math.max(1, Math.abs(expected));
  assert.ok(Math.abs(actual - expected) <= tolerance,
    `${what}: got ${actual}, expected ${expected} (difference ${actual - expected}, tolerance ${tolerance})`);
}

export function assertAllClose(actual, expected, what) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  expected.forEach((e, i) => assertClose(actual[i], e, `${what}[${i}]`));
}
