"""Running the experiments: one after another, or as tasks for a pool of processes.

With ``--jobs N`` (N > 1) the report's work is a list of tasks for N worker
processes.  The training stacks of every experiment that trains networks
(an experiment function with a ``specs(ctx)`` attribute says what it trains)
go first, largest first, since they are the longest tasks; then every other
experiment; and each training experiment -- which draws its figures and
writes its section from the trained networks -- as soon as its networks are
trained.  Every network is seeded by its spec alone and its numbers do not
depend on its stack, and every experiment is a function of its context, so
the results do not depend on N or on which process ran what (the tests check
``results.json`` byte for byte).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import FIRST_COMPLETED, wait

from ._common import serial_map

#: seconds of one SGD step of a stack of M networks, about ``a + b * M * weights / 2220`` (64-30-10 networks
#: have 2220 weights; measured on the project's 2-core test machines); with EXPERIMENT_SECONDS, the time to
#: draw an experiment's figures, it decides only how the work is ordered and cut, never a result
STEP_SECONDS = (6e-4, 2e-5)
EXPERIMENT_SECONDS = 0.35


def run_experiment(experiment, ctx):
    """One experiment's section, drawn in the house style of the context's figure language."""
    from .figures import house_style

    with house_style(ctx.figure_lang):
        return experiment(ctx)


def run_serially(ctx, experiments, done):
    """Every experiment's section in this process, in order; ``done(index)`` after each."""
    sections = []
    for index, experiment in enumerate(experiments):
        sections.append(run_experiment(experiment, ctx))
        done(index)
    return sections


def _stack_seconds(chunk):
    """A rough time to train the stack `chunk` (see :data:`STEP_SECONDS`)."""
    from .experiments_network import _data, _rows

    spec = chunk[0]
    y_train = _data(spec)[1]
    steps = spec["epochs"] * -(-len(_rows(spec, y_train)[0]) // spec["batch_size"])
    sizes = spec["sizes"]
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return steps * (STEP_SECONDS[0] + STEP_SECONDS[1] * len(chunk) * weights / 2220)


def training_tasks(specs, jobs, experiments):
    """The stacks to train for `specs` on `jobs` processes, longest first.

    A stack is cut in two (and again) while it would take longer than the
    whole report's work shared out over the processes: a cut stack pays the
    fixed cost of each step twice, so small stacks stay whole.
    """
    from .experiments_network import stacks

    tasks = stacks(specs)
    total = sum(map(_stack_seconds, tasks)) + EXPERIMENT_SECONDS * experiments
    while True:
        tasks.sort(key=_stack_seconds, reverse=True)
        longest = tasks[0] if tasks else []
        if len(longest) < 2 or _stack_seconds(longest) <= total / jobs:
            return tasks
        half = -(-len(longest) // 2)
        tasks[0:1] = [longest[:half], longest[half:]]
        total += _stack_seconds(tasks[0]) + _stack_seconds(tasks[1]) - _stack_seconds(longest)


def run_on_pool(ctx, experiments, executor, done):
    """Every experiment's section, in order, computed as tasks on `executor` (see the module's docstring).

    At most ``ctx.jobs`` tasks are given to the pool at a time, so that an
    experiment whose networks are trained goes next, before the experiments
    that were waiting from the start.  ``done(index)`` is called as each
    experiment finishes (in any order).  The first task to fail stops the run:
    its exception is raised here and the tasks not yet started are cancelled.
    """
    from .experiments_network import spec_key, train_stack

    wanted = {index: getattr(experiment, "specs", lambda ctx: [])(ctx) for index, experiment in enumerate(experiments)}
    unique = {spec_key(spec): spec for specs in wanted.values() for spec in specs}
    # the queue: training first (longest first), then the experiments that train nothing, in page order
    queue = [(train_stack, chunk) for chunk in training_tasks(list(unique.values()), ctx.jobs, len(experiments))]
    queue += [(index, None) for index, specs in wanted.items() if not specs]
    waiting = {index for index, specs in wanted.items() if specs}  # until their networks are trained
    runs, sections, running = {}, [None] * len(experiments), {}

    def submit(task, chunk):
        if task is train_stack:
            return executor.submit(train_stack, chunk)
        # a worker's context: a serial map, and only the networks this experiment reads
        worker_ctx = dataclasses.replace(ctx, map=serial_map, jobs=1,
                                         runs={spec_key(s): runs[spec_key(s)] for s in wanted[task]})
        return executor.submit(run_experiment, experiments[task], worker_ctx)

    while queue or running:
        while queue and len(running) < ctx.jobs:
            task, chunk = queue.pop(0)
            running[submit(task, chunk)] = (task, chunk)
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            task, chunk = running.pop(future)
            result = future.result()  # raises the task's exception
            if task is train_stack:
                runs.update(zip(map(spec_key, chunk), result))
            else:
                sections[task] = result
                done(task)
        ready = sorted(index for index in waiting if all(spec_key(s) in runs for s in wanted[index]))
        waiting.difference_update(ready)
        untrained = [item for item in queue if item[0] is train_stack]
        queue[len(untrained):len(untrained)] = [(index, None) for index in ready]  # after training, before the rest
    return sections
