"""Retries: ``retries=N`` re-runs a failed task up to N more times, after an exponential
back-off, when its error matches ``retry_on``; timeouts and crashes are retryable errors.
``Outcome.attempts`` counts the attempts made.

Attempts are counted in files under ``tmp_path`` (each attempt appends a line), so a task
knows across processes how many times it has run.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

import corral

pytestmark = pytest.mark.timeout(60)  # a batch that never finishes fails here, not after 300 s

BACKOFF = 0.01


# -- task functions -----------------------------------------------------------------------------
def _attempt(path):
    """Record one more attempt in ``path``; the attempt's number (1 for the first)."""
    with open(path, "a") as f:
        f.write(f"{time.monotonic()!r} {os.getpid()}\n")
    return len(Path(path).read_text().splitlines())


def attempts_in(path):
    return len(Path(path).read_text().splitlines())


def fail_times(path, failures, value, error=ValueError):
    n = _attempt(path)
    if n <= failures:
        raise error(f"attempt {n} fails")
    return value


def crash_times(path, failures, value):
    if _attempt(path) <= failures:
        os._exit(3)
    return value


def hang_times(path, failures, value):
    if _attempt(path) <= failures:
        time.sleep(1000)
    return value


def square(x):
    return x * x


def flaky_item(x, directory):
    """Item 3 fails its first two attempts; the others succeed at once."""
    n = _attempt(Path(directory) / f"item-{x}")
    if x == 3 and n <= 2:
        raise ValueError(f"item {x} attempt {n}")
    return x * x


class _FlakyItem:
    def __init__(self, directory):
        self.directory = str(directory)

    def __call__(self, x):
        return flaky_item(x, self.directory)


# -- helpers ------------------------------------------------------------------------------------
def run_one(fn, *args, **options):
    """Run one task on two workers (never in-process: some tasks crash) next to a trivial one."""
    tasks = [corral.Task(fn, args, key="flaky"), corral.Task(square, (4,), key="plain")]
    report = corral.run(tasks, workers=2, errors="return", **options)
    assert report.outcomes[1].value == 16
    assert report.outcomes[1].attempts == 1
    return report.outcomes[0]


