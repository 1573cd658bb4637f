"""The language-model head, forward + backward: crossent against PyTorch and Cut Cross-Entropy.

Usage::

    python benchmarks/bench_linear.py            # the full benchmark (about 55 min, ~16 GiB of free RAM)
    python benchmarks/bench_linear.py --quick    # tiny shapes, to check that every provider runs (~2 min)
    python benchmarks/bench_linear.py --only "lce crossent" "lce torch-eager"   # substring filter

Cases: ``lce`` is the mean cross-entropy of ``hidden @ weight.T`` and its
gradients for ``hidden`` and ``weight``; ``logprobs`` is the per-token
log-probabilities and entropies (``linear_log_probs_and_entropy``) with the
backward of ``log_probs.sum() + 0.01 * entropy.sum()``.

Providers (lce): ``crossent`` (``crossent.torch.linear_cross_entropy``),
``torch-eager`` (``F.cross_entropy(F.linear(...))``), ``torch-lce``
(``F.linear_cross_entropy``, its reference path) and ``torch-lce-chunked``
(with ``options=LinearCrossEntropyOptions()``: its chunked path), and
``cce-torch_compile`` (``cut_cross_entropy.linear_cross_entropy(...,
impl="torch_compile")``, from the ``bench`` extra; its first call, which
compiles, is reported apart as the compile time).  Providers (logprobs):
``crossent`` and ``torch-eager`` (``log_softmax`` of the full logits, gather,
and ``-(p log p).sum``).

Every (case, shape, provider) runs in a fresh process (``bench.run_child``)
with 2 threads; it warms up once, then reports the median of the timed
repetitions (5, or 3 at the two large shapes) and its temporary memory: the
resident-set high-water mark during the timed repetitions (reset after the
warm-up through ``/proc/self/clear_refs``, so a compilation does not count)
minus the resident set before them, minus the gradients every provider
returns.  The floor is 6 N D V flops at the best rate of the three products
``h W^T``, ``G W`` and ``G^T h`` measured at full size by this script in the
same run (float32; each product timed alone, the fastest of 3); the sum of
the three products' times is recorded too.

Results go to ``benchmarks/results/linear-<UTC date>.json``; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (benchmarks/bench.py: the same conventions, child runner and results file)
from bench import THREADS, run_child, write_results  # noqa: E402

SMALL = (1024, 1024, 32768)
FULL = {
    "lce": [("float32", SMALL), ("float32", (2048, 2048, 128256)), ("float32", (4096, 1024, 256000)),
            ("bfloat16", SMALL)],
    "logprobs": [("float32", SMALL), ("float32", (2048, 2048, 128256))],
}
QUICK = {"lce": [("float32", (128, 64, 2048)), ("bfloat16", (128, 64, 2048))],
         "logprobs": [("float32", (128, 64, 2048))]}
PROVIDERS = {
    "lce": ["crossent", "torch-eager", "torch-lce", "torch-lce-chunked", "cce-torch_compile"],
    "logprobs": ["crossent", "torch-eager"],
}
LARGE_FLOPS = 6 * 2048 * 1024 * 32768  # beyond this, 3 repetitions


# ----------------------------------------------------------------- child side


def _memory_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    """Reset VmHWM to the current resident set (Linux >= 4.0); the resident set in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _memory_kib("VmRSS") * 1024


def _inputs(dtype_name, shape):
    import torch

    n, d, v = shape
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    hidden = (torch.randn(n, d, generator=gen) / d**0.5).to(dtype).requires_grad_(True)
    weight = torch.randn(v, d, generator=gen).to(dtype).requires_grad_(True)
    target = torch.randint(0, v, (n,), generator=gen)
    return hidden, weight, target


