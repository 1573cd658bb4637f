"""Throughput of ``crossent eval`` in one process against ``--dask local:1`` and ``--dask local:2``, and dask-ml.

Usage::

    python benchmarks/bench_dask.py            # >= 4 GiB of float32 logits in Parquet (generated once, ~4.1 GiB)
    python benchmarks/bench_dask.py --quick    # a 64 MB data set: checks that every configuration runs

The data set (``--data-dir``, default ``/tmp/crossent-bench-dask`` or ``...-quick``) is written once:
``part-NNN.parquet`` files with a ``logits`` list column of V = 1000 float32 values per row and an
integer ``label`` column, row groups of 4096 rows; it is reused while its ``meta.json`` matches.

The conventions of ``benchmarks/bench.py``: every configuration runs in a fresh Python process
(``bench.run_child``), warms up once (one file), then reports the median of ``--reps`` timed runs of
the whole command, and ``bench.write_results`` writes ``benchmarks/results/dask-<UTC date>.json``.
A ``--dask local:N`` run is the command as a user runs it: the time includes starting and stopping
the cluster (``startup_s``, measured apart, says how much of it that is).  Memory: the high-water
mark (VmHWM) of every process: the main one (the client and, on a LocalCluster, the scheduler),
and each worker process (sampled from ``/proc`` every 0.2 s while it lives; the mark only grows).
Every crossent configuration must print the same result (``same_as_one_process``).

Providers: ``crossent-eval`` (one process), ``crossent-eval-dask-local1``, ``crossent-eval-dask-local2``,
``dask-ml-log_loss`` (``dask_ml.metrics.log_loss`` on the softmax of the logits as a dask.array, on
``local:2``; it passes ``eps`` to scikit-learn, which removed it in 1.5, so with a current scikit-learn
the row records that error), and ``dask.array-nll`` (the NLL alone, written by hand with
``map_blocks`` and a mean, on ``local:2``: what one writes without crossent, and not exact).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (benchmarks/bench.py: the same conventions, child runner and results file)

HERE = Path(__file__).resolve().parent
V = 1000
ROW_GROUP = 4096
FULL = {"classes": V, "files": 32, "rows_per_file": 34_000}  # 1,088,000 rows: 4.35 GB (4.05 GiB) of logits
QUICK = {"classes": V, "files": 4, "rows_per_file": 4_000}  # 64 MB
PROVIDERS = ["crossent-eval", "crossent-eval-dask-local1", "crossent-eval-dask-local2", "dask-ml-log_loss",
             "dask.array-nll"]


# ------------------------------------------------------------------ the data


def ensure_data(data_dir: Path, spec: dict) -> list[str]:
    """Write the data set once; reuse it while meta.json matches `spec`.  The Parquet files, in order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_dir.mkdir(parents=True, exist_ok=True)
    meta = data_dir / "meta.json"
    files = [data_dir / f"part-{i:03d}.parquet" for i in range(spec["files"])]
    if meta.exists() and json.loads(meta.read_text()) == spec and all(f.exists() for f in files):
        return [str(f) for f in files]
    meta.unlink(missing_ok=True)
    n, v = spec["rows_per_file"], spec["classes"]
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        rng = np.random.default_rng(i)
        labels = rng.integers(0, v, n)
        logits = rng.standard_normal((n, v), dtype=np.float32) * 2
        logits[np.arange(n), labels] += 3.0  # a model that is right about a third of the time
        column = pa.ListArray.from_arrays(pa.array(np.arange(0, n * v + 1, v, dtype=np.int32)),
                                          pa.array(logits.reshape(-1)))
        pq.write_table(pa.table({"logits": column, "label": labels}), path, row_group_size=ROW_GROUP)
        print(f"\r  writing {path.name} ({i + 1}/{len(files)}) ...", end="", flush=True)
    print(f" {time.perf_counter() - t0:.0f} s", flush=True)
    meta.write_text(json.dumps(spec))
    return [str(f) for f in files]


# ----------------------------------------------------------------- child side


