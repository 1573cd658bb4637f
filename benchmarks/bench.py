"""Side-by-side benchmark of crossent's kernels against PyTorch and the NumPy reference.

Usage::

    python benchmarks/bench.py            # the full benchmark (several minutes, needs ~8 GiB RAM)
    python benchmarks/bench.py --quick    # tiny sizes, to check that every provider runs
    python benchmarks/bench.py --only ce  # only cases/providers whose name contains "ce"

Every (configuration, provider) pair runs in a fresh Python process, the
providers of one configuration one after another (interleaved), with 2 threads
(``torch.set_num_threads(2)``; ``num_threads=2`` for crossent).  Each child
warms up once, then reports the median of ``--reps`` timed repetitions and its
temporary memory: the process high-water mark (``ru_maxrss``) minus the
baseline measured after the inputs were allocated, minus the gradients that
every implementation must return.  The physical floor is measured by this
script on the same machine: for the logits kernels, bytes (read the logits
once + write the gradient once) over the bandwidth of a 2-thread copy of a
buffer of at least 1 GiB; for linear + cross-entropy, 6 N D V flops over the
float32 matmul rate at that shape.

Results go to ``benchmarks/results/<UTC date>.json``; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREADS = 2
HERE = Path(__file__).resolve().parent

FULL = {
    "ce": [(4096, 32768), (2048, 128256), (1024, 256000)],
    "bce": [(16 * 1024 * 1024,)],
    "linear_ce": [(2048, 1024, 32768), (1024, 2048, 128256)],
}
QUICK = {"ce": [(256, 4096)], "bce": [(1 << 20,)], "linear_ce": [(128, 64, 2048)]}
PROVIDERS = {
    "ce": ["crossent", "crossent-inplace", "crossent.torch", "crossent.torch-inplace", "torch-eager",
           "torch-compile", "numpy-reference"],
    "bce": ["crossent", "crossent-inplace", "crossent.torch", "torch-eager"],
    "linear_ce": ["crossent.torch", "torch-eager", "torch-linear_cross_entropy"],
}


# ----------------------------------------------------------------- child side


def _maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _time_it(step, reps, prepare=None):
    """Warm up once, then time `reps` calls of `step` (after `prepare`, untimed)."""
    if prepare:
        prepare()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        if prepare:
            prepare()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return first, times


def _child_ce(provider, shape, reps):
    import numpy as np
    import torch

    n, v = shape
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, v), dtype=np.float32)
    labels = rng.integers(0, v, n)
    grad_bytes = logits.nbytes
    if provider in ("crossent", "crossent-inplace"):
        from crossent.kernels import softmax_cross_entropy_fused

        inplace = provider == "crossent-inplace"
        work = logits.copy() if inplace else logits
        softmax_cross_entropy_fused(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))  # load the JIT first
        baseline = _maxrss_bytes()
        if inplace:
            grad_bytes = 0  # the gradient lives in the (already counted) logits buffer

        def step():
            loss, grad = softmax_cross_entropy_fused(work, labels, inplace=inplace, num_threads=THREADS)
            del loss, grad

        prepare = (lambda: np.copyto(work, logits)) if inplace else None
        return baseline, grad_bytes, _time_it(step, reps, prepare), None
    if provider == "numpy-reference":
        from crossent._rules import CrossEntropyOptions
        from crossent.losses.softmax_ce import check_softmax_logits, softmax_ce_2d

        options = CrossEntropyOptions()

        baseline = _maxrss_bytes()

        def step():
            check_softmax_logits(logits)
            loss, grad = softmax_ce_2d(logits, labels, None, options)
            del loss, grad

        return baseline, grad_bytes, _time_it(step, reps), None

    torch.set_num_threads(THREADS)
    x = torch.from_numpy(logits.copy() if provider == "crossent.torch-inplace" else logits).requires_grad_(True)
    y = torch.from_numpy(labels)
    compile_seconds = None
    prepare = None
    if provider == "crossent.torch":
        from crossent.torch import cross_entropy as fn
    elif provider == "crossent.torch-inplace":
        import functools

        from crossent.torch import cross_entropy

        # The logits' memory receives their gradient (opt-in); restore them, untimed.
        fn = functools.partial(cross_entropy, inplace_backward=True)
        grad_bytes = 0

        def prepare():
            with torch.no_grad():
                x.copy_(torch.from_numpy(logits))
    elif provider == "torch-eager":
        fn = torch.nn.functional.cross_entropy
    elif provider == "torch-compile":
        fn = torch.compile(torch.nn.functional.cross_entropy)
    else:
        raise ValueError(provider)
    if provider != "torch-compile":  # load libraries before the baseline (compile is measured as is)
        small = torch.zeros(2, 3, requires_grad=True)
        fn(small, torch.zeros(2, dtype=torch.long)).backward()
    baseline = _maxrss_bytes()

    def step():
        x.grad = None
        fn(x, y).backward()

    first, times = _time_it(step, reps, prepare)
    if provider == "torch-compile":
        compile_seconds = first
    return baseline, grad_bytes, (first, times), compile_seconds


def _child_bce(provider, shape, reps):
    import numpy as np
    import torch

    (n,) = shape
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(n, dtype=np.float32) * 3).astype(np.float32)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    grad_bytes = logits.nbytes
    if provider in ("crossent", "crossent-inplace"):
        from crossent.kernels import sigmoid_binary_cross_entropy_fused

        inplace = provider == "crossent-inplace"
        work = logits.copy() if inplace else logits
        sigmoid_binary_cross_entropy_fused(np.zeros(3, np.float32), np.zeros(3, np.float32))
        baseline = _maxrss_bytes()
        if inplace:
            grad_bytes = 0

        def step():
            loss, grad = sigmoid_binary_cross_entropy_fused(work, labels, inplace=inplace, num_threads=THREADS)
            del loss, grad

        prepare = (lambda: np.copyto(work, logits)) if inplace else None
        return baseline, grad_bytes, _time_it(step, reps, prepare), None
    torch.set_num_threads(THREADS)
    x = torch.from_numpy(logits).requires_grad_(True)
    y = torch.from_numpy(labels)
    if provider == "crossent.torch":
        from crossent.torch import binary_cross_entropy_with_logits as fn
    elif provider == "torch-eager":
        fn = torch.nn.functional.binary_cross_entropy_with_logits
    else:
        raise ValueError(provider)
    small = torch.zeros(3, requires_grad=True)
    fn(small, torch.zeros(3)).backward()
    baseline = _maxrss_bytes()

    def step():
        x.grad = None
        fn(x, y).backward()

    return baseline, grad_bytes, _time_it(step, reps), None


def _child_linear_ce(provider, shape, reps):
    import torch

    n, d, v = shape
    torch.set_num_threads(THREADS)
    gen = torch.Generator().manual_seed(0)
    hidden = (torch.randn(n, d, generator=gen) / d**0.5).requires_grad_(True)
    weight = torch.randn(v, d, generator=gen).requires_grad_(True)
    target = torch.randint(0, v, (n,), generator=gen)
    grad_bytes = (hidden.numel() + weight.numel()) * 4
    F = torch.nn.functional
    if provider == "crossent.torch":
        from crossent.torch import linear_cross_entropy

        def loss_fn():
            return linear_cross_entropy(hidden, weight, target)
    elif provider == "torch-eager":
        def loss_fn():
            return F.cross_entropy(F.linear(hidden, weight), target)
    elif provider == "torch-linear_cross_entropy":
        if not hasattr(F, "linear_cross_entropy"):
            raise RuntimeError("torch.nn.functional.linear_cross_entropy is not in this torch")

        def loss_fn():
            return F.linear_cross_entropy(hidden, weight, target)
    else:
        raise ValueError(provider)
    step_small = torch.zeros(4, d, requires_grad=True)  # load libraries / JIT before the baseline
    if provider == "crossent.torch":
        linear_cross_entropy(step_small, weight[:8].detach(), torch.zeros(4, dtype=torch.long)).backward()
    else:
        F.cross_entropy(F.linear(step_small, weight[:8].detach()), torch.zeros(4, dtype=torch.long)).backward()
    baseline = _maxrss_bytes()

    def step():
        hidden.grad = None
        weight.grad = None
        loss_fn().backward()

    return baseline, grad_bytes, _time_it(step, reps), None


def _child_floors(shapes_json):
    """Copy bandwidth (bytes read + written per second) and float32 matmul rates."""
    import threading

    import numpy as np
    import torch

    spec = json.loads(shapes_json)
    n = spec["copy_bytes"] // 4
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)  # touched: the copy measures bandwidth, not page faults
    half = n // 2

    def copy():
        threads = [threading.Thread(target=np.copyto, args=(dst[i * half:(i + 1) * half], src[i * half:(i + 1) * half]))
                   for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    _, times = _time_it(copy, 5)
    bandwidth = 2 * src.nbytes / min(times)
    torch.set_num_threads(THREADS)
    rates = {}
    for n_, d, v in spec["linear"]:
        a, b = torch.randn(n_, d), torch.randn(v, d)
        _, times = _time_it(lambda: a @ b.T, 3)
        rates[f"{n_}x{d}x{v}"] = 2 * n_ * d * v / min(times)
    return {"copy_bandwidth_bytes_per_s": bandwidth, "copy_buffer_bytes": int(src.nbytes), "matmul_flops_per_s": rates}


def error_row(exc) -> dict:
    """A child's failure as a row of the table: the error's type and first line (a failing provider is not a crash)."""
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}


def print_result(out) -> None:
    """The child's answer to `run_child`: one ``RESULT`` line of JSON on stdout."""
    print("RESULT " + json.dumps(out))


