"""Vocabulary-parallel cross-entropy on 2 gloo ranks against one process at the same total shape.

Usage::

    python benchmarks/bench_distributed.py            # the full shapes (about 7 minutes, ~4 GiB RAM; an estimate)
    python benchmarks/bench_distributed.py --quick    # tiny sizes, to check that every provider runs (1-2 minutes)

The conventions of ``benchmarks/bench.py``: every (case, shape, provider) runs in
a fresh Python process (``bench.run_child``), the providers of one shape one
after another; each warms up once, then reports the median of ``--reps`` timed
forward + backward steps and its temporary memory (the ``ru_maxrss`` high-water
mark minus the baseline after the inputs were allocated, minus the gradients
it must return).  The machine's 2 cores are shared out the same way in every
row: one process with 2 threads, or 2 ranks with 1 thread each.

Providers, at the same total shape ``N x V`` (``ce``) or ``N x D x V`` (``linear_ce``):

* ``torch-eager`` / ``crossent.torch``: one process on the full logits
  (``F.cross_entropy``, ``crossent.torch.cross_entropy``; for the head,
  ``F.linear`` + ``F.cross_entropy`` and ``crossent.torch.linear_cross_entropy``);
* ``vocab_parallel-1rank``: ``crossent.torch.distributed`` in a world of one
  process (the algorithm without communication partners);
* ``vocab_parallel-2ranks``: the same on 2 gloo ranks over 127.0.0.1, each
  holding half of the vocabulary.  A step's time is the slower rank's; *temp
  MiB* is per rank (the larger); *comm s* is the median time of the forward
  pass's three collectives alone (the layout all-gather, the maxima's and the
  sums' all-reduces), run on tensors of the same sizes.

What would change on NCCL (not measured here: no GPU): the collectives would
run on the GPU over NVLink or the network, moving the same ``(1 + 3) N`` numbers
per step (plus eight integers per rank), a few microseconds to a few hundred
for the usual N, against the milliseconds that gloo's TCP loopback costs; the
two host synchronisations per step (the layout table and the error flags)
would become the visible cost for small N, and the loss's element-wise work
would be memory-bound on the GPU instead of on two CPU cores.

Results go to ``benchmarks/results/distributed-<UTC date>.json``; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (benchmarks/bench.py: the same conventions, child runner and results file)
from bench import THREADS, _maxrss_bytes, _time_it  # noqa: E402

HERE = Path(__file__).resolve().parent
FULL = {"ce": [(4096, 32768), (2048, 128256)], "linear_ce": [(1024, 1024, 32768)]}
QUICK = {"ce": [(256, 4096)], "linear_ce": [(128, 64, 2048)]}
PROVIDERS = ["torch-eager", "crossent.torch", "vocab_parallel-1rank", "vocab_parallel-2ranks"]


# ----------------------------------------------------------------- child side


def _inputs(case, shape, rank, world):
    """This rank's slice of the problem (all of it for one process), float32, drawn without the full logits.

    Only the slice is ever allocated, so that the high-water mark before the baseline is the slice's.
    """
    import torch

    n, v = shape[0], shape[-1]
    target = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1 + rank)
    classes = v * (rank + 1) // world - v * rank // world
    if case == "ce":
        return {"logits": torch.randn(n, classes, generator=g).requires_grad_(), "target": target}
    d = shape[1]
    hidden = torch.randn(n, d, generator=torch.Generator().manual_seed(2))
    weight = torch.randn(classes, d, generator=g) / d**0.5
    return {"hidden": hidden.requires_grad_(), "weight": weight.requires_grad_(), "target": target}


def _step(case, provider, x):
    import torch
    import torch.nn.functional as F

    import crossent.torch as ct
    from crossent.torch import distributed as ctd

    leaves = [t for t in x.values() if t.requires_grad]
    if case == "ce":
        fn = {"torch-eager": F.cross_entropy, "crossent.torch": ct.cross_entropy}.get(
            provider, ctd.vocab_parallel_cross_entropy)
        loss = fn(x["logits"], x["target"])
    elif provider == "torch-eager":
        loss = F.cross_entropy(F.linear(x["hidden"], x["weight"]), x["target"])
    elif provider == "crossent.torch":
        loss = ct.linear_cross_entropy(x["hidden"], x["weight"], x["target"])
    else:
        loss = ctd.vocab_parallel_linear_cross_entropy(x["hidden"], x["weight"], x["target"])
    torch.autograd.grad(loss, leaves)


def _comm_seconds(case, shape, world, reps):
    """The forward pass's three collectives alone, on tensors of the sizes the loss sends."""
    import time

    import torch
    import torch.distributed as dist

    n = shape[0]
    meta, gathered = torch.zeros(8, dtype=torch.int64), [torch.zeros(8, dtype=torch.int64) for _ in range(world)]
    maxima, sums = torch.zeros(n + 1), torch.zeros(3, n)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        dist.all_gather(gathered, meta)
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
        dist.all_reduce(sums)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _measure(case, provider, shape, reps, rank, world):
    x = _inputs(case, shape, rank, world)
    grad_bytes = sum(t.numel() * t.element_size() for t in x.values() if t.requires_grad)
    baseline = _maxrss_bytes()
    first, times = _time_it(lambda: _step(case, provider, x), reps)
    out = {"times_s": times, "first_call_s": first, "temp_bytes": max(0, _maxrss_bytes() - baseline - grad_bytes)}
    if world > 1:
        import torch.distributed as dist

        out["comm_s"] = _comm_seconds(case, shape, world, reps)
        dist.barrier()
    return out