class PeakMemory:
    """The VmHWM of this process and of every descendant process, sampled every `period` seconds."""

    def __init__(self, period=0.2):
        import psutil

        self.me = psutil.Process()
        self.peaks: dict[int, tuple[str, int]] = {}
        self.period, self.stop = period, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def _run(self):
        while not self.stop.wait(self.period):
            self.sample()

    def sample(self):
        import psutil

        try:
            children = self.me.children(recursive=True)
        except psutil.Error:
            return
        for proc in children:
            peak = _vm_hwm(proc.pid)
            if peak:
                try:  # a worker is a spawned process; the others: multiprocessing's resource tracker
                    cmdline = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                role = "worker" if "spawn_main" in cmdline else "other"
                self.peaks[proc.pid] = (role, max(peak, self.peaks.get(proc.pid, ("", 0))[1]))

    def summary(self) -> dict:
        self.sample()
        workers = [p for role, p in self.peaks.values() if role == "worker"]
        others = [p for role, p in self.peaks.values() if role != "worker"]
        main = bench._maxrss_bytes()
        return {"main_peak_bytes": main, "worker_processes": len(workers),
                "worker_peak_max_bytes": max(workers, default=0), "worker_peak_sum_bytes": sum(workers),
                "other_peak_sum_bytes": sum(others), "all_peak_sum_bytes": main + sum(workers) + sum(others)}


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _eval(files, extra) -> str:
    import crossent.cli as cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["eval", *files, "--column", "logits", "--labels", "label", "--json", "--no-progress",
                         *extra])
    if code != 0:
        raise RuntimeError(f"crossent eval exited with {code}")
    return out.getvalue().strip()


def _read_block(path, group, spec_classes):
    """A dask task: one row group of one file as (logits, labels) NumPy arrays."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read_row_group(group, columns=["logits", "label"])
    values = table.column("logits").combine_chunks().flatten().to_numpy()
    return values.reshape(-1, spec_classes), np.asarray(table.column("label"))


def _dask_arrays(files, classes):
    """The logits and labels of the files as dask.arrays, one block per row group."""
    import dask
    import dask.array as da
    import numpy as np
    import pyarrow.parquet as pq

    xs, ys = [], []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            block = dask.delayed(_read_block, pure=True)(path, g, classes)
            xs.append(da.from_delayed(block[0], (n, classes), dtype=np.float32))
            ys.append(da.from_delayed(block[1], (n,), dtype=np.int64))
    return da.concatenate(xs), da.concatenate(ys)


def _nll_block(x, y):
    import numpy as np
    from scipy.special import logsumexp

    x = x.astype(np.float64)
    return logsumexp(x, axis=1) - x[np.arange(len(y)), y]


def _baseline(provider, files, classes):
    """dask-ml's log_loss, or the hand-written NLL, on a local:2 cluster; (value, seconds, startup_s)."""
    import dask.array as da

    from crossent.dask import cluster_client

    t0 = time.perf_counter()
    with cluster_client("local:2") as client:
        startup = time.perf_counter() - t0
        x, y = _dask_arrays(files, classes)
        if provider == "dask-ml-log_loss":
            from dask_ml.metrics import log_loss

            shifted = da.exp(x - x.max(axis=1, keepdims=True))
            value = log_loss(y, shifted / shifted.sum(axis=1, keepdims=True), labels=list(range(classes)))
        else:
            value = da.blockwise(_nll_block, "i", x, "ij", y, "i", dtype="f8", concatenate=True).mean()
        value = float(client.compute(value).result())
    return value, time.perf_counter() - t0, startup


def child_main(job):
    files, classes, reps = job["files"], job["classes"], job["reps"]
    provider = job["provider"]
    try:
        extra = {"crossent-eval": [], "crossent-eval-dask-local1": ["--dask", "local:1"],
                 "crossent-eval-dask-local2": ["--dask", "local:2"]}.get(provider)
        times, startup, output, memory = [], None, None, []
        if extra is None:
            _baseline(provider, files[:1], classes)  # warm-up: imports, one file into the page cache
        else:
            if extra:
                from crossent.dask import cluster_client

                t0 = time.perf_counter()
                with cluster_client(extra[1]):  # a cluster started and stopped: what the command adds
                    startup = time.perf_counter() - t0
            _eval(files[:1], extra)
        for _ in range(reps):
            with PeakMemory() as peaks:  # the processes of this run (a --dask local:N run starts its own)
                t0 = time.perf_counter()
                if extra is None:
                    value, _, startup = _baseline(provider, files, classes)
                    output = json.dumps({"value": value})
                else:
                    output = _eval(files, extra)
                times.append(time.perf_counter() - t0)
                memory.append(peaks.summary())
        out = {"median_s": statistics.median(times), "min_s": min(times), "times_s": times, "startup_s": startup,
               "output": output, "error": None, **{k: max(m[k] for m in memory) for k in memory[0]}}
    except Exception as exc:  # noqa: BLE001 - a failing provider is a row, not a crash
        out = bench.error_row(exc)
    bench.print_result(out)


