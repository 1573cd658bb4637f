"""``crossent eval``: files in bounded batches, the same numbers as the library, one-line errors, bounded memory."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import crossent._cli_eval as _cli_eval
import crossent.cli as cli
from crossent.metrics import evaluate


def _run(capsys, *argv):
    code = cli.main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def npy_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 12)).astype(np.float32)
    y = rng.integers(0, 12, 1000)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy", x, y


def test_npy_in_small_batches_gives_the_library_numbers_bitwise(capsys, npy_files):
    xp, yp, x, y = npy_files
    code, out, _ = _run(capsys, xp, "--labels", yp, "--batch-rows", 7, "--json", "--top-k", 3)
    assert code == 0
    data = json.loads(out)
    ref = evaluate(logits=x, labels=y, top_k=3)
    for key in ("nll", "accuracy", "top_k_accuracy", "entropy", "brier", "ece", "mce", "count"):
        assert data[key] == ref[key]
    assert data["bins"]["count"] == ref["bins"]["count"].tolist()


def test_human_output_is_a_small_table(capsys, npy_files):
    xp, yp, _, _ = npy_files
    code, out, _ = _run(capsys, xp, "--labels", yp, "--base", 2, "--no-progress")
    assert code == 0
    assert out.splitlines()[0].startswith("1,000 rows (0 ignored) from 1 file(s)")
    assert "perplexity" in out and "in base 2" in out and "ECE" in out


def test_parquet_list_column(capsys, tmp_path, npy_files):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _, _, x, y = npy_files
    for i, (lo, hi) in enumerate([(0, 600), (600, 1000)]):
        pq.write_table(pa.table({"logits": pa.array(list(x[lo:hi])), "label": y[lo:hi]}), tmp_path / f"p{i}.parquet")
    code, out, _ = _run(capsys, tmp_path / "p0.parquet", tmp_path / "p1.parquet", "--column", "logits",
                        "--labels", "label", "--batch-rows", 128, "--json")
    assert code == 0
    assert json.loads(out)["nll"] == evaluate(logits=x, labels=y)["nll"]


def test_csv_of_probabilities_with_normalize_and_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 10, (50, 3)).astype(float)
    y = rng.integers(0, 3, 50)
    with open(tmp_path / "p.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", "label"])
        writer.writerows([[*row, label] for row, label in zip(counts, y)])
    code, _, err = _run(capsys, tmp_path / "p.csv", "--labels", "label")
    assert code == 2 and "got 5.0 at index (0, 0)" in err and "--normalize divides each row by its sum" in err
    plot = tmp_path / "rel.png"
    code, out, _ = _run(capsys, tmp_path / "p.csv", "--labels", "label", "--normalize", "--json",
                        "--reliability-plot", plot)
    assert code == 0 and plot.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(out)["nll"] == pytest.approx(evaluate(probs=counts / counts.sum(1, keepdims=True),
                                                            labels=y)["nll"], rel=1e-15)


@pytest.mark.parametrize("make, argv, match", [
    (None, ["missing.npy", "--labels", "y.npy"], "missing.npy: no such file"),
    ("truncated", ["t.npy", "--labels", "y.npy"], "t.npy: truncated"),
    ("nan", ["n.npy", "--labels", "y.npy", "--batch-rows", 100], r"n.npy: .*NaN \(first at index \(517, 3\)\)"),
    ("labels", ["x.npy", "--labels", "bad.npy", "--batch-rows", 100], "bad.npy|x.npy: `labels` must lie in .*got 12 at index 733"),
    ("empty", ["e.npy", "--labels", "e_y.npy"], "e.npy: no rows"),
    (None, ["x.npy", "--labels", "x.npy"], "do not match"),
    (None, ["x.txt", "--labels", "y"], "unknown file type"),
])
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(capsys, tmp_path, npy_files, monkeypatch, make, argv,
                                                             match):
    monkeypatch.chdir(tmp_path)
    _, _, x, y = npy_files
    if make == "truncated":
        (tmp_path / "t.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:5000])
    elif make == "nan":
        bad = x.copy()
        bad[517, 3] = np.nan
        np.save("n.npy", bad)
    elif make == "labels":
        bad = y.copy()
        bad[733] = 12
        np.save("bad.npy", bad)
    elif make == "empty":
        np.save("e.npy", np.zeros((0, 3), np.float32))
        np.save("e_y.npy", np.zeros(0, np.int64))
    plot = tmp_path / "never.png"
    code, out, err = _run(capsys, *argv, "--reliability-plot", plot)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("crossent eval: error: ")
    assert __import__("re").search(match, err), err
    assert not plot.exists()


def test_missing_pyarrow_names_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    (tmp_path / "p.parquet").write_bytes(b"PAR1")
    code, _, err = _run(capsys, tmp_path / "p.parquet", "--column", "x", "--labels", "y")
    assert code == 2 and "pip install 'crossent[eval]'" in err


# The child runs the command line's own entry point, then reports its peak resident memory (VmHWM, which
# belongs to the process image since exec).  ru_maxrss would not do: Linux carries the high-water mark across
# exec, so a child of a large pytest process starts with the parent's peak.
_EVAL_CHILD = """
import sys
from crossent.cli import main
code = main(sys.argv[1:])
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")), file=sys.stderr)
sys.exit(code)
"""


def _eval_peak_rss(*argv) -> int:
    """Run ``crossent eval`` in a fresh child process; return that process's peak resident memory in bytes."""
    run = subprocess.run([sys.executable, "-c", _EVAL_CHILD, "eval", *map(str, argv), "--json", "--no-progress"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert run.returncode == 0, run.stderr
    return int(run.stderr.split("VmHWM:")[1].split()[0]) * 1024  # kB


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from /proc (Linux)")
def test_peak_memory_is_bounded_by_the_batch_not_the_file(tmp_path):
    """The documented bound, measured: over a file 4x larger than that bound, a run read 16 rows at a time
    stays within the interpreter's peak (a run over one row) + PEAK_BATCHES batches + PEAK_SLACK_BYTES.

    One 160 MiB file of probabilities is read twice, as probabilities and as logits (both paths).
    """
    rows, classes, batch_rows = 2560, 16384, 16
    bound = _cli_eval.PEAK_BATCHES * batch_rows * classes * 8 + _cli_eval.PEAK_SLACK_BYTES  # 38 MiB
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(rows, classes))
    rng = np.random.default_rng(0)
    for lo in range(0, rows, 256):
        block = rng.random((256, classes), dtype=np.float32)
        big[lo : lo + 256] = block / block.sum(axis=1, keepdims=True)
    big.flush()
    assert big.nbytes >= 4 * bound
    np.save(tmp_path / "small.npy", np.asarray(big[:1]))
    del big
    np.save(tmp_path / "y.npy", rng.integers(0, classes, rows))
    np.save(tmp_path / "y_small.npy", np.zeros(1, np.int64))
    small = [tmp_path / "small.npy", "--labels", tmp_path / "y_small.npy", "--batch-rows", batch_rows]
    _eval_peak_rss(*small)  # fills numba's on-disk cache, so that no run below compiles
    base = _eval_peak_rss(*small)  # the interpreter with crossent, numpy and the compiled kernels loaded
    for kind in ("--logits", "--probs"):
        peak = _eval_peak_rss(tmp_path / "big.npy", "--labels", tmp_path / "y.npy", "--batch-rows", batch_rows, kind)
        assert peak <= base + bound, (f"{kind}: peak {peak / 2**20:.0f} MiB over a {rows * classes * 4 >> 20} MiB "
                                      f"file > {base / 2**20:.0f} MiB + the bound {bound / 2**20:.0f} MiB")
    # The budget at the default batch (32 MiB of float64 predictions), from the same formula.
    default_bound = _cli_eval.PEAK_BATCHES * _cli_eval.BATCH_BYTES + _cli_eval.PEAK_SLACK_BYTES
    assert base + default_bound <= 512 << 20, f"{(base + default_bound) / 2**20:.0f} MiB at the default batch"


def test_found_by_review_sizes_plots_objects_and_the_shown_k(capsys, tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((50, 4)), rng.integers(0, 4, 50)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    # a big-endian float64 file is read as float64, not cut to float32
    np.save(tmp_path / "xbe.npy", x.astype(">f8"))
    code, out, _ = _run(capsys, tmp_path / "xbe.npy", "--labels", tmp_path / "y.npy", "--json")
    assert code == 0 and json.loads(out)["nll"] == evaluate(logits=x, labels=y)["nll"]
    # with 4 classes the default top-k is 4, and the text says so (and the JSON gives k)
    code, out, _ = _run(capsys, tmp_path / "x.npy", "--labels", tmp_path / "y.npy")
    assert code == 0 and "top-4 accuracy" in out
    code, out, _ = _run(capsys, tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--json", "--top-k", "2")
    assert json.loads(out)["top_k"] == 2
    # sizes beyond what a batch or a bin count can be: one line, status 2 (pyarrow and lists overflowed)
    for option in ("--bins", "--batch-rows"):
        code, _, err = _run(capsys, tmp_path / "x.npy", "--labels", tmp_path / "y.npy", option, "99999999999999999999")
        assert code == 2 and err.count("\n") == 1 and f"argument {option}: must be from 1 to" in err
    # a plot that cannot be written is a failed write (status 1), found before any work
    code, _, err = _run(capsys, tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                        "--reliability-plot", tmp_path / "missing" / "r.png")
    assert code == 1 and "cannot write" in err and err.count("\n") == 1
    # a .npy of Python objects: an error that names the file
    np.save(tmp_path / "objects.npy", np.array([[1.0, 2.0]] * 3, dtype=object), allow_pickle=True)
    code, _, err = _run(capsys, tmp_path / "objects.npy", "--labels", tmp_path / "y.npy")
    assert code == 2 and "objects.npy: holds Python objects" in err


def test_the_default_csv_batch_counts_each_rows_own_list(tmp_path):
    with open(tmp_path / "p.csv", "w") as f:
        f.write("p,y\n0.5,1\n")
    rows = _cli_eval._default_batch_rows(str(tmp_path / "p.csv"), None)
    assert rows == _cli_eval.BATCH_BYTES // (2 * _cli_eval.CSV_VALUE_BYTES + _cli_eval.CSV_ROW_BYTES)