# -- exceptions ---------------------------------------------------------------------------------
def test_task_failing_twice_then_succeeding_reports_three_attempts(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(fail_times, path, 2, "done", retries=2, backoff=BACKOFF)
    assert outcome.status == "ok"
    assert outcome.value == "done"
    assert outcome.attempts == 3
    assert attempts_in(path) == 3


def test_map_returns_plain_results_once_retries_succeed(tmp_path):
    results = corral.map(
        _FlakyItem(tmp_path), range(8), workers=2, chunksize=1, retries=2, backoff=BACKOFF
    )
    assert results == [x * x for x in range(8)]
    assert attempts_in(tmp_path / "item-3") == 3
    assert attempts_in(tmp_path / "item-2") == 1


def test_retries_exhausted_give_the_last_error_and_attempts_retries_plus_one(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(fail_times, path, 100, "never", retries=2, backoff=BACKOFF)
    assert outcome.status == "failed"
    assert type(outcome.error) is ValueError
    assert str(outcome.error) == "attempt 3 fails"
    assert outcome.attempts == 3
    assert attempts_in(path) == 3


def test_no_retries_by_default(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(fail_times, path, 1, "never")
    assert outcome.status == "failed"
    assert outcome.attempts == 1
    assert attempts_in(path) == 1


def test_retry_on_does_not_retry_a_non_matching_exception(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(
        fail_times, path, 1, "never", ValueError, retries=3, retry_on=(OSError,), backoff=BACKOFF
    )
    assert outcome.status == "failed"
    assert type(outcome.error) is ValueError
    assert outcome.attempts == 1
    assert attempts_in(path) == 1


def test_retry_on_retries_a_subclass_of_a_listed_exception(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(
        fail_times,
        path,
        1,
        "second time lucky",
        FileNotFoundError,
        retries=3,
        retry_on=(OSError,),
        backoff=BACKOFF,
    )
    assert outcome.status == "ok"
    assert outcome.value == "second time lucky"
    assert outcome.attempts == 2


def test_per_task_retries_override_the_run_retries(tmp_path):
    tasks = [
        corral.Task(fail_times, (tmp_path / "a", 2, "a"), key="a", retries=2),
        corral.Task(fail_times, (tmp_path / "b", 2, "b"), key="b"),
        corral.Task(fail_times, (tmp_path / "c", 1, "c"), key="c", retries=0),
    ]
    report = corral.run(tasks, workers=2, retries=1, backoff=BACKOFF, errors="return")
    by_key = {o.key: o for o in report.outcomes}
    assert (by_key["a"].status, by_key["a"].attempts) == ("ok", 3)
    assert (by_key["b"].status, by_key["b"].attempts) == ("failed", 2)
    assert (by_key["c"].status, by_key["c"].attempts) == ("failed", 1)


def test_retry_of_an_item_inside_a_chunk_leaves_the_others_alone(tmp_path):
    report = corral.run(
        [corral.Task(flaky_item, (x, str(tmp_path))) for x in range(12)],
        workers=2,
        chunksize=5,
        retries=2,
        backoff=BACKOFF,
    )
    assert report.results == [x * x for x in range(12)]
    assert [o.attempts for o in report.outcomes] == [3 if x == 3 else 1 for x in range(12)]
    assert all(attempts_in(tmp_path / f"item-{x}") == 1 for x in range(12) if x != 3)


@pytest.mark.slow
def test_backoff_grows_exponentially_between_attempts(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(fail_times, path, 3, "ok at last", retries=3, backoff=0.1)
    assert outcome.attempts == 4
    times = [float(line.split()[0]) for line in path.read_text().splitlines()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, least in zip(gaps, [0.1, 0.2, 0.4], strict=True):
        assert gap >= least * 0.95, (gaps, "back-off shorter than backoff * 2**(attempt-1)")


# -- crashes and timeouts are retryable ------------------------------------------------------------
def test_crash_is_retried_then_succeeds(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(crash_times, path, 1, "survived", retries=1, backoff=BACKOFF)
    assert outcome.status == "ok"
    assert outcome.value == "survived"
    assert outcome.attempts == 2
    first_pid, second_pid = (int(line.split()[1]) for line in path.read_text().splitlines())
    assert first_pid != second_pid
    assert outcome.pid == second_pid


def test_crash_retries_exhausted_give_worker_crashed(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(crash_times, path, 100, "never", retries=2, backoff=BACKOFF)
    assert outcome.status == "crashed"
    assert isinstance(outcome.error, corral.WorkerCrashed)
    assert outcome.error.exitcode == 3
    assert outcome.attempts == 3
    assert attempts_in(path) == 3


def test_crash_is_not_retried_when_retry_on_excludes_it(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(
        crash_times, path, 1, "never", retries=2, retry_on=(ValueError,), backoff=BACKOFF
    )
    assert outcome.status == "crashed"
    assert outcome.attempts == 1
    assert attempts_in(path) == 1


def test_crash_in_a_chunk_is_retried_and_every_result_is_right(tmp_path):
    tasks = [corral.Task(square, (x,)) for x in range(10)]
    tasks[3] = corral.Task(crash_times, (tmp_path / "attempts", 1, 9))
    report = corral.run(tasks, workers=2, chunksize=5, retries=1, backoff=BACKOFF)
    assert report.results == [x * x for x in range(10)]
    assert report.outcomes[3].attempts == 2


@pytest.mark.slow
def test_timeout_is_retried_then_succeeds(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(hang_times, path, 1, "in time", retries=1, timeout=0.5, backoff=BACKOFF)
    assert outcome.status == "ok"
    assert outcome.value == "in time"
    assert outcome.attempts == 2


@pytest.mark.slow
def test_timeout_retries_exhausted_give_task_timeout(tmp_path):
    path = tmp_path / "attempts"
    outcome = run_one(hang_times, path, 100, "never", retries=1, timeout=0.3, backoff=BACKOFF)
    assert outcome.status == "timeout"
    assert isinstance(outcome.error, corral.TaskTimeout)
    assert outcome.attempts == 2
    assert attempts_in(path) == 2


def test_retries_in_pool_map_with_errors_raise(tmp_path):
    with corral.Pool(2, retries=2, backoff=BACKOFF) as pool:
        results = pool.map(_FlakyItem(tmp_path), range(6), chunksize=1)
        assert results == [x * x for x in range(6)]
        with pytest.raises(corral.BatchError) as info:
            pool.map(_FlakyItem(tmp_path / "missing-dir"), range(6), chunksize=1)
    outcomes = info.value.report.outcomes
    assert all(o.status == "failed" for o in outcomes)
    assert all(o.attempts == 3 for o in outcomes)  # FileNotFoundError every time
