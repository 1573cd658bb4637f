// Section 5: softmax with a temperature, and the softmax-applied-twice mistake with its loss floor.
import { softmaxSection } from "./math.js";
import { showNumber } from "./format.js";
import { clear, scale, svgElement } from "./draw.js";

function bars(svg, p, target) {
  clear(svg);
  const x = scale(0, p.length, 20, 310);
  const y = scale(0, 1, 110, 8);
  svgElement("line", { x1: 20, x2: 310, y1: 110, y2: 110, stroke: "#888" }, svg);
  p.forEach((v, i) => {
    svgElement("rect", { x: x(i) + 6, width: x(1) - x(0) - 12, y: y(v), height: y(0) - y(v), fill: i === target ? "#1f77b4" : "#9ab" }, svg);
    svgElement("text", { x: x(i + 0.5), y: 125, "text-anchor": "middle" }, svg).textContent = String(i + 1);
  });
}

export function mountSoftmax(ctx) {
  const byId = (id) => document.getElementById(id);
  const out = (name) => document.querySelector(`[data-testid="${name}"]`);
  for (let k = 0; k < 4; k++) {
    byId(`logit-${k}`).addEventListener("input", (e) => {
      const logits = ctx.state().logits.slice();
      logits[k] = Number(e.target.value);
      ctx.set({ logits });
    });
  }
  byId("softmax-T").addEventListener("input", (e) => ctx.set({ T: Number(e.target.value) }));
  byId("softmax-target").addEventListener("change", (e) => ctx.set({ target: Number(e.target.value) }));

  return function render(state) {
    state.logits.forEach((v, k) => { byId(`logit-${k}`).value = String(v); showNumber(out(`logit-${k}`), v, 3); });
    byId("softmax-T").value = String(state.T);
    showNumber(out("softmax-T"), state.T, 3);
    byId("softmax-target").value = String(state.target);
    const s = softmaxSection(state.logits, state.T, state.target);
    s.p.forEach((v, k) => showNumber(out(`softmax-p${k}`), v));
    s.twiceP.forEach((v, k) => showNumber(out(`softmax-twice-p${k}`), v));
    showNumber(out("softmax-loss"), s.loss);
    showNumber(out("softmax-twice-loss"), s.twiceLoss);
    showNumber(out("softmax-floor"), s.twiceFloor);
    bars(byId("softmax-bars"), s.p, state.target);
    bars(byId("softmax-twice-bars"), s.twiceP, state.target);
  };
}
