"""The explorer page: its bundle, its committed data, the `explore` command, and its JavaScript tests.

The page's math is tested in Node (tests/js, the built-in runner) against
vectors that crossent exports, and the page itself in headless Chromium
(tests/browser, playwright-core from package-lock.json).  The two Node suites
run here through subprocesses, so that ``make test`` covers them; they are
skipped only when node or chromium is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossent.cli import main
from crossent.lab import explorer

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
CHROMIUM = os.environ.get("CHROMIUM") or next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()), None)


def _load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_committed_calibration_data_equals_a_fresh_training_run():
    pytest.importorskip("sklearn")
    committed = _load(explorer.CALIBRATION_DATA)
    fresh = explorer._plain(explorer.calibration_data())
    assert committed["labels"] == fresh["labels"]
    assert {k: committed[k] for k in ("seed", "epochs", "about")} == {k: fresh[k] for k in ("seed", "epochs", "about")}
    # the same training run; a different BLAS may move a logit's last kept digit, nothing more
    np.testing.assert_allclose(committed["logits"], fresh["logits"], rtol=1e-6, atol=1e-6)
    for key in ("ece", "nll", "accuracy"):
        assert committed["lab"][key] == pytest.approx(fresh["lab"][key], rel=1e-9, abs=1e-12)


def test_committed_vectors_equal_a_fresh_export():
    pytest.importorskip("sklearn")
    committed = _load(ROOT / explorer.DEFAULT_VECTORS)
    fresh = json.loads(json.dumps(explorer.export_vectors(_load(explorer.CALIBRATION_DATA))))
    assert committed.keys() == fresh.keys()
    for key in committed:
        _assert_same(committed[key], fresh[key], key)


def _assert_same(committed, fresh, where):
    """Equal, except that a float may differ in its last bits (another platform's libm): a few ulps."""
    hint = f"{where} differs from a fresh export: run `python -m crossent.lab.explorer --export-vectors`"
    if isinstance(fresh, float) and isinstance(committed, float):
        # a finite difference (key *_fd) multiplies the last bits of what it differences by about 1/h = 1e4
        # (NumPy's exp differs by an ulp between CPUs with and without AVX-512): 1e-9 relative there
        tolerance = 1e-9 * abs(fresh) if where.endswith("_fd") else 4 * np.spacing(abs(fresh))
        assert committed == fresh or abs(committed - fresh) <= tolerance, f"{hint}: {committed} != {fresh}"
    elif isinstance(fresh, dict):
        assert isinstance(committed, dict) and committed.keys() == fresh.keys(), hint
        for key in fresh:
            _assert_same(committed[key], fresh[key], f"{where}.{key}")
    elif isinstance(fresh, list):
        assert isinstance(committed, list) and len(committed) == len(fresh), hint
        for i, (a, b) in enumerate(zip(committed, fresh)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert type(committed) is type(fresh) and committed == fresh, f"{hint}: {committed!r} != {fresh!r}"


def test_vectors_hold_the_lab_numbers_and_the_extremes():
    vectors = _load(ROOT / explorer.DEFAULT_VECTORS)
    races = {(r["w"], r["b"], r["eta"], r["loss"], r["rule"]): r["a"] for r in vectors["races"]}

    def steps(a):
        return next((i for i, v in enumerate(a) if v < 0.5), None)

    assert steps(races[(2.0, 2.0, 0.15, "cross_entropy", "true")]) == 17
    assert steps(races[(2.0, 2.0, 0.15, "mse", "true")]) == 232
    assert round(races[(2.0, 2.0, 0.005, "cross_entropy", "true")][-1], 2) == 0.78  # Nielsen's eta, true gradient
    zero = next(c for c in vectors["information"] if c["name"] == "q_zero_where_p_positive")
    assert zero["bits"]["Hpq"] == "Infinity" and zero["bits"]["KLpq"] == "Infinity"
    assert {c["z"] for c in vectors["sigmoid"]} >= {-40.0, 40.0}
    assert next(c for c in vectors["sigmoid"] if c["z"] == 40.0)["derivative"] > 0


def test_bundle_inlines_every_module_in_dependency_order():
    script = explorer.bundle()
    order = [line[len("// ---- "):] for line in script.splitlines() if line.startswith("// ---- ")]
    assert order[-1] == "main.js" and order.index("math.js") < order.index("sec_neuron.js")
    assert sorted(order) == sorted(p.name for p in explorer.STATIC.glob("*.js"))
    assert "import " not in script.replace("// ", "") and "export " not in script


def test_bundle_refuses_what_it_cannot_rewrite(tmp_path):
    (tmp_path / "main.js").write_text('import * as m from "./math.js";\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported import"):
        explorer.bundle("main.js", tmp_path)
    (tmp_path / "main.js").write_text('import { a } from "./b.js";\n', encoding="utf-8")
    (tmp_path / "b.js").write_text('import { c } from "./main.js";\nexport const a = 1;\n', encoding="utf-8")
    with pytest.raises(ValueError, match="import cycle"):
        explorer.bundle("main.js", tmp_path)


def test_page_is_one_file_with_nothing_to_fetch():
    page = explorer.build_page()
    assert page.count("<script") == 3  # the glossary, the calibration data, the bundled modules
    for marker in ("/*STYLE*/", "<!--DATA-->", "/*SCRIPT*/", "http://", "https://", " src=", "@import", "url("):
        assert marker not in page.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
            '"http://www.w3.org/2000/svg"', ""), marker
    assert len(page.encode("utf-8")) < 200_000


def test_explore_command_writes_the_page(tmp_path, capsys):
    assert main(["explore", "--out", str(tmp_path / "x"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    index = Path(data["index"])
    assert index == tmp_path / "x" / "index.html" and index.stat().st_size == data["bytes"]
    assert data["opened"] is False
    assert index.read_text(encoding="utf-8") == explorer.build_page()


def test_explore_twice_replaces_the_page_whole_and_leaves_nothing_else(tmp_path, capsys):
    """The second run puts a new file in place in one rename: a reader (a browser reloading) never sees half a page."""
    out = tmp_path / "x"
    assert main(["explore", "--out", str(out), "--json"]) == 0
    first = (out / "index.html").stat().st_ino
    old_reader = open(out / "index.html", "rb")  # a reader that opened the old page keeps reading the old page
    try:
        assert main(["explore", "--out", str(out), "--json"]) == 0
        assert (out / "index.html").stat().st_ino != first, "rewritten in place, not replaced whole"
        assert old_reader.read() == (out / "index.html").read_bytes()
    finally:
        old_reader.close()
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]


def test_explore_never_overwrites_an_index_html_that_is_not_its_own(tmp_path, capsys):
    """`--out docs` where docs/index.html is someone's page: refused (exit 2), the page untouched."""
    (tmp_path / "docs").mkdir()
    theirs = tmp_path / "docs" / "index.html"
    theirs.write_text("<!doctype html><title>my project</title>", encoding="utf-8")
    assert main(["explore", "--out", str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossent explore: error: `out` (--out):") and "not a crossent explorer page" in err and \
        err.count("\n") == 1, err
    assert theirs.read_text(encoding="utf-8") == "<!doctype html><title>my project</title>"
    assert main(["explore", "--out", ""]) == 2  # "" would be the current folder
    assert "--out" in capsys.readouterr().err
    (tmp_path / "d" / "index.html").mkdir(parents=True)  # a folder named index.html is not a page either
    assert main(["explore", "--out", str(tmp_path / "d")]) == 2
    assert "not a crossent explorer page" in capsys.readouterr().err and (tmp_path / "d" / "index.html").is_dir()


def test_explore_into_a_file_fails_with_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["explore", "--out", str(tmp_path / "file")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crossent explore: error:") and err.count("\n") == 1


def _node(*args, env=None, timeout=600):
    result = subprocess.run([NODE, "--test", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.skipif(NODE is None, reason="node is not installed (the explorer's JavaScript tests need Node 20)")
def test_javascript_math_against_the_vectors_in_node():
    out = _node("tests/js/")
    assert "# fail 0" in out and "# pass 0" not in out


@pytest.mark.skipif(NODE is None, reason="node is not installed (the browser tests need Node 20)")
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_the_page_in_headless_chromium(tmp_path):
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is missing: run `npm ci` in the repository root (package-lock.json)")
    index = explorer.write_explorer(tmp_path / "page")
    out = _node("tests/browser/", env={"EXPLORER_PAGE": str(index), "CHROMIUM": CHROMIUM, "PYTHON": sys.executable,
                                       "EXPLORER_SCREENSHOTS": str(tmp_path)})
    assert "# fail 0" in out and "# pass 0" not in out
    print("\n".join(line for line in out.splitlines() if line.startswith("# explorer:")))
    assert (tmp_path / "explorer-desktop.png").stat().st_size > 10_000
