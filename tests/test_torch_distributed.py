"""crossent.torch.distributed in real processes: gloo on 127.0.0.1, 2 ranks, and 3 ranks with an uneven split.

Starting a world costs seconds, so each world starts once per module (the fixtures `world2` and `world3`) and
runs every scenario below in turn, in every rank; each rank saves what it computed, and the tests compare it
here with the single-process result on the full logits (float64), and with the conformance reference.
"""

from __future__ import annotations

import datetime
import itertools
import math
import os
import socket
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = torch.distributed
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402
from _torch_helpers import assert_close, reference_z_loss_rows  # noqa: E402

import crossent.torch as ct  # noqa: E402
from crossent.torch import distributed as ctd  # noqa: E402

F = torch.nn.functional
CONFORMANCE = Path(__file__).resolve().parent / "conformance"
V = 11  # classes of the scenarios; the worlds split them (6, 5) and (4, 5, 2)
SPLITS = {2: (6, 5), 3: (4, 5, 2)}
F64 = torch.float64


def _shard(t, sizes, rank, dim=-1):
    return t.narrow(dim, sum(sizes[:rank]), sizes[rank])


def _even_split(classes, world):
    """An uneven split of `classes` over `world` ranks, the larger shards last; zero-size shards where too few."""
    return tuple(classes // world + (r >= world - classes % world) for r in range(world))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- the inputs (both sides build them)


def ce_inputs(seed=0, n=9):
    g = _gen(seed)
    x = torch.randn(n, V, generator=g, dtype=F64) * 3
    y = torch.randint(0, V, (n,), generator=g)
    y[::4] = -100
    w = torch.rand(V, generator=g, dtype=F64) + 0.5
    return x, y, w, torch.randn(n, generator=g, dtype=F64)


CE_GRID = [dict(label_smoothing=eps, z_loss=z, reduction=red, weighted=w)
           for eps, z, red, w in itertools.product((0.0, 0.1, 1.0), (0.0, 1e-2), ("none", "sum", "mean"),
                                                   (False, True))]


def linear_inputs(seed=1, n=10, d=5, scale=1.0):
    g = _gen(seed)
    h = torch.randn(n, d, generator=g, dtype=F64) * scale
    w = torch.randn(V, d, generator=g, dtype=F64)
    b = torch.randn(V, generator=g, dtype=F64)
    y = torch.randint(0, V, (n,), generator=g)
    y[[1, 6]] = -100
    return h, w, b, y, torch.randn(n, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)


LINEAR_GRID = [dict(label_smoothing=0.0, z_loss=0.0, reduction="mean", weighted=False, bias=True),
               dict(label_smoothing=0.1, z_loss=1e-2, reduction="sum", weighted=True, bias=True),
               dict(label_smoothing=0.1, z_loss=0.0, reduction="none", weighted=False, bias=False),
               dict(label_smoothing=1.0, z_loss=1e-3, reduction="mean", weighted=True, bias=True)]


def dp_inputs(rank, seed=3, d=4):
    """Data parallelism: rank 0 holds 3 tokens, rank 1 holds 13 (2 ignored); the same model on both."""
    counts = (3, 13)
    g = _gen(seed)
    model = torch.nn.Linear(d, V, dtype=F64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(V, d, generator=g, dtype=F64))
        model.bias.copy_(torch.randn(V, generator=g, dtype=F64))
    xs = [torch.randn(c, d, generator=g, dtype=F64) for c in counts]
    ys = [torch.randint(0, V, (c,), generator=g) for c in counts]
    ys[1][[4, 9]] = -100
    w = torch.rand(V, generator=g, dtype=F64) + 0.25
    if rank is None:
        return model, torch.cat(xs), torch.cat(ys), w
    return model, xs[rank], ys[rank], w


def reference_ce(x, y, w=None, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    """F.cross_entropy on the full logits, plus the documented z-loss term (torch has none)."""
    rows = F.cross_entropy(x, y, weight=w, label_smoothing=label_smoothing, reduction="none")
    z_rows, denominator = reference_z_loss_rows(x, y, w, -100, z_loss)
    rows = rows + z_rows
    return {"none": rows, "sum": rows.sum(), "mean": rows.sum() / denominator}[reduction]


def _upstream(reduction, rows):
    return rows if reduction == "none" else torch.tensor(0.7, dtype=F64)


# --------------------------------------------------------------------------- scenarios (run in every rank)


def scenario_ce_grid(rank, world, sizes):
    x, y, w, up = ce_inputs()
    out = []
    for opts in CE_GRID:
        shard = _shard(x, sizes, rank).clone().requires_grad_()
        options = {k: v for k, v in opts.items() if k != "weighted"}
        loss = ctd.vocab_parallel_cross_entropy(shard, y, class_weight=w if opts["weighted"] else None, **options)
        (grad,) = torch.autograd.grad(loss, shard, _upstream(opts["reduction"], up))
        out.append((loss.detach(), grad))
    return out


def scenario_megatron_737(rank, world, sizes):
    """Ours, and the smoothing of Megatron-LM #737: the mean log-probability over the local shard only."""
    x, y, _, _ = ce_inputs(seed=5)
    eps, shard = 0.1, _shard(x, sizes, rank)
    ours = ctd.vocab_parallel_cross_entropy(shard, y, label_smoothing=eps)
    top = shard.amax(1)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    total = (shard - top[:, None]).exp().sum(1)
    dist.all_reduce(total)
    log_p = shard - top[:, None] - total.log()[:, None]  # this shard's log-probabilities (globally normalised)
    kept, start = y != -100, sum(sizes[:rank])
    mine = kept & (y >= start) & (y < start + sizes[rank])
    nll = torch.where(mine, -log_p.gather(1, (y - start).clamp(0, sizes[rank] - 1)[:, None])[:, 0], 0.0)
    dist.all_reduce(nll)
    per_shard = (1 - eps) * nll - eps * log_p.mean(1)  # the local mean over the local size
    return ours, per_shard[kept].mean()


def scenario_zero_size_shard(rank, world, sizes):
    return scenario_ce_grid(rank, world, (7, 0, 4)) if world == 3 else None


def scenario_linear_grid(rank, world, sizes):
    h, w, b, y, up, _ = linear_inputs()
    out = []
    for opts in LINEAR_GRID:
        leaves = [h.clone().requires_grad_(), _shard(w, sizes, rank, 0).clone().requires_grad_()]
        if opts["bias"]:
            leaves.append(_shard(b, sizes, rank).clone().requires_grad_())
        loss = ctd.vocab_parallel_linear_cross_entropy(
            leaves[0], leaves[1], y, leaves[2] if opts["bias"] else None, chunk_size=3,
            class_weight=torch.rand(V, generator=_gen(9), dtype=F64) if opts["weighted"] else None,
            label_smoothing=opts["label_smoothing"], z_loss=opts["z_loss"], reduction=opts["reduction"])
        out.append((loss.detach(), torch.autograd.grad(loss, leaves, _upstream(opts["reduction"], up))))
    hidden = h.clone().requires_grad_()  # without the all-reduce: this rank's part of the hidden gradient
    loss = ctd.vocab_parallel_linear_cross_entropy(hidden, _shard(w, sizes, rank, 0), y, all_reduce_hidden_grad=False)
    out.append(torch.autograd.grad(loss, hidden)[0])
    return out


def scenario_log_probs(rank, world, sizes):
    out = []
    for scale in (1.0, 30.0):  # 30: confident rows, where a fused kernel could return a positive log-prob
        h, w, b, y, g_lp, g_h = linear_inputs(seed=2, scale=scale)
        leaves = [h.clone().requires_grad_(), _shard(w, sizes, rank, 0).clone().requires_grad_(),
                  _shard(b, sizes, rank).clone().requires_grad_()]
        lp, ent = ctd.vocab_parallel_linear_log_probs_and_entropy(*leaves[:2], y, leaves[2], temperature=0.7,
                                                                   chunk_size=4)
        grads = torch.autograd.grad((lp, ent), leaves, (g_lp, g_h))
        lp_only, none = ctd.vocab_parallel_linear_log_probs_and_entropy(*leaves[:2], y, leaves[2], temperature=0.7,
                                                                         return_entropy=False)
        grads_lp = torch.autograd.grad(lp_only, leaves, g_lp)
        out.append((lp.detach(), ent.detach(), grads, lp_only.detach(), none, grads_lp))
    return out


def scenario_log_probs_masked(rank, world, sizes):
    """A class masked by a -inf bias (on the last shard): entropy and gradients stay finite (they were NaN)."""
    h, w, b, y, g_lp, g_h = linear_inputs(seed=4)
    b = b.clone()
    b[-1] = -math.inf
    y = torch.where(y == V - 1, 0, y)  # no kept target on the masked class
    leaves = [h.clone().requires_grad_(), _shard(w, sizes, rank, 0).clone().requires_grad_()]
    lp, ent = ctd.vocab_parallel_linear_log_probs_and_entropy(*leaves, y, _shard(b, sizes, rank), chunk_size=4)
    return lp.detach(), ent.detach(), torch.autograd.grad((lp, ent), leaves, (g_lp, g_h)), (h, w, b, y, g_lp, g_h)


def scenario_data_parallel(rank, world, sizes):
    """Unequal token counts per rank: the DDP average of per-rank means, and the global denominator."""
    if world != 2:
        return None
    from torch.nn.parallel import DistributedDataParallel as DDP

    model, x, y, w = dp_inputs(rank)
    ddp = DDP(model)  # one wrapper for every case (building one costs a second): no step is taken, grads reset

    def ddp_grads(loss_fn):
        model.zero_grad(set_to_none=True)
        loss_fn(ddp, x, y, w).backward()  # DDP averages the gradients over the ranks
        return [p.grad.clone() for p in model.parameters()]

    out = {"biased": ddp_grads(lambda m, x, y, w: F.cross_entropy(m(x), y))}
    out["fixed"] = ddp_grads(lambda m, x, y, w: ct.cross_entropy(m(x), y, reduction="sum")
                             / ctd.global_denominator(y, dtype=F64) * world)
    out["fixed_weighted"] = ddp_grads(
        lambda m, x, y, w: ct.cross_entropy(m(x), y, weight=w, reduction="sum")
        / ctd.global_denominator(y, class_weight=w) * world)
    # Two micro-batches per rank, one optimiser step: the denominator counts both, on both ranks.
    model.zero_grad(set_to_none=True)
    half = x.shape[0] // 2
    denominator = ctd.global_denominator([y[:half], y[half:]], class_weight=w)
    with ddp.no_sync():
        (ct.cross_entropy(ddp(x[:half]), y[:half], weight=w, reduction="sum") / denominator * world).backward()
    (ct.cross_entropy(ddp(x[half:]), y[half:], weight=w, reduction="sum") / denominator * world).backward()
    out["micro_batches"] = [p.grad.clone() for p in model.parameters()]
    # The global_denominator argument, in a tensor-parallel group of one rank per data-parallel rank.
    groups = [dist.new_group([r]) for r in range(world)]
    model, x, y, w = dp_inputs(rank)
    loss = ctd.vocab_parallel_cross_entropy(model(x), y, group=groups[rank], class_weight=w,
                                            global_denominator=ctd.global_denominator(y, class_weight=w))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for grad in grads:
        dist.all_reduce(grad)  # the sum over the data-parallel ranks: no factor
    out["argument"] = list(grads)
    return out


def _error_cases(rank, world, sizes):
    """Each is bad on one rank or on all; every rank must raise the same ValueError (a hang would time out)."""
    x, y, w, _ = ce_inputs()
    shard = _shard(x, sizes, rank)
    other = y.clone()
    other[2] = (other[2] + 1) % V
    nan = shard.clone()
    nan[3, 0] = float("nan")
    masked = shard.clone()
    masked[1] = -float("inf")
    negative = w.clone()
    negative[4] = -1.0
    last = rank == world - 1
    return {
        "target_differs": lambda: ctd.vocab_parallel_cross_entropy(shard, other if last else y),
        "token_count_differs": lambda: ctd.vocab_parallel_cross_entropy(shard[:-1] if last else shard,
                                                                         y[:-1] if last else y),
        "options_differ": lambda: ctd.vocab_parallel_cross_entropy(shard, y, label_smoothing=0.2 if last else 0.1),
        "nan_on_last_rank": lambda: ctd.vocab_parallel_cross_entropy(nan if last else shard, y),
        "label_out_of_range": lambda: ctd.vocab_parallel_cross_entropy(shard, torch.full_like(y, V)),
        "kept_row_all_masked": lambda: ctd.vocab_parallel_cross_entropy(masked, torch.ones_like(y)),
        "class_weight_negative_on_first_rank": lambda: ctd.vocab_parallel_cross_entropy(
            shard, y, class_weight=negative if rank == 0 else w),
        "linear_target_differs": lambda: ctd.vocab_parallel_linear_cross_entropy(
            x[:, :3], torch.ones(sizes[rank], 3, dtype=F64), other if last else y),
        # rank 0: labels (2, 0) at positions 0 and 1, the last rank (0, 1): equal under weights 1 and 2
        "target_differs_with_an_equal_weighted_sum": lambda: ctd.vocab_parallel_cross_entropy(
            shard, torch.cat([torch.tensor([0, 1]) if last else torch.tensor([2, 0]), y[2:]])),
        "dtype_differs": lambda: ctd.vocab_parallel_cross_entropy(shard.float() if last else shard, y),
        "denominator_bad_label_on_last_rank": lambda: ctd.global_denominator(
            torch.tensor([1, -5]) if last else torch.tensor([1, 2])),
    }


def scenario_errors(rank, world, sizes):
    out = {}
    for name, call in _error_cases(rank, world, sizes).items():
        try:
            call()
            out[name] = None
        except ValueError as error:
            out[name] = str(error)
    return out


def scenario_conformance(rank, world, sizes):
    """Every integer-label conformance case, its classes split over the ranks (zero-size shards included)."""
    sys.path.insert(0, str(CONFORMANCE))
    from cases import CASES
    from implementations import _to_torch

    out = {}
    for case in CASES:
        if case.probability_targets:
            continue
        split = _even_split(case.logits.shape[1], world)
        logits = _shard(_to_torch(case.logits), split, rank).clone().requires_grad_()
        weight = None if case.class_weight is None else _to_torch(case.class_weight, case.dtype_name)
        try:
            loss = ctd.vocab_parallel_cross_entropy(logits, _to_torch(case.labels), class_weight=weight,
                                                    ignore_index=case.ignore_index,
                                                    label_smoothing=case.label_smoothing, z_loss=case.z_loss,
                                                    reduction=case.reduction)
            (loss.sum() if loss.ndim else loss).backward()
            out[case.id] = (loss.detach(), logits.grad)
        except ValueError as error:
            out[case.id] = str(error)
    return out


def readme_block(title):
    """The README's ```python block that starts with ``# crossent.torch.distributed: <title>``."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.index(f"```python\n# crossent.torch.distributed: {title}")
    return text[start + len("```python\n"):text.index("```", start + 3)]


def scenario_readme(rank, world, sizes):
    """The README's two examples, run as they are written."""
    if world != 2:
        return None
    from types import SimpleNamespace

    from torch.nn.parallel import DistributedDataParallel as DDP

    x, y, _, _ = ce_inputs()
    h, w, _, _, _, _ = linear_inputs(n=x.shape[0])  # the same 9 tokens and target
    tp = dp = dist.group.WORLD
    scope = {"ct": ct, "tp": tp, "logits_shard": _shard(x, sizes, rank).clone().requires_grad_(), "target": y,
             "hidden": h.clone().requires_grad_(), "weight_shard": _shard(w, sizes, rank, 0).clone().requires_grad_()}
    exec(readme_block("tensor parallel"), scope)
    out = {"tensor": (scope["logits_shard"].grad, scope["hidden"].grad, scope["weight_shard"].grad)}
    model, x, y, _ = dp_inputs(rank)
    half = x.shape[0] // 2
    batches = [SimpleNamespace(input=x[:half], target=y[:half]), SimpleNamespace(input=x[half:], target=y[half:])]
    exec(readme_block("data parallel"), {"ct": ct, "dp": dp, "model": DDP(model), "micro_batches": batches})
    out["data"] = [p.grad for p in model.parameters()]
    return out


SCENARIOS = {name[len("scenario_"):]: f for name, f in globals().items() if name.startswith("scenario_")}


# --------------------------------------------------------------------------- the worlds


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    results = {name: scenario(rank, world, SPLITS[world]) for name, scenario in SCENARIOS.items()}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_world(world, out_dir):
    mp.spawn(_worker, args=(world, _free_port(), str(out_dir)), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    return _run_world(2, tmp_path_factory.mktemp("world2"))


@pytest.fixture(scope="module")
def world3(tmp_path_factory):
    return _run_world(3, tmp_path_factory.mktemp("world3"))


@pytest.fixture(params=[2, 3], ids=["2ranks", "3ranks_uneven"])
def world(request):
    return request.param, request.getfixturevalue(f"world{request.param}")


# --------------------------------------------------------------------------- vocab_parallel_cross_entropy


@pytest.mark.parametrize("index", range(len(CE_GRID)),
                         ids=["eps{label_smoothing:g}-z{z_loss:g}-{reduction}-w{weighted:d}".format(**o)
                              for o in CE_GRID])
def test_vocab_parallel_cross_entropy_matches_single_process(world, index):
    size, results = world
    opts = CE_GRID[index]
    x, y, w, up = ce_inputs()
    leaf = x.clone().requires_grad_()
    ref = reference_ce(leaf, y, w if opts["weighted"] else None, opts["label_smoothing"], opts["z_loss"],
                       opts["reduction"])
    (ref_grad,) = torch.autograd.grad(ref, leaf, _upstream(opts["reduction"], up))
    for rank, result in enumerate(results):
        loss, grad = result["ce_grid"][index]
        assert_close(loss, ref.detach())
        assert_close(grad, _shard(ref_grad, SPLITS[size], rank))
        assert torch.equal(loss, results[0]["ce_grid"][index][0])  # the same bits on every rank


@pytest.mark.parametrize("index", [0, 7, 13, 23, 35])
def test_a_rank_with_no_classes_changes_nothing(world3, index):
    x, y, _, _ = ce_inputs()
    ref = world3[0]["ce_grid"][index]
    for rank, result in enumerate(world3):
        loss, grad = result["zero_size_shard"][index]
        assert_close(loss, ref[0])
        assert grad.shape == (x.shape[0], (7, 0, 4)[rank])


def test_label_smoothing_uses_the_global_vocabulary_unlike_megatron_737(world):
    """A per-shard mean log-probability gives a loss that depends on the rank and is not the loss; ours is."""
    _, results = world
    x, y, _, _ = ce_inputs(seed=5)
    expected = F.cross_entropy(x, y, label_smoothing=0.1)
    per_shard = [result["megatron_737"][1] for result in results]
    for ours, _ in (result["megatron_737"] for result in results):
        assert_close(ours, expected)
    assert max(abs(float(p - expected)) for p in per_shard) > 1e-2
    assert abs(float(per_shard[0] - per_shard[1])) > 1e-2


# --------------------------------------------------------------------------- the linear head


@pytest.mark.parametrize("index", range(len(LINEAR_GRID)))
def test_vocab_parallel_linear_cross_entropy_matches_single_process(world, index):
    size, results = world
    opts = LINEAR_GRID[index]
    h, w, b, y, up, _ = linear_inputs()
    leaves = [h.clone().requires_grad_(), w.clone().requires_grad_()] + ([b.clone().requires_grad_()]
                                                                         if opts["bias"] else [])
    ref = reference_ce(F.linear(leaves[0], leaves[1], leaves[2] if opts["bias"] else None), y,
                       torch.rand(V, generator=_gen(9), dtype=F64) if opts["weighted"] else None,
                       opts["label_smoothing"], opts["z_loss"], opts["reduction"])
    ref_grads = torch.autograd.grad(ref, leaves, _upstream(opts["reduction"], up))
    for rank, result in enumerate(results):
        loss, grads = result["linear_grid"][index]
        assert_close(loss, ref.detach())
        assert_close(grads[0], ref_grads[0])  # the hidden gradient, all-reduced over the group
        for got, want in zip(grads[1:], ref_grads[1:]):
            assert_close(got, _shard(want, SPLITS[size], rank, 0))


def test_hidden_gradient_parts_add_up_without_the_all_reduce(world):
    _, results = world
    h, w, _, y, _, _ = linear_inputs()
    leaf = h.clone().requires_grad_()
    (expected,) = torch.autograd.grad(F.cross_entropy(leaf @ w.T, y), leaf)
    parts = [result["linear_grid"][-1] for result in results]
    assert_close(sum(parts), expected)
    assert not torch.allclose(parts[0], expected)


@pytest.mark.parametrize("scale_index", [0, 1], ids=["moderate", "confident"])
def test_log_probs_and_entropy_match_single_process(world, scale_index):
    size, results = world
    h, w, b, y, g_lp, g_h = linear_inputs(seed=2, scale=(1.0, 30.0)[scale_index])
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]
    log_p = torch.log_softmax(F.linear(*leaves) / 0.7, -1)
    kept = y != -100
    ref_lp = torch.where(kept, log_p.gather(1, y.clamp(min=0)[:, None])[:, 0], 0.0)
    ref_h = torch.where(kept, -(log_p.exp() * log_p).sum(1), 0.0)
    ref_grads = torch.autograd.grad((ref_lp, ref_h), leaves, (g_lp, g_h), retain_graph=True)
    ref_grads_lp = torch.autograd.grad(ref_lp, leaves, g_lp)
    for rank, result in enumerate(results):
        lp, ent, grads, lp_only, none, grads_lp = result["log_probs"][scale_index]
        assert_close(lp, ref_lp.detach())
        assert_close(ent, ref_h.detach())
        assert bool((lp <= 0).all()) and bool((ent >= 0).all())
        assert torch.equal(lp[~kept], torch.zeros(2, dtype=F64)) and torch.equal(ent[~kept], torch.zeros(2, dtype=F64))
        assert_close(lp_only, lp)  # another chunk size: the same values up to rounding
        assert none is None
        for got_set, want_set in ((grads, ref_grads), (grads_lp, ref_grads_lp)):
            assert_close(got_set[0], want_set[0])
            assert torch.equal(got_set[0][~kept], torch.zeros(2, h.shape[1], dtype=F64))  # ignored: zero gradient
            assert_close(got_set[1], _shard(want_set[1], SPLITS[size], rank, 0))
            assert_close(got_set[2], _shard(want_set[2], SPLITS[size], rank))


def test_log_probs_with_a_masked_class_are_finite_and_match_single_process(world):
    size, results = world
    h, w, b, y, g_lp, g_h = results[0]["log_probs_masked"][3]
    leaves = [h.clone().requires_grad_(), w.clone().requires_grad_()]
    ref_lp, ref_h = ct.linear_log_probs_and_entropy(*leaves, y, b)
    ref_grads = torch.autograd.grad((ref_lp, ref_h), leaves, (g_lp, g_h))
    for rank, result in enumerate(results):
        lp, ent, grads, _ = result["log_probs_masked"]
        assert bool(torch.isfinite(ent).all()) and all(bool(torch.isfinite(g).all()) for g in grads)
        assert_close(lp, ref_lp.detach())
        assert_close(ent, ref_h.detach())
        assert_close(grads[0], ref_grads[0])
        assert_close(grads[1], _shard(ref_grads[1], SPLITS[size], rank, 0))


# --------------------------------------------------------------------------- data parallel


def test_global_denominator_removes_the_bias_of_per_rank_means(world2):
    """3 tokens on one rank, 11 kept on the other: DDP's average of the ranks' means is not the mean's gradient."""
    model, x, y, w = dp_inputs(None)
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    expected_weighted = torch.autograd.grad(F.cross_entropy(model(x), y, weight=w), list(model.parameters()))
    for result in world2:
        out = result["data_parallel"]
        assert max(float((a - b).abs().max()) for a, b in zip(out["biased"], expected)) > 1e-2
        for got, want in zip(out["fixed"], expected):
            assert_close(got, want)
        for key in ("fixed_weighted", "micro_batches", "argument"):
            for got, want in zip(out[key], expected_weighted):
                assert_close(got, want)


def test_the_readme_examples_give_the_single_process_gradients(world2):
    x, y, _, _ = ce_inputs()
    h, w, _, _, _, _ = linear_inputs(n=x.shape[0])
    leaf = x.clone().requires_grad_()
    (grad_logits,) = torch.autograd.grad(F.cross_entropy(leaf, y, label_smoothing=0.1), leaf)
    leaves = [h.clone().requires_grad_(), w.clone().requires_grad_()]
    grad_hidden, grad_weight = torch.autograd.grad(reference_ce(leaves[0] @ leaves[1].T, y, z_loss=1e-4), leaves)
    model, x, y, _ = dp_inputs(None)
    grad_model = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for rank, result in enumerate(world2):
        got = result["readme"]
        assert_close(got["tensor"][0], _shard(grad_logits, SPLITS[2], rank))
        assert_close(got["tensor"][1], grad_hidden)
        assert_close(got["tensor"][2], _shard(grad_weight, SPLITS[2], rank, 0))
        for a, b in zip(got["data"], grad_model):
            assert_close(a, b)


# --------------------------------------------------------------------------- errors: the same on every rank


@pytest.mark.parametrize("name", list(_error_cases(0, 2, SPLITS[2])))
def test_bad_input_raises_the_same_error_on_every_rank(world, name):
    _, results = world
    messages = [result["errors"][name] for result in results]
    assert messages[0] is not None, "no error raised"
    assert all(m == messages[0] for m in messages), messages


def test_errors_name_the_rank_or_the_problem(world2):
    errors = world2[0]["errors"]
    assert "rank 1" in errors["nan_on_last_rank"] and "NaN" in errors["nan_on_last_rank"]
    assert "rank 1" in errors["target_differs"]
    assert "[0, 11)" in errors["label_out_of_range"]
    assert "all_masked" in errors["kept_row_all_masked"]
    assert "rank 0" in errors["class_weight_negative_on_first_rank"]
    assert "rank 1" in errors["target_differs_with_an_equal_weighted_sum"]
    assert "the dtype" in errors["dtype_differs"]


# --------------------------------------------------------------------------- the conformance table, split


def _conformance():
    sys.path.insert(0, str(CONFORMANCE))
    from cases import CASES
    from implementations import _to_numpy
    from test_conformance import assert_matches_reference, reference

    return [case for case in CASES if not case.probability_targets], _to_numpy, assert_matches_reference, reference


def test_conformance_cases_with_the_vocabulary_split(world):
    """Every integer-label case of tests/conformance, split over the ranks, against the extended-precision reference."""
    size, results = world
    cases, to_numpy, assert_matches_reference, reference = _conformance()
    import numpy as np

    for case in cases:
        got = [result["conformance"][case.id] for result in results]
        if case.raises:
            assert all(isinstance(g, str) for g in got) and len(set(got)) == 1, (case.id, got)
            continue
        assert not any(isinstance(g, str) for g in got), (case.id, got)
        if "float64" in case.features and not reference.IS_WIDER_THAN_FLOAT64:
            continue
        assert all(torch.equal(g[0], got[0][0]) for g in got), case.id
        grad = np.concatenate([to_numpy(g[1]) for g in got], axis=1)
        assert_matches_reference(case, to_numpy(got[0][0]), grad)


# --------------------------------------------------------------------------- in this process: a world of one


@pytest.fixture(scope="module")
def one_rank():
    if not dist.is_initialized():  # the conformance table and the doctests make the same world of one
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def test_gradcheck_float64(one_rank):
    x, y, w, _ = ce_inputs(n=5)
    torch.autograd.gradcheck(lambda t: ctd.vocab_parallel_cross_entropy(
        t, y, class_weight=w, label_smoothing=0.2, z_loss=0.1, reduction="none"), x.clone().requires_grad_())
    h, wt, b, y, _, _ = linear_inputs(n=8, d=3)
    inputs = tuple(t.clone().requires_grad_() for t in (h, wt, b))
    torch.autograd.gradcheck(lambda *t: ctd.vocab_parallel_linear_cross_entropy(
        *t[:2], y, t[2], label_smoothing=0.1, z_loss=0.05, chunk_size=4), inputs)
    torch.autograd.gradcheck(lambda *t: ctd.vocab_parallel_linear_log_probs_and_entropy(
        *t[:2], y, t[2], temperature=1.3, chunk_size=4), inputs)


def test_empty_mean_and_global_denominator_argument(one_rank):
    x, y, _, _ = ce_inputs()
    leaf = x.clone().requires_grad_()
    loss = ctd.vocab_parallel_cross_entropy(leaf, torch.full_like(y, -100))
    loss.backward()
    assert float(loss.detach()) == 0.0 and not leaf.grad.any()
    total = ctd.vocab_parallel_cross_entropy(x, y, reduction="sum")
    assert_close(ctd.vocab_parallel_cross_entropy(x, y, global_denominator=4.0), total / 4)
    assert_close(ctd.vocab_parallel_cross_entropy(x, y, global_denominator=torch.tensor(0.0, dtype=F64)),
                 torch.tensor(0.0, dtype=F64))


@pytest.mark.parametrize("call, error, match", [
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x.long(), y), TypeError, "`logits_shard`"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y.double()), TypeError, "`target`"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y[:-1]), ValueError, "`target` must have shape"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y, label_smoothing=1.5), ValueError, "`label_smoothing`"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y, reduction="avg"), ValueError, "`reduction`"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y, class_weight=torch.ones(3, dtype=F64)), ValueError,
     "`class_weight` must have one weight per class"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y, global_denominator=3.0, reduction="sum"), ValueError,
     "`global_denominator` applies"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y, global_denominator=-1.0), ValueError,
     "`global_denominator`"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y, global_denominator=torch.tensor(float("nan"))),
     ValueError, "`global_denominator`"),
    (lambda x, y: ctd.vocab_parallel_cross_entropy(x, y, group="tp"), TypeError, "`group`"),
    (lambda x, y: ctd.vocab_parallel_linear_cross_entropy(x, torch.ones(4, 3, dtype=F64), y), ValueError,
     "`hidden` must end with D=3"),
    (lambda x, y: ctd.vocab_parallel_linear_cross_entropy(x, torch.ones(4, V, dtype=F64), y, chunk_size=0),
     ValueError, "`chunk_size`"),
    (lambda x, y: ctd.vocab_parallel_linear_log_probs_and_entropy(x, torch.ones(4, V, dtype=F64), y,
                                                                  temperature=0.0), ValueError, "`temperature`"),
    (lambda x, y: ctd.global_denominator(y.double()), TypeError, "`target`"),
    (lambda x, y: ctd.global_denominator(y, class_weight=torch.ones(3, dtype=F64)), ValueError, r"\[0, 3\)"),
])
def test_bad_arguments_name_the_parameter(one_rank, call, error, match):
    x, y, _, _ = ce_inputs()
    with pytest.raises(error, match=match):
        call(x, y)


