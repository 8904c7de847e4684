"""``Outcome.history``: one record per attempt, the retried ones and the last, with real
workers: where each ran (worker, pid), when, and how it ended."""

from __future__ import annotations

from pathlib import Path

from _tasks import fail_until_file

import corral
from corral import Attempt, Status


def test_a_task_that_succeeds_on_its_third_attempt_keeps_all_three(tmp_path: Path) -> None:
    tasks = [corral.Task(fail_until_file, ((str(tmp_path), 0, 2),), key="flaky")]
    report = corral.run(tasks, workers=2, retries=2, backoff=0.01)
    (outcome,) = report.outcomes
    assert outcome.status is Status.OK and outcome.value == 0
    assert outcome.attempts == len(outcome.history) == 3
    assert [a.status for a in outcome.history] == [Status.FAILED, Status.FAILED, Status.OK]
    assert [a.error for a in outcome.history] == [
        "ValueError: try 0 of 0",
        "ValueError: try 1 of 0",
        None,
    ]
    for attempt in outcome.history:
        assert isinstance(attempt, Attempt)
        assert attempt.worker in (0, 1) and isinstance(attempt.pid, int)
        assert attempt.started is not None and attempt.finished is not None
        assert attempt.started <= attempt.finished
    starts = [a.started for a in outcome.history]
    assert starts == sorted(starts)
    last = outcome.history[-1]
    assert (last.pid, last.started, last.finished) == (
        outcome.pid,
        outcome.started,
        outcome.finished,
    )


def test_a_task_that_fails_every_attempt_keeps_each_failure(tmp_path: Path) -> None:
    tasks = [corral.Task(fail_until_file, ((str(tmp_path), 0, 9),), key="broken")]
    report = corral.run(tasks, workers=1, retries=1, backoff=0, errors="return")
    (outcome,) = report.outcomes
    assert outcome.status is Status.FAILED
    assert outcome.attempts == len(outcome.history) == 2
    assert [a.error for a in outcome.history] == [
        "ValueError: try 0 of 0",
        "ValueError: try 1 of 0",
    ]


def test_tasks_that_succeed_at_once_have_one_attempt_each() -> None:
    tasks = [corral.Task(abs, (x,)) for x in range(-5, 5)]
    report = corral.run(tasks, workers=2)
    for outcome in report.outcomes:
        assert outcome.attempts == len(outcome.history) == 1
        (attempt,) = outcome.history
        assert attempt.status is Status.OK and attempt.error is None
        assert attempt.pid == outcome.pid and attempt.worker == outcome.worker


def test_a_task_that_never_started_has_no_history(tmp_path: Path) -> None:
    tasks = [
        corral.Task(fail_until_file, ((str(tmp_path), 0, 9),), key="a"),
        corral.Task(abs, (1,), key="b", after=["a"]),
    ]
    report = corral.run(tasks, workers=1, errors="return")
    skipped = report.outcomes[1]
    assert skipped.status is Status.SKIPPED
    assert skipped.attempts == 0 and skipped.history == ()
