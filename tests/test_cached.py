"""Positions given up front (an earlier run's outcomes, as a journal's resume will give them):
they end ``cached`` without running, dependants see them as they ended, and the report and
progress count them. Real workers; the internal API (``given=``) is what the journal uses.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from _tasks import write_then_return

import corral
from corral import Failure, Outcome, Status
from corral._needs import make_needs, plan
from corral._options import with_run_overrides
from corral._pool import plan_tasks
from corral._report.progress import ProgressView


def ran(directory: Path) -> set[int]:
    return {int(p.name.split("-")[1]) for p in directory.glob("ran-*")}


EARLIER_ERROR = ValueError("failed last time")


def given_outcomes() -> dict[int, Outcome]:
    return {
        1: Outcome(key=1, status=Status.OK, value=10, attempts=1),
        4: Outcome(key=4, status=Status.OK, value=40, attempts=1),
        6: Outcome(key=6, status=Status.FAILED, error=EARLIER_ERROR, attempts=2),
    }


def test_a_map_with_cached_positions_runs_only_the_others(tmp_path: Path) -> None:
    items = [(str(tmp_path), x) for x in range(8)]
    with corral.Pool(2) as pool:
        options = with_run_overrides(pool.run_options, {"errors": "return"})
        values = pool._map(write_then_return, items, options, None, None, given=given_outcomes())
    assert ran(tmp_path) == {0, 2, 3, 5, 7}
    expected: list[object] = [x * 10 for x in range(8)]
    expected[6] = Failure(6, Status.CACHED, EARLIER_ERROR)
    assert values == expected


def test_a_cached_value_is_the_value_a_full_run_gives(tmp_path: Path) -> None:
    items = [(str(tmp_path), x) for x in range(6)]
    full = corral.map(write_then_return, items, workers=2)
    earlier = {pos: Outcome(key=pos, status=Status.OK, value=full[pos]) for pos in (0, 3, 5)}
    with corral.Pool(2) as pool:
        resumed = pool._map(write_then_return, items, pool.run_options, None, None, given=earlier)
    assert resumed == full


def test_a_cached_failure_fails_the_map_with_errors_raise(tmp_path: Path) -> None:
    items = [(str(tmp_path), x) for x in range(3)]
    given = {2: Outcome(key=2, status=Status.FAILED, error=EARLIER_ERROR)}
    with corral.Pool(2) as pool, pytest.raises(corral.BatchError) as caught:
        pool._map(write_then_return, items, pool.run_options, None, None, given=given)
    report = caught.value.report
    assert [o.status for o in report.outcomes] == [Status.OK, Status.OK, Status.CACHED]
    assert report.failures == [report.outcomes[2]]
    assert "failed last time" in str(caught.value)


def test_dependants_of_a_cached_success_run_and_of_a_cached_failure_are_skipped(
    tmp_path: Path,
) -> None:
    d = str(tmp_path)
    tasks = [
        corral.Task(write_then_return, ((d, 0),), key="a"),
        corral.Task(write_then_return, ((d, 1),), key="b"),
        corral.Task(write_then_return, ((d, 2),), key="after_a", after=["a"]),
        corral.Task(write_then_return, ((d, 3),), key="after_b", after=["b"]),
        corral.Task(write_then_return, ((d, 4),), key="after_both", after=["after_a", "after_b"]),
        corral.Task(write_then_return, ((d, 5),), key="alone"),
    ]
    given = {
        0: Outcome(key="a", status=Status.OK, value=0),
        1: Outcome(key="b", status=Status.TIMEOUT, error=EARLIER_ERROR),
    }
    with corral.Pool(2) as pool:
        options = with_run_overrides(pool.run_options, {"errors": "return"})
        report = pool._run_tasks(tasks, options, plan_tasks(tasks, options), given=given)
    assert ran(tmp_path) == {2, 5}
    statuses = {o.key: o.status for o in report.outcomes}
    assert statuses == {
        "a": Status.CACHED,
        "b": Status.CACHED,
        "after_a": Status.OK,
        "after_b": Status.SKIPPED,
        "after_both": Status.SKIPPED,
        "alone": Status.OK,
    }
    skipped = report.outcomes[3].error
    assert isinstance(skipped, corral.TaskSkipped)
    assert "its dependency 'b' failed in an earlier run" in str(skipped)
    assert report.outcomes[2].value == 20


def test_the_report_counts_cached_tasks_in_the_summary_and_by_group(tmp_path: Path) -> None:
    d = str(tmp_path)
    tasks = [
        corral.Task(write_then_return, ((d, x),), key=x, group="even" if x % 2 == 0 else "odd")
        for x in range(6)
    ]
    given = {pos: Outcome(key=pos, status=Status.OK, value=pos * 10) for pos in (0, 1, 2)}
    with corral.Pool(2) as pool:
        options = with_run_overrides(pool.run_options, {"errors": "return"})
        report = pool._run_tasks(tasks, options, None, given=given)
    assert report.ok
    assert report.counts()[Status.CACHED] == 3
    assert report.counts()[Status.OK] == 3
    assert report.by_group() == {
        "even": {**dict.fromkeys((s.value for s in Status), 0), "cached": 2, "ok": 1},
        "odd": {**dict.fromkeys((s.value for s in Status), 0), "cached": 1, "ok": 2},
    }
    summary = report.summary()
    assert "cached" in summary
    assert report.results == [x * 10 for x in range(6)]
    assert ran(tmp_path) == {3, 4, 5}


def test_a_scheduled_map_with_cached_positions_runs_only_the_others(tmp_path: Path) -> None:
    items = [(str(tmp_path), x) for x in range(8)]
    with corral.Pool(2) as pool:
        options = with_run_overrides(pool.run_options, {"errors": "return"})
        the_plan = plan(range(8), [make_needs(locks=["one"])] * 8, options)
        assert the_plan is not None
        values = pool._map(
            write_then_return, items, options, the_plan, None, given=given_outcomes()
        )
    assert ran(tmp_path) == {0, 2, 3, 5, 7}
    assert values[1] == 10 and values[4] == 40 and values[7] == 70
    assert values[6] == Failure(6, Status.CACHED, EARLIER_ERROR)


def test_progress_moves_the_bar_for_cached_tasks_and_says_how_many() -> None:
    from rich.console import Console

    view = ProgressView(5, list, Console(file=io.StringIO(), width=100))
    view.advance(0, 0, None, n_cached=3)
    view.advance(1, 0, None)
    task = view._progress.tasks[0]
    assert task.completed == 4
    assert view.cached == 3
    assert "3 cached" in task.fields["failed"]
