"""crossent.dask on a real LocalCluster of worker processes: the single-process numbers, bit for bit.

Every comparison is of bits (``tobytes``), never approximate: the per-block
accumulator states are exact integers and are merged in a tree, so any
chunking, any tree and a worker that dies mid-run give the same result as
:func:`crossent.metrics.evaluate` on the whole array.
"""

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import cloudpickle  # noqa: E402  (a dependency of distributed)

import crossent  # noqa: E402
import crossent.cli as cli  # noqa: E402
import crossent.dask as cdask  # noqa: E402
from crossent.metrics import evaluate  # noqa: E402

# The tasks below are defined in this file, which the workers cannot import: send them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SRC = str(Path(crossent.__file__).resolve().parents[1])
UNEVEN = (1, 499, 1000, 3, 777, 0, 220, 500, 1)  # 3001 rows in 9 blocks, one of them empty


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None, scheduler_kwargs=cdask.QUIET_HTTP) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def assert_same_bits(got: dict, want: dict) -> None:
    """Every float and every bin array of two result dicts, bit for bit (NaN included)."""
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key == "bins":
            assert got["bins"].keys() == value.keys()
            for name, array in value.items():
                assert got["bins"][name].dtype == array.dtype and got["bins"][name].tobytes() == array.tobytes(), name
        elif isinstance(value, float):
            assert struct.pack("<d", got[key]) == struct.pack("<d", value), (key, got[key], value)
        else:
            assert got[key] == value and type(got[key]) is type(value), key


def _data(n=3001, c=17, seed=0):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, c)) * 4).astype(np.float32)
    logits[:, 0] += 2.0  # a class that is often right: calibration bins of every kind
    labels = rng.integers(0, c, n)
    return logits, labels


def test_logits_in_uneven_blocks_on_two_worker_processes_equal_one_pass_bitwise(client):
    x, y = _data()
    logits = da.from_array(x, chunks=(UNEVEN, (5, 12)))  # the class axis split too: rechunked into one block
    labels = da.from_array(y, chunks=700)  # other row chunks: rechunked to the logits'
    with distributed.get_task_stream(client) as stream:
        got = cdask.evaluate(logits=logits, labels=labels, bins=10, top_k=3, base=2, split_every=3)
    assert_same_bits(got, evaluate(logits=x, labels=y, bins=10, top_k=3, base=2))
    workers = {t["worker"] for t in stream.data if "_ordered_task" in str(t["key"])}  # the block_state tasks
    assert workers == set(client.scheduler_info()["workers"]), "the blocks ran on both worker processes"


def test_probabilities_with_ignore_index_and_sample_weight(client):
    x, y = _data(seed=1)
    p = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y[::7] = -100
    w = np.random.default_rng(2).random(len(y)) * 3
    w[::11] = 0.0
    got = cdask.evaluate(probs=da.from_array(p, chunks=(UNEVEN, 17)), labels=da.from_array(y, chunks=(UNEVEN,)),
                         sample_weight=w, ignore_index=-100, split_every=2)
    want = evaluate(probs=p, labels=y, sample_weight=w, ignore_index=-100)
    assert_same_bits(got, want)
    assert got["ignored"] == len(range(0, len(y), 7))


def test_binary_logits_and_a_delayed_result_for_client_compute(client):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(1234) * 5, rng.integers(0, 2, 1234)
    out = cdask.evaluate(logits=da.from_array(x, chunks=100), labels=y, compute=False)
    assert_same_bits(client.compute(out).result(), evaluate(logits=x, labels=y))


@pytest.mark.parametrize("dtype_backend", [None, "pyarrow"])
def test_dataframe_from_several_parquet_files(client, tmp_path, dtype_backend):
    x, y = _data(n=2500, c=9, seed=4)
    w = np.random.default_rng(5).random(len(y))
    for i, (lo, hi) in enumerate([(0, 1), (1, 900), (900, 901), (901, 2100), (2100, 2500)]):
        pq.write_table(pa.table({"logits": pa.array(list(x[lo:hi])), "label": y[lo:hi], "weight": w[lo:hi],
                                 "other": np.zeros(hi - lo)}), tmp_path / f"part-{i}.parquet", row_group_size=150)
    kwargs = {} if dtype_backend is None else {"dtype_backend": dtype_backend}
    df = dd.read_parquet(sorted(tmp_path.glob("part-*.parquet")), **kwargs)
    assert df.npartitions >= 5
    got = cdask.evaluate_dataframe(df, logits="logits", labels="label", sample_weight="weight", split_every=2)
    assert_same_bits(got, evaluate(logits=x, labels=y, sample_weight=w))


