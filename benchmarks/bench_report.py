"""A/B of ``crossent report``: a baseline checkout against this one, wall time of the whole command.

Usage::

    git worktree add /tmp/crossent-base 8d3dc93 --detach          # the baseline: main before issue 14
    python benchmarks/bench_report.py --baseline /tmp/crossent-base/src         # default and --quick (minutes)
    python benchmarks/bench_report.py --baseline /tmp/crossent-base/src --quick-only --reps 1   # a check (~1 min)
    python benchmarks/bench_report.py --compare OLD/results.json NEW/results.json              # numbers only

Each run is a fresh ``python -m crossent report [--quick] [--jobs N] --out TMP --no-progress``
with ``PYTHONPATH`` pointing at the version's ``src`` (the same interpreter and
packages for both), timed from start to exit.  First one warm-up run of each
version (it builds matplotlib's font cache and Python's bytecode), then
``--reps`` rounds that run baseline and new one after the other, so that
both see the same machine; the median of each is reported with the ratio.
After the runs, the numbers of the last two results.json files are compared
(:func:`compare`): experiments 1-6 must be identical, and every mean of
experiments 7-9 must lie within one seed-to-seed standard deviation of the
baseline's.  Results go to ``benchmarks/results/report-<UTC date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (benchmarks/bench.py: the results file)

NEW_SRC = Path(__file__).resolve().parents[1] / "src"
NEURON_EXPERIMENTS = ("sigmoid", "gradient_factor", "saturated_neuron", "loss_surfaces", "one_parameter", "information")


def run_report(src, out, quick, timeout, jobs=None):
    """Wall seconds of one ``crossent report`` with ``PYTHONPATH=src`` (``--jobs`` only if given); raises if it fails."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-m", "crossent", "report", "--out", str(out), "--no-progress", "--force"]
    cmd += [] if jobs is None else ["--jobs", str(jobs)]
    start = time.perf_counter()
    proc = subprocess.run(cmd + (["--quick"] if quick else []), env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"crossent report failed ({src}): {proc.stderr.strip()[-500:]}")
    return seconds


def time_ab(baseline, quick, reps, timeout, work, jobs=None):
    """Warm-up, then `reps` interleaved runs of each version; rows and the last results.json of each."""
    versions = {"baseline": Path(baseline), "new": NEW_SRC}
    times = {name: [] for name in versions}
    for name, src in versions.items():  # warm-up: font cache, bytecode
        run_report(src, work / f"warm-{name}", quick, timeout, jobs)
    for _ in range(reps):
        for name, src in versions.items():
            times[name].append(run_report(src, work / name, quick, timeout, jobs))
    mode = ("--quick" if quick else "default") + (f" --jobs {jobs}" if jobs is not None else "")
    rows = [{"mode": mode, "version": name, "src": str(versions[name]), "times_s": [round(t, 3) for t in times[name]],
             "median_s": round(statistics.median(times[name]), 3)} for name in versions]
    speedup = rows[0]["median_s"] / rows[1]["median_s"]
    for row in rows:
        row["speedup_vs_baseline"] = round(rows[0]["median_s"] / row["median_s"], 2)
    print(f"{mode}: baseline {rows[0]['median_s']:.2f} s, new {rows[1]['median_s']:.2f} s, {speedup:.2f}x", flush=True)
    results = {name: json.loads((work / name / "results.json").read_text(encoding="utf-8")) for name in versions}
    return rows, results


# ------------------------------------------------------------------ the numbers


