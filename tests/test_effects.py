"""Effects: ``corral.record`` in a task, ``Outcome.effects``/``Report.effects``, and
``on_effect`` replayed on the caller's thread in task order while the batch runs. Real
workers; the serial backend where it says so."""

from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _procs import kill_script, marked, run_script, wait_until
from _tasks import wait_for_file

import corral
from corral import Outcome, Status
from corral._options import with_run_overrides

# -- tasks (module level: workers import them by reference) ------------------------------------


def record_twice(x: int) -> int:
    corral.record(("a", x))
    corral.record(("b", x))
    return x


def record_then_fail_odd(x: int) -> int:
    corral.record(("before", x))
    if x % 2:
        raise ValueError(f"odd {x}")
    corral.record(("after", x))
    return x


def ordered_task(directory: str, x: int, wait_for: str | None, then: str | None) -> int:
    """Record, wait for ``wait_for`` (a file another task or on_effect writes), write ``then``."""
    corral.record(x)
    if wait_for is not None and not wait_for_file(os.path.join(directory, wait_for)):
        raise TimeoutError(f"{wait_for} never appeared")
    if then is not None:
        Path(directory, then).write_text("")
    return x


def record_per_try(directory: str, x: int, how: str) -> int:
    """Record which try this is; the first try fails the way ``how`` says."""
    tries = len(list(Path(directory).glob(f"try-{x}-*")))
    Path(directory, f"try-{x}-{tries}").write_text("")
    corral.record((x, tries))
    if tries == 0:
        if how == "raise":
            raise ValueError("first try")
        if how == "crash":
            os._exit(3)
        if how == "hang":
            time.sleep(60)
    return x


def record_unpicklable(x: int) -> int:
    corral.record(threading.Lock() if x == 1 else x)
    return x


def record_from_a_thread(_: int) -> str:
    caught: list[str] = []

    def other() -> None:
        try:
            corral.record("from another thread")
        except corral.CorralError as exc:
            caught.append(str(exc))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    return caught[0]


def wait_forever_unless(directory: str, x: int) -> int:
    corral.record(x)
    if x == 5:  # never written: this task is cancelled when on_effect raises
        wait_for_file(os.path.join(directory, "never"), timeout=60)
    return x


# -- what a task records, and what comes back ---------------------------------------------------


def test_report_effects_are_in_task_order_then_record_order() -> None:
    tasks = [corral.Task(record_twice, (x,), key=f"k{x}") for x in range(6)]
    report = corral.run(tasks, workers=2, chunksize=2)
    assert report.effects == [(f"k{x}", (tag, x)) for x in range(6) for tag in "ab"]
    assert report.outcomes[3].effects == (("a", 3), ("b", 3))


def test_a_failed_task_keeps_no_effect_and_its_chunk_neighbours_keep_theirs() -> None:
    got: list[tuple[Any, Any]] = []
    values = corral.map(
        record_then_fail_odd,
        range(200),
        workers=2,
        errors="return",
        on_effect=lambda k, e: got.append((k, e)),
    )
    assert [v for v in values if isinstance(v, int)] == list(range(0, 200, 2))
    assert got == [(x, (tag, x)) for x in range(0, 200, 2) for tag in ("before", "after")]


def test_on_effect_replays_in_task_order_on_the_callers_thread_while_the_batch_runs(
    tmp_path: Path,
) -> None:
    d = str(tmp_path)
    # Task 0 finishes only after task 4 (it waits for "4-done"); task 5 waits for
    # "applied-0", which on_effect writes when it replays task 0: the replay happens while
    # the batch still runs, and task 0's effect comes first although task 4 finished first.
    specs = [(0, "4-done", None), (1, None, None), (2, None, None), (3, None, None)]
    specs += [(4, None, "4-done"), (5, "applied-0", None)]
    tasks = [corral.Task(ordered_task, (d, x, w, t)) for x, w, t in specs]
    seen: list[tuple[Any, Any, int]] = []

    def on_effect(key: Any, effect: Any) -> None:
        seen.append((key, effect, threading.get_ident()))
        Path(d, f"applied-{effect}").write_text("")

    report = corral.run(tasks, workers=2, chunksize=1, on_effect=on_effect)
    assert [o.value for o in report.outcomes] == list(range(6))
    assert [(k, e) for k, e, _ in seen] == [(x, x) for x in range(6)] == report.effects
    assert {ident for *_, ident in seen} == {threading.get_ident()}


