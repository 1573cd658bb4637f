"""Run every experiment and write ``index.html``, ``results.json``, ``meta.json`` and the figures.

``results.json`` holds every measured number of the page (the HTML is
rendered from the same dict, after rounding to 6 significant digits), and is
byte-identical for two runs with the same seed.  What changes from run to
run -- date, wall time, versions, ``--jobs`` -- goes to ``meta.json`` and the
page header only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ._common import Context, pct
from .models import HEAD_LABELS

DEFAULT_OUT = "crossent-report"


def experiments():
    """The experiment functions in page order (imported here: matplotlib loads only when a report runs)."""
    from .experiments_network import EXPERIMENTS as NETWORK_EXPERIMENTS
    from .experiments_neuron import EXPERIMENTS as NEURON_EXPERIMENTS

    return [*NEURON_EXPERIMENTS, *NETWORK_EXPERIMENTS]


def _versions():
    import matplotlib
    import numpy
    import scipy
    import sklearn

    from .. import __version__

    return {"crossent": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "matplotlib": matplotlib.__version__, "scikit-learn": sklearn.__version__}


def _pool_map(executor):
    def pool_map(function, items):
        return list(executor.map(function, items, chunksize=1))

    return pool_map


def run_report(out=DEFAULT_OUT, *, quick=False, seed=0, jobs=1, progress=None):
    """Run the experiments, write the report into `out`, and return ``(results, meta)``.

    Args:
        out: output folder (created if needed).
        quick: smaller networks runs (fewer epochs and seeds) for tests and a first look.
        seed: the seed every experiment derives its seeds from.
        jobs: processes for independent training runs (1: no pool); results do not depend on it.
        progress: show a tqdm bar on stderr; None means "if stderr is a terminal".

    Examples:
        >>> import tempfile
        >>> results, meta = run_report(tempfile.mkdtemp(), quick=True, progress=False)  # doctest: +SKIP
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"`jobs` must be a positive integer, got {jobs!r}.")
    from tqdm import tqdm

    from .figures import house_style

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    show = sys.stderr.isatty() if progress is None else bool(progress)
    executor = None
    if jobs > 1:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        executor = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    try:
        ctx = Context(out_dir=out, quick=bool(quick), seed=seed)
        if executor is not None:
            ctx.map = _pool_map(executor)
        sections = []
        with tqdm(experiments(), desc="crossent report", unit="experiment", file=sys.stderr, disable=not show) as bar:
            for experiment in bar:
                bar.set_postfix_str(experiment.__name__)
                with house_style():
                    sections.append(experiment(ctx))
    finally:
        if executor is not None:
            executor.shutdown()
    results = {"seed": seed, "quick": bool(quick), "experiments": sections}
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    meta = {"date": date, "seed": seed, "quick": bool(quick), "jobs": jobs,
            "run_time_s": round(time.perf_counter() - started, 1), "versions": _versions()}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (out / "index.html").write_text(render_html(results, meta), encoding="utf-8")
    return results, meta


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 0 auto;
       padding: 0 24px 48px; color: #222; line-height: 1.5; }
