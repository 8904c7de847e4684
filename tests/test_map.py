"""corral.map / imap / run, Report, Outcome, Failure, Status, and result ordering.

Real worker processes throughout; tasks that must wait for something wait on a file with a
generous bound, never on a sleep of a guessed length.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
import traceback
from concurrent.futures import Future
from pathlib import Path

import pytest
from _tasks import WAIT, wait_for_file, write_then_fail_odd
from conftest import leftover_processes

import corral


# -- task functions (module level: picklable by reference) ---------------------------------------
def square(x):
    return x * x


def affine(x):
    return 3 * x - 7


def getpid(_=None):
    return os.getpid()


def identity(x):
    return x


def add(a, b=0, *, c=0):
    return a + b + c


class BadItem(ValueError):
    """A custom exception type that must come back as itself."""


def fail_on_3_and_7(x):
    if x in (3, 7):
        raise BadItem(f"bad {x}")
    return x * 10


def raise_value_error(x):
    raise ValueError(f"no {x}")


def first_waits_for_second(arg):
    """Item 0 finishes only after item 1 has finished (item 1 leaves a file behind)."""
    directory, x = arg
    if x == 0:
        wait_for_file(os.path.join(directory, "done-1"))
    elif x == 1:
        Path(directory, "done-1").write_text("")
    return x


def first_waits_for_test(arg):
    """Item 0 waits until the test writes ``release``; every other item returns at once."""
    directory, x = arg
    if x == 0:
        wait_for_file(os.path.join(directory, "release"))
    return x


def counting_source(pulled):
    for i in itertools.count():
        pulled.append(i)
        yield i


def wait_gone(timeout=10.0):
    deadline = time.monotonic() + timeout
    left = leftover_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = leftover_processes()
    return left


# -- map: results ----------------------------------------------------------------------------
def test_map_returns_results_in_input_order():
    assert corral.map(square, range(50), workers=2) == [x * x for x in range(50)]


def test_map_over_empty_list_returns_empty_list():
    assert corral.map(square, [], workers=2) == []


def test_map_accepts_a_generator():
    assert corral.map(square, (x for x in range(10)), workers=2) == [x * x for x in range(10)]


def test_map_runs_tasks_in_other_processes():
    pids = corral.map(getpid, range(8), workers=2, chunksize=1)
    assert os.getpid() not in pids


def test_map_accepts_a_lambda():
    assert corral.map(lambda x: x + 1, range(5), workers=2) == [1, 2, 3, 4, 5]


def test_map_returns_none_and_container_results_unchanged():
    items = [None, (1, "a"), {"k": [1, 2]}, 2.5, b"bytes", frozenset({3})]
    assert corral.map(identity, items, workers=2) == items


def test_map_keeps_input_order_when_a_later_item_finishes_first(tmp_path):
    items = [(str(tmp_path), x) for x in range(4)]
    assert corral.map(first_waits_for_second, items, workers=2, chunksize=1) == [0, 1, 2, 3]


@pytest.mark.slow
def test_map_of_20000_items_equals_serial_result():
    items = list(range(20_000))
    assert corral.map(affine, items, workers=2) == [affine(x) for x in items]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_map_order_property_across_chunksizes_and_worker_counts():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    with corral.Pool(workers=1) as p1, corral.Pool(workers=2) as p2, corral.Pool(workers=3) as p3:
        pools = {1: p1, 2: p2, 3: p3}

        @settings(max_examples=15, deadline=None, database=None)
        @given(
            xs=st.lists(st.integers(), max_size=200),
            chunksize=st.sampled_from(["auto", 1, 3, 17]),
            workers=st.integers(min_value=1, max_value=3),
        )
        def check(xs, chunksize, workers):
            assert pools[workers].map(affine, xs, chunksize=chunksize) == [affine(x) for x in xs]

        check()


# -- map: errors -----------------------------------------------------------------------------
def test_map_raise_runs_every_task_before_raising_batch_error(tmp_path):
    items = [(str(tmp_path), x) for x in range(6)]
    with pytest.raises(corral.BatchError):
        corral.map(write_then_fail_odd, items, workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ran-{x}" for x in range(6)]


def test_batch_error_message_names_failed_keys_and_reasons():
    with pytest.raises(corral.BatchError) as info:
        corral.map(fail_on_3_and_7, range(10), workers=2)
    message = str(info.value)
    assert "2 of 10" in message
    assert "3 (3): failed: BadItem: bad 3" in message  # the key (position), then the item
    assert "7 (7): failed: BadItem: bad 7" in message
    assert "5 (" not in message


def test_batch_error_report_holds_every_outcome():
    with pytest.raises(corral.BatchError) as info:
        corral.map(fail_on_3_and_7, range(10), workers=2)
    report = info.value.report
    assert isinstance(report, corral.Report)
    assert [o.key for o in report.outcomes] == list(range(10))
    assert [o.key for o in report.failures] == [3, 7]
    assert report.results[0] == 0 and report.results[9] == 90
    assert isinstance(report.results[3], corral.Failure)
    assert not report.ok


def test_map_errors_return_puts_failure_in_place():
    results = corral.map(fail_on_3_and_7, range(10), workers=2, errors="return")
    assert [r for i, r in enumerate(results) if i not in (3, 7)] == [
        x * 10 for x in range(10) if x not in (3, 7)
    ]
    failure = results[3]
    assert isinstance(failure, corral.Failure)
    assert failure.key == 3
    assert failure.status == "failed"
    assert isinstance(failure.error, BadItem)
    assert "bad 3" in failure.reason


def test_failure_is_falsy():
    results = corral.map(fail_on_3_and_7, [3, 4], workers=2, errors="return")
    assert not results[0]
    assert results[1] == 40


def test_remote_exception_keeps_its_type_and_args():
    results = corral.map(fail_on_3_and_7, [3, 4], workers=2, errors="return")
    error = results[0].error
    assert type(error) is BadItem
    assert error.args == ("bad 3",)


def test_remote_exception_has_worker_traceback_as_cause():
    results = corral.map(fail_on_3_and_7, [3, 4], workers=2, errors="return")
    cause = results[0].error.__cause__
    assert cause is not None
    assert "fail_on_3_and_7" in str(cause)
    assert "Traceback" in str(cause)


def test_each_failure_gets_its_own_exception_object():
    results = corral.map(raise_value_error, range(4), workers=2, errors="return", chunksize=4)
    errors = [r.error for r in results]
    assert len({id(e) for e in errors}) == 4
    assert [e.args for e in errors] == [(f"no {x}",) for x in range(4)]


# -- imap ------------------------------------------------------------------------------------
def test_imap_yields_results_in_input_order():
    assert list(corral.imap(square, range(100), workers=2)) == [x * x for x in range(100)]


def test_imap_over_empty_input_yields_nothing():
    assert list(corral.imap(square, [], workers=2)) == []


def test_imap_unordered_yields_every_result():
    got = list(corral.imap(square, range(200), workers=2, ordered=False))
    assert collections.Counter(got) == collections.Counter(x * x for x in range(200))


def test_imap_unordered_yields_a_finished_item_before_an_earlier_running_one(tmp_path):
    items = [(str(tmp_path), x) for x in range(2)]
    it = corral.imap(first_waits_for_test, items, workers=2, ordered=False, chunksize=1)
    first = next(it)
    (tmp_path / "release").write_text("")
    rest = list(it)
    assert first == 1
    assert rest == [0]


def test_imap_consumes_an_endless_generator_lazily():
    pulled = []
    stop = threading.Event()

    def endless_until_stopped():
        for i in itertools.count():
            if stop.is_set():
                return
            pulled.append(i)
            yield i

    received = []
    for value in corral.imap(square, endless_until_stopped(), workers=2):
        received.append(value)
        if len(received) == 5:
            pulled_after_five = len(pulled)
            stop.set()
    assert pulled_after_five < 10_000
    assert received == [x * x for x in range(len(pulled))]


@pytest.mark.timeout(30)
def test_imap_break_stops_the_input_and_leaves_no_process():
    pulled = []
    for i, _ in enumerate(corral.imap(square, counting_source(pulled), workers=2)):
        if i == 3:
            break
    pulled_at_break = len(pulled)
    assert wait_gone() == []
    assert len(pulled) == pulled_at_break


@pytest.mark.timeout(30)
def test_imap_close_leaves_no_process():
    it = corral.imap(square, itertools.count(), workers=2)
    assert next(it) == 0
    it.close()
    assert wait_gone() == []


@pytest.mark.timeout(30)
def test_imap_dropped_before_iteration_leaves_no_process():
    it = corral.imap(square, range(10), workers=2)
    del it
    assert wait_gone() == []


def test_imap_raise_yields_earlier_results_then_raises_the_tasks_own_exception():
    received = []
    with pytest.raises(BadItem, match="bad 3"):
        for value in corral.imap(fail_on_3_and_7, range(10), workers=2):
            received.append(value)
    assert received == [0, 10, 20]


def test_imap_raised_exception_carries_worker_traceback():
    with pytest.raises(BadItem) as info:
        list(corral.imap(fail_on_3_and_7, [3], workers=2))
    assert "fail_on_3_and_7" in "".join(traceback.format_exception(info.value))


def test_imap_errors_return_yields_failure_in_place():
    results = list(corral.imap(fail_on_3_and_7, range(10), workers=2, errors="return"))
    assert len(results) == 10
    assert isinstance(results[3], corral.Failure) and results[3].key == 3
    assert isinstance(results[7], corral.Failure) and results[7].key == 7
    assert results[4] == 40


# -- run, Task, Report, Outcome, Status -----------------------------------------------------
def test_run_returns_report_with_results_in_task_order():
    tasks = [corral.Task(square, (x,)) for x in range(10)]
    report = corral.run(tasks, workers=2)
    assert isinstance(report, corral.Report)
    assert report.results == [x * x for x in range(10)]
    assert report.ok
    assert report.failures == []


def test_run_passes_args_and_kwargs():
    tasks = [corral.Task(add, (1, 2), {"c": 3}), corral.Task(add, (10,), {"b": 5})]
    assert corral.run(tasks, workers=2).results == [6, 15]


def test_run_keys_default_to_position():
    report = corral.run([corral.Task(square, (x,)) for x in range(4)], workers=2)
    assert [o.key for o in report.outcomes] == [0, 1, 2, 3]


def test_run_uses_given_keys():
    tasks = [corral.Task(square, (x,), key=f"sq-{x}") for x in range(3)]
    report = corral.run(tasks, workers=2)
    assert [o.key for o in report.outcomes] == ["sq-0", "sq-1", "sq-2"]


def test_run_duplicate_keys_is_config_error():
    tasks = [corral.Task(square, (1,), key="a"), corral.Task(square, (2,), key="a")]
    with pytest.raises(corral.ConfigError, match="duplicate"):
        corral.run(tasks, workers=2)


def test_run_accepts_tasks_with_different_functions():
    tasks = [corral.Task(square, (3,)), corral.Task(affine, (3,)), corral.Task(lambda: "x")]
    assert corral.run(tasks, workers=2).results == [9, 2, "x"]


def test_ok_outcome_fields():
    before = time.time()
    # Two tasks, so that they run in worker processes (a single task runs in-process).
    report = corral.run([corral.Task(getpid, key="me"), corral.Task(getpid)], workers=2)
    after = time.time()
    outcome = report.outcomes[0]
    assert isinstance(outcome, corral.Outcome)
    assert outcome.key == "me"
    assert outcome.status is corral.Status.OK
    assert outcome.status == "ok"
    assert outcome.ok
    assert outcome.error is None
    assert outcome.traceback is None
    assert outcome.attempts == 1
    assert outcome.pid == outcome.value
    assert isinstance(outcome.worker, int) and outcome.worker >= 0
    assert before <= outcome.started <= outcome.finished <= after
    assert outcome.cpu_seconds is not None and outcome.cpu_seconds >= 0
    assert outcome.max_rss is not None and outcome.max_rss > 0


def test_ok_outcome_pid_is_a_worker_pid_not_ours():
    report = corral.run([corral.Task(getpid) for _ in range(4)], workers=2)
    for outcome in report.outcomes:
        assert outcome.pid == outcome.value != os.getpid()


def test_failed_outcome_fields():
    report = corral.run([corral.Task(fail_on_3_and_7, (3,), key="k3")], workers=2, errors="return")
    (outcome,) = report.outcomes
    assert outcome.key == "k3"
    assert outcome.status is corral.Status.FAILED
    assert outcome.status == "failed"
    assert not outcome.ok
    assert outcome.value is None
    assert isinstance(outcome.error, BadItem)
    assert outcome.attempts == 1
    assert "fail_on_3_and_7" in outcome.traceback
    assert "bad 3" in outcome.traceback


def test_run_raise_gives_batch_error_with_full_report():
    tasks = [corral.Task(fail_on_3_and_7, (x,), key=f"t{x}") for x in range(5)]
    with pytest.raises(corral.BatchError) as info:
        corral.run(tasks, workers=2)
    assert "'t3'" in str(info.value)
    report = info.value.report
    assert [o.status for o in report.outcomes] == ["ok", "ok", "ok", "failed", "ok"]
    assert report.results[4] == 40


def test_run_errors_return_reports_failures_without_raising():
    tasks = [corral.Task(fail_on_3_and_7, (x,)) for x in range(5)]
    report = corral.run(tasks, workers=2, errors="return")
    assert not report.ok
    assert [o.key for o in report.failures] == [3]
    assert isinstance(report.results[3], corral.Failure)


def test_run_of_no_tasks_is_an_empty_ok_report():
    report = corral.run([], workers=2)
    assert report.outcomes == [] or list(report.outcomes) == []
    assert report.results == []
    assert report.ok


def test_status_values_and_string_equality():
    assert {s.value for s in corral.Status} == {
        "ok", "failed", "timeout", "crashed", "cancelled", "skipped", "cached",
    }  # fmt: skip
    for status in corral.Status:
        assert isinstance(status, str)
        assert status == status.value
        assert str(status) == status.value
        assert corral.Status(status.value) is status


def test_summary_is_a_table_naming_counts_and_failures():
    tasks = [corral.Task(fail_on_3_and_7, (x,), key=f"task-{x}") for x in range(5)]
    report = corral.run(tasks, workers=2, errors="return")
    text = report.summary()
    assert isinstance(text, str)
    assert "5 tasks" in text
    assert "ok" in text and "4" in text
    assert "failed" in text
    assert "task-3" in text
    assert "BadItem: bad 3" in text


def test_summary_of_an_all_ok_report_has_no_failures_section():
    report = corral.run([corral.Task(square, (2,)) for _ in range(3)], workers=2)
    text = report.summary()
    assert "ok" in text
    assert "failures" not in text


# -- Pool --------------------------------------------------------------------------------------
def test_pool_reuses_the_same_workers_across_maps():
    with corral.Pool(workers=2) as pool:
        first = set(pool.map(getpid, range(200), chunksize=1))
        second = set(pool.map(getpid, range(200), chunksize=1))
    assert os.getpid() not in first | second
    assert len(first | second) <= 2


def test_pool_reuses_workers_across_map_run_imap_and_submit():
    with corral.Pool(workers=2) as pool:
        pids = set(pool.map(getpid, range(20)))
        pids |= set(pool.run([corral.Task(getpid) for _ in range(20)]).results)
        pids |= set(pool.imap(getpid, range(20)))
        pids.add(pool.submit(getpid).result(timeout=WAIT))
    assert len(pids) <= 2
    assert os.getpid() not in pids


def test_pool_submit_returns_a_standard_future():
    with corral.Pool(workers=2) as pool:
        future = pool.submit(add, 1, 2, c=3)
        assert isinstance(future, Future)
        assert future.result(timeout=WAIT) == 6


def test_pool_submit_failure_sets_the_tasks_exception():
    with corral.Pool(workers=2) as pool:
        future = pool.submit(fail_on_3_and_7, 3)
        assert isinstance(future.exception(timeout=WAIT), BadItem)


def test_pool_run_returns_a_report():
    with corral.Pool(workers=2) as pool:
        report = pool.run([corral.Task(square, (x,)) for x in range(5)])
    assert report.results == [0, 1, 4, 9, 16]


def test_pool_imap_yields_in_order():
    with corral.Pool(workers=2) as pool:
        assert list(pool.imap(square, range(30))) == [x * x for x in range(30)]


def test_pool_per_call_errors_option_overrides_pool_default():
    with corral.Pool(workers=2, errors="return") as pool:
        assert isinstance(pool.map(fail_on_3_and_7, [3, 4])[0], corral.Failure)
        with pytest.raises(corral.BatchError):
            pool.map(fail_on_3_and_7, [3, 4], errors="raise")
        assert isinstance(pool.map(fail_on_3_and_7, [3, 4])[0], corral.Failure)


def test_pool_default_option_applies_to_every_call():
    with corral.Pool(workers=2, errors="return") as pool:
        report = pool.run([corral.Task(fail_on_3_and_7, (3,))])
        assert not report.ok
        (result,) = pool.imap(fail_on_3_and_7, [3])
        assert isinstance(result, corral.Failure)


@pytest.mark.parametrize(
    "use",
    [
        lambda pool: pool.map(square, [1]),
        lambda pool: pool.imap(square, [1]),
        lambda pool: pool.run([corral.Task(square, (1,))]),
        lambda pool: pool.submit(square, 1),
    ],
    ids=["map", "imap", "run", "submit"],
)
def test_closed_pool_raises_corral_error(use):
    pool = corral.Pool(workers=2)
    pool.close()
    with pytest.raises(corral.CorralError, match="closed"):
        use(pool)


def test_pool_close_is_idempotent():
    pool = corral.Pool(workers=2)
    pool.close()
    pool.close()
    assert wait_gone() == []


def test_pool_context_exit_stops_every_worker():
    with corral.Pool(workers=2) as pool:
        pids = set(pool.map(getpid, range(20), chunksize=1))
    assert pids
    assert wait_gone() == []
