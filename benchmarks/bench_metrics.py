"""Side-by-side benchmark of crossent's one-pass metric kernel against torch, torchmetrics and NumPy/SciPy.

Usage::

    python benchmarks/bench_metrics.py            # the issue's shapes (minutes, needs ~4 GiB RAM)
    python benchmarks/bench_metrics.py --quick    # tiny sizes, to check that every provider runs
    python benchmarks/bench_metrics.py --ab       # the speed target alone: metric kernel vs in-place loss kernel

The conventions of ``benchmarks/bench.py``: every (shape, provider) pair runs in
a fresh Python process, providers of one shape one after another, with 2
threads; each child warms up once, then reports the median of ``--reps`` timed
repetitions and its temporary memory (the ``ru_maxrss`` high-water mark minus
the baseline measured after the inputs were allocated).  Every provider
computes, from (N, V) float32 logits and labels, the per-row NLL, entropy,
confidence and argmax/top-5 hits (torchmetrics: ``Perplexity`` +
``MulticlassCalibrationError``).  ``crossent-fused-inplace`` is the fused loss
kernel writing its gradient in place, the issue's speed target.  The floor is
the logits' bytes over the read bandwidth measured here (a 2-thread max over a
buffer of at least 1 GiB), not the copy bandwidth.

``--ab`` checks the speed target on a shared machine: in ONE child process per
shape ((1024, 32768) and (4096, 32768) float32), ``--reps`` interleaved pairs
(metric kernel, then the in-place loss kernel, the order alternating), and
the median of the paired ratios of wall and of process CPU time: the two
kernels see the same neighbours, which separate children would not.

Results go to ``benchmarks/results/metrics-<UTC date>.json`` (``metrics-ab-`` for
``--ab``); a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (benchmarks/bench.py: the same conventions, child runner and results file)
from bench import THREADS, _maxrss_bytes, _time_it  # noqa: E402

HERE = Path(__file__).resolve().parent
FULL = [(4096, 32768), (2048, 128256), (1024, 256000)]
QUICK = [(256, 4096)]
PROVIDERS = ["crossent-metrics", "crossent-accumulator", "crossent-fused-inplace", "torch", "torchmetrics",
             "numpy-scipy"]
TOP_K = 5


def _child(provider, shape, reps):
    import numpy as np

    n, v = shape
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, v), dtype=np.float32)
    labels = rng.integers(0, v, n)
    prepare = None
    if provider == "crossent-metrics":
        from crossent.metrics import logit_row_stats

        logit_row_stats(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))  # load the JIT first
        baseline = _maxrss_bytes()

        def step():
            logit_row_stats(logits, labels, num_threads=THREADS)
    elif provider == "crossent-accumulator":
        from crossent.metrics import Accumulator

        Accumulator().update(logits=np.zeros((2, 3), np.float32), labels=np.zeros(2, np.int64))
        baseline = _maxrss_bytes()

        def step():
            acc = Accumulator(num_threads=THREADS)
            acc.update(logits=logits, labels=labels)
            acc.result()
    elif provider == "crossent-fused-inplace":
        from crossent.kernels import softmax_cross_entropy_fused

        work = logits.copy()
        softmax_cross_entropy_fused(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
        baseline = _maxrss_bytes()

        def step():
            softmax_cross_entropy_fused(work, labels, inplace=True, num_threads=THREADS)

        def prepare():
            np.copyto(work, logits)
    elif provider == "numpy-scipy":
        from scipy.special import log_softmax

        baseline = _maxrss_bytes()

        def step():
            logp = log_softmax(logits, axis=1)
            p = np.exp(logp)
            nll = -logp[np.arange(n), labels]
            entropy = -np.einsum("ij,ij->i", p, logp)
            confidence = p.max(axis=1)
            label_logit = logits[np.arange(n), labels]
            top_k = (logits > label_logit[:, None]).sum(axis=1) < TOP_K
            return nll.mean(), entropy.mean(), confidence, np.argmax(logits, axis=1) == labels, top_k
    else:
        import torch

        torch.set_num_threads(THREADS)
        x, y = torch.from_numpy(logits), torch.from_numpy(labels)
        if provider == "torch":
            def step():
                logp = torch.log_softmax(x, dim=1)
                nll = -logp.gather(1, y[:, None])[:, 0]
                entropy = -(logp.exp() * logp).sum(dim=1)
                confidence, predicted = logp.max(dim=1)
                top_k = (logp > logp.gather(1, y[:, None])).sum(dim=1) < TOP_K
                return nll.mean(), entropy.mean(), confidence.exp(), predicted == y, top_k
        elif provider == "torchmetrics":
            from torchmetrics.classification import MulticlassCalibrationError
            from torchmetrics.text import Perplexity

            def step():
                ppl = Perplexity()
                ppl.update(x[None], y[None])
                cal = MulticlassCalibrationError(num_classes=v, n_bins=15)
                cal.update(torch.softmax(x, dim=1), y)
                return ppl.compute(), cal.compute()
        else:
            raise ValueError(provider)
        baseline = _maxrss_bytes()
    first, times = _time_it(step, reps, prepare)
    return baseline, first, times


def _child_floor(buffer_bytes):
    """Read bandwidth: a 2-thread max over a buffer (bytes read / seconds), best of 5."""
    import threading

    import numpy as np

    data = np.ones(buffer_bytes // 4, np.float32)
    half = data.size // THREADS

    def read():
        threads = [threading.Thread(target=np.max, args=(data[i * half:(i + 1) * half],)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    _, times = _time_it(read, 5)
    return {"read_bandwidth_bytes_per_s": data.nbytes / min(times), "read_buffer_bytes": int(data.nbytes)}


AB_SHAPES = [(1024, 32768), (4096, 32768)]


def _child_ab(shape, reps):
    """Interleaved pairs in one process: (metric kernel / in-place loss kernel) per pair, wall and CPU."""
    import time

    import numpy as np

    from crossent.kernels import softmax_cross_entropy_fused
    from crossent.metrics import logit_row_stats

    n, v = shape
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, v), dtype=np.float32)
    labels = rng.integers(0, v, n)
    work = np.empty_like(logits)
    steps = {"metric": lambda: logit_row_stats(logits, labels, num_threads=THREADS),
             "loss_inplace": lambda: softmax_cross_entropy_fused(work, labels, inplace=True, num_threads=THREADS)}
    times = {name: {"wall": [], "cpu": []} for name in steps}
    for r in range(reps + 1):  # the first pair warms up
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            np.copyto(work, logits)
            wall, cpu = time.perf_counter(), time.process_time()
            steps[name]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if r:
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    out = {"shape": list(shape), "times_s": times}
    for clock in ("wall", "cpu"):
        pairs = [m / f for m, f in zip(times["metric"][clock], times["loss_inplace"][clock])]
        out[f"ratio_{clock}"] = statistics.median(pairs)
        out[f"median_{clock}_s"] = {name: statistics.median(t[clock]) for name, t in times.items()}
    return out


def ab_main(args):
    rows = []
    for shape in QUICK if args.quick else AB_SHAPES:
        print(f"  {shape} metric kernel vs in-place loss kernel, {args.reps} interleaved pairs ...", flush=True)
        result = run_child({"provider": "ab", "shape": list(shape), "reps": args.reps}, args.timeout)
        rows.append({"shape": list(shape), **result})
    lines = ["| shape | metric median s | loss in place median s | median paired ratio (wall) | (cpu) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {'x'.join(map(str, r['shape']))} | {r['error']} | | | |")
            continue
        med = r["median_wall_s"]
        lines.append(f"| {'x'.join(map(str, r['shape']))} | {med['metric']:.4f} | {med['loss_inplace']:.4f} | "
                     f"{r['ratio_wall']:.3f} | {r['ratio_cpu']:.3f} |")
    bench.write_results(args, rows, "\n".join(lines), {"mode": "ab"}, prefix="metrics-ab-")


def child_main(job):
    if job["provider"] == "ab":
        try:
            out = {**_child_ab(tuple(job["shape"]), job["reps"]), "error": None}
        except Exception as exc:  # noqa: BLE001 - a failing run is a row, not a crash
            out = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        bench.print_result(out)
        return
    if job["provider"] == "floor":
        bench.print_result(_child_floor(job["bytes"]))
        return
    try:
        baseline, first, times = _child(job["provider"], tuple(job["shape"]), job["reps"])
        out = {"median_s": statistics.median(times), "min_s": min(times), "times_s": times, "first_call_s": first,
               "temp_bytes": max(0, _maxrss_bytes() - baseline), "error": None}
    except Exception as exc:  # noqa: BLE001 - a failing provider is a row, not a crash
        out = bench.error_row(exc)
    bench.print_result(out)


def run_child(job, timeout):
    return bench.run_child(job, timeout, script=__file__)  # the loss benchmark's runner, this script's children


def markdown(rows):
    lines = ["| provider | shape | median s | vs torch | vs fused in place | temp MiB | read floor s | vs floor |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        if r.get("error"):
            lines.append(f"| {r['provider']} | {shape} | | | | | {r['floor_s']:.4f} | {r['error']} |")
            continue
        ratio = {k: (f"{r[k]:.2f}x" if r.get(k) else "") for k in ("speedup_vs_torch", "time_vs_fused")}
        lines.append(f"| {r['provider']} | {shape} | {r['median_s']:.4f} | {ratio['speedup_vs_torch']} | "
                     f"{ratio['time_vs_fused']} | {r['temp_bytes'] / 2**20:.0f} | {r['floor_s']:.4f} | "
                     f"{r['median_s'] / r['floor_s']:.2f} |")
    return "\n".join(lines)


def parent_main(args):
    shapes = QUICK if args.quick else FULL
    print("measuring the read bandwidth ...", flush=True)
    floor = run_child({"provider": "floor", "bytes": (64 << 20) if args.quick else (1 << 30)}, args.timeout)
    if "error" in floor:
        sys.exit(f"floor measurement failed: {floor['error']}")
    print(f"  read bandwidth {floor['read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)
    rows = []
    for shape in shapes:
        for provider in PROVIDERS:
            if args.only and not any(o in provider for o in args.only):
                continue
            print(f"  {shape} {provider} ...", end=" ", flush=True)
            result = run_child({"provider": provider, "shape": list(shape), "reps": args.reps}, args.timeout)
            print(result.get("error") or f"{result['median_s']:.4f} s", flush=True)
            rows.append({"shape": list(shape), "provider": provider,
                         "floor_s": 4 * shape[0] * shape[1] / floor["read_bandwidth_bytes_per_s"], **result})
    for r in rows:
        for key, other, invert in (("speedup_vs_torch", "torch", True), ("time_vs_fused", "crossent-fused-inplace",
                                                                          False)):
            ref = next((e for e in rows if e["shape"] == r["shape"] and e["provider"] == other
                        and not e.get("error")), None)
            if ref and not r.get("error"):
                r[key] = ref["median_s"] / r["median_s"] if invert else r["median_s"] / ref["median_s"]
    bench.write_results(args, rows, markdown(rows), {"floor": floor}, prefix="metrics-")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that every provider runs")
    parser.add_argument("--only", nargs="*", help="keep providers whose name contains one of these")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed repetitions after the warm-up (default 5; --ab: 21 pairs)")
    parser.add_argument("--ab", action="store_true", help="only the speed target: interleaved pairs in one process")
    bench.add_child_arguments(parser, timeout=900)
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 21 if args.ab else 5
    if args.child:
        child_main(json.loads(args.child))
    elif args.ab:
        ab_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
