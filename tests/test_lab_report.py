"""The lab's experiments and report: each claim asserted on the numbers of a --quick run, end to end."""

import argparse
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from crossent import losses  # noqa: E402
from crossent.lab import report  # noqa: E402
from crossent.lab._common import Context, section, tidy  # noqa: E402
from crossent.lab.experiments_network import _spec, train_run  # noqa: E402
from crossent.lab.experiments_neuron import surface_curvature  # noqa: E402


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results, meta = report.run_report(out, quick=True, seed=0, jobs=1, progress=False)
    return out, results, meta


@pytest.fixture(scope="module")
def chinese_report(tmp_path_factory):
    """The quick report in Chinese; a missing glyph in a figure is an error (it would draw as a box)."""
    import warnings

    from crossent.lab.figures import cjk_font

    if cjk_font() is None:
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-wqy-microhei)")
    out = tmp_path_factory.mktemp("report-zh")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"Glyph \d+ .* missing from font")
        results, meta = report.run_report(out, quick=True, seed=0, jobs=1, progress=False, lang="zh")
    return out, results, meta


@pytest.fixture(scope="module")
def sections(quick_report):
    return {s["id"]: s["numbers"] for s in quick_report[1]["experiments"]}


# ------------------------------------------------------------------ the claims, one experiment each


def test_sigmoid_derivative_peaks_at_zero_and_vanishes_at_ten(sections):
    n = sections["sigmoid"]
    assert n["derivative_peak"] == 0.25 and n["peak_at_z"] == 0.0
    assert n["derivative_at_10"] == pytest.approx(np.exp(-10) / (1 + np.exp(-10)) ** 2, rel=1e-5)
    assert n["ratio_10_to_peak"] < 1e-3


def test_mse_over_ce_gradient_is_exactly_sigmoid_derivative(sections):
    n = sections["gradient_factor"]
    assert n["max_relative_deviation_of_ratio_from_sigmoid_derivative"] < 1e-10
    assert n["y0_z5_ratio"] == pytest.approx(float(losses.sigmoid_derivative(5.0)), rel=1e-5)
    assert n["y0_z5_mse_gradient"] < 0.01 * n["y0_z5_ce_gradient"]


def test_saturated_neuron_ce_leaves_faster_and_ratio_is_sigmoid_derivative(sections):
    n = sections["saturated_neuron"]
    for start, z0 in (("0.6_0.9", 1.5), ("2_2", 4.0)):
        assert n[f"initial_gradient_ratio_from_{start}"] == pytest.approx(float(losses.sigmoid_derivative(z0)), rel=1e-5)
        ce, mse = n[f"cross_entropy_from_{start}"], n[f"mse_from_{start}"]
        mse_steps = mse["steps_to_a_below_half"] if mse["steps_to_a_below_half"] is not None else np.inf
        assert ce["steps_to_a_below_half"] < mse_steps
        assert ce["final_a"] < mse["final_a"]
    assert n["cross_entropy_from_2_2"]["steps_to_a_below_half"] * 5 < n["mse_from_2_2"]["steps_to_a_below_half"]


def test_loss_surfaces_ce_convex_mse_not(sections):
    n = sections["loss_surfaces"]
    assert n["cross_entropy"]["min_hessian_eigenvalue"] >= -1e-8
    assert n["cross_entropy"]["negative_curvature_fraction"] == 0.0
    assert n["mse"]["min_hessian_eigenvalue"] < -0.05
    assert n["mse"]["negative_curvature_fraction"] > 0.1
    assert n["mse"]["plateau_fraction"] > 0.0 == n["cross_entropy"]["plateau_fraction"]


def test_surface_curvature_matches_the_analytic_second_derivative():
    # with x = 1, J = f(w + b): the Hessian is f''(z) [[1, 1], [1, 1]], eigenvalues 0 and 2 f''(z)
    z = np.linspace(-5, 5, 11)
    _, _, min_eig = surface_curvature(z, np.zeros_like(z), 1.0, 0.0, "cross_entropy")
    np.testing.assert_allclose(min_eig, 0.0, atol=1e-7)  # f'' = σ'(z) > 0, so the 0 eigenvalue is the min
    _, _, min_eig = surface_curvature(z, np.zeros_like(z), 1.0, 0.0, "mse")
    s = losses.sigmoid(z)
    f2 = s * s * (1 - s) * (2 - 3 * s)  # d²/dz² ½σ² = σ'² + σσ''
    np.testing.assert_allclose(min_eig, np.minimum(0.0, 2 * f2), atol=1e-6)