def test_without_a_process_group_the_error_says_what_to_do():
    import subprocess

    code = ("import torch, crossent.torch.distributed as d\n"
            "try:\n    d.vocab_parallel_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]))\n"
            "except RuntimeError as e:\n    assert 'init_process_group' in str(e), e\nelse:\n    raise SystemExit(1)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_logits_in_several_blocks_of_rows(one_rank, monkeypatch):
    """Blocks of 2 rows (the default is about 8 MiB): the same loss and gradient as the plain-torch path of
    crossent.torch (torch's own gives NaN for a masked class of weight 0 under smoothing)."""
    from crossent.torch._plain import cross_entropy_plain
    from crossent.torch.distributed import _comm

    monkeypatch.setattr(_comm, "_BLOCK_BYTES", 2 * V * 8)
    x, y, w, up = ce_inputs()
    x[:, 3] = -float("inf")
    w[3] = 0.0
    for reduction in ("none", "mean"):
        options = dict(label_smoothing=0.1, z_loss=1e-2, reduction=reduction)
        ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        loss = ctd.vocab_parallel_cross_entropy(ours, y, class_weight=w, **options)
        ref = cross_entropy_plain(theirs, y, weight=w, **options)
        loss.backward(_upstream(reduction, up))
        ref.backward(_upstream(reduction, up))
        assert_close(loss, ref)
        assert_close(ours.grad, theirs.grad)
        assert torch.isfinite(loss).all() and torch.equal(ours.grad[:, 3], torch.zeros(x.shape[0], dtype=F64))