def _std(values):
    values = [v for v in values if v is not None]
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def compare(base, new):
    """Compare two results.json dicts: ``{"identical_1_to_6": bool, "differences_1_to_6": [...], "means": [...]}``.

    Each entry of ``means`` is a mean of experiments 7-9 with the baseline's
    value, the new one, the seed-to-seed standard deviation it is judged by
    (the baseline's where results.json keeps per-seed values, else the new
    run's) and whether it moved by more than that.
    """
    old = {s["id"]: s for s in base["experiments"]}
    cur = {s["id"]: s for s in new["experiments"]}
    differences = [f"{key}: {field}" for key in NEURON_EXPERIMENTS for field in old[key]
                   if old[key][field] != cur[key][field]]
    means = []

    def judge(name, before, after, spread):
        if before is None or after is None:
            means.append({"name": name, "baseline": before, "new": after, "std": spread, "within_one_std": None})
            return
        means.append({"name": name, "baseline": before, "new": after, "std": round(spread, 6),
                      "within_one_std": abs(after - before) <= spread})

    o7, n7 = old["digits_sigmoid"]["numbers"], cur["digits_sigmoid"]["numbers"]
    for init in ("normal", "scaled"):
        for head, o in o7[init].items():
            n = n7[init][head]
            judge(f"7 {init} {head} accuracy", o["mean_final_accuracy"], n["mean_final_accuracy"],
                  _std(o["final_accuracy"]))
            judge(f"7 {init} {head} NLL", o["mean_final_nll"], n["mean_final_nll"], _std(n.get("final_nll", [])))
            judge(f"7 {init} {head} ECE", o["mean_final_ece"], n["mean_final_ece"], _std(n.get("final_ece", [])))
    for head, o in o7["breast_cancer"].items():
        n = n7["breast_cancer"][head]
        judge(f"7 breast cancer {head} accuracy", o["mean_final_accuracy"], n["mean_final_accuracy"],
              _std(o["final_accuracy"]))
        judge(f"7 breast cancer {head} accuracy after 1 epoch", o["mean_accuracy_after_1_epoch"],
              n["mean_accuracy_after_1_epoch"], _std(n.get("accuracy_after_1_epoch", [])))
    o8, n8 = old["relu_question"]["numbers"], cur["relu_question"]["numbers"]
    for head, grid in o8["grid"].items():
        for lr, value in grid.items():
            judge(f"8 grid {head} {lr}", value, n8["grid"][head][lr], _std(n8.get("grid_per_seed", {}).get(head, {}).get(lr, [])))
    for head, o in o8["wrong_start"].items():
        n = n8["wrong_start"][head]
        judge(f"8 wrong start {head} final accuracy", o["final_accuracy"], n["final_accuracy"],
              _std(n.get("final_accuracy_per_seed", [])))
    o9, n9 = old["calibration"]["numbers"], cur["calibration"]["numbers"]
    for head in ("softmax_ce", "sigmoid_mse"):  # one seed: judged by experiment 7's spread of the same head
        spread = n7["normal"][head]
        for key, per_seed in (("final_accuracy", "final_accuracy"), ("final_nll", "final_nll"), ("final_ece", "final_ece")):
            judge(f"9 {head} {key} (seed {n9['seed']})", o9[head][key], n9[head][key], _std(spread.get(per_seed, [])))
    conclusions = {key: (o8.get(key), n8.get(key)) for key in ("recovered_quickly", "recovered_slowly", "never_recovered",
                                                              "stuck_with_dead_units")}
    return {"identical_1_to_6": not differences, "differences_1_to_6": differences, "means": means,
            "moved": [m["name"] for m in means if m["within_one_std"] is False],
            "relu_conclusions_baseline_new": conclusions}


def _cell(value):
    return f"{value:10.4g}" if isinstance(value, (int, float)) else f"{value!s:>10}"


def print_comparison(result):
    print("experiments 1-6 identical:", result["identical_1_to_6"], *result["differences_1_to_6"])
    print(f"{'mean':58} {'baseline':>10} {'new':>10} {'std':>9}  within 1 std")
    for m in result["means"]:
        fmt = _cell
        print(f"{m['name']:58} {fmt(m['baseline'])} {fmt(m['new'])} {fmt(m['std'])[1:]}  {m['within_one_std']}")
    print("moved by more than one std:", ", ".join(result["moved"]) or "none")
    for key, (before, after) in result["relu_conclusions_baseline_new"].items():
        print(f"8 {key}: baseline {before}, new {after}")


def markdown(rows):
    lines = ["| mode | version | median s | runs s | speed-up |", "|---|---|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['version']} | {r['median_s']:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in r['times_s'])} | {r['speedup_vs_baseline']:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="the baseline's src folder (a checkout of main before this change)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each version after the warm-up (default 3)")
    parser.add_argument("--quick-only", action="store_true", help="only the --quick report")
    parser.add_argument("--jobs", type=int, default=None,
                        help="--jobs of both versions' reports (default: none given, each version's own default: "
                             "1 before issue 14, the usable cores after)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed for one report run")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="results folder")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="only compare two results.json files")
    args = parser.parse_args(argv)
    if args.compare:
        old, new = (json.loads(Path(p).read_text(encoding="utf-8")) for p in args.compare)
        print_comparison(compare(old, new))
        return 0
    if not args.baseline or not (Path(args.baseline) / "crossent").is_dir():
        parser.error("--baseline must be the src folder of a crossent checkout")
    args.quick = args.quick_only
    rows, comparisons = [], {}
    with tempfile.TemporaryDirectory(prefix="crossent-bench-report-") as work:
        for quick in (True,) if args.quick_only else (True, False):
            mode_rows, results = time_ab(args.baseline, quick, args.reps, args.timeout, Path(work) / str(quick), args.jobs)
            rows += mode_rows
            comparisons[mode_rows[0]["mode"]] = compare(results["baseline"], results["new"])
    for mode, result in comparisons.items():
        print(f"\nnumbers of the {mode} report, baseline against new:")
        print_comparison(result)
    bench.write_results(args, rows, markdown(rows), {"comparison": comparisons, "baseline_src": str(args.baseline),
                                                     "jobs": args.jobs}, prefix="report-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