def _rank_main(rank, world, port, job, queue):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(THREADS // world)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=job.get("timeout", 900)))
    try:
        queue.put((rank, _measure(job["case"], job["provider"], tuple(job["shape"]), job["reps"], rank, world)))
    finally:
        dist.destroy_process_group()


def child_main(args):
    job = json.loads(args.child)
    try:
        world = 2 if job["provider"].endswith("2ranks") else 1
        if world == 1:
            import torch
            import torch.distributed as dist

            torch.set_num_threads(THREADS)
            if job["provider"].startswith("vocab_parallel"):
                dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
            per_rank = [_measure(job["case"], job["provider"], tuple(job["shape"]), job["reps"], 0, 1)]
        else:
            import torch.multiprocessing as mp

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            queue = mp.get_context("spawn").SimpleQueue()
            mp.spawn(_rank_main, args=(world, port, job, queue), nprocs=world, join=True)
            per_rank = [r for _, r in sorted(queue.get() for _ in range(world))]
        steps = [max(ts) for ts in zip(*(r["times_s"] for r in per_rank))]  # a step ends when the slower rank is done
        out = {"median_s": statistics.median(steps), "min_s": min(steps), "times_s": steps,
               "first_call_s": max(r["first_call_s"] for r in per_rank),
               "temp_bytes": max(r["temp_bytes"] for r in per_rank),
               "temp_bytes_per_rank": [r["temp_bytes"] for r in per_rank], "ranks": world,
               "comm_s": per_rank[0].get("comm_s"), "error": None}
    except Exception as exc:  # noqa: BLE001 - a failing provider is a row, not a crash
        out = bench.error_row(exc)
    bench.print_result(out)


# ---------------------------------------------------------------- parent side


def markdown(rows):
    head = ("| provider | case | shape | ranks | median s | time / crossent.torch | temp MiB per rank | comm s |\n"
            "|---|---|---|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        if r.get("error"):
            lines.append(f"| {r['provider']} | {r['case']} | {shape} | | | | | {r['error']} |")
            continue
        ratio = f"{r['vs_one_process']:.2f}x" if r.get("vs_one_process") else ""
        comm = f"{r['comm_s']:.4f}" if r.get("comm_s") is not None else ""
        lines.append(f"| {r['provider']} | {r['case']} | {shape} | {r['ranks']} | {r['median_s']:.4f} | {ratio} | "
                     f"{r['temp_bytes'] / 2**20:.0f} | {comm} |")
    return "\n".join(lines)


def parent_main(args):
    sizes = QUICK if args.quick else FULL
    rows = []
    for case, shapes in sizes.items():
        for shape in shapes:
            for provider in PROVIDERS:
                if args.only and not any(o in f"{case} {provider}" for o in args.only):
                    continue
                job = {"case": case, "provider": provider, "shape": list(shape), "reps": args.reps,
                       "timeout": args.timeout}
                print(f"  {case} {shape} {provider} ...", end=" ", flush=True)
                result = bench.run_child(job, args.timeout, script=__file__)
                print(result.get("error") or f"{result['median_s']:.4f} s", flush=True)
                rows.append({"case": case, "shape": list(shape), "provider": provider, **result})
    for r in rows:
        one = next((o for o in rows if o["case"] == r["case"] and o["shape"] == r["shape"]
                    and o["provider"] == "crossent.torch" and not o.get("error")), None)
        if one and not r.get("error"):
            r["vs_one_process"] = r["median_s"] / one["median_s"]
    bench.write_results(args, rows, markdown(rows), {"benchmark": "distributed"}, prefix="distributed-")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that every provider runs")
    parser.add_argument("--only", nargs="*", help="keep providers whose 'case provider' name contains one of these")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions after the warm-up (default 5)")
    bench.add_child_arguments(parser, timeout=900)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
