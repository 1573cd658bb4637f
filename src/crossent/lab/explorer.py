"""The explorer: the article's argument as one live, self-contained page (``crossent explore``).

The page's sources are ES modules in ``static/explorer/`` (the Node tests
import them).  Browsers refuse module imports and ``fetch()`` from
``file://``, so :func:`build_page` writes one ``index.html`` with every
module inlined (each wrapped in a function, its ``import`` lines turned into
plain assignments) and its data (the glossary, the lab's calibration data)
in ``<script type="application/json">`` tags.  Nothing is loaded from the
network.

The numbers on the page are tested against crossent's own: :func:`export_vectors`
computes them with :mod:`crossent.measures`, :mod:`crossent.losses` and the lab,
and ``python -m crossent.lab.explorer --export-vectors`` writes them (with the
calibration data the page shows) to committed JSON files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import webbrowser
from pathlib import Path

import numpy as np

STATIC = Path(__file__).parent / "static" / "explorer"
CALIBRATION_DATA = STATIC / "data" / "calibration.json"
GLOSSARY = Path(__file__).parent / "i18n" / "glossary.json"
DEFAULT_OUT = "crossent-explorer"
DEFAULT_VECTORS = Path("tests") / "js" / "vectors.json"
ENTRY = "main.js"
TITLE = "<title>crossent explorer</title>"  # in page.html's head: marks an index.html that explore may replace
LOGIT_DIGITS = 7  # significant digits of the exported logits: the page and the vectors both use the rounded values

_IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"\./([\w.-]+\.js)";\s*$')
_EXPORT = re.compile(r"^export\s+(?:async\s+)?(function\*?|const|let|class)\s+(\w+)")


# --------------------------------------------------------------------------- the page


def _module_name(file):
    return "__module_" + re.sub(r"\W", "_", file[:-3])


def bundle(entry=ENTRY, directory=STATIC):
    """The modules reachable from `entry`, in dependency order, as one classic script.

    Each module becomes ``const __module_NAME = (() => { ...; return {exports}; })();``
    and each of its ``import { a, b as c } from "./x.js";`` lines becomes
    ``const { a, b: c } = __module_x;``.  Only single-line named imports of
    sibling files are allowed, so the rewrite is exact.

    Examples:
        >>> "const __module_math = (() => {" in bundle()
        True
    """
    order, seen = [], set()

    def visit(file, stack):
        if file in seen:
            return
        if file in stack:
            raise ValueError(f"import cycle: {' -> '.join(stack + [file])}")
        source = (directory / file).read_text(encoding="utf-8")
        for line in source.splitlines():
            if line.startswith("import"):
                match = _IMPORT.match(line)
                if not match:
                    raise ValueError(f"{file}: unsupported import (one line, named, from a sibling): {line!r}")
                visit(match.group(2), stack + [file])
        seen.add(file)
        order.append((file, source))

    visit(entry, [])
    parts = ['"use strict";']
    for file, source in order:
        body, exports = [], []
        for line in source.splitlines():
            match = _IMPORT.match(line)
            if match:
                names = ", ".join(n.strip().replace(" as ", ": ") for n in match.group(1).split(",") if n.strip())
                body.append(f"const {{ {names} }} = {_module_name(match.group(2))};")
                continue
            export = _EXPORT.match(line)
            if export:
                exports.append(export.group(2))
                line = line[len("export "):].lstrip()
            elif line.startswith("export"):
                raise ValueError(f"{file}: unsupported export: {line!r}")
            body.append(line)
        parts.append(f"// ---- {file}\nconst {_module_name(file)} = (() => {{\n" + "\n".join(body)
                     + f"\nreturn {{ {', '.join(exports)} }};\n}})();")
    return "\n".join(parts) + "\n"


def _json_script(element_id, data):
    # "</" inside a script element would end it early; JSON reads "<\\/" as "</"
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def build_page():
    """The explorer as one HTML string: the template, its style, the data and the bundled script.

    Examples:
        >>> page = build_page()
        >>> page.startswith("<!DOCTYPE html>"), page.count('<script type="application/json"')
        (True, 2)
    """
    template = (STATIC / "page.html").read_text(encoding="utf-8")
    style = (STATIC / "page.css").read_text(encoding="utf-8")
    glossary = json.loads(GLOSSARY.read_text(encoding="utf-8"))
    calibration_data = json.loads(CALIBRATION_DATA.read_text(encoding="utf-8"))
    script = bundle()
    if "</script" in script.lower():
        raise ValueError("a module contains '</script', which would end the inlined script early")
    data = _json_script("glossary", glossary) + "\n" + _json_script("calibration-data", calibration_data)
    return (template.replace("/*STYLE*/", style).replace("<!--DATA-->", data)
            .replace("/*SCRIPT*/", script))


def write_explorer(out=DEFAULT_OUT):
    """Write the explorer into the folder `out` (created if needed); return the path of its ``index.html``.

    Examples:
        >>> import tempfile
        >>> write_explorer(tempfile.mkdtemp()).name
        'index.html'
    """
    if not str(out):
        raise ValueError("`out` (--out): the folder for the explorer must be named (got an empty path)")
    folder = Path(out)
    index = folder / "index.html"
    if index.exists() and not (index.is_file() and _is_explorer_page(index)):
        raise ValueError(f"`out` (--out): {index} exists and is not a crossent explorer page; it is left as it is, choose "
                         "another folder")
    folder.mkdir(parents=True, exist_ok=True)
    page = build_page()
    partial = folder / f".index.html.tmp-{os.getpid()}"
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, index)  # the page appears whole or not at all (a reload never sees half of it)
    finally:
        partial.unlink(missing_ok=True)
    return index


def _is_explorer_page(path) -> bool:
    """Whether `path` starts like a page that :func:`build_page` wrote (so it may be replaced)."""
    with open(path, "rb") as file:
        return TITLE.encode() in file.read(4096)


def explore_command(args):
    """``crossent explore``: write the page, open it if asked; return ``(text, data)``."""
    index = write_explorer(args.out)
    opened = bool(args.open) and webbrowser.open(index.resolve().as_uri())
    size = index.stat().st_size
    text = f"wrote {index} ({size / 1024:.0f} KiB, one self-contained file; open it in any browser)"
    if args.open and not opened:
        text += "; no browser could be started, open the file yourself"
    return text, {"index": str(index), "bytes": size, "opened": opened}


def add_explore_arguments(parser):
    """Add the ``explore`` options to an ``argparse`` parser."""
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder for index.html (default: ./{DEFAULT_OUT}/), created if needed")
    parser.add_argument("--open", action="store_true", help="open the page in the default web browser")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


# --------------------------------------------------------------------------- the test vectors


def _plain(value):
    """NumPy -> JSON-ready Python; non-finite floats become the strings JavaScript's Number() reads."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        return value if math.isfinite(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