@pytest.mark.slow
def test_only_the_successful_attempts_effects_count(tmp_path: Path) -> None:
    # The first try of task 1 raises, of task 2 crashes its worker, of task 3 hangs past its
    # timeout; each recorded an effect first. Only the second tries' effects count.
    d = str(tmp_path)
    hows = ["ok", "raise", "crash", "hang"]
    tasks = [corral.Task(record_per_try, (d, x, how)) for x, how in enumerate(hows)]
    got: list[tuple[Any, Any]] = []
    report = corral.run(
        tasks, workers=2, retries=1, backoff=0, timeout=5, on_effect=lambda k, e: got.append((k, e))
    )
    first_tries = [o.history[0].status for o in report.outcomes]
    assert first_tries == [Status.OK, Status.FAILED, Status.CRASHED, Status.TIMEOUT]
    assert report.effects == got == [(0, (0, 0)), (1, (1, 1)), (2, (2, 1)), (3, (3, 1))]


def test_an_effect_that_does_not_pickle_fails_its_task_only() -> None:
    report = corral.run(
        [corral.Task(record_unpicklable, (x,)) for x in range(3)], workers=2, errors="return"
    )
    assert [o.status for o in report.outcomes] == [Status.OK, Status.FAILED, Status.OK]
    error = report.outcomes[1].error
    assert isinstance(error, corral.SerializationError)
    assert "effect" in str(error) and "lock" in str(error)
    assert report.effects == [(0, 0), (2, 2)]


# -- where record may be called -----------------------------------------------------------------


def test_record_outside_a_task_is_a_clear_error() -> None:
    with pytest.raises(corral.CorralError, match="outside a corral task"):
        corral.record("nothing runs")


def test_record_from_a_thread_the_task_started_is_a_clear_error() -> None:
    [message] = corral.map(record_from_a_thread, [0], workers=1)
    assert "outside a corral task" in message


def test_the_serial_backend_records_and_replays_the_same_way() -> None:
    got: list[tuple[Any, Any]] = []
    values = corral.map(
        record_then_fail_odd,
        range(10),
        backend="serial",
        errors="return",
        on_effect=lambda k, e: got.append((k, e)),
    )
    assert got == [(x, (tag, x)) for x in range(0, 10, 2) for tag in ("before", "after")]
    assert values[0] == 0 and not values[1]
    with pytest.raises(corral.CorralError, match="outside a corral task"):
        corral.record("after the batch")  # the log was closed with the Call


# -- the verbs ----------------------------------------------------------------------------------


def test_pool_map_run_and_imap_take_on_effect() -> None:
    with corral.Pool(2) as pool:
        got: list[tuple[Any, Any]] = []
        pool.map(record_twice, range(5), on_effect=lambda k, e: got.append((k, e)))
        assert got == [(x, (t, x)) for x in range(5) for t in "ab"]
        got.clear()
        pool.run(
            [corral.Task(record_twice, (x,), key=-x) for x in range(3)],
            on_effect=lambda k, e: got.append((k, e)),
        )
        assert got == [(-x, (t, x)) for x in range(3) for t in "ab"]
        got.clear()
        seen_before_yield = []
        for value in pool.imap(record_twice, range(50), on_effect=lambda k, e: got.append((k, e))):
            # ordered: every effect of the tasks up to this one is applied before it is yielded
            seen_before_yield.append(len(got) >= 2 * (value + 1))
        assert all(seen_before_yield)
        assert got == [(x, (t, x)) for x in range(50) for t in "ab"]
        got.clear()
        unordered = set(
            pool.imap(
                record_twice, range(50), ordered=False, on_effect=lambda k, e: got.append((k, e))
            )
        )
        assert unordered == set(range(50))
        assert got == [(x, (t, x)) for x in range(50) for t in "ab"]  # all, in order, at the end


