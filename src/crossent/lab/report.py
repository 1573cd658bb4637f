"""Run every experiment and write ``index.html``, ``results.json``, ``meta.json`` and the figures.

``results.json`` holds every measured number of the page (the HTML is
rendered from the same dict, after rounding to 6 significant digits), and is
byte-identical for two runs with the same seed.  What changes from run to
run -- date, wall time, versions, ``--jobs`` -- goes to ``meta.json`` and the
page header only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import multiprocessing
import numbers
import os
import platform
import secrets
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .._validate import check_flag
from ..kernels._pool import default_threads as available_cores
from ._common import Context, pct
from .explorer import write_explorer
from .strings import LANGUAGES

DEFAULT_OUT = "crossent-report"
#: the largest seed: scikit-learn's data splits take seeds in [0, 2**32 - 1]
MAX_SEED = 2**32 - 1


def experiments():
    """The experiment functions in page order (imported here: matplotlib loads only when a report runs)."""
    from .experiments_calibration import EXPERIMENTS as CALIBRATION_EXPERIMENTS
    from .experiments_network import EXPERIMENTS as NETWORK_EXPERIMENTS
    from .experiments_neuron import EXPERIMENTS as NEURON_EXPERIMENTS

    return [*NEURON_EXPERIMENTS, *NETWORK_EXPERIMENTS, *CALIBRATION_EXPERIMENTS]


def _versions():
    """The versions of what the report runs on, from the installed packages' metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    versions = {"crossent": __version__, "python": platform.python_version()}
    for name, module in (("numpy", "numpy"), ("scipy", "scipy"), ("matplotlib", "matplotlib"),
                         ("scikit-learn", "sklearn"), ("jinja2", "jinja2")):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:  # the lab extra is missing: say which module, as an import would
            raise ModuleNotFoundError(f"No module named {module!r}", name=module) from None
    return versions


def run_report(out=DEFAULT_OUT, *, quick=False, seed=0, jobs=None, progress=None, force=False, lang="en"):
    """Run the experiments, write the report into the folder `out`, and return ``(results, meta)``.

    The report is written into a temporary folder beside `out` and renamed
    into place at the end, so a failed or interrupted run leaves `out` as it
    was.  A previous report in `out` is replaced whole; a folder of other
    files is refused unless `force`.

    Args:
        out: output folder: new, empty, or a previous report (created with its parents if needed).
        quick: smaller networks runs (fewer epochs and seeds) for tests and a first look.
        seed: the seed every experiment derives its seeds from, in [0, 2**32 - 1].
        jobs: worker processes (1: everything in this process; None: every core
            available, :func:`available_cores`, also the most used); results do not depend on it.
        progress: show a tqdm bar on stderr; None means "if stderr is a terminal".
        force: replace `out` even if it is a non-empty folder that is not a crossent report.
        lang: the page's language, ``"en"`` or ``"zh"``; the figures' too where a CJK
            font is found (:func:`crossent.lab.figures.cjk_font`), else their labels stay
            in English and a one-line note goes to stderr.

    Raises:
        ReportPathError: `out` cannot take the report (nothing is written).

    Examples:
        >>> import tempfile
        >>> results, meta = run_report(tempfile.mkdtemp(), quick=True, progress=False)  # doctest: +SKIP
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"`seed` must be an integer from 0 to {MAX_SEED}, got {seed!r}.")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, numbers.Integral) or jobs < 1):
        raise ValueError(f"`jobs` must be a positive integer or None, got {jobs!r}.")
    seed, jobs = int(seed), (None if jobs is None else int(jobs))
    quick, force = check_flag(quick, "quick"), check_flag(force, "force")
    if progress is not None:
        progress = check_flag(progress, "progress")
    if lang not in LANGUAGES:
        raise ValueError(f"`lang` must be one of {LANGUAGES}, got {lang!r}.")
    jobs = available_cores() if jobs is None else min(jobs, available_cores())
    versions = _versions()  # the lab extra's imports fail here, before anything is written
    target = check_output_folder(out, force=force)
    started = time.perf_counter()
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    staging, created = _make_staging(target, out)
    try:
        figure_lang, figure_note = _figure_language(lang)
        ctx = Context(out_dir=staging, quick=bool(quick), seed=seed, lang=lang, figure_lang=figure_lang, jobs=jobs)
        sections = _run_experiments(ctx, jobs, progress)
        results = {"seed": seed, "quick": bool(quick), "lang": lang, "experiments": sections}
        (staging / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        meta = {"date": date, "seed": seed, "quick": bool(quick), "lang": lang, "jobs": jobs,
                "run_time_s": round(time.perf_counter() - started, 1), "versions": versions}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        (staging / "index.html").write_text(render_html(results, meta, lang=lang, figure_note=figure_note),
                                            encoding="utf-8")
        write_explorer(staging / "explorer")  # the live page, linked from the report's header
        _move_into_place(staging, target, out, force)
    except BaseException:  # failed, interrupted (Ctrl-C, or SIGTERM from the command): no half-written report
        _remove_partial(staging, target.parent, created)
        raise
    return results, meta


def _figure_language(lang):
    """``(figure language, note for the page)``: Chinese figures need a CJK font; without one, English labels."""
    if lang == "en":
        return "en", ""
    from .figures import cjk_font
    from .strings import Strings

    if cjk_font() is not None:
        return lang, ""
    print("crossent report: no CJK font found (Debian: apt-get install fonts-wqy-microhei); "
          "the figure labels stay in English", file=sys.stderr)
    return "en", Strings(lang)("page.no_cjk_font")


def _run_experiments(ctx, jobs, progress):
    """Every experiment's section, in page order: in this process, or with ``jobs > 1`` as tasks for a pool."""
    from tqdm import tqdm

    from .schedule import run_on_pool, run_serially

    class Bar(tqdm):
        monitor_interval = 0  # no monitor thread: the worker processes are forked from this one

    show = sys.stderr.isatty() if progress is None else bool(progress)
    todo = experiments()
    with Bar(total=len(todo), desc="crossent report", unit="experiment", file=sys.stderr, disable=not show) as bar:
        def done(index):
            bar.set_postfix_str(todo[index].__name__)
            bar.update()

        if jobs == 1:
            return run_serially(ctx, todo, done)
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        executor = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_quiet_worker)
        try:
            sections = run_on_pool(ctx, todo, executor, done)
        except BaseException:  # a task failed, or Ctrl-C / SIGTERM: stop the workers now, not after their tasks
            _stop_workers(executor)
            raise
        executor.shutdown()
        return sections