def _lce_loss_fn(provider, hidden, weight, target):
    import torch

    F = torch.nn.functional
    if provider == "crossent":
        from crossent.torch import linear_cross_entropy

        return lambda: linear_cross_entropy(hidden, weight, target)
    if provider == "torch-eager":
        return lambda: F.cross_entropy(F.linear(hidden, weight), target)
    if provider in ("torch-lce", "torch-lce-chunked"):
        if not hasattr(F, "linear_cross_entropy"):
            raise RuntimeError("torch.nn.functional.linear_cross_entropy is not in this torch")
        options = torch.nn.LinearCrossEntropyOptions() if provider == "torch-lce-chunked" else None
        return lambda: F.linear_cross_entropy(hidden, weight, target, options=options)
    if provider == "cce-torch_compile":
        from cut_cross_entropy import linear_cross_entropy as cce

        return lambda: cce(hidden, weight, target, impl="torch_compile")
    raise ValueError(provider)


def _logprobs_loss_fn(provider, hidden, weight, target):
    import torch

    if provider == "crossent":
        from crossent.torch import linear_log_probs_and_entropy

        def loss():
            log_probs, entropy = linear_log_probs_and_entropy(hidden, weight, target)
            return log_probs.sum() + 0.01 * entropy.sum()
        return loss
    if provider == "torch-eager":
        def loss():
            log_p = torch.log_softmax(torch.nn.functional.linear(hidden, weight).float(), 1)
            log_probs = log_p.gather(1, target[:, None]).squeeze(1)
            entropy = -(log_p.exp() * log_p).sum(1)
            return log_probs.sum() + 0.01 * entropy.sum()
        return loss
    raise ValueError(provider)


def _child_run(case, provider, dtype_name, shape, reps):
    import torch

    torch.set_num_threads(THREADS)
    hidden, weight, target = _inputs(dtype_name, shape)
    grad_bytes = (hidden.numel() + weight.numel()) * hidden.element_size()
    loss_fn = (_lce_loss_fn if case == "lce" else _logprobs_loss_fn)(provider, hidden, weight, target)

    def step():
        hidden.grad = None
        weight.grad = None
        loss_fn().backward()

    t0 = time.perf_counter()
    step()  # warm-up (and, for torch.compile, the compilation)
    first = time.perf_counter() - t0
    hidden.grad = weight.grad = None
    baseline = _reset_peak()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = _memory_kib("VmHWM") * 1024
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "times_s": times, "first_call_s": first,
            "compile_s": first - median if provider.endswith("torch_compile") else None,
            "temp_bytes": max(0, peak - baseline - grad_bytes), "error": None}


def _child_floors(shapes):
    """Rates of the three products of the 6 N D V floor, each at full size (float32, fastest of 3)."""
    import torch

    torch.set_num_threads(THREADS)
    out = {}
    for n, d, v in shapes:
        gen = torch.Generator().manual_seed(0)
        h, w, g = torch.randn(n, d, generator=gen), torch.randn(v, d, generator=gen), torch.randn(n, v, generator=gen)
        seconds = {}
        products = (("h W^T", lambda h=h, w=w: h @ w.T), ("G W", lambda g=g, w=w: g @ w),
                    ("G^T h", lambda g=g, h=h: g.T @ h))
        for name, product in products:
            product()
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                product()
                best = min(best, time.perf_counter() - t0)
            seconds[name] = best
        del g, products
        flops = 2 * n * d * v
        out[f"{n}x{d}x{v}"] = {"seconds": seconds, "flops_per_s": {k: flops / s for k, s in seconds.items()},
                               "best_flops_per_s": max(flops / s for s in seconds.values()),
                               "three_products_s": sum(seconds.values())}
    return out


def child_main(job):
    if job["case"] == "floors":
        bench.print_result(_child_floors([tuple(s) for s in job["shapes"]]))
        return
    try:
        out = _child_run(job["case"], job["provider"], job["dtype"], tuple(job["shape"]), job["reps"])
    except Exception as exc:  # noqa: BLE001 - a failing provider is a row, not a crash
        out = bench.error_row(exc)
    bench.print_result(out)


# ---------------------------------------------------------------- parent side


def floor_of(shape, floors):
    n, d, v = shape
    return 6 * n * d * v / floors[f"{n}x{d}x{v}"]["best_flops_per_s"]