def test_a_pool_default_on_effect_applies_to_each_batch() -> None:
    got: list[Any] = []
    with corral.Pool(2, on_effect=lambda k, e: got.append(e)) as pool:
        pool.map(record_twice, [7])
        pool.map(record_twice, [8])
    assert got == [("a", 7), ("b", 7), ("a", 8), ("b", 8)]


def test_on_effect_must_be_callable() -> None:
    with pytest.raises(corral.ConfigError, match="on_effect"):
        corral.map(record_twice, [1], on_effect="print")


# -- when on_effect raises ----------------------------------------------------------------------


def test_on_effect_raising_stops_the_run_with_an_error_naming_task_and_effect(
    tmp_path: Path,
) -> None:
    d = str(tmp_path)
    tasks = [corral.Task(wait_forever_unless, (d, x), key=f"t{x}") for x in range(8)]
    applied: list[Any] = []

    def on_effect(key: Any, effect: Any) -> None:
        if effect == 2:
            raise KeyError("no such feature")
        applied.append(effect)

    with pytest.raises(corral.EffectError) as caught:
        corral.run(tasks, workers=2, chunksize=1, on_effect=on_effect)
    error = caught.value
    assert error.key == "t2" and error.effect == 2
    assert "t2" in str(error) and "KeyError" in str(error) and "no such feature" in str(error)
    assert isinstance(error.__cause__, KeyError)
    assert applied == [0, 1]  # nothing after the failing effect
    assert error.report is not None
    assert error.report.outcomes[5].status is Status.CANCELLED
    assert pickle.loads(pickle.dumps(error)).key == "t2"


def test_on_effect_raising_in_imap_raises_from_the_iterator() -> None:
    def on_effect(key: Any, effect: Any) -> None:
        if key == 3:
            raise RuntimeError("full")

    with pytest.raises(corral.EffectError, match="task 3"):
        list(corral.imap(record_twice, range(10), workers=2, on_effect=on_effect))


# -- cached tasks (a resumed run) ---------------------------------------------------------------


def test_cached_tasks_effects_are_replayed_in_their_place() -> None:
    given = {
        1: Outcome(key=1, status=Status.OK, value=1, effects=(("a", 1), ("b", 1))),
        3: Outcome(key=3, status=Status.FAILED, error=ValueError("earlier"), effects=("x",)),
    }
    got: list[tuple[Any, Any]] = []
    with corral.Pool(2) as pool:
        options = with_run_overrides(
            pool.run_options, {"errors": "return", "on_effect": lambda k, e: got.append((k, e))}
        )
        tasks = [corral.Task(record_twice, (x,)) for x in range(5)]
        report = pool._run_tasks(tasks, options, None, given=given)
    assert [o.value for o in report.outcomes[:3]] == [0, 1, 2]
    # the cached failure's effects are not replayed: only a success's count
    assert got == [(x, (t, x)) for x in (0, 1, 2, 4) for t in "ab"] == report.effects


# -- Ctrl-C in the middle of a chunk ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_keeps_the_effects_of_the_tasks_that_finished(tmp_path: Path) -> None:
    script = Path(__file__).parent / "scripts" / "interrupt_effects.py"
    proc = run_script(script, tmp_path)
    try:
        wait_until(lambda: len(marked(tmp_path, "running")) >= 2, "2 hanging tasks", proc=proc)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does
        stdout, _ = proc.communicate(timeout=30)
    finally:
        kill_script(proc, tmp_path)
    [line] = [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]
    statuses = line["statuses"]
    ok = [x for x, s in enumerate(statuses) if s == "ok"]
    assert {0, 1, 2, 5, 6, 7} <= set(ok) and statuses[3] == statuses[8] == "cancelled"
    # the finished tasks' effects, whole; none of the tasks that were running or never ran
    assert line["effects"] == [[x, [tag, x]] for x in ok for tag in ("start", "end")]
    # on_effect had applied a prefix of them, in order, when Ctrl-C came
    assert line["applied"] == line["effects"][: len(line["applied"])]