def test_one_parameter_first_step_ratio_is_sigmoid_derivative(sections):
    n = sections["one_parameter"]
    assert n["first_step_ratio"] == pytest.approx(float(losses.sigmoid_derivative(4.0)), rel=1e-5)
    assert n["cross_entropy"]["total_moved"] > 10 * n["mse"]["total_moved"]
    assert n["cross_entropy"]["J_end"] < 0.1 * n["cross_entropy"]["J_start"]


def test_information_measures(sections):
    n = sections["information"]
    assert n["self_information_bits"]["exam cancelled"] == pytest.approx(np.log2(100), rel=1e-5)
    assert n["binary_entropy_max_bits"] == 1.0 and n["binary_entropy_argmax"] == 0.5
    m = n["measures_bits"]
    assert m["H(p)"] == 1.75
    assert abs(m["H(p, q)"] - m["H(q, p)"]) > 0.1 and abs(m["KL(p‖q)"] - m["KL(q‖p)"]) > 0.1
    assert abs(n["identity_residual_pq"]) < 1e-12 and abs(n["identity_residual_qp"]) < 1e-12


def test_digits_ce_head_beats_mse_head_with_normal_init(sections):
    n = sections["digits_sigmoid"]
    ce, mse = n["normal"]["softmax_ce"], n["normal"]["sigmoid_mse"]
    assert ce["mean_final_accuracy"] > mse["mean_final_accuracy"] + 0.1
    assert min(ce["final_accuracy"]) > max(mse["final_accuracy"])
    assert n["breast_cancer"]["sigmoid_bce"]["mean_accuracy_after_1_epoch"] > n["breast_cancer"]["sigmoid_mse"]["mean_accuracy_after_1_epoch"]
    # both MSE heads are trained, and both trail the cross-entropy heads
    for head in ("softmax_mse", "sigmoid_mse"):
        assert n["normal"][head]["mean_final_accuracy"] < n["normal"]["sigmoid_bce"]["mean_final_accuracy"] - 0.1
    # the text's "start saturated": with N(0,1) weights far more pre-activations lie beyond |z| > 4
    sat = n["initial_saturation"]
    assert sat["normal"]["saturated_fraction"] > 0.2 > 0.01 > sat["scaled"]["saturated_fraction"]
    assert sat["normal"]["mean_sigmoid_derivative"] < 0.5 * sat["scaled"]["mean_sigmoid_derivative"]


def test_relu_confidently_wrong_start(sections):
    n = sections["relu_question"]
    assert {"softmax_ce", "sigmoid_bce"} <= set(n["recovered_quickly"])
    assert "sigmoid_mse" not in n["recovered_quickly"] and "softmax_mse" not in n["recovered_quickly"]
    ws = n["wrong_start"]
    assert ws["sigmoid_mse"]["accuracy_after_1_epoch"] < 0.2 < 0.8 < ws["softmax_ce"]["accuracy_after_1_epoch"]
    # why: the saturated output unit gets almost no gradient under MSE, about 1 per example under BCE
    assert ws["sigmoid_mse"]["initial_unit0_gradient"] < 1e-3 * ws["sigmoid_bce"]["initial_unit0_gradient"]
    # linear + MSE starts with a large gradient yet stays stuck: its ReLU units die
    assert "linear_mse" in n["stuck_with_dead_units"]
    lin = ws["linear_mse"]
    assert lin["initial_unit0_gradient"] > ws["sigmoid_bce"]["initial_unit0_gradient"]
    assert lin["dead_hidden_fraction"] > lin["clean_start_dead_hidden_fraction"] + 0.2