#: section 1's cases: the presets of the page, and extremes (zeros in p, q = 0 where p > 0)
INFORMATION_CASES = {
    "fair_coin_vs_rigged": ([0.5, 0.5], [0.9, 0.1]),
    "readme_4_outcomes": ([1 / 2, 1 / 4, 1 / 8, 1 / 8], [1 / 4, 1 / 4, 1 / 4, 1 / 4]),
    "lab_experiment_6": ([0.5, 0.25, 0.125, 0.125], [0.05, 0.15, 0.4, 0.4]),
    "p_with_zeros": ([0.0, 0.5, 0.0, 0.5], [0.1, 0.2, 0.3, 0.4]),
    "q_zero_where_p_positive": ([0.2, 0.3, 0.5], [0.5, 0.5, 0.0]),
    "certain_p": ([1.0, 0.0], [0.5, 0.5]),
    "disjoint": ([1.0, 0.0], [0.0, 1.0]),
    "tiny_q": ([0.25, 0.25, 0.25, 0.25], [1e-300, 0.5 - 1e-300, 0.25, 0.25]),
    "eight_outcomes": ([0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05], [0.125] * 8),
}


def _information_vectors():
    from .. import measures

    cases = []
    for name, (p, q) in INFORMATION_CASES.items():
        case = {"name": name, "p": p, "q": q}
        for unit, base in (("nats", None), ("bits", 2)):
            case[unit] = {"Hp": measures.entropy(p, base=base), "Hq": measures.entropy(q, base=base),
                          "Hpq": measures.cross_entropy(p, q, base=base), "Hqp": measures.cross_entropy(q, p, base=base),
                          "KLpq": measures.kl_divergence(p, q, base=base), "KLqp": measures.kl_divergence(q, p, base=base),
                          "JS": measures.js_divergence(p, q, base=base)}
        cases.append(case)
    probs = [0.0, 1e-300, 0.01, 0.25, 0.5, 0.99, 1.0]
    return cases, [{"p": p, "nats": measures.self_information(p), "bits": measures.self_information(p, base=2)}
                   for p in probs]