def _stop_workers(executor):
    """Cancel the tasks not started and end the worker processes at once.

    With SIGKILL: a worker that has just been forked still has this process's
    SIGTERM handler until its initializer runs, and CPython drops a signal
    that arrives in that window (a worker left waiting for work, and this
    process waiting for it, for ever).  The workers hold nothing to clean up:
    this process removes what they wrote.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())  # CPython's ProcessPoolExecutor
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    for process in processes:
        process.join()


def _quiet_worker():
    """Pool workers leave Ctrl-C and SIGTERM to the parent, which stops them and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --------------------------------------------------------------------------- the output folder


class ReportPathError(ValueError):
    """`out` cannot take a report: a file, a folder of other files, or a place that cannot be written."""


def is_report_folder(path) -> bool:
    """True if `path` holds a crossent report: a ``meta.json`` whose ``versions`` names crossent."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("versions"), dict) and "crossent" in meta["versions"]


def check_output_folder(out, *, force=False) -> Path:
    """The absolute folder the report for `out` goes to; ReportPathError if it cannot take one.

    Accepted: a new folder (under folders, or places where folders can be
    made), an empty folder, a previous report, and with `force` any folder but
    the current or home folder and their parents (the report replaces its folder whole).
    """
    shown = repr(str(out))
    try:
        target = Path(out).resolve()
        for what, folder in _protected_folders():
            if target == folder or target in folder.parents:
                raise ReportPathError(f"`out` {shown} is or contains {what}; the report replaces its folder "
                                      "whole, so give it a folder of its own.")
        if target.is_dir():
            if any(target.iterdir()) and not force and not is_report_folder(target):
                raise ReportPathError(f"`out` {shown} is a folder of other files, not a crossent report (it has no "
                                      "meta.json written by crossent); choose a new or empty folder, or pass "
                                      "force=True to replace it.")
        elif target.exists():
            raise ReportPathError(f"`out` must be a folder, but {shown} is a file.")
        existing = next(folder for folder in target.parents if folder.exists())
        if not existing.is_dir():
            raise ReportPathError(f"`out` {shown} lies inside {str(existing)!r}, which is a file, not a folder.")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ReportPathError(f"`out` {shown} cannot be written: no write permission in {str(existing)!r}.")
        name_max = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
        if len(os.fsencode(target.name)) > name_max:
            raise ReportPathError(f"`out` {shown}: the folder name is longer than the {name_max} bytes allowed here.")
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ReportPathError(f"`out` {shown} cannot be used: {getattr(exc, 'strerror', None) or exc}.") from None
    return target


def _protected_folders():
    """(name, folder) pairs that `out` must neither be nor contain."""
    folders = [("the current folder", Path.cwd().resolve())]
    with contextlib.suppress(RuntimeError, KeyError, OSError):  # no home folder known
        folders.append(("your home folder", Path.home().resolve()))
    return folders


def _make_staging(target, out):
    """Create the parents of `target` and an empty hidden folder beside it; return it and the first parent made."""
    created = next((folder for folder in reversed(target.parents) if not folder.exists()), None)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            staging = target.parent / f".crossent-partial-{secrets.token_hex(4)}"
            try:
                staging.mkdir()
                return staging, created
            except FileExistsError:
                continue
    except OSError as exc:
        _remove_partial(None, target.parent, created)
        raise ReportPathError(f"`out` {str(out)!r} cannot be written: {exc.strerror or exc}.") from None


def _remove_partial(staging, parent, created):
    """Remove the half-written report `staging` (if any), then the folders from `parent` up to `created` made for it."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    for folder in (parent, *parent.parents) if created is not None else ():
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return