def test_calibration_ce_model_better_calibrated(sections):
    n = sections["calibration"]
    assert n["softmax_ce"]["final_ece"] < n["sigmoid_mse"]["final_ece"]
    assert n["softmax_ce"]["final_nll"] < n["sigmoid_mse"]["final_nll"]
    # the reliability diagram's top bin holds most examples, as the text says
    assert 0.5 < n["softmax_ce"]["top_bin_share"] <= 1.0


def test_temperature_scaling_keeps_accuracy_and_fits_validation(sections):
    n = sections["calibration"]
    assert n["validation_fraction"] == 0.1 and n["validation_examples"] == 144
    for head in ("softmax_ce", "sigmoid_mse"):
        ts = n["temperature_scaling"][head]
        assert ts["accuracy_before"] == ts["accuracy_after"] and len(ts["temperatures"]) == len(n["seeds"])
        assert all(0.05 <= t <= 20 for t in ts["temperatures"])
        # the curves' ECE (lab rule) and crossent.metrics' ECE before scaling: the same 15 right-closed bins
    seed = n["seeds"].index(n["seed"])
    assert n["temperature_scaling"]["softmax_ce"]["ece_before"][seed] == pytest.approx(n["softmax_ce"]["final_ece"], abs=2e-6)
    assert set(n["ece_lower_after_scaling"]) <= {"softmax_ce", "sigmoid_mse"}


def test_experiment_9_trains_on_less_data_than_experiment_7(quick_report):
    # experiment 7 trains on the whole training set, experiment 9 on 90% of it: different networks
    n7 = {s["id"]: s["numbers"] for s in quick_report[1]["experiments"]}["digits_sigmoid"]
    n9 = {s["id"]: s["numbers"] for s in quick_report[1]["experiments"]}["calibration"]
    assert n7["normal"]["softmax_ce"]["final_accuracy"][0] != n9["softmax_ce"]["final_accuracy"] or \
        n7["normal"]["softmax_ce"]["final_nll"][0] != n9["softmax_ce"]["final_nll"]


# ------------------------------------------------------------------ the report end to end


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.cells, self._in_td = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_td = tag == "td"
        if self._in_td:
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_td = False

    def handle_data(self, data):
        if self._in_td:
            self.cells[-1] += data


