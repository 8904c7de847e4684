"""Log forwarding: what a task logs with stdlib ``logging`` reaches the coordinator's logger
of the same name, in order per task, with ``record.corral_task`` and ``record.corral_worker``;
levels are the coordinator's, checked in the worker; a record whose arguments do not pickle
arrives formatted. And corral's own logger tells the story of a run at INFO."""

from __future__ import annotations

import logging
import threading

import pytest

import corral

pytestmark = pytest.mark.timeout(120)

NAME = "corral_test_tasks"


def log_some(x):
    log = logging.getLogger(NAME)
    for i in range(20):
        log.info("task %s record %d", x, i)
    log.debug("task %s debug", x)  # below the coordinator's level: never shipped
    return log.isEnabledFor(logging.DEBUG)


def log_from_a_thread(x):
    thread = threading.Thread(target=logging.getLogger(NAME).warning, args=("from a thread",))
    thread.start()
    thread.join()
    logging.getLogger(NAME).warning("main thread after")
    return x


class Unpicklable:
    def __reduce__(self):
        raise TypeError("not today")

    def __str__(self):
        return "the unpicklable"


def log_unpicklable(x):
    logging.getLogger(NAME).info("value: %s", Unpicklable())
    return x


def log_exception(x):
    try:
        raise KeyError("inner")
    except KeyError:
        logging.getLogger(NAME).exception("it failed")
    return x


def _mine(caplog):
    return [r for r in caplog.records if r.name == NAME]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_task_records_reach_the_coordinators_logger_in_order_with_task_and_worker(
    caplog, method
):
    caplog.set_level(logging.INFO, logger=NAME)
    report = corral.run([corral.Task(log_some, (k,), key=f"k{k}") for k in range(3)], workers=2,
                        start_method=method)  # fmt: skip
    assert [o.value for o in report.outcomes] == [False] * 3  # DEBUG is off in the workers
    records = _mine(caplog)
    assert len(records) == 60
    for k in range(3):
        own = [r for r in records if r.corral_task == f"k{k}"]
        assert [r.getMessage() for r in own] == [f"task {k} record {i}" for i in range(20)]
        worker = report.outcomes[k].worker
        assert {r.corral_worker for r in own} == {worker}
        assert all(r.process == report.outcomes[k].pid for r in own)  # made in the worker
    assert not any("debug" in r.getMessage() for r in records)


def test_records_can_be_formatted_with_the_task_key(caplog):
    caplog.set_level(logging.INFO, logger=NAME)
    corral.run([corral.Task(log_some, (1,), key="the-key")], workers=1)
    formatter = logging.Formatter("%(corral_task)s@%(corral_worker)s %(message)s")
    assert formatter.format(_mine(caplog)[0]) == "the-key@0 task 1 record 0"


def test_a_record_whose_arguments_do_not_pickle_arrives_formatted(caplog):
    caplog.set_level(logging.INFO, logger=NAME)
    assert corral.map(log_unpicklable, [1], workers=1) == [1]
    (record,) = _mine(caplog)
    assert record.getMessage() == "value: the unpicklable"


def test_an_exception_record_arrives_with_its_traceback_text(caplog):
    caplog.set_level(logging.INFO, logger=NAME)
    corral.map(log_exception, [1], workers=1)
    (record,) = _mine(caplog)
    assert record.exc_text and "KeyError: 'inner'" in record.exc_text


def test_records_of_a_tasks_thread_arrive_too(caplog):
    caplog.set_level(logging.INFO, logger=NAME)
    corral.run([corral.Task(log_from_a_thread, (1,), key="t")], workers=1)
    messages = [(r.getMessage(), r.corral_task) for r in _mine(caplog)]
    assert ("from a thread", "t") in messages and ("main thread after", "t") in messages


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_forward_logging_false_forwards_nothing(caplog, method):
    caplog.set_level(logging.INFO, logger=NAME)
    corral.map(log_some, [1, 2], workers=1, forward_logging=False, start_method=method)
    assert _mine(caplog) == []


def test_corrals_logger_tells_the_story_at_info(caplog):
    caplog.set_level(logging.INFO, logger="corral")
    report = corral.run([corral.Task(log_some, (1,), key="fine"),
                         corral.Task(int, ("x",), key="bad")], workers=1,
                        errors="return")  # fmt: skip
    assert [o.status for o in report.outcomes] == ["ok", "failed"]
    said = [r.getMessage() for r in caplog.records if r.name == "corral"]
    assert any(m.startswith("run started: 2 tasks, 1 workers") for m in said), said
    assert any(m.startswith("worker 0 started: pid") for m in said), said
    assert any(m.startswith("task 'bad' failed: ValueError") for m in said), said
    assert any(m.startswith("run finished: 2 tasks") and "1 failed, 1 ok" in m for m in said)
    assert not any("started on worker" in m for m in said)  # per-task dispatch: DEBUG only


def test_corrals_logger_adds_each_dispatch_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="corral")
    corral.run([corral.Task(abs, (1,), key="one")], workers=1)
    said = [r.getMessage() for r in caplog.records if r.name == "corral"]
    assert any(m.startswith("task 'one' started on worker 0") for m in said), said


def test_without_logging_configured_corral_subscribes_nothing():
    assert not logging.getLogger("corral").isEnabledFor(logging.INFO)
    with corral.Pool(1) as pool:
        assert not pool._events.active
        pool.map(abs, [1])