def test_dataframe_of_probability_columns(client):
    pd = pytest.importorskip("pandas")
    x, y = _data(n=999, c=4, seed=6)
    p = np.exp(x.astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({f"p{c}": p[:, c] for c in range(4)} | {"y": y})
    got = cdask.evaluate_dataframe(dd.from_pandas(frame, npartitions=7), probs=[f"p{c}" for c in range(4)],
                                   labels="y", bins=5)
    assert_same_bits(got, evaluate(probs=p, labels=y, bins=5))


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 300), max_size=12), split_every=st.integers(2, 5),
       weighted=st.booleans())
def test_any_chunking_and_any_tree_give_the_same_bits(cuts, split_every, weighted):
    """The tree logic alone (the synchronous scheduler): every chunking and fan-in, one result."""
    x, y = _data(n=300, c=5, seed=10)
    w = np.linspace(0.0, 2.0, 300) if weighted else None
    bounds = [0, *sorted(cuts), 300]
    chunks = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    with dask.config.set(scheduler="sync"):
        got = cdask.evaluate(logits=da.from_array(x, chunks=(chunks, 5)), labels=y, sample_weight=w, bins=7,
                             split_every=split_every)
    assert_same_bits(got, evaluate(logits=x, labels=y, sample_weight=w, bins=7))


def test_bad_input_is_refused_at_the_boundary_with_the_parameter_named():
    x, y = _data(n=50, c=3)
    logits = da.from_array(x, chunks=10)
    with pytest.raises(TypeError, match="`logits` must be a dask.array.Array, got ndarray"):
        cdask.evaluate(logits=x, labels=y)
    with pytest.raises(TypeError, match=r"`labels` must be integer class indices, got dtype float64 \(a dask"):
        cdask.evaluate(logits=logits, labels=da.from_array(y.astype(float), chunks=10))
    with pytest.raises(TypeError, match=r"`logits` must be a floating array .*got dtype int64 \(a dask.array of "
                                        r"shape \(50, 1\)\)\.$"):  # not "(array([], ...))": the array is not empty
        cdask.evaluate(logits=da.from_array(y[:, None], chunks=10), labels=y)
    with pytest.raises(TypeError, match=r"`sample_weight` must be numeric, got dtype <U1"):
        cdask.evaluate(logits=logits, labels=y, sample_weight=da.from_array(np.array(["a"] * 50), chunks=10))
    with pytest.raises(ValueError, match=r"`labels` must have shape \(50,\).*got \(49,\)"):
        cdask.evaluate(logits=logits, labels=da.from_array(y[:49], chunks=10))
    with pytest.raises(TypeError, match=r"`labels` must be integer class indices, got dtype float64 \(array\(\[0\.,"):
        cdask.evaluate(logits=logits, labels=np.zeros(50))  # in memory: its own values are shown
    with pytest.raises(ValueError, match=r"`sample_weight` must have shape \(50,\)"):
        cdask.evaluate(logits=logits, labels=y, sample_weight=np.ones(3))
    unknown = logits[da.from_array(y, chunks=10) > 0]  # boolean indexing: unknown (NaN) chunk sizes
    with pytest.raises(ValueError, match="`logits` has unknown chunk sizes.*compute_chunk_sizes"):
        cdask.evaluate(logits=unknown, labels=y[y > 0])
    with pytest.raises(ValueError, match="exactly one of `logits` and `probs`"):
        cdask.evaluate(labels=y)
    with pytest.raises(ValueError, match="`bins` must be a positive integer, got 0"):
        cdask.evaluate(logits=logits, labels=y, bins=0)
    with pytest.raises(ValueError, match="`split_every` must be an integer of at least 2, got 1"):
        cdask.evaluate(logits=logits, labels=y, split_every=1)
    with pytest.raises(ValueError, match="`labels`: no column 'nope'"):
        cdask.evaluate_dataframe(dd.from_dict({"a": [0.5]}, npartitions=1), probs="a", labels="nope")


def test_dataframe_columns_of_the_wrong_kind_are_refused_before_any_task_naming_the_parameter():
    """Checked on the dataframe's dtypes, not in a task: no 'could not convert string to float', no AttributeError."""
    import pandas as pd

    frame = pd.DataFrame({"a": [0.1, 0.7, 0.2] * 4, "b": [0.9, 0.3, 0.8] * 4, "y": [0, 1, 1] * 4,
                          "s": ["x", "y", "z"] * 4})
    df = dd.from_pandas(frame, npartitions=3)
    with pytest.raises(TypeError, match="`sample_weight`: column 's' must hold numbers, got dtype"):
        cdask.evaluate_dataframe(df, probs=["a", "b"], labels="y", sample_weight="s")
    with pytest.raises(TypeError, match="`probs`: column 's' must hold floating-point numbers, got dtype"):
        cdask.evaluate_dataframe(df, probs=["a", "s"], labels="y")
    with pytest.raises(TypeError, match="`logits`: column 's' holds strings.*list"):
        cdask.evaluate_dataframe(df, logits="s", labels="y")
    with pytest.raises(TypeError, match=r"`labels` must be a column name, got \['y'\]"):
        cdask.evaluate_dataframe(df, probs=["a", "b"], labels=["y"])