def _neuron_vectors():
    from .. import losses
    from .experiments_neuron import SATURATED, surface_curvature, train_neuron
    from .models import neuron_loss_and_grad_z

    zs = [-40.0, -20.0, -10.0, -5.0, -2.0, -0.5, 0.0, 0.5, 2.0, 4.0, 5.0, 10.0, 20.0, 40.0]
    sigmoid = [{"z": z, "sigmoid": losses.sigmoid(z), "derivative": losses.sigmoid_derivative(z),
                "log_sigmoid": losses.log_sigmoid(z)} for z in zs]
    neuron_loss = [{"z": z, "y": y, **{loss: [float(v) for v in neuron_loss_and_grad_z(z, y, loss)]
                                        for loss in ("mse", "cross_entropy")}}
                   for z in zs for y in (0.0, 1.0)]
    races = []
    for w, b, eta in [(2.0, 2.0, 0.15), (0.6, 0.9, 0.15), (2.0, 2.0, 0.005), (-1.5, 3.0, 0.6)]:
        for loss in ("mse", "cross_entropy"):
            h = train_neuron(w, b, loss, dict(SATURATED, learning_rate=eta))
            races.append({"w": w, "b": b, "eta": eta, "steps": SATURATED["steps"], "loss": loss, "rule": "true",
                          "a": h["a"], "loss_values": h["loss"], "w_path": h["w"], "b_path": h["b"]})
    for eta in (0.005, 0.15):  # Nielsen's animation: steps by dC/da = (a - y) / (a (1 - a)) instead of dC/dz = a - y
        races.append({"w": 2.0, "b": 2.0, "eta": eta, "steps": SATURATED["steps"], "loss": "cross_entropy",
                      "rule": "nielsen", **_nielsen_race(2.0, 2.0, eta, SATURATED["steps"])})
    surface = []
    for w in (-4.0, -1.0, 0.0, 0.7, 2.0, 4.0):
        for b in (-4.0, 0.0, 1.5, 4.0):
            for loss in ("mse", "cross_entropy"):
                J, grad_norm, min_eig = surface_curvature(np.float64(w), np.float64(b), 1.0, 0.0, loss)
                surface.append({"w": w, "b": b, "loss": loss, "J": J, "grad_norm": grad_norm, "min_eig_fd": min_eig})
    fractions = {}
    for n in (81, 161):  # the quick and the full report's grids
        grid_w, grid_b = np.meshgrid(np.linspace(-4.0, 4.0, n), np.linspace(-4.0, 4.0, n))
        for loss in ("mse", "cross_entropy"):
            J, grad_norm, min_eig = surface_curvature(grid_w, grid_b, 1.0, 0.0, loss)
            a = losses.sigmoid(grid_w + grid_b)
            fractions[f"{loss}_{n}"] = {"negative": float((min_eig < -1e-8).mean()),
                                        "plateau": float(((grad_norm < 1e-2) & (a > 0.5)).mean())}
    return sigmoid, neuron_loss, races, surface, fractions


def _nielsen_race(w, b, eta, steps):
    """Nielsen's chapter-3 update: w, b -= eta * dC/da * (x, 1) with x = 1, y = 0: dC/da = 1 / (1 - a) = 1 / sigma(-z)."""
    from .. import losses

    a_path = []
    for step in range(steps + 1):
        a = float(losses.sigmoid(w + b))
        a_path.append(a)
        if step < steps:
            g = 1.0 / float(losses.sigmoid(-(w + b)))
            w, b = w - eta * (g * 1.0), b - eta * g
    return {"a": a_path}


def _softmax_vectors():
    from .. import losses

    cases = []
    for logits, T, target in [([2.5, -1.0, 3.2, 0.5], 1.0, 2), ([2.5, -1.0, 3.2, 0.5], 1.0, 0),
                              ([2.5, -1.0, 3.2, 0.5], 0.25, 1), ([2.5, -1.0, 3.2, 0.5], 4.0, 3),
                              ([40.0, -40.0, 0.0, 5.0], 0.1, 0), ([1.0, 1.0, 1.0, 1.0], 2.0, 1)]:
        scaled = np.array(logits) / T
        p = losses.softmax(scaled)
        onehot = np.eye(len(logits))[target]
        cases.append({"logits": logits, "T": T, "target": target, "p": p,
                      "loss": losses.softmax_cross_entropy(scaled[None, :], [target], backend="reference"),
                      "twice_loss": losses.softmax_cross_entropy(p[None, :], [target], backend="reference"),
                      "twice_floor": losses.softmax_cross_entropy(onehot[None, :], [target], backend="reference"),
                      "twice_p": losses.softmax(p)})
    return cases