header { border-bottom: 2px solid #1f77b4; margin-bottom: 16px; }
h1 { margin-bottom: 4px; } h2 { margin-top: 40px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #555; font-size: 0.9em; }
nav ol { columns: 2; font-size: 0.95em; list-style: none; padding-left: 1em; }
figure { margin: 12px 0; position: relative; left: 50%; transform: translateX(-50%); width: min(96vw, 1560px); text-align: center; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.9em; }
caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
th, td { border: 1px solid #ccc; padding: 3px 10px; } th { background: #f3f6fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
.headline { background: #f3f6fa; border-left: 4px solid #1f77b4; padding: 8px 14px; }
"""


def format_cell(value):
    """Text of a table cell: floats with 6 significant digits (as stored in results.json).

    Examples:
        >>> [format_cell(v) for v in (0.25, 4.53958e-05, 17, None, "never")]
        ['0.25', '4.53958e-05', '17', '—', 'never']
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _table_html(tab):
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in tab["columns"])
    body = []
    for row in tab["rows"]:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td class="{"num" if numeric else "txt"}">{html.escape(format_cell(value))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><caption>{html.escape(tab['caption'])}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def render_html(results, meta):
    """The page: header, table of contents, headlines, one section per experiment, the ReLU answer."""
    esc = html.escape
    sections = results["experiments"]
    by_id = {s["id"]: s for s in sections}
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>crossent lab report</title>", f"<style>{CSS}</style></head><body>",
        "<header><h1>Why cross-entropy? The article's argument, measured</h1>",
        f'<p class="meta">Run {esc(meta["date"])} · seed {meta["seed"]} · quick: {"yes" if meta["quick"] else "no"} · '
        f'jobs {meta["jobs"]} · run time {meta["run_time_s"]} s<br>{esc(versions)}</p>',
        '<p class="meta">Every number below was computed by this run (see <a href="results.json">results.json</a>); '
        "losses and gradients come from <code>crossent.losses</code>, measures from <code>crossent.measures</code>.</p>",
        "</header>", "<nav><h2>Contents</h2><ol class=\"toc\">",
        '<li><a href="#headlines">Headlines</a></li>',
        *[f'<li><a href="#{esc(s["id"])}">{esc(s["title"])}</a></li>' for s in sections],
        '<li><a href="#answer">The ReLU question: the answer</a></li>', "</ol></nav>",
        '<section id="headlines"><h2>Headlines</h2><ul>',
        *[f'<li><a href="#{esc(s["id"])}">{esc(s["title"])}</a>: {esc(s["headline"])}</li>' for s in sections],
        "</ul></section>",
    ]
    for s in sections:
        parts.append(f'<section id="{esc(s["id"])}"><h2>{esc(s["title"])}</h2>')
        for fig in s["figures"]:
            parts.append(f'<figure><img src="{esc(fig)}" alt="{esc(s["title"])}"></figure>')
        parts.append(f"<p>{esc(s['text'])}</p>")
        parts.extend(_table_html(t) for t in s["tables"])
        parts.append("</section>")
    relu = by_id.get("relu_question")
    if relu is not None:
        n = relu["numbers"]
        ws = n["wrong_start"]
        parts += [
            '<section id="answer"><h2>The ReLU question: the answer</h2>',
            f'<p class="headline">{esc(n["answer"])}</p>',
            "<p>ReLU hidden units do not saturate on the positive side, so the hidden layer no longer multiplies the "
            "gradient by a vanishing σ′. The output is a different matter: a sigmoid or softmax output paired with "
            "squared error still carries σ′ (or the softmax Jacobian) of the output, and a confidently wrong output "
            f"unit gets almost no gradient (mean |∂ℓ/∂z₀| per example = {esc(format_cell(ws['sigmoid_mse']['initial_unit0_gradient']))} "
            f"for sigmoid + MSE against "
            f"{esc(format_cell(ws['sigmoid_bce']['initial_unit0_gradient']))} for sigmoid + "
            "binary cross-entropy at the start). So with ReLU hidden layers cross-entropy is still the loss to "
            "pair with a sigmoid or softmax output.</p>",
        ]
        for head in n.get("stuck_with_dead_units", []):
            w = ws[head]
            parts.append(
                f"<p>ReLU brings its own zero-gradient failure. The {esc(HEAD_LABELS[head])} head has no output "
                f"non-linearity and its biased unit starts with a large gradient ({esc(format_cell(w['initial_unit0_gradient']))}), "
                f"yet it does not recover: after training, {esc(pct(w['dead_hidden_fraction']))} of the ReLU units are "
                "dead, negative for every training example and so passing no gradient, against "
                f"{esc(pct(w['clean_start_dead_hidden_fraction']))} from the clean start.</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- command line


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text):
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_report_arguments(parser):
    """Add the ``report`` options to an ``argparse`` parser."""
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: ./{DEFAULT_OUT}/)")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and seeds (a few seconds)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="base seed (default: 0)")
    parser.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                        help="processes for independent training runs (default: 1); results do not depend on it")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (it is shown only on a terminal anyway)")
    return parser


def report_command(args):
    """Run the report for parsed `args`; return ``(text, data)``: a line for people and a dict for machines."""
    results, meta = run_report(args.out, quick=args.quick, seed=args.seed, jobs=args.jobs, progress=args.progress)
    index = Path(args.out) / "index.html"
    text = f"wrote {index} ({len(results['experiments'])} experiments, {meta['run_time_s']} s)"
    data = {"index": str(index), "results": str(Path(args.out) / "results.json"), **meta}
    return text, data


def run_from_args(args):
    """Run the report for parsed `args`; print where it went; return the exit status."""
    print(report_command(args)[0])
    return 0


def main(argv=None):
    """``python -m crossent.lab [--out DIR] [--quick] [--seed N] [--jobs N] [--no-progress]``."""
    parser = argparse.ArgumentParser(prog="crossent report", description="Run the lab and write an HTML report.")
    add_report_arguments(parser)
    return run_from_args(parser.parse_args(argv))
