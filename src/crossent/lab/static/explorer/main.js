// The page: read the state from the address, mount every section, re-render on every change.
import { applyLanguage, translate } from "./i18n.js";
import { formatState, parseState } from "./state.js";
import { mountInformation } from "./sec_information.js";
import { mountNeuron } from "./sec_neuron.js";
import { mountVanishing } from "./sec_vanishing.js";
import { mountSoftmax } from "./sec_softmax.js";
import { mountCalibration } from "./sec_calibration.js";
import { mountRelu } from "./sec_relu.js";

function readJson(id) {
  return JSON.parse(document.getElementById(id).textContent);
}

function start() {
  const data = { glossary: readJson("glossary"), calibration: readJson("calibration-data") };
  let state = parseState(location.hash);
  let shownLang = null;
  const ctx = {
    data,
    state: () => state,
    set(patch) {
      state = { ...state, ...patch };
      history.replaceState(null, "", location.pathname + location.search + formatState(state));
      render();
    },
    t: (key, vars) => translate(key, state.lang, data.glossary, vars),
  };
  const sections = [mountInformation, mountNeuron, mountVanishing, mountSoftmax, mountCalibration, mountRelu].map((mount) => mount(ctx));

  for (const button of document.querySelectorAll("[data-lang]")) {
    button.addEventListener("click", () => ctx.set({ lang: button.dataset.lang }));
  }
  for (const radio of document.querySelectorAll('input[name="unit"]')) {
    radio.addEventListener("change", () => ctx.set({ unit: radio.value, draws: state.draws }));
  }
  for (const link of document.querySelectorAll("[data-jump]")) {
    link.addEventListener("click", (e) => {
      e.preventDefault();
      document.getElementById(link.dataset.jump).scrollIntoView();
    });
  }
  window.addEventListener("hashchange", () => { state = parseState(location.hash); render(); });

  function render() {
    if (state.lang !== shownLang) {
      document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
      applyLanguage(document, state.lang, data.glossary);
      document.title = "crossent explorer · " + ctx.t("page_title");
      shownLang = state.lang;
    }
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === state.lang));
    }
    document.getElementById(`unit-${state.unit}`).checked = true;
    for (const el of document.querySelectorAll(".unit")) el.textContent = ctx.t(`${state.unit}_word`);
    for (const section of sections) section(state);
    document.getElementById("share-link").href = location.href;
    document.body.dataset.ready = "true";
  }
  render();
  window.explorerReadyMs = performance.now(); // time to interactive, read by the browser test
}

start();