def _all_numbers(value):
    if isinstance(value, dict):
        return [x for item in value.values() for x in _all_numbers(item)]
    if isinstance(value, list):
        return [x for item in value for x in _all_numbers(item)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


def test_report_files_images_and_numbers(quick_report):
    out, results, meta = quick_report
    page = (out / "index.html").read_text(encoding="utf-8")
    on_disk = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert on_disk == results and on_disk["quick"] is True and len(on_disk["experiments"]) == 9
    parser = _PageParser()
    parser.feed(page)
    # one figure per experiment, plus the 3-D view of the loss surfaces and temperature scaling
    assert parser.images == [f for e in on_disk["experiments"] for f in e["figures"]] and len(parser.images) == 11
    for src in parser.images:
        assert not Path(src).is_absolute() and (out / src).is_file() and (out / src).stat().st_size > 10_000
    known = set(_all_numbers(on_disk))
    numeric = [c for c in parser.cells if c.strip().lstrip("-").replace(".", "", 1).replace("e-", "", 1).replace("e+", "", 1).isdigit()]
    assert len(numeric) > 100
    for cell in numeric:
        assert float(cell) in known, cell
    # and every table cell of results.json is on the page, in order
    expected = [report.format_cell(v) for s in on_disk["experiments"] for t in s["tables"] for row in t["rows"] for v in row]
    assert parser.cells == expected
    assert json.loads((out / "meta.json").read_text())["seed"] == 0 and meta["run_time_s"] > 0


def test_same_seed_same_results_json_with_and_without_pool(quick_report, tmp_path):
    out, _, _ = quick_report
    parser = report.add_report_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out", str(tmp_path), "--quick", "--jobs", "2", "--no-progress", "--lang", "en"])
    text, data = report.report_command(args)
    assert text.startswith(f"wrote {tmp_path / 'index.html'} (9 experiments") and data["jobs"] == min(2, report.available_cores())
    assert (tmp_path / "results.json").read_bytes() == (out / "results.json").read_bytes()


def test_chinese_report_has_every_section_in_chinese(chinese_report, quick_report):
    out, results, meta = chinese_report
    page = (out / "index.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN">' in page and "为什么用交叉熵" in page and meta["lang"] == results["lang"] == "zh"
    english = quick_report[1]
    for zh, en in zip(results["experiments"], english["experiments"]):
        assert zh["id"] == en["id"] and zh["figures"] == en["figures"]
        same = {k: v for k, v in zh["numbers"].items() if k != "answer"}  # the ReLU answer is a sentence
        assert same == {k: v for k, v in en["numbers"].items() if k != "answer"}  # the same computation, other words
        for text in (zh["title"], zh["text"], zh["headline"], *[t["caption"] for t in zh["tables"]]):
            assert any("\u4e00" <= c <= "\u9fff" for c in text), text
    # the figures differ from the English ones (their labels)
    assert (out / "07_digits_sigmoid.png").read_bytes() != (quick_report[0] / "07_digits_sigmoid.png").read_bytes()


def test_no_cjk_font_keeps_english_figure_labels_and_says_so(monkeypatch, capsys):
    from crossent.lab import figures

    monkeypatch.setattr(figures, "cjk_font", lambda: None)  # a machine without one
    assert report._figure_language("zh") == ("en", "未找到中文字体，图中的标注保留英文。")
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert report._figure_language("en") == ("en", "")


def test_stacks_do_not_change_a_network(tmp_path):
    from crossent.lab.experiments_network import train_stack

    specs = [_spec(head=h, seed=s, epochs=1) for h in ("softmax_ce", "sigmoid_mse") for s in (0, 1)]
    together = train_stack(specs)
    assert [train_run(spec) for spec in specs] == together


def test_pool_map_gives_the_same_training_runs():
    from concurrent.futures import ProcessPoolExecutor

    specs = [_spec(head=h, seed=s, epochs=1) for h in ("softmax_ce", "sigmoid_mse") for s in (0, 1)]
    serial = Context(out_dir=Path(".")).map(train_run, specs)
    with ProcessPoolExecutor(2) as pool:
        pooled = list(pool.map(train_run, specs))
    assert tidy(serial) == tidy(pooled) and serial[0] != serial[1]


def test_html_escapes_text():
    results = {"experiments": [{"id": "x", "title": "<b>t</b>", "figures": ["a.png"], "text": "1 < 2 & 3",
                                "headline": "h", "tables": [{"caption": "c", "columns": ["<i>"], "rows": [["<x>"]]}],
                                "numbers": {}}]}
    meta = {"date": "d", "seed": 0, "quick": True, "jobs": 1, "run_time_s": 1.0, "versions": {"a": "<1>"}}
    page = report.render_html(results, meta)
    assert "<b>t</b>" not in page and "<i>" not in page and "&lt;b&gt;t&lt;/b&gt;" in page and "1 &lt; 2 &amp; 3" in page
    assert "&lt;x&gt;" in page and "&lt;1&gt;" in page


@pytest.mark.parametrize("argv", [["--jobs", "0"], ["--jobs", "-3"], ["--seed", "-1"], ["--seed", str(2**32)], ["--jobs", "two"],
                                  ["--lang", "fr"]])
def test_bad_command_line_values(argv, capsys):
    parser = report.add_report_arguments(argparse.ArgumentParser())
    with pytest.raises(SystemExit):
        parser.parse_args(argv)


@pytest.mark.parametrize("kwargs, name", [({"jobs": 0}, "jobs"), ({"seed": -2}, "seed"), ({"seed": 1.5}, "seed"),
                                          ({"seed": 2**32}, "seed"), ({"lang": "de"}, "lang")])
def test_run_report_validates(kwargs, name, tmp_path):
    with pytest.raises(ValueError, match=f"`{name}`"):
        report.run_report(tmp_path, **kwargs)


@pytest.mark.parametrize("kwargs, name", [({"force": "yes"}, "force"), ({"quick": 1}, "quick"),
                                          ({"progress": "x"}, "progress")])
def test_run_report_flags_are_booleans(kwargs, name, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")  # force="yes" must not take this folder
    with pytest.raises(TypeError, match=f"`{name}`"):
        report.run_report(tmp_path, **kwargs)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_run_report_takes_numpy_integers(monkeypatch, tmp_path):
    monkeypatch.setattr(report, "experiments", lambda: [_figure_experiment])
    results, meta = report.run_report(tmp_path / "out", seed=np.int64(3), jobs=np.int64(1), progress=False)
    assert results["seed"] == meta["seed"] == 3 and type(results["seed"]) is int and meta["jobs"] == 1


# ------------------------------------------------------------------ the output folder (a one-experiment stand-in report)


def _figure_experiment(ctx):
    (ctx.out_dir / "fig.png").write_bytes(b"new figure")
    return section("stand_in", "Stand-in", figures=["fig.png"], text="t", tables=[], numbers={"x": 1.0}, headline="h")


def _failing_experiment(ctx):
    (ctx.out_dir / "half.png").write_bytes(b"half")
    raise RuntimeError("experiment failed")


@pytest.fixture
def stand_in(monkeypatch):
    """Make run_report run the given experiments instead of the nine (milliseconds, not seconds)."""
    def use(*functions):
        monkeypatch.setattr(report, "experiments", lambda: list(functions))
    use(_figure_experiment)
    return use


STAND_IN_FILES = {"fig.png", "index.html", "meta.json", "results.json", "explorer/index.html"}  # a stand-in report's files


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_new_folder_and_missing_parents_are_created(stand_in, tmp_path):
    out = tmp_path / "a" / "b" / "report"
    results, meta = report.run_report(out, progress=False)
    assert set(_tree(out)) == STAND_IN_FILES
    assert 'href="explorer/index.html#lang=en"' in (out / "index.html").read_text(encoding="utf-8")  # the report links the explorer
    assert report.is_report_folder(out) and sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == sorted(
        ["a", "a/b", "a/b/report", "a/b/report/explorer", *(f"a/b/report/{name}" for name in _tree(out))])


def test_previous_report_is_replaced_whole(stand_in, tmp_path):
    out = tmp_path / "r"
    report.run_report(out, progress=False)
    (out / "old_figure.png").write_bytes(b"from an older version")
    report.run_report(out, progress=False, seed=7)
    assert set(_tree(out)) == STAND_IN_FILES
    assert json.loads((out / "meta.json").read_text())["seed"] == 7 and [p.name for p in tmp_path.iterdir()] == ["r"]


def test_a_folder_of_other_files_is_refused_unless_force(stand_in, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "index.html").write_text("my page")
    (out / "meta.json").write_text('{"versions": {"other": "1"}}')
    with pytest.raises(report.ReportPathError, match=r"`out` '.*mine' is a folder of other files.*force=True"):
        report.run_report(out, progress=False)
    assert _tree(out) == {"index.html": b"my page", "meta.json": b'{"versions": {"other": "1"}}'}
    report.run_report(out, progress=False, force=True)
    assert set(_tree(out)) == STAND_IN_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_an_empty_folder_takes_the_report(stand_in, tmp_path):
    report.run_report(tmp_path, progress=False)
    assert report.is_report_folder(tmp_path)


def test_a_failed_run_leaves_the_previous_report_and_no_partial_one(stand_in, tmp_path):
    out = tmp_path / "r"
    report.run_report(out, progress=False)
    before = _tree(out)
    stand_in(_figure_experiment, _failing_experiment)
    with pytest.raises(RuntimeError, match="experiment failed"):
        report.run_report(out, progress=False, jobs=2)
    assert _tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["r"]


def test_a_failed_run_removes_the_parents_it_made(stand_in, tmp_path):
    (tmp_path / "kept").mkdir()
    stand_in(_failing_experiment)
    with pytest.raises(RuntimeError):
        report.run_report(tmp_path / "kept" / "new" / "r", progress=False)
    assert [p.name for p in tmp_path.rglob("*")] == ["kept"]


@pytest.mark.parametrize("where, message", [
    ("file", r"`out` must be a folder, but '.*file' is a file\."),
    ("file/sub", r"`out` '.*file/sub' lies inside '.*file', which is a file, not a folder\."),
    (".", r"`out` '\.' is or contains the current folder"),
    ("..", r"`out` '\.\.' is or contains the current folder"),
    ("x" * 300, r"cannot be used: File name too long|longer than the \d+ bytes"),
])
def test_bad_output_paths_are_refused_before_anything_runs(stand_in, tmp_path, monkeypatch, where, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("a file")
    stand_in(_failing_experiment)  # never reached
    with pytest.raises(report.ReportPathError, match=message):
        report.run_report(where, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_an_unwritable_place_is_refused(stand_in, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the folder creation fail instead
        real_mkdir = Path.mkdir
        def mkdir(self, *args, **kwargs):
            if locked in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)
        monkeypatch.setattr(Path, "mkdir", mkdir)
    else:
        locked.chmod(0o555)
    try:
        with pytest.raises(report.ReportPathError, match=r"`out` '.*locked/a/r' cannot be written: .*ermission"):
            report.run_report(locked / "a" / "r", progress=False)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_is_report_folder_needs_a_meta_json_written_by_crossent(tmp_path):
    assert not report.is_report_folder(tmp_path)
    for text, expected in (("not json", False), ('["versions"]', False), ('{"versions": {"numpy": "2"}}', False),
                           ('{"date": "d", "versions": {"crossent": "0.1.0"}}', True)):
        (tmp_path / "meta.json").write_text(text)
        assert report.is_report_folder(tmp_path) is expected


def test_jobs_beyond_the_cores_are_capped(stand_in, tmp_path):
    _, meta = report.run_report(tmp_path / "r", progress=False, jobs=10**6)
    assert meta["jobs"] == report.available_cores()


def _screenshot_module():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.py"
    spec = importlib.util.spec_from_file_location("screenshot_report", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.find_chromium() is None:
        pytest.skip("chromium is not installed")
    return module


def test_chinese_report_renders_in_chromium_with_every_image(chinese_report, tmp_path):
    module = _screenshot_module()
    out, results, _ = chinese_report
    png = module.screenshot(out, height=2000, output=tmp_path / "shot-zh.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    figures = [f for e in results["experiments"] for f in e["figures"]]
    assert module.image_check(out) == {"images": len(figures), "broken": []}


def test_screenshot(quick_report, tmp_path):
    module = _screenshot_module()
    png = module.screenshot(quick_report[0], height=2000, output=tmp_path / "shot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    # every figure of the page loads in the browser: no broken images
    figures = [f for e in quick_report[1]["experiments"] for f in e["figures"]]
    assert module.image_check(quick_report[0]) == {"images": len(figures), "broken": []}
    # and the check does see a broken one
    page = tmp_path / "broken"
    page.mkdir()
    (page / "index.html").write_text('<html><body><img src="missing.png"></body></html>', encoding="utf-8")
    assert module.image_check(page) == {"images": 1, "broken": ["missing.png"]}


def test_matplotlib_loads_only_when_a_report_runs():
    import subprocess
    import sys

    code = ("import sys, crossent, crossent.lab, crossent.cli; crossent.cli.build_parser(); "
            "print(*(m in sys.modules for m in ('matplotlib', 'sklearn', 'jinja2', 'scipy.optimize')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False"] * 4


def _ignore_sigterm_and_sleep(ready):
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a worker that has not yet run its initializer, in effect
    Path(ready).write_text("ready")
    time.sleep(120)


def test_stopping_the_pool_ends_a_worker_whatever_its_sigterm_handling(tmp_path):
    import multiprocessing
    import threading
    import time
    from concurrent.futures import ProcessPoolExecutor

    executor = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork"),
                                   initializer=report._quiet_worker)
    executor.submit(_ignore_sigterm_and_sleep, str(tmp_path / "ready"))
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    processes = list(executor._processes.values())
    stopper = threading.Thread(target=report._stop_workers, args=(executor,), daemon=True)
    stopper.start()
    stopper.join(30)
    alive = [p for p in processes if p.is_alive()]
    for p in alive:  # clean up after a failure
        p.kill()
    assert not stopper.is_alive() and alive == []
