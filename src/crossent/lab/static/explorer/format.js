// How numbers are shown.  Each shown number is an element with data-testid and data-value, the full
// float64 (String(v) round-trips), beside its text at `digits` significant digits.

export function formatNumber(v, digits = 4) {
  if (v === Infinity) return "∞";
  if (v === -Infinity) return "−∞";
  if (Number.isNaN(v)) return "—";
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(digits - 1);
  return v.toPrecision(digits);
}

// Show `v` in `el`; `text` replaces the number's text (e.g. "never" for null).
export function showNumber(el, v, digits = 4, text = null) {
  el.dataset.value = v === null ? "null" : String(v);
  el.textContent = text !== null ? text : formatNumber(v, digits);
}