def child_main(args):
    job = json.loads(args.child)
    if job["case"] == "floors":
        print_result(_child_floors(json.dumps(job["spec"])))
        return
    runner = {"ce": _child_ce, "bce": _child_bce, "linear_ce": _child_linear_ce}[job["case"]]
    try:
        baseline, grad_bytes, (first, times), compile_seconds = runner(job["provider"], tuple(job["shape"]), job["reps"])
        peak = _maxrss_bytes()
        out = {
            "median_s": statistics.median(times), "min_s": min(times), "times_s": times, "first_call_s": first,
            "temp_bytes": max(0, peak - baseline - grad_bytes), "compile_s": compile_seconds, "error": None,
        }
    except Exception as exc:  # noqa: BLE001 - a failing provider is a row, not a crash
        out = error_row(exc)
    print_result(out)


# ---------------------------------------------------------------- parent side


def add_child_arguments(parser, *, timeout):
    """The options of every side-by-side benchmark script: the time allowed to each child process, the
    results folder, and the hidden ``--child`` through which :func:`run_child` hands a job to the script."""
    parser.add_argument("--timeout", type=int, default=timeout, help="seconds allowed per child process")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON results")
    parser.add_argument("--child", help=argparse.SUPPRESS)


def run_child(job, timeout, script=__file__):
    """Run `script` --child JOB in a fresh process (2 threads); its RESULT line as a dict, or an error row."""
    cmd = [sys.executable, str(Path(script).resolve()), "--child", json.dumps(job)]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}


