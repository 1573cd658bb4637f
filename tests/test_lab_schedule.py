"""The report's task scheduling: which stacks train where, and that the work is cut without changing a result."""

import pytest

pytest.importorskip("matplotlib")

from crossent.lab import schedule  # noqa: E402
from crossent.lab._common import Context  # noqa: E402
from crossent.lab.experiments_network import digits_sigmoid, relu_question, spec_key  # noqa: E402


def _specs(quick):
    ctx = Context(out_dir=None, quick=quick)
    return digits_sigmoid.specs(ctx) + relu_question.specs(ctx)


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("jobs", [1, 2, 3, 8])
def test_every_network_is_trained_once_in_a_stack_of_its_kind(quick, jobs):
    specs = _specs(quick)
    tasks = schedule.training_tasks(specs, jobs, experiments=9)
    keys = [spec_key(s) for task in tasks for s in task]
    assert sorted(keys) == sorted({spec_key(s) for s in specs}) and len(keys) == len(set(keys))
    for task in tasks:
        assert task and len({(s["dataset"], s["sizes"], s["hidden"], s["epochs"]) for s in task}) == 1
    seconds = [schedule._stack_seconds(t) for t in tasks]
    assert seconds == sorted(seconds, reverse=True)  # longest first


def test_one_process_keeps_every_stack_whole_and_more_processes_cut_the_longest():
    specs = _specs(quick=False)
    whole = schedule.training_tasks(specs, 1, experiments=9)
    assert len(whole) == 3  # the digits sigmoid stack, the breast-cancer stack, the ReLU stack
    cut = schedule.training_tasks(specs, 2, experiments=9)
    total = sum(map(schedule._stack_seconds, cut)) + schedule.EXPERIMENT_SECONDS * 9
    assert len(cut) > 3 and schedule._stack_seconds(cut[0]) <= total / 2
    # a small report's stacks stay whole: cutting one pays each step's fixed cost twice
    assert len(schedule.training_tasks(_specs(quick=True), 2, experiments=9)) == 3