def test_a_bad_value_in_one_block_names_the_row_of_the_whole_array(client):
    x, y = _data(n=3001, c=17)
    x[1503, 4] = np.nan  # in the fourth block of UNEVEN
    with pytest.raises(ValueError, match=r"`logits` contains NaN.*\(1503, 4\)"):
        cdask.evaluate(logits=da.from_array(x, chunks=(UNEVEN, 17)), labels=y)


def _first_block_late(block, block_info=None):
    """Block 0 is produced last, so its task fails after the others."""
    if block_info[None]["chunk-location"][0] == 0:
        import time

        time.sleep(1.5)
    return block


def test_with_bad_rows_in_many_blocks_the_error_is_the_first_bad_row_as_in_one_process(client):
    """Every row sums to 0.9: whichever task fails first, the error names row 0, as one process does."""
    probs = np.full((40, 3), 0.3)
    labels = np.zeros(40, dtype=np.int64)
    with pytest.raises(ValueError) as alone:
        evaluate(probs=probs, labels=labels)
    for _ in range(2):
        late = da.from_array(probs, chunks=(4, 3)).map_blocks(_first_block_late, dtype=probs.dtype)
        with pytest.raises(ValueError) as on_dask:
            cdask.evaluate(probs=late, labels=labels)
        assert str(on_dask.value) == str(alone.value)
    frame = dd.from_dask_array(da.from_array(probs, chunks=(4, 3)), columns=["a", "b", "c"]).assign(
        y=dd.from_dask_array(da.from_array(labels, chunks=4)))
    with pytest.raises(ValueError, match="^partition 0: `probs` must sum to 1 along each row, but row 0"):
        cdask.evaluate_dataframe(frame, probs=["a", "b", "c"], labels="y")


# ------------------------------------------------------------------ the CLI


@pytest.fixture
def npy_files(tmp_path):
    x, y = _data(n=2000, c=11, seed=7)
    y[::13] = -1
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy"


def _run(capsys, *argv):
    code = cli.main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_local_cluster_prints_what_one_process_prints(capsys, npy_files):
    xp, yp = npy_files
    common = [xp, "--labels", yp, "--ignore-index", -1, "--batch-rows", 97, "--json"]
    code, alone, _ = _run(capsys, *common)
    assert code == 0
    code, on_dask, err = _run(capsys, *common, "--dask", "local:2", "--partition-rows", 333)
    assert code == 0, err
    assert on_dask == alone


def test_cli_on_a_running_scheduler_with_parquet_row_groups(capsys, client, tmp_path):
    x, y = _data(n=1500, c=6, seed=8)
    for i, (lo, hi) in enumerate([(0, 700), (700, 701), (701, 1500)]):
        pq.write_table(pa.table({"logits": pa.array(list(x[lo:hi])), "label": y[lo:hi]}), tmp_path / f"p{i}.parquet",
                       row_group_size=64)
    files = [tmp_path / f"p{i}.parquet" for i in range(3)]
    common = [*files, "--column", "logits", "--labels", "label", "--batch-rows", 50]
    for output in ([], ["--json"]):
        code, alone, _ = _run(capsys, *common, *output)
        code2, on_dask, err = _run(capsys, *common, *output, "--dask", client.scheduler.address,
                                   "--partition-rows", 200)
        assert code == code2 == 0, err
        assert on_dask == alone
    assert json.loads(on_dask)["nll"] == evaluate(logits=x, labels=y)["nll"]


def test_cli_errors_on_dask_are_the_one_process_errors(capsys, client, npy_files, tmp_path):
    xp, yp = npy_files
    x = np.load(xp)
    x[1517, 3] = np.nan
    np.save(tmp_path / "n.npy", x)
    errors = []
    for dask in ([], ["--dask", client.scheduler.address]):
        code, out, err = _run(capsys, tmp_path / "n.npy", "--labels", yp, "--ignore-index", -1, "--batch-rows", 100,
                              *dask)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert err.startswith(f"crossent eval: error: {tmp_path / 'n.npy'}: `logits` contains NaN") and \
            "(1517, 3)" in err, err
        errors.append(err)
    assert errors[0] == errors[1]
    for bad, message in (("local:0", "positive number of workers"), ("nowhere", "scheduler address"),
                         ("local:100000", f"at most {cdask.MAX_LOCAL_WORKERS}, got 'local:100000'")):
        code, _, err = _run(capsys, xp, "--labels", yp, "--dask", bad)
        assert code == 2 and message in err


