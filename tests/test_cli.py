"""Tests for the `crossent` command (crossent.cli.main and python -m crossent)."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from crossent.cli import main


def run(capsys, *argv):
    """main(argv) -> (exit status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


class TestInfo:
    def test_one_in_a_hundred_event_in_bits(self, capsys):
        status, out, err = run(capsys, "info", "0.01", "--base", "2")
        assert (status, err) == (0, "")
        assert out == f"I(0.01) = {math.log2(100):.6g} bits\n"

    def test_one_line_per_probability_in_nats_by_default(self, capsys):
        status, out, _ = run(capsys, "info", "0.5", "1", "0")
        assert status == 0
        assert out.splitlines() == ["I(0.5) = 0.693147 nats", "I(1) = 0 nats", "I(0) = inf nats"]

    def test_json_lists_every_value_and_writes_inf_as_string(self, capsys):
        status, out, _ = run(capsys, "info", "0.5", "0.25", "0", "--base", "2", "--json")
        assert status == 0
        data = json.loads(out)
        assert data["measure"] == "self-information" and data["unit"] == "bits" and data["base"] == 2.0
        assert data["p"] == [0.5, 0.25, 0.0]
        assert data["values"] == [1.0, 2.0, "inf"]

    def test_probability_above_one_is_exit_2_with_one_line(self, capsys):
        status, out, err = run(capsys, "info", "1.5")
        assert status == 2 and out == ""
        assert err.count("\n") == 1
        assert err.startswith("crossent info: error: `p` must lie in [0, 1]")


class TestEntropy:
    def test_plain_output_in_bits(self, capsys):
        status, out, _ = run(capsys, "entropy", "0.5", "0.25", "0.25", "--base", "2")
        assert (status, out) == (0, "H(p) = 1.5 bits\n")

    def test_base_e_means_nats(self, capsys):
        status, out, _ = run(capsys, "entropy", "0.5", "0.5", "--base", "e")
        assert (status, out) == (0, f"H(p) = {math.log(2):.6g} nats\n")

    def test_base_10_is_hartleys(self, capsys):
        status, out, _ = run(capsys, "entropy", "0.1", "0.9", "--base", "10")
        assert status == 0 and out.endswith(" hartleys\n")

    def test_normalize_accepts_counts(self, capsys):
        status, out, _ = run(capsys, "entropy", "2", "1", "1", "--normalize", "--base", "2", "--json")
        assert status == 0
        data = json.loads(out)
        assert data["value"] == pytest.approx(1.5)
        assert data["normalize"] is True and data["p"] == [2.0, 1.0, 1.0]

    def test_counts_without_normalize_suggest_the_flag(self, capsys):
        status, _, err = run(capsys, "entropy", "3", "1")
        assert status == 2 and err.count("\n") == 1
        assert "pass --normalize" in err

    def test_unnormalized_probabilities_show_the_sum(self, capsys):
        status, _, err = run(capsys, "entropy", "0.5", "0.6")
        assert status == 2
        assert "sums to 1.1" in err and "Traceback" not in err

    @pytest.mark.parametrize("argv, message", [
        (["entropy", "0.5", "abc"], "argument p: not a number: 'abc'"),
        (["entropy", "0.5", "0.5", "--base", "x"], "argument --base: not a number: 'x'"),
        (["entropy", "0.5", "0.5", "--base", "1"], "`base` must be a positive finite number other than 1"),
        (["entropy", "nan", "1"], "`p` must be finite"),
        (["entropy"], "the following arguments are required: p"),
    ])
    def test_bad_input_is_exit_2_with_one_line_on_stderr(self, capsys, argv, message):
        status, out, err = run(capsys, *argv)
        assert status == 2 and out == ""
        assert err.count("\n") == 1
        assert err.startswith("crossent entropy: error: ") and message in err


class TestPairCommands:
    def test_cross_entropy_of_fair_coin_under_90_10_model(self, capsys):
        status, out, _ = run(capsys, "cross-entropy", "--p", "0.5", "0.5", "--q", "0.9", "0.1", "--base", "2")
        expected = -0.5 * (math.log2(0.9) + math.log2(0.1))
        assert (status, out) == (0, f"H(p, q) = {expected:.6g} bits\n")

    def test_kl_four_outcome_example_is_quarter_bit(self, capsys):
        status, out, _ = run(capsys, "kl", "--p", "0.5", "0.25", "0.125", "0.125",
                             "--q", "0.25", "0.25", "0.25", "0.25", "--base", "2")
        assert (status, out) == (0, "D(p || q) = 0.25 bits\n")

    def test_kl_json_is_one_object_with_inputs_and_inf(self, capsys):
        status, out, _ = run(capsys, "kl", "--p", "0.5", "0.5", "--q", "1", "0", "--json")
        assert status == 0 and out.count("\n") == 1
        assert json.loads(out) == {"measure": "kl-divergence", "value": "inf", "unit": "nats", "base": None,
                                   "normalize": False, "p": [0.5, 0.5], "q": [1.0, 0.0]}

    def test_one_unit_is_written_in_the_singular(self, capsys):
        status, out, _ = run(capsys, "js", "--p", "1", "0", "--q", "0", "1", "--base", "2")
        assert (status, out) == (0, "JS(p, q) = 1 bit\n")

    def test_js_of_disjoint_coins_is_one_bit(self, capsys):
        status, out, _ = run(capsys, "js", "--p", "1", "0", "--q", "0", "1", "--base", "2", "--json")
        assert status == 0 and json.loads(out)["value"] == pytest.approx(1.0)

    def test_normalize_applies_to_p_and_q(self, capsys):
        status, out, _ = run(capsys, "kl", "--p", "1", "1", "--q", "1", "1", "--normalize")
        assert (status, out) == (0, "D(p || q) = 0 nats\n")

    def test_missing_q_is_exit_2(self, capsys):
        status, _, err = run(capsys, "kl", "--p", "0.5", "0.5")
        assert status == 2 and err.count("\n") == 1
        assert "the following arguments are required: --q" in err

    def test_different_lengths_name_both_shapes(self, capsys):
        status, _, err = run(capsys, "cross-entropy", "--p", "0.5", "0.5", "--q", "0.2", "0.3", "0.5")
        assert status == 2 and err.count("\n") == 1
        assert "(2,) and (3,)" in err

    def test_bad_q_is_named_q(self, capsys):
        status, _, err = run(capsys, "js", "--p", "0.5", "0.5", "--q", "0.5", "0.4")
        assert status == 2 and "`q` must sum to 1" in err


class TestTopLevel:
    def test_help_lists_commands_and_examples(self, capsys):
        status, out, _ = run(capsys, "--help")
        assert status == 0
        for command in ("info", "entropy", "cross-entropy", "kl", "js", "examples:"):
            assert command in out

    def test_subcommand_help_has_examples(self, capsys):
        status, out, _ = run(capsys, "entropy", "--help")
        assert status == 0 and "examples:\n  crossent entropy 0.5 0.25 0.25 --base 2" in out

    def test_missing_command_is_exit_2(self, capsys):
        status, out, err = run(capsys)
        assert status == 2 and out == "" and err.count("\n") == 1

    def test_unknown_command_is_exit_2(self, capsys):
        status, _, err = run(capsys, "entropie", "0.5", "0.5")
        assert status == 2 and err.count("\n") == 1 and "invalid choice: 'entropie'" in err

    def test_version(self, capsys):
        status, out, _ = run(capsys, "--version")
        assert status == 0 and out.startswith("crossent ")


def test_python_dash_m_crossent_runs_the_same_command():
    result = subprocess.run([sys.executable, "-m", "crossent", "info", "0.5", "--base", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "I(0.5) = 1 bit\n"


def _readme_cli_examples():
    """(argv, expected output lines) for each `$ crossent ...` line of the README with output below it."""
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    examples, current = [], None
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("$ crossent "):
            current = (line[2:].split("#")[0].split()[1:], [])
            examples.append(current)
        elif line.startswith("```"):
            current = None
        elif current is not None:
            current[1].append(line)
    return [(argv, out) for argv, out in examples if out]  # `report` has no output shown


_README_EXAMPLES = _readme_cli_examples()


@pytest.mark.parametrize("argv, expected", _README_EXAMPLES, ids=[" ".join(argv) for argv, _ in _README_EXAMPLES])
def test_readme_command_line_examples(capsys, argv, expected):
    status, out, err = run(capsys, *argv)
    assert (status, err) == (0, "")
    assert out.splitlines() == expected


class TestOutputAndInterrupts:
    def test_unit_of_a_base_just_above_one_is_not_shown_as_one(self, capsys):
        status, out, _ = run(capsys, "entropy", "1", "--base", "1.0000000000000002")
        assert (status, out) == (0, "H(p) = 0 log-base-1.0000000000000002 units\n")

    def test_huge_counts_are_normalised_exactly(self, capsys):
        # Their sum overflows float64: H used to come out as 0 (the library now scales first).
        status, out, _ = run(capsys, "entropy", "1e308", "1e308", "--normalize", "--base", "2")
        assert (status, out) == (0, "H(p) = 1 bit\n")
        status, out, _ = run(capsys, "js", "--p", "1e308", "1e308", "--q", "1", "1", "--normalize", "--json")
        assert status == 0 and json.loads(out)["value"] == 0.0

    def test_ctrl_c_is_one_line_and_status_130(self, capsys, monkeypatch):
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr("crossent.measures.entropy", interrupted)
        status, out, err = run(capsys, "entropy", "0.5", "0.5")
        assert (status, out, err) == (130, "", "crossent entropy: interrupted\n")

    def test_a_closed_pipe_exits_quietly(self):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before anything is written (`| head -0`)
        try:
            result = subprocess.run([sys.executable, "-m", "crossent", "info", "0.5"], stdout=write_end,
                                    stderr=subprocess.PIPE, text=True, timeout=120)
        finally:
            os.close(write_end)
        assert (result.returncode, result.stderr) == (141, "")

    def test_a_closed_stdout_is_not_an_error(self):
        result = subprocess.run(["sh", "-c", 'exec "$0" -m crossent info 0.5 >&-', sys.executable],
                                capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stderr) == (0, "")

    @pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
    def test_a_full_disk_is_one_line_and_status_1(self):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "crossent", "info", "0.5", "--json"], stdout=full,
                                    stderr=subprocess.PIPE, text=True, timeout=120)
        assert result.returncode == 1
        assert result.stderr == "crossent info: error: cannot write the output: No space left on device\n"


# ---------------------------------------------------------------- crossent report (experiments replaced by a stand-in)


@pytest.fixture
def report_module(monkeypatch):
    """crossent.lab.report with one tiny experiment in place of the nine."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from crossent.lab import report

    monkeypatch.setattr(report, "experiments", lambda: [_stand_in_experiment])
    return report


def _stand_in_experiment(ctx):
    """A tiny experiment (module level: the report's worker processes receive it by name)."""
    from crossent.lab._common import section

    (ctx.out_dir / "fig.png").write_bytes(b"figure")
    return section("stand_in", "Stand-in", figures=["fig.png"], text="t", tables=[], numbers={}, headline="h")


def _interrupted_experiment(ctx):
    """Ctrl-C in the middle of an experiment (in a worker process with the default --jobs)."""
    (ctx.out_dir / "half.png").write_bytes(b"half")
    raise KeyboardInterrupt


def _one_line_error(status, out, err, starts):
    assert status == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(starts), err


class TestReport:
    @pytest.mark.parametrize("argv, message", [
        (["--jobs", "-3"], "argument --jobs: must be a positive number of processes (at most the"),
        (["--jobs", "0"], "argument --jobs: must be a positive number of processes"),
        (["--seed", str(2**32)], f"argument --seed: must be an integer from 0 to {2**32 - 1}, got {2**32}"),
        (["--seed", "-1"], f"argument --seed: must be an integer from 0 to {2**32 - 1}, got -1"),
        (["--seed", "1e3"], "argument --seed: not an integer: '1e3'"),
    ])
    def test_bad_numbers_are_refused_before_any_work(self, capsys, argv, message):
        status, out, err = run(capsys, "report", *argv)
        _one_line_error(status, out, err, "crossent report: error: " + message)
        assert f"got {argv[1]}" in err or "not an integer" in err

    def test_help_says_jobs_is_capped_and_what_force_does(self, capsys):
        status, out, _ = run(capsys, "report", "--help")
        text = " ".join(out.split())
        assert status == 0 and "cores available to this process, also the most used" in text
        assert "--force" in text and "replace DIR even if it is a folder of other files" in text

    @pytest.mark.parametrize("where, message", [
        ("file", "crossent report: error: --out must be a folder, but 'file' is a file."),
        ("file/sub", "crossent report: error: --out 'file/sub' lies inside"),
        (".", "crossent report: error: --out '.' is or contains the current folder"),
        ("mine", "crossent report: error: --out 'mine' is a folder of other files, not a crossent report"),
    ])
    def test_bad_out_is_exit_2_with_one_line(self, capsys, monkeypatch, tmp_path, report_module, where, message):
        monkeypatch.chdir(tmp_path)
        (tmp_path / "file").write_text("a file")
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "index.html").write_text("my page")
        status, out, err = run(capsys, "report", "--out", where)
        _one_line_error(status, out, err, message)
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["file", "index.html", "mine"]
        assert (tmp_path / "mine" / "index.html").read_text() == "my page"
        if where == "mine":
            assert err.rstrip().endswith("or pass --force to replace it.")
            status, _, _ = run(capsys, "report", "--out", where, "--force")
            assert status == 0 and report_module.is_report_folder(tmp_path / "mine")

    def test_json_is_the_only_stdout_and_notes_go_to_stderr(self, capsys, monkeypatch, tmp_path, report_module):
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # so the progress bar is drawn
        status, out, err = run(capsys, "report", "--json", "--jobs", "999", "--out", str(tmp_path / "r"))
        assert status == 0 and out.count("\n") == 1
        data = json.loads(out)
        cores = report_module.available_cores()
        assert data["index"] == str(tmp_path / "r" / "index.html") and data["jobs"] == cores
        assert err.startswith(f"crossent report: --jobs 999 is more than the {cores} cores available; using {cores}\n")
        assert "crossent report: 100%" in err  # the bar

    def test_ctrl_c_leaves_the_previous_report_and_no_partial_one(self, capsys, monkeypatch, tmp_path, report_module):
        out_dir = tmp_path / "r"
        assert run(capsys, "report", "--out", str(out_dir))[0] == 0
        before = sorted(p.name for p in out_dir.iterdir())

        monkeypatch.setattr(report_module, "experiments", lambda: [_interrupted_experiment])
        status, out, err = run(capsys, "report", "--out", str(out_dir))
        assert (status, out, err) == (130, "", "crossent report: interrupted\n")
        assert sorted(p.name for p in out_dir.iterdir()) == before and list(tmp_path.iterdir()) == [out_dir]

    def test_a_missing_lab_module_is_one_line_and_nothing_is_written(self, capsys, monkeypatch, tmp_path, report_module):
        monkeypatch.setitem(sys.modules, "tqdm", None)
        status, out, err = run(capsys, "report", "--out", str(tmp_path / "r"))
        assert status == 1 and out == "" and err.count("\n") == 1
        assert "needs the module 'tqdm'" in err and "crossent[lab]" in err and list(tmp_path.iterdir()) == []

    def test_sigterm_removes_the_partial_report(self, tmp_path):
        pytest.importorskip("matplotlib")
        code = textwrap.dedent("""
            import sys, time
            from crossent.cli import main
            from crossent.lab import report

            def slow(ctx):
                (ctx.out_dir / "half.png").write_bytes(b"half")
                print("started", flush=True)
                time.sleep(60)

            report.experiments = lambda: [slow]
            sys.exit(main(["report", "--out", sys.argv[1]]))
        """)
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline() == "started\n"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        finally:
            proc.kill()
            proc.communicate()
        assert list(tmp_path.iterdir()) == []


def test_a_folder_name_the_output_encoding_cannot_show_is_escaped(tmp_path):
    pytest.importorskip("matplotlib")
    code = textwrap.dedent("""
        import sys
        from crossent.cli import main
        from crossent.lab import report
        from crossent.lab._common import section

        def tiny(ctx):
            return section("x", "X", figures=[], text="t", tables=[], numbers={}, headline="h")

        report.experiments = lambda: [tiny]
        sys.exit(main(["report", "--out", sys.argv[1]]))
    """)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r\u00e9sum\u00e9")], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"wrote {tmp_path}/r\\xe9sum\\xe9/index.html (1 experiments")


def test_python_dash_m_crossent_lab_is_crossent_report():
    result = subprocess.run([sys.executable, "-m", "crossent.lab", "--seed", "-1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("crossent report: error: argument --seed: must be an integer from 0 to")