def markdown(rows):
    head = ("| provider | case | dtype | shape | median s | vs torch eager | vs CCE | temp MiB | temp / eager "
            "| floor s | vs floor | note |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        if r.get("error"):
            lines.append(f"| {r['provider']} | {r['case']} | {r['dtype']} | {shape} | | | | | | "
                         f"{r['floor_s']:.3f} | | {r['error']} |")
            continue

        def ratio(key, fmt="{:.2f}x"):
            return fmt.format(r[key]) if r.get(key) is not None else ""
        note = f"compile {r['compile_s']:.1f} s" if r.get("compile_s") else ""
        lines.append(
            f"| {r['provider']} | {r['case']} | {r['dtype']} | {shape} | {r['median_s']:.3f} | "
            f"{ratio('speedup_vs_torch_eager')} | {ratio('speedup_vs_cce')} | {r['temp_bytes'] / 2**20:.0f} | "
            f"{ratio('temp_vs_torch_eager', '{:.3f}')} | {r['floor_s']:.3f} | {r['median_s'] / r['floor_s']:.2f} "
            f"| {note} |")
    return "\n".join(lines)


def parent_main(args):
    sizes = QUICK if args.quick else FULL
    if args.shapes:  # keep the shapes named "NxDxV"
        keep = {tuple(int(x) for x in name.split("x")) for name in args.shapes}
        sizes = {case: [(dt, sh) for dt, sh in jobs if tuple(sh) in keep] for case, jobs in sizes.items()}
    shapes = sorted({shape for jobs in sizes.values() for _, shape in jobs})
    print("measuring the matrix-multiply rates of the floor ...", flush=True)
    floors = run_child({"case": "floors", "shapes": [list(s) for s in shapes]}, args.timeout, script=__file__)
    if "error" in floors:
        sys.exit(f"floor measurement failed: {floors['error']}")
    for key, f in floors.items():
        rates = ", ".join(f"{k} {r / 1e9:.0f}" for k, r in f["flops_per_s"].items())
        print(f"  {key}: {rates} GF/s", flush=True)
    rows = []
    for case, jobs in sizes.items():
        for dtype, shape in jobs:
            n, d, v = shape
            reps = args.reps or (3 if 6 * n * d * v > LARGE_FLOPS else 5)
            for provider in PROVIDERS[case]:
                name = f"{case} {provider} {dtype}"
                if args.only and not any(o in name for o in args.only):
                    continue
                job = {"case": case, "provider": provider, "dtype": dtype, "shape": list(shape), "reps": reps}
                print(f"  {case} {dtype} {shape} {provider} ...", end=" ", flush=True)
                result = run_child(job, args.timeout, script=__file__)
                print(result.get("error") or f"{result['median_s']:.3f} s, {result['temp_bytes'] / 2**20:.0f} MiB",
                      flush=True)
                rows.append({"case": case, "dtype": dtype, "shape": list(shape), "provider": provider,
                             "reps": reps, "floor_s": floor_of(shape, floors), **result})
    for r in rows:
        if r.get("error"):
            continue
        same = [e for e in rows if e["case"] == r["case"] and e["shape"] == r["shape"] and e["dtype"] == r["dtype"]
                and not e.get("error")]
        eager = next((e for e in same if e["provider"] == "torch-eager"), None)
        cce = next((e for e in same if e["provider"] == "cce-torch_compile"), None)
        if eager:
            r["speedup_vs_torch_eager"] = eager["median_s"] / r["median_s"]
            r["temp_vs_torch_eager"] = r["temp_bytes"] / eager["temp_bytes"] if eager["temp_bytes"] else None
        if cce:
            r["speedup_vs_cce"] = cce["median_s"] / r["median_s"]
    args.reps = args.reps or "5 (3 at the large shapes)"
    write_results(args, rows, markdown(rows), {"floors": floors}, prefix="linear-")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes: check that every provider runs")
    parser.add_argument("--shapes", nargs="*", help="keep only these shapes, written NxDxV (default: all)")
    parser.add_argument("--only", nargs="*", help="keep jobs whose 'case provider dtype' contains one of these")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5, 3 at large shapes)")
    bench.add_child_arguments(parser, timeout=1800)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
