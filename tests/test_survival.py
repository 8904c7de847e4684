"""The three survival features (docs/reliability.md): ``timeout="3x"``, ``min_free_memory``
and draining (``deadline=``, SIGUSR1, SIGTERM with ``drain_grace``), with real workers and
real signals. Tasks that must be stopped hang far longer than any test; the tests wait for
marker files, never sleep to synchronise.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from _procs import kill_script, marked, run_script, still_alive_after, wait_until

import corral
from corral._survival import RelativeLimit, RelativeTimeout, parse_relative_timeout

SCRIPT = Path(__file__).parent / "scripts" / "drain_batch.py"
GIB = 1024**3


# -- tasks --------------------------------------------------------------------------------------
def _touch(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def nap_or_hang(x: int, hang_at: int, nap: float) -> int:
    time.sleep(1000 if x == hang_at else nap)
    return x


def hang_until_released(x: int, marker_dir: str) -> int:
    """Note ``running-<x>-<pid>``, then wait for ``release`` (the test creates it)."""
    markers = Path(marker_dir)
    _touch(markers / f"running-{x}-{os.getpid()}")
    while not (markers / "release").exists():
        time.sleep(0.02)  # polling a file the test creates
    return x


# -- validation at the boundary --------------------------------------------------------------------
@pytest.mark.parametrize("text, factor", [("3x", 3.0), ("200%", 2.0), (" 1.5X ", 1.5)])
def test_relative_timeouts_parse(text, factor):
    assert parse_relative_timeout(text).factor == factor


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": "3"},
        {"timeout": "x3"},
        {"timeout": "0x"},
        {"timeout": "-2x"},
        {"timeout": "fast"},
        {"timeout_floor": -1},
        {"min_free_memory": "lots"},
        {"min_free_memory": 0},
        {"deadline": -5},
        {"deadline": "tomorrow"},
        {"drain_grace": -1},
        {"drain_grace": None},
    ],
)
def test_bad_survival_options_are_config_errors_before_work(options):
    with pytest.raises(corral.ConfigError):
        corral.map(abs, [1], **options)


def test_the_relative_limit_is_the_median_times_the_factor_after_enough_successes():
    limit = RelativeLimit(RelativeTimeout(3.0, "3x"), floor=10.0)
    for seconds in (1.0, 2.0, 100.0, 2.0):
        limit.learn(seconds)
    assert limit.limit() == 10.0  # fewer than 5: the floor
    limit.learn(3.0)  # 1, 2, 2, 3, 100: median 2 (one slow success does not stretch it)
    assert limit.limit() == 6.0
    assert "3 x the median 2 s of 5 succeeded tasks" in limit.basis()


# -- timeout="3x" ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stuck_task_among_many_is_killed_at_a_multiple_of_the_median():
    n = 14
    hang_at = n - 1  # last: at least 5 have succeeded by the time it starts
    report = corral.run(
        [corral.Task(nap_or_hang, (x, hang_at, 0.2)) for x in range(n)],
        workers=2,
        timeout="10x",
        timeout_floor=60,
        errors="return",
    )
    stuck = report.outcomes[hang_at]
    assert stuck.status == "timeout"
    assert isinstance(stuck.error, corral.TaskTimeout)
    assert "10 x the median" in str(stuck.error) and "succeeded tasks" in str(stuck.error)
    assert stuck.error.timeout < 30  # derived from ~0.2 s tasks, not the 60 s floor
    assert [o.value for o in report.outcomes[:hang_at]] == list(range(hang_at))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_before_enough_successes_the_floor_applies_and_says_so():
    report = corral.run(
        [corral.Task(nap_or_hang, (x, 0, 0.0)) for x in range(3)],
        workers=2,
        timeout="3x",
        timeout_floor=1.0,
        errors="return",
    )
    first = report.outcomes[0]
    assert first.status == "timeout" and first.error.timeout == 1.0
    assert "timeout_floor=1 s" in str(first.error)
    assert [o.value for o in report.outcomes[1:]] == [1, 2]


# -- min_free_memory -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_nothing_starts_below_the_memory_floor(tmp_path):
    """A floor 1 GiB above what the machine has now: no task starts; the deadline drains."""
    floor = psutil_available() + GIB
    report = corral.run(
        [corral.Task(hang_until_released, (x, str(tmp_path))) for x in range(4)],
        workers=2,
        min_free_memory=floor,
        deadline=1.0,
        errors="return",
    )
    assert report.drained == "deadline"
    assert all(o.status == "cancelled" and o.attempts == 0 for o in report.outcomes)
    assert "the run drained (deadline)" in str(report.outcomes[0].error)
    assert not list(tmp_path.glob("running-*"))


class Probe:
    """The available memory the engine reads, set by the test (the kill it leads to is real)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_below_half_the_floor_the_youngest_task_is_stopped_and_requeued(tmp_path):
    floor = 4 * GIB
    probe = Probe(floor // 4)  # below half: nothing starts
    result: dict[str, corral.Report] = {}
    with corral.Pool(workers=2, min_free_memory=floor) as pool:
        pool.engine.survival.probe = probe
        tasks = [corral.Task(hang_until_released, (x, str(tmp_path)), key=x) for x in range(3)]
        runner = threading.Thread(target=lambda: result.update(r=pool.run(tasks)))
        runner.start()
        try:
            time.sleep(0.5)  # a negative check: time for a start that must not happen
            assert not list(tmp_path.glob("running-*"))
            probe.value = floor  # enough: two start
            wait_until(lambda: len(list(tmp_path.glob("running-*"))) == 2, "two tasks running")
            first = {p.name for p in tmp_path.glob("running-*")}
            probe.value = floor // 4  # below half: the younger of the two is stopped
            wait_until(lambda: pool.engine.survival.evictions >= 1, "an eviction")
            probe.value = floor
            (tmp_path / "release").touch()
        finally:
            probe.value = floor
            (tmp_path / "release").touch()
            runner.join(60)
    report = result["r"]
    assert report.ok and [o.value for o in report.outcomes] == [0, 1, 2]
    ran = [p.name.split("-")[1] for p in tmp_path.glob("running-*")]
    again = {x for x in ran if ran.count(x) == 2}
    assert len(ran) == 4 and len(again) == 1  # one ran twice: the evicted one, rerun
    assert {f"running-{x}" for x in again} <= {n.rsplit("-", 1)[0] for n in first}
    # The stopped run is an attempt on record, not charged to retries (0 here: it succeeded).
    assert sorted(o.attempts for o in report.outcomes) == [1, 1, 2]
    (evicted,) = [o for o in report.outcomes if o.attempts == 2]
    assert again == {str(evicted.key)}
    stopped = evicted.history[0]
    assert stopped.status == "cancelled" and "min_free_memory" in (stopped.error or "")


def psutil_available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


# -- draining ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_deadline_drains_running_tasks_are_cancelled_after_no_grace(tmp_path):
    report = corral.run(
        [corral.Task(hang_until_released, (x, str(tmp_path)), key=x) for x in range(5)],
        workers=2,
        deadline=datetime.datetime.now() + datetime.timedelta(seconds=1.5),
        errors="return",
    )
    assert report.drained == "deadline"
    assert all(o.status == "cancelled" for o in report.outcomes)
    assert all("drained (deadline)" in str(o.error) for o in report.outcomes)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_drained_map_raises_a_batch_error_whose_report_says_drained(tmp_path):
    with pytest.raises(corral.BatchError) as raised:
        corral.map(functools.partial(nap_or_hang, hang_at=-1, nap=0.0), [0, 1], deadline=0.0)
    assert raised.value.report.drained == "deadline"


def drained_by(tmp_path: Path, grace: float, signals: list[int], release: bool):
    """Run the script; once 2 tasks run, send ``signals`` (one by one), then (``release``)
    let the running tasks finish; return (returncode, its JSON line or None, stderr)."""
    proc = run_script(SCRIPT, tmp_path, grace)
    try:
        wait_until(lambda: len(marked(tmp_path, "running")) >= 2, "2 running tasks", proc=proc)
        for i, signum in enumerate(signals):
            if i:  # two signals at once may be delivered as one: leave a gap between them
                time.sleep(0.5)
            os.kill(proc.pid, signum)
        if release:
            time.sleep(1.0)  # let the drain land first, so that some tasks are left to cancel
            (tmp_path / "release").touch()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the script still runs 60 s after {signals}") from None
        line = out.strip().splitlines()[-1] if out.strip() else None
        return proc.returncode, json.loads(line) if line else None, err
    finally:
        kill_script(proc, tmp_path)


def running(tmp_path: Path) -> set[int]:
    return {int(p.name.split("-")[1]) for p in tmp_path.glob("running-*") if "." not in p.name}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigusr1_drains_running_tasks_finish_the_rest_are_cancelled(tmp_path):
    rc, out, err = drained_by(tmp_path, 60.0, [signal.SIGUSR1], release=True)
    assert rc == 0, err
    assert out["drained"] == "SIGUSR1"
    ran = running(tmp_path)
    for key, (status, error, value) in out["tasks"].items():
        x = int(key[1:])
        if x in ran:
            assert (status, value) == ("ok", x * x)
        else:
            assert status == "cancelled" and "the run drained (SIGUSR1)" in error
    assert 2 <= len(ran) < 8


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigusr1_with_no_grace_cancels_the_running_tasks_at_once(tmp_path):
    rc, out, err = drained_by(tmp_path, 0.0, [signal.SIGUSR1], release=False)
    assert rc == 0, err
    assert out["drained"] == "SIGUSR1"
    assert all(status == "cancelled" for status, _, _ in out["tasks"].values())
    assert not list(tmp_path.glob("done-*"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_with_a_grace_lets_running_tasks_finish_then_ends_by_sigterm(tmp_path):
    rc, out, err = drained_by(tmp_path, 60.0, [signal.SIGTERM], release=True)
    assert rc == -signal.SIGTERM, err
    assert out is None  # the process ended by the signal, as without corral
    assert {int(p.name.split("-")[1]) for p in tmp_path.glob("done-*")} == running(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_second_sigterm_while_draining_stops_at_once(tmp_path):
    rc, _, err = drained_by(tmp_path, 60.0, [signal.SIGTERM, signal.SIGTERM], release=False)
    assert rc == -signal.SIGTERM, err
    assert not list(tmp_path.glob("done-*"))


def note_pid_and_hang(x: int, marker_dir: str) -> None:
    _touch(Path(marker_dir) / f"worker-{os.getpid()}-{x}")
    time.sleep(1000)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_workers_forked_during_a_drainable_wait_still_die_of_sigterm(tmp_path):
    """Replacement workers are forked while the main thread waits with the drain's SIGTERM
    handler installed; they must not keep it: a timeout's SIGTERM ends them at once, not
    after the (long) kill_grace."""
    with corral.Pool(workers=2, start_method="fork", kill_grace=60, drain_grace=60) as pool:
        tasks = [corral.Task(note_pid_and_hang, (x, str(tmp_path)), timeout=0.5) for x in range(4)]
        report = pool.run(tasks, errors="return")
        assert [o.status for o in report.outcomes] == ["timeout"] * 4
        pids = {o.pid for o in report.outcomes}
        assert len(pids) == 4  # two of them replacement workers
        assert not still_alive_after(pids, 15.0)