def floor_seconds(case, shape, floors):
    if case in ("ce", "bce"):
        elements = 1
        for s in shape:
            elements *= s
        return 2 * 4 * elements / floors["copy_bandwidth_bytes_per_s"]
    n, d, v = shape
    return 6 * n * d * v / floors["matmul_flops_per_s"][f"{n}x{d}x{v}"]


def markdown(rows):
    head = ("| provider | case | shape | median s | vs torch eager | temp MiB | floor s | vs floor | note |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        if r.get("error"):
            lines.append(f"| {r['provider']} | {r['case']} | {shape} | | | | {r['floor_s']:.4f} | | {r['error']} |")
            continue
        speed = f"{r['speedup_vs_torch_eager']:.2f}x" if r.get("speedup_vs_torch_eager") else ""
        note = f"compile {r['compile_s']:.1f} s" if r.get("compile_s") else ""
        lines.append(
            f"| {r['provider']} | {r['case']} | {shape} | {r['median_s']:.4f} | {speed} | "
            f"{r['temp_bytes'] / 2**20:.0f} | {r['floor_s']:.4f} | {r['median_s'] / r['floor_s']:.2f} | {note} |")
    return "\n".join(lines)


def parent_main(args):
    sizes = QUICK if args.quick else FULL
    floors_job = {"case": "floors", "spec": {
        "copy_bytes": (64 << 20) if args.quick else (1 << 30), "linear": sizes["linear_ce"]}}
    print("measuring the floors (copy bandwidth, matmul rate) ...", flush=True)
    floors = run_child(floors_job, args.timeout)
    if "error" in floors:
        sys.exit(f"floor measurement failed: {floors['error']}")
    print(f"  copy bandwidth {floors['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (read + write)", flush=True)
    rows = []
    for case, shapes in sizes.items():
        if args.cases and case not in args.cases:
            continue
        for shape in shapes:
            for provider in PROVIDERS[case]:
                name = f"{case} {provider}"
                if args.only and not any(o in name for o in args.only):
                    continue
                job = {"case": case, "provider": provider, "shape": list(shape), "reps": args.reps}
                print(f"  {case} {shape} {provider} ...", end=" ", flush=True)
                result = run_child(job, args.timeout)
                print(result.get("error") or f"{result['median_s']:.4f} s", flush=True)
                rows.append({"case": case, "shape": list(shape), "provider": provider,
                             "floor_s": floor_seconds(case, shape, floors), **result})
    for r in rows:
        eager = next((e for e in rows if e["case"] == r["case"] and e["shape"] == r["shape"]
                      and e["provider"] == "torch-eager" and not e.get("error")), None)
        if eager and not r.get("error"):
            r["speedup_vs_torch_eager"] = eager["median_s"] / r["median_s"]
    write_results(args, rows, markdown(rows), {"floors": floors})


def write_results(args, rows, table, extra, prefix=""):
    """Write the run (date, machine, versions, `extra`, rows) as JSON under ``args.out``; print `table`."""
    stamp = dt.datetime.now(dt.timezone.utc)
    record = {
        "date_utc": stamp.isoformat(timespec="seconds"), "quick": args.quick, "threads": THREADS, "reps": args.reps,
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "versions": _versions(), **extra, "rows": rows,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = out_dir / f"{prefix}{stamp:%Y-%m-%dT%H%M%S}{suffix}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\n{stamp:%Y-%m-%d %H:%M} UTC, {record['machine']['cpu']}, {THREADS} threads, "
          f"median of {args.reps} after a warm-up\n")
    print(table)
    print(f"\nwritten {path}")


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions():
    out = {}
    for module in ("numpy", "scipy", "torch", "numba", "crossent"):
        try:
            out[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001
            out[module] = None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that every provider runs")
    parser.add_argument("--only", nargs="*", help="keep cases/providers whose 'case provider' name contains one of these")
    parser.add_argument("--cases", nargs="*", choices=list(PROVIDERS), help="run only these cases (default: all)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions after the warm-up (default 5)")
    add_child_arguments(parser, timeout=900)
    args = parser.parse_args(argv)
    if args.reps < 5 and not args.quick:
        parser.error("--reps must be at least 5 (the issue asks for the median of >= 5)")
    if args.child:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
