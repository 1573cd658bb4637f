// The page's words in English and Chinese.  Terms come from the one glossary shared with the Chinese
// report (lab/i18n/glossary.json): "{key}" is replaced by glossary[key][lang], "{^key}" capitalised in English.

export const LANGUAGES = ["en", "zh"];

export const STRINGS = {
  page_title: { en: "Why {cross_entropy}? The argument, live", zh: "为什么用{cross_entropy}？可交互的推导" },
  intro: {
    en: "Every number on this page is computed in your browser, in float64, by functions tested against crossent's Python library to 12 digits. Move any control: the address keeps the view, so a link shares it.",
    zh: "本页每个数字都由浏览器以 float64 计算，所用函数已与 crossent 的 Python 库比对到 12 位有效数字。拖动任一控件即可；地址栏保存当前视图，复制链接即可分享。",
  },
  language: { en: "Language", zh: "语言" },
  unit: { en: "Unit", zh: "单位" },
  contents: { en: "Contents", zh: "目录" },
  bits_word: { en: "{bits}", zh: "{bits}" },
  nats_word: { en: "{nats}", zh: "{nats}" },

  s1_title: { en: "1. Information: {entropy}, {cross_entropy}, {kl_divergence}", zh: "1. 信息：{entropy}、{cross_entropy}与{kl_divergence}" },
  s1_text: {
    en: "p is the {true_distribution}, q the model's {predicted_distribution}. Drag the bars or use the sliders. H(p, q) = H(p) + KL(p‖q): with p fixed, lowering the {cross_entropy} lowers the {kl_divergence}. Neither is symmetric.",
    zh: "p 是{true_distribution}，q 是模型的{predicted_distribution}。拖动柱子或使用滑块。H(p, q) = H(p) + KL(p‖q)：p 固定时，降低{cross_entropy}就是降低{kl_divergence}。两者都不对称。",
  },
  outcomes: { en: "Outcomes", zh: "结果个数" },
  presets: { en: "Presets", zh: "预设" },
  preset_coin: { en: "A fair and a rigged coin", zh: "公平硬币与作弊硬币" },
  preset_readme: { en: "The README's 4 outcomes", zh: "README 中的 4 个结果" },
  preset_lab: { en: "The lab's example", zh: "实验 6 的例子" },
  preset_zero: { en: "q = 0 where p > 0", zh: "p > 0 处 q = 0" },
  dist_p: { en: "p, the {true_distribution}", zh: "p，{true_distribution}" },
  dist_q: { en: "q, the {predicted_distribution}", zh: "q，{predicted_distribution}" },
  m_Hp: { en: "{^entropy} H(p)", zh: "{entropy} H(p)" },
  m_Hq: { en: "{^entropy} H(q)", zh: "{entropy} H(q)" },
  m_Hpq: { en: "{^cross_entropy} H(p, q)", zh: "{cross_entropy} H(p, q)" },
  m_Hqp: { en: "{^cross_entropy} H(q, p)", zh: "{cross_entropy} H(q, p)" },
  m_KLpq: { en: "KL(p‖q)", zh: "KL(p‖q)" },
  m_KLqp: { en: "KL(q‖p)", zh: "KL(q‖p)" },
  m_JS: { en: "{js_divergence} JS(p, q)", zh: "{js_divergence} JS(p, q)" },
  m_identity: { en: "H(p, q) − H(p) − KL(p‖q)", zh: "H(p, q) − H(p) − KL(p‖q)" },
  infinite_note: {
    en: "q gives probability 0 to an outcome that p can produce: coding it would take infinitely many bits, so the {cross_entropy} and the {kl_divergence} are ∞.",
    zh: "q 给 p 可能产生的结果分配了概率 0：为它编码需要无穷多比特，所以{cross_entropy}和{kl_divergence}为 ∞。",
  },
  sampling_title: { en: "{^sampling}", zh: "{sampling}" },
  sampling_text: {
    en: "Draw outcomes x from p and pay −log q(x) for each: the running mean converges to H(p, q).",
    zh: "从 p 中抽取结果 x，每次付出 −log q(x)：累计平均收敛到 H(p, q)。",
  },
  draw_1: { en: "Draw 1", zh: "抽 1 次" },
  draw_100: { en: "Draw 100", zh: "抽 100 次" },
  draw_1000: { en: "Draw 1000", zh: "抽 1000 次" },
  reset: { en: "Reset", zh: "重置" },
  draws: { en: "Draws", zh: "抽样次数" },
  running_mean: { en: "Running mean of −log q(x)", zh: "−log q(x) 的累计平均" },

  s2_title: { en: "2. The saturated {neuron}", zh: "2. {saturation}的{neuron}" },
  s2_text: {
    en: "One sigmoid {neuron} a = σ(wx + b) with x = 1 and target y = 0, trained by {gradient_descent} from the same start with the same {learning_rate} η: once with {mse}, once with {cross_entropy}, each with its true {gradient}. From (2, 2) the {output} starts at 0.98, confidently wrong, and the MSE gradient carries σ′(z).",
    zh: "一个 sigmoid {neuron} a = σ(wx + b)，x = 1，目标 y = 0；从同一起点、以同一{learning_rate} η 做{gradient_descent}：一次用{mse}，一次用{cross_entropy}，各用其真实{gradient}。从 (2, 2) 出发，{output}为 0.98，错得很自信，而 MSE 的梯度带着 σ′(z)。",
  },
  start_w: { en: "Start {weight} w", zh: "初始{weight} w" },
  start_b: { en: "Start {bias} b", zh: "初始{bias} b" },
  eta: { en: "{^learning_rate} η", zh: "{learning_rate} η" },
  shown_step: { en: "Shown {step}", zh: "显示的{step}" },
  play: { en: "Play", zh: "播放" },
  nielsen_switch: { en: "Nielsen's update rule for cross-entropy", zh: "{cross_entropy}改用 Nielsen 的更新规则" },
  nielsen_preset: { en: "Nielsen's η = 0.005", zh: "Nielsen 的 η = 0.005" },
  col_loss: { en: "{^loss_function}", zh: "{loss_function}" },
  col_a: { en: "{^output} a at the shown {step}", zh: "显示{step}的{output} a" },
  col_value: { en: "Loss at the shown {step}", zh: "显示{step}的损失" },
  col_steps: { en: "Steps until a < 0.5", zh: "a < 0.5 所需步数" },
  never: { en: "never", zh: "未达到" },
  name_mse: { en: "{^mse}", zh: "{mse}" },
  name_ce: { en: "{^cross_entropy}", zh: "{cross_entropy}" },
  name_nielsen: { en: "{^cross_entropy}, Nielsen's rule", zh: "{cross_entropy}，Nielsen 规则" },
  nielsen_text: {
    en: "Nielsen's animation steps by dC/da = 1/(1 − a) where the true gradient dC/dz is a: it divides by σ′(z) once more, so near saturation its steps are 1/σ′(z) times too large, and his η = 0.005 looks fast. With the true gradient and this η, the output after 300 steps is",
    zh: "Nielsen 的动画按 dC/da = 1/(1 − a) 更新，而真实梯度 dC/dz 是 a：它又除了一次 σ′(z)，所以在饱和区步长大了 1/σ′(z) 倍，他的 η = 0.005 才显得很快。用真实梯度和这个 η，300 步后的输出是",
  },

  s3_title: { en: "3. The {loss_surface} J(w, b)", zh: "3. {loss_surface} J(w, b)" },
  s3_text: {
    en: "Click a surface, or focus it and use the arrow keys, to set the start; the white path is the race above, up to the shown step (Play animates it). Hatched: {negative_curvature}, where the surface bends down. Red: the {plateau}, |∇J| < 0.01 while the output is still wrong (a > 0.5). Grid: 161 × 161 points over [−4, 4]², as in the lab.",
    zh: "点击曲面，或聚焦后用方向键，设置起点；白色路径就是上面的比赛，画到显示的步（“播放”会让它动起来）。斜线：{negative_curvature}，曲面向下弯。红色：{plateau}，输出仍然错误 (a > 0.5) 而 |∇J| < 0.01。网格：[−4, 4]² 上 161 × 161 个点，与实验相同。",
  },
  surface_label: { en: "{^loss_surface} of {name}: arrow keys move the start", zh: "{name}的{loss_surface}：方向键移动起点" },
  negative_share: { en: "{^negative_curvature} (share of the grid)", zh: "{negative_curvature}（占网格比例）" },
  plateau_share: { en: "{^plateau} (share of the grid)", zh: "{plateau}（占网格比例）" },
  J_start: { en: "J at the start", zh: "起点处的 J" },

  s4_title: { en: "4. The vanishing factor σ′(z)", zh: "4. {vanishing_gradient}的因子 σ′(z)" },
  s4_text: {
    en: "With target y = 0, the {cross_entropy} {gradient} is ∂L/∂z = a − y; the {mse} gradient is (a − y)·σ′(z). Their ratio is σ′(z): at most 0.25, and 4.5 × 10⁻⁵ at z = 10.",
    zh: "目标 y = 0 时，{cross_entropy}的{gradient}是 ∂L/∂z = a − y；{mse}的梯度是 (a − y)·σ′(z)。两者之比就是 σ′(z)：最大 0.25，在 z = 10 处只有 4.5 × 10⁻⁵。",
  },
  z_slider: { en: "Pre-activation z", zh: "预激活 z" },
  z_exact: { en: "z (exact value)", zh: "z（精确值）" },
  v_sigmoid: { en: "σ(z)", zh: "σ(z)" },
  v_derivative: { en: "σ′(z), the {derivative}", zh: "σ′(z)，{derivative}" },
  v_ce: { en: "∂L/∂z, {cross_entropy}", zh: "∂L/∂z，{cross_entropy}" },
  v_mse: { en: "∂L/∂z, {mse}", zh: "∂L/∂z，{mse}" },
  v_ratio: { en: "Ratio MSE / cross-entropy", zh: "比值 MSE / {cross_entropy}" },

  s5_title: { en: "5. {^softmax} and {temperature}", zh: "5. {softmax}与{temperature}" },
  s5_text: {
    en: "p = softmax(z / T), from Nielsen's logits 2.5, −1, 3.2, 0.5. Applying softmax twice (probabilities fed to a loss that applies softmax again) squeezes them toward uniform: even a perfect one-hot input costs log(e + C − 1) − 1 nats, a floor the loss never goes below.",
    zh: "p = softmax(z / T)，初值取 Nielsen 的 logits 2.5、−1、3.2、0.5。softmax 用了两次（把概率交给又做一次 softmax 的损失）会把分布压向均匀：即使输入是完美的 one-hot，损失也有 log(e + C − 1) − 1 奈特，损失永远降不到这个下限以下。",
  },
  logit: { en: "Logit z{k}", zh: "logit z{k}" },
  temperature_T: { en: "{^temperature} T", zh: "{temperature} T" },
  target_class: { en: "Target {class}", zh: "目标{class}" },
  probabilities: { en: "p = softmax(z / T)", zh: "p = softmax(z / T)" },
  twice_probabilities: { en: "softmax(p): applied twice", zh: "softmax(p)：用了两次" },
  ce_nats: { en: "{^cross_entropy} (nats)", zh: "{cross_entropy}（奈特）" },
  twice_loss: { en: "With softmax applied twice", zh: "softmax 用了两次" },
  twice_floor: { en: "Floor of that mistake", zh: "这个错误的损失下限" },

  s6_title: { en: "6. {^calibration}", zh: "6. {calibration}" },
  s6_text: {
    en: "The lab's digits model (experiment 9: 64-30-10 sigmoid network, softmax cross-entropy, seed 0, 30 epochs; {test_set} of 360 images). Dividing the logits by a {temperature} T changes the {confidence} but never the predicted class: the {accuracy} stays, ECE and NLL move. Bars: accuracy per confidence bin; the diagonal is perfect calibration.",
    zh: "实验 9 的手写数字模型（64-30-10 sigmoid 网络，softmax {cross_entropy}，随机种子 0，30 轮；{test_set} 360 张图）。把 logits 除以{temperature} T 会改变{confidence}，但不改变预测的类别：{accuracy}不变，ECE 和 NLL 改变。柱子：每个置信度区间的准确率；对角线是完美校准。",
  },
  v_ece: { en: "{ece}", zh: "{ece}" },
  v_nll: { en: "{nll}, nats", zh: "{nll}，奈特" },
  v_accuracy: { en: "{^accuracy}", zh: "{accuracy}" },
  v_lab_ece: { en: "The lab's ECE at T = 1 (Python)", zh: "实验在 T = 1 时的 ECE(Python)" },
  reset_T: { en: "T = 1", zh: "T = 1" },
  conf_axis: { en: "{^confidence}", zh: "{confidence}" },
  reliability: { en: "{^reliability_diagram}", zh: "{reliability_diagram}" },

  s7_title: { en: "7. The ReLU question", zh: "7. ReLU 问题" },
  s7_text: {
    en: "A confidently wrong {output_layer}: unit 0 has logit m, the others 0, and the true {class} is 1 (of 10). The bars are |∂ℓ/∂z₀|, how hard each output/loss pair pushes back (log scale). A sigmoid or softmax output under MSE carries the saturating factor; cross-entropy does not. ReLU in the {hidden_layer} changes only what the hidden units pass back, below.",
    zh: "一个错得很自信的{output_layer}：单元 0 的 logit 为 m，其余为 0，真实{class}是 1（共 10 类）。柱子是 |∂ℓ/∂z₀|，即每种输出/损失组合往回推的力度（对数刻度）。sigmoid 或 softmax 输出配 MSE 带着饱和因子；{cross_entropy}没有。{hidden_layer}用 ReLU 只改变隐藏单元往回传的因子，见下。",
  },
  margin: { en: "Margin m of the wrong unit", zh: "错误单元的 logit m" },
  hidden_z: { en: "Hidden pre-activation z", zh: "隐藏单元预激活 z" },
  hidden_factor: { en: "Factor a hidden unit passes back", zh: "隐藏单元往回传的因子" },
  head_softmax_ce: { en: "{softmax} + {cross_entropy}", zh: "{softmax} + {cross_entropy}" },
  head_sigmoid_bce: { en: "{sigmoid} + {binary_cross_entropy}", zh: "{sigmoid} + {binary_cross_entropy}" },
  head_softmax_mse: { en: "{softmax} + MSE", zh: "{softmax} + MSE" },
  head_sigmoid_mse: { en: "{sigmoid} + MSE", zh: "{sigmoid} + MSE" },
  head_linear_mse: { en: "linear + MSE", zh: "线性 + MSE" },
  relu_answer: {
    en: "The answer: ReLU removes saturation in the hidden layer (its factor is 1 for z > 0, but 0 for z < 0: a dead unit passes nothing), not at a sigmoid or softmax output. Cross-entropy is still what you want there.",
    zh: "答案：ReLU 消除的是隐藏层的饱和（z > 0 时因子为 1，但 z < 0 时为 0：死掉的单元什么也传不回），而不是 sigmoid 或 softmax 输出的饱和。输出层仍然应该用{cross_entropy}。",
  },

  s8_title: { en: "8. English and 中文, and sharing", zh: "8. English 与中文，以及分享" },
  s8_text: {
    en: "The page speaks English and Chinese with the terms of the Chinese report (one glossary). The state of every control is kept in the address, so this link reopens exactly this view:",
    zh: "本页提供英文和中文，术语与中文报告一致（同一份术语表）。每个控件的状态都保存在地址里，下面的链接会打开完全相同的视图：",
  },
  share_link: { en: "link to this view", zh: "此视图的链接" },
  footer: {
    en: "crossent explorer: one file, no network, no third-party code. Its numbers are tested against crossent.measures, crossent.losses and the lab.",
    zh: "crossent explorer：单个文件，无需网络，不含第三方代码。数字已与 crossent.measures、crossent.losses 和实验比对。",
  },
};

// The text of `key` in `lang`, glossary terms filled in; `vars` fills "{name}"-style slots that are not terms.
export function translate(key, lang, glossary, vars = {}) {
  const entry = STRINGS[key];
  if (!entry) throw new Error(`no string ${key}`);
  return entry[lang].replace(/\{(\^?)(\w+)\}/g, (whole, cap, name) => {
    // a value passed as "{term}" is itself a glossary term, in the page's language
    if (name in vars) return String(vars[name]).replace(/^\{(\w+)\}$/, (_, t) => glossary[t]?.[lang] ?? `{${t}}`);
    const term = glossary[name];
    if (!term || typeof term !== "object") throw new Error(`${key}: no glossary term ${name}`);
    const text = term[lang];
    return cap && lang === "en" ? text[0].toUpperCase() + text.slice(1) : text;
  });
}

// Fill every [data-i18n] element's text and every [data-i18n-label] element's aria-label under `root`.
export function applyLanguage(root, lang, glossary) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = translate(el.dataset.i18n, lang, glossary, el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : {});
  }
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", translate(el.dataset.i18nLabel, lang, glossary,
      el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : {}));
  }
}