def _move_into_place(staging, target, out, force):
    """Rename the finished report to `target`; a previous report there is replaced whole."""
    if not target.exists():
        os.rename(staging, target)
        return
    check_output_folder(out, force=force)  # still a report, or empty: it may have changed during the run
    old = target.parent / f".crossent-old-{secrets.token_hex(4)}"
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- HTML

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


def _percent(value):
    return "—" if value is None else pct(value)


def render_html(results, meta, *, lang="en", figure_note=""):
    """The page, from the Jinja2 template ``templates/report.html.j2`` (autoescaped) in language `lang`.

    `results` holds the sections (their text already in `lang`); the page's
    own words come from the string table of `lang` (:mod:`crossent.lab.strings`).
    """
    import jinja2

    from .strings import Strings

    env = jinja2.Environment(loader=jinja2.PackageLoader("crossent.lab", "templates"), autoescape=True,
                             keep_trailing_newline=True)
    env.filters.update(cell=format_cell, pct=_percent)
    sections = results["experiments"]
    relu = next((s["numbers"] for s in sections if s["id"] == "relu_question"), None)
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    return env.get_template("report.html.j2").render(
        t=Strings(lang), html_lang={"en": "en", "zh": "zh-CN"}[lang], meta=meta, versions=versions,
        sections=sections, relu=relu, figure_note=figure_note)


# --------------------------------------------------------------------------- command line


def _integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _seed(text):
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {value}")
    return value


def _jobs(text):
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of processes (at most the {available_cores()} "
                                         f"cores available are used), got {value}")
    return value


def add_report_arguments(parser):
    """Add the ``report`` options to an ``argparse`` parser."""
    cores = available_cores()
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"output folder (default: ./{DEFAULT_OUT}/): new, empty, or a previous report, "
                             "which is replaced whole once the new one is complete")
    parser.add_argument("--force", action="store_true",
                        help="replace DIR even if it is a folder of other files (they are deleted)")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and seeds (a few seconds)")
    parser.add_argument("--seed", type=_seed, default=0, help=f"base seed, 0 to {MAX_SEED} (default: 0)")
    parser.add_argument("--jobs", type=_jobs, default=None, metavar="N",
                        help=f"worker processes (default: the {cores} cores available to this process, also the "
                             "most used; 1 runs everything in one process); results do not depend on it")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (it is shown on stderr, and only on a terminal anyway)")
    parser.add_argument("--lang", choices=LANGUAGES, default="en",
                        help="language of the page and its figures: en (default) or zh (Chinese; the figures need a "
                             "CJK font such as Debian's fonts-wqy-microhei, else their labels stay in English)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (paths and meta.json) instead of text")
    return parser


def report_command(args):
    """Run the report for parsed `args`; return ``(text, data)``: a line for people and a dict for machines.

    Notes (``--jobs`` capped) go to stderr; errors about ``--out`` name the option.
    """
    cores = available_cores()
    if args.jobs is not None and args.jobs > cores:
        print(f"crossent report: --jobs {args.jobs} is more than the {cores} cores available; using {cores}",
              file=sys.stderr)
    try:
        with _sigterm_exits():
            results, meta = run_report(args.out, quick=args.quick, seed=args.seed, jobs=args.jobs,
                                       progress=args.progress, force=args.force, lang=args.lang)
    except ReportPathError as exc:
        raise ReportPathError(str(exc).replace("`out`", "--out").replace("force=True", "--force")) from None
    index = Path(args.out) / "index.html"
    text = f"wrote {index} ({len(results['experiments'])} experiments, {meta['run_time_s']} s)"
    data = {"index": str(index), "results": str(Path(args.out) / "results.json"), **meta}
    return text, data


@contextlib.contextmanager
def _sigterm_exits():
    """While the report runs, SIGTERM exits through the clean-up code (status 143) instead of killing at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
