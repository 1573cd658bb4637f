"""``crossent eval``: files in bounded batches, the same numbers as the library, one-line errors, bounded memory."""

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

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


def test_peak_memory_is_bounded_by_the_batch_not_the_file(tmp_path):
    """A 96 MiB file read 64 rows at a time raises the peak resident memory by far less than the file."""
    x = np.random.default_rng(0).standard_normal((6144, 4096), dtype=np.float32)
    np.save(tmp_path / "big.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(6144, np.int64))
    np.save(tmp_path / "small.npy", x[:64])
    np.save(tmp_path / "y_small.npy", np.zeros(64, np.int64))
    del x
    code = textwrap.dedent(f"""
        import resource, sys
        import crossent.cli as cli
        def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        d = {str(tmp_path)!r}
        assert cli.main(["eval", d + "/small.npy", "--labels", d + "/y_small.npy", "--json"]) == 0  # warm up
        before = peak()
        assert cli.main(["eval", d + "/big.npy", "--labels", d + "/y.npy", "--batch-rows", "64", "--json"]) == 0
        print("GROWTH", peak() - before, file=sys.stderr)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    growth = int(run.stderr.split("GROWTH")[1])
    assert growth < 24 << 20, f"peak grew by {growth / 2**20:.1f} MiB over a 96 MiB file"