def run_child(job, timeout):
    return bench.run_child(job, timeout, script=__file__)  # the loss benchmark's runner, this script's children


# ---------------------------------------------------------------- parent side


def markdown(rows):
    def mib(r, key):
        return f"{r[key] / 2**20:.0f}"

    lines = ["| provider | rows | median s | startup s | rows/s | GB/s of logits | main peak MiB | "
             "worker peak max MiB | worker peak sum MiB | all processes MiB | note |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['provider']} | {r['rows']:,} | | | | | | | | | {r['error']} |")
            continue
        startup = f"{r['startup_s']:.1f}" if r.get("startup_s") is not None else ""
        workers = r["worker_processes"] > 0
        lines.append(
            f"| {r['provider']} | {r['rows']:,} | {r['median_s']:.2f} | {startup} | {r['rows_per_s']:,.0f} | "
            f"{r['logits_gb_per_s']:.2f} | {mib(r, 'main_peak_bytes')} | "
            f"{mib(r, 'worker_peak_max_bytes') if workers else ''} | {mib(r, 'worker_peak_sum_bytes') if workers else ''}"
            f" | {mib(r, 'all_peak_sum_bytes')} | {r.get('note', '')} |")
    return "\n".join(lines)


def parent_main(args):
    spec = QUICK if args.quick else FULL
    data_dir = Path(args.data_dir or f"/tmp/crossent-bench-dask{'-quick' if args.quick else ''}")
    print(f"data set in {data_dir} ...", flush=True)
    files = ensure_data(data_dir, spec)
    n_rows = spec["files"] * spec["rows_per_file"]
    logits_bytes = n_rows * spec["classes"] * 4
    print(f"  {len(files)} files, {n_rows:,} rows, {logits_bytes / 2**30:.2f} GiB of float32 logits", flush=True)
    rows = []
    for provider in PROVIDERS:
        if args.only and not any(o in provider for o in args.only):
            continue
        print(f"  {provider} ...", end=" ", flush=True)
        result = run_child({"provider": provider, "files": files, "classes": spec["classes"], "reps": args.reps},
                           args.timeout)
        print(result.get("error") or f"{result['median_s']:.2f} s", flush=True)
        row = {"provider": provider, "rows": n_rows, "logits_bytes": logits_bytes, **result}
        if not row.get("error"):
            row["rows_per_s"] = n_rows / row["median_s"]
            row["logits_gb_per_s"] = logits_bytes / row["median_s"] / 1e9
        rows.append(row)
    reference = next((r for r in rows if r["provider"] == "crossent-eval" and not r.get("error")), None)
    for r in rows:
        if reference and not r.get("error"):
            if r["provider"].startswith("crossent"):
                r["same_as_one_process"] = r["output"] == reference["output"]
                r["note"] = "same result" if r["same_as_one_process"] else "RESULT DIFFERS"
            else:
                value, nll = json.loads(r["output"])["value"], json.loads(reference["output"])["nll"]
                r["note"] = f"value {value:.6f} vs crossent nll {nll:.6f}"
    extra = {"data": {"dir": str(data_dir), **spec, "row_group_rows": ROW_GROUP, "rows": n_rows,
                      "logits_bytes": logits_bytes, "compression": "snappy (pyarrow's default)"}}
    bench.write_results(args, rows, markdown(rows), extra, prefix="dask-")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 64 MB data set: check that every provider runs")
    parser.add_argument("--only", nargs="*", help="keep providers whose name contains one of these")
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each command after a warm-up (default 3)")
    parser.add_argument("--data-dir", help="where the Parquet data set is written once and reused")
    bench.add_child_arguments(parser, timeout=1800)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