def _head_vectors():
    from .. import losses
    from .models import HEADS, head_loss_and_grad

    cases = []
    for margin in (0.0, 2.0, 5.0, 10.0, 20.0):
        z = np.zeros((1, 10))
        z[0, 0] = margin
        cases.append({"margin": margin, "classes": 10,
                      "grad": {head: abs(float(head_loss_and_grad(z, np.array([1]), head)[1][0, 0])) for head in HEADS}})
    hidden = [{"z": z, "sigmoid": losses.sigmoid_derivative(z), "tanh": 1.0 - np.tanh(z) ** 2, "relu": float(z > 0)}
              for z in (-6.0, -1.0, 0.0, 0.5, 3.0, 8.0)]
    return cases, hidden


def calibration_data(seed=0):
    """The lab's experiment-9 model (softmax cross-entropy, full setting): its test logits and labels.

    Trained as :func:`crossent.lab.experiments_network.train_run` trains it (a
    few seconds); the logits are rounded to :data:`LOGIT_DIGITS` significant digits.
    """
    from .data import digits_split
    from .experiments_network import _spec, sizes_for
    from .models import MLP

    spec = _spec(head="softmax_ce", seed=seed, epochs=sizes_for(False)["epochs"], split_seed=seed)
    X_train, y_train, X_test, y_test = digits_split(spec["split_seed"])
    net = MLP(spec["sizes"], hidden=spec["hidden"], head=spec["head"], init=spec["init"], seed=spec["seed"])
    history = net.fit(X_train, y_train, X_test, y_test, epochs=spec["epochs"], batch_size=spec["batch_size"],
                      learning_rate=spec["learning_rate"], seed=spec["seed"] + 1000)
    logits = [[float(f"{v:.{LOGIT_DIGITS}g}") for v in row] for row in net.logits(X_test)]
    return {"about": "test-set logits of the lab's experiment-9 model (digits 64-30-10, sigmoid hidden layer, "
                     f"softmax cross-entropy, seed {seed}, {spec['epochs']} epochs), {LOGIT_DIGITS} significant digits",
            "seed": seed, "epochs": spec["epochs"], "labels": y_test.tolist(), "logits": logits,
            "lab": {"ece": history["test_ece"][-1], "nll": history["test_nll"][-1],
                    "accuracy": history["test_accuracy"][-1]}}


def _calibration_vectors(data):
    from .. import losses, measures
    from .models import expected_calibration_error

    logits, labels = np.array(data["logits"]), np.array(data["labels"])
    cases = []
    for T in (0.5, 1.0, 1.25, 1.5, 2.0, 3.0):
        probs = losses.softmax(logits / T, axis=-1)
        ece, bins = expected_calibration_error(probs, labels)
        true_class = np.maximum(probs[np.arange(len(labels)), labels], 1e-12)
        cases.append({"T": T, "ece": ece, "nll": float(np.mean(measures.self_information(true_class))),
                      "accuracy": float(np.mean(probs.argmax(axis=1) == labels)), "edges": bins["edges"],
                      "count": bins["count"], "confidence": bins["confidence"], "bin_accuracy": bins["accuracy"]})
    return cases


def export_vectors(calibration=None):
    """Every test vector, computed by crossent; `calibration` is :func:`calibration_data`'s dict (trained if None)."""
    data = calibration_data() if calibration is None else calibration
    information, self_information = _information_vectors()
    sigmoid, neuron_loss, races, surface, fractions = _neuron_vectors()
    heads, hidden = _head_vectors()
    return _plain({"about": "written by `python -m crossent.lab.explorer --export-vectors`; do not edit",
                   "information": information, "self_information": self_information, "sigmoid": sigmoid,
                   "neuron_loss": neuron_loss, "races": races, "surface": surface, "surface_fractions": fractions,
                   "softmax": _softmax_vectors(), "heads": heads, "hidden": hidden,
                   "calibration": _calibration_vectors(data)})


def _dump(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def main(argv=None):
    """``python -m crossent.lab.explorer --export-vectors [--vectors PATH]``: regenerate the committed JSON."""
    parser = argparse.ArgumentParser(prog="python -m crossent.lab.explorer", description=main.__doc__)
    parser.add_argument("--export-vectors", action="store_true", help="write the calibration data and the test vectors")
    parser.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS, help=f"default: {DEFAULT_VECTORS}")
    args = parser.parse_args(argv)
    if not args.export_vectors:
        parser.print_help()
        return 0
    data = _plain(calibration_data())
    CALIBRATION_DATA.parent.mkdir(parents=True, exist_ok=True)
    CALIBRATION_DATA.write_text(_dump(data), encoding="utf-8")
    args.vectors.parent.mkdir(parents=True, exist_ok=True)
    args.vectors.write_text(_dump(export_vectors(data)), encoding="utf-8")
    print(f"wrote {CALIBRATION_DATA} and {args.vectors}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