def test_cli_scheduler_addresses_that_do_not_answer_fail_with_one_line_not_a_hang(npy_files):
    """A refused port, a listener that never answers, one that speaks another protocol, an empty address.

    Each must end with exit 2 and one line naming --dask and the address, within the connect timeout: a
    plain ``Client(address)`` waits forever on the silent one and prints a MemoryError traceback on the other.
    """
    import socket
    import threading

    xp, yp = npy_files
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never answers
    talker = socket.create_server(("127.0.0.1", 0))

    def talk():
        while True:
            try:
                conn, _ = talker.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n" * 8)
            conn.close()

    threading.Thread(target=talk, daemon=True).start()
    refused = socket.create_server(("127.0.0.1", 0))
    refused_port = refused.getsockname()[1]
    refused.close()
    script = textwrap.dedent(f"""
        import sys, crossent.dask as cdask, crossent.cli as cli
        cdask._cluster.CONNECT_TIMEOUT = "3s"
        sys.exit(cli.main(["eval", {str(xp)!r}, "--labels", {str(yp)!r}, "--dask", sys.argv[1]]))
    """)
    try:
        for address in (f"tcp://127.0.0.1:{silent.getsockname()[1]}", f"tcp://127.0.0.1:{talker.getsockname()[1]}",
                        f"127.0.0.1:{refused_port}", ""):
            run = subprocess.run([sys.executable, "-c", script, address], capture_output=True, text=True,
                                 timeout=120, env=dict(os.environ, PYTHONPATH=SRC))
            lines = run.stderr.strip().splitlines()
            assert run.returncode == 2 and run.stdout == "", (address, run.stderr)
            assert len(lines) == 1 and lines[0].startswith("crossent eval: error: --dask") and \
                repr(address) in lines[0], (address, run.stderr)
    finally:
        silent.close()
        talker.close()


def test_cluster_client_called_inside_a_running_event_loop_still_says_why(monkeypatch):
    """In a notebook (an asyncio loop already running) the check must not fail with its own RuntimeError."""
    import asyncio
    import socket

    monkeypatch.setattr(cdask._cluster, "CONNECT_TIMEOUT", "2s")
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"

        async def notebook_cell():
            with cdask.cluster_client(address):
                pass

        with pytest.raises(ValueError, match=f"cannot reach a Dask scheduler at '{address}': no answer within 2 s"):
            asyncio.run(notebook_cell())


def test_without_dask_the_error_names_the_extra_and_the_rest_works(npy_files):
    """Dask made unimportable (None in sys.modules) in a fresh process: one line naming the extra."""
    xp, yp = npy_files
    code = textwrap.dedent(f"""
        import sys
        sys.modules["dask"] = sys.modules["distributed"] = None
        import crossent, crossent.metrics, crossent.cli as cli
        try:
            import crossent.dask
        except ModuleNotFoundError as exc:
            print("IMPORT", exc.name, exc, file=sys.stderr)
        assert cli.main(["eval", {str(xp)!r}, "--labels", {str(yp)!r}, "--ignore-index", "-1", "--json"]) == 0
        sys.exit(cli.main(["eval", {str(xp)!r}, "--labels", {str(yp)!r}, "--dask", "local:1"]))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=SRC))
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[0] == "IMPORT dask crossent.dask needs Dask: pip install 'crossent[dask]'"
    assert lines[1:] == ["crossent eval: error: --dask needs Dask: pip install 'crossent[dask]'"]


def test_importing_crossent_does_not_import_dask():
    code = "import sys, crossent, crossent.metrics, crossent.cli; print(sorted(m for m in sys.modules if " \
           "m.split('.')[0] in ('dask', 'distributed')))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=SRC))
    assert run.stdout.strip() == "[]"


# ---------------------------------------------------------- the dying worker


def _exit_on_first_attempt(block, marker, block_info=None):
    """The task of block 2 ends its worker process on the first attempt; the marker file remembers it."""
    if block_info[None]["chunk-location"][0] == 2 and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return block


def test_a_worker_that_dies_mid_run_is_replaced_and_the_result_is_still_exact(client, tmp_path):
    x, y = _data(seed=9)
    marker = tmp_path / "died"
    before = client.run(os.getpid)
    logits = da.from_array(x, chunks=(UNEVEN, 17)).map_blocks(_exit_on_first_attempt, str(marker), dtype=x.dtype)
    got = cdask.evaluate(logits=logits, labels=y, ignore_index=3)
    assert marker.exists(), "the task did exit its worker once"
    dead = int(marker.read_text())
    assert dead in before.values()
    client.wait_for_workers(2, timeout=60)
    after = client.run(os.getpid)
    assert dead not in after.values() and len(after) == 2, "the nanny started a new worker process"
    assert_same_bits(got, evaluate(logits=x, labels=y, ignore_index=3))
