"""Telemetry: per attempt (queued, started, finished, worker, pid, CPU of the worker and its
children, peak RSS per Call, exit code or signal) and per run (wall, utilisation, speedup,
tasks per second, worker start-up and idle time, slowest tasks, concurrency), from real
worker processes; records and the DataFrame."""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corral
from corral._events import Events, TaskStarted, WorkerStarted
from corral._report.records import COLUMNS
from tests._deps import require_module

pytestmark = pytest.mark.timeout(180)

MiB = 2**20
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")


def burn(seconds):
    """Use ``seconds`` of CPU in this process (CPU time, not wall: the same under load)."""
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        pass
    return seconds


def burn_in_child(seconds):
    code = f"import time\nt=time.process_time()\nwhile time.process_time()-t<{seconds}: pass"
    subprocess.run([sys.executable, "-c", code], check=True)
    return seconds


def allocate(mib):
    """Touch ``mib`` MiB in this process, then free them."""
    block = bytearray(mib * MiB)
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block
    time.sleep(0.01)  # past _worker.meter.EXACT_AFTER: the exact per-Call peak
    return mib


def allocate_in_child(mib):
    code = f"b=bytearray({mib}*2**20)\nfor i in range(0,len(b),4096): b[i]=1"
    subprocess.run([sys.executable, "-c", code], check=True)
    return mib


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fail_first(path):
    p = Path(path)
    if not p.exists():
        p.write_text("1")
        raise ValueError("first attempt fails")
    return 1


def kill_self(_):
    os.kill(os.getpid(), signal.SIGKILL)


def explode(x):
    raise ValueError(f"bad {x}")


def _run(tasks, **options):
    options.setdefault("progress", False)
    options.setdefault("errors", "return")
    return corral.run(tasks, **options)


# -- per attempt -------------------------------------------------------------------------------


def test_attempt_times_worker_and_pid_are_consistent():
    tasks = [corral.Task(nap, (0.05,), key=i) for i in range(6)]
    report = _run(tasks, workers=2)
    pids = {s.pid for s in report.worker_spans}
    for outcome in report.outcomes:
        (attempt,) = outcome.history
        assert attempt.queued is not None and attempt.started is not None
        assert attempt.finished is not None
        assert attempt.queued <= attempt.started <= attempt.finished
        assert attempt.finished - attempt.started >= 0.05
        assert attempt.worker in (0, 1) and attempt.pid in pids
        assert (outcome.started, outcome.finished, outcome.pid) == (
            attempt.started,
            attempt.finished,
            attempt.pid,
        )
        assert attempt.exitcode is None and attempt.signal is None
        assert attempt.cpu is not None and attempt.cpu >= 0


def test_cpu_counts_the_worker_and_the_children_it_waited_for():
    tasks = [
        corral.Task(burn, (0.3,), key="here"),
        corral.Task(burn_in_child, (0.3,), key="child"),
        corral.Task(nap, (0.3,), key="asleep"),
    ]
    report = _run(tasks, workers=1, chunksize=1)
    cpu = {o.key: o.history[-1].cpu for o in report.outcomes}
    assert cpu["here"] >= 0.3
    assert cpu["child"] >= 0.3  # the child's CPU, which the worker itself did not use
    assert cpu["asleep"] < 0.2
    assert report.outcomes[1].cpu_seconds == cpu["child"]


@linux_only
def test_peak_rss_is_per_call_and_counts_a_child():
    tasks = [
        corral.Task(allocate, (300,), key="big"),
        corral.Task(allocate, (1,), key="small"),
        corral.Task(allocate_in_child, (300,), key="child"),
    ]
    report = _run(tasks, workers=1, chunksize=1)
    peak = {o.key: o.history[-1].peak_rss for o in report.outcomes}
    assert peak["big"] >= 300 * MiB
    # the high-water mark was reset at the Call's start: the earlier 300 MiB are not seen
    assert peak["small"] < peak["big"] - 200 * MiB
    assert peak["child"] >= 300 * MiB
    # Outcome.max_rss keeps its meaning: the worker's peak since it started
    assert report.outcomes[1].max_rss >= 300 * MiB


def test_a_crashed_attempt_records_the_signal():
    report = _run([corral.Task(kill_self, (0,), key="k")], workers=1)
    (attempt,) = report.outcomes[0].history
    assert attempt.status == "crashed"
    assert attempt.signal == signal.SIGKILL and attempt.exitcode is None
    assert attempt.cpu is None  # its Result died with the worker
    died = [s for s in report.worker_spans if s.how == "died"]
    assert died and died[0].signal == signal.SIGKILL


def test_a_timed_out_attempt_records_the_signal_corral_sent():
    report = _run([corral.Task(nap, (60,), key="slow", timeout=0.5)], workers=1)
    (attempt,) = report.outcomes[0].history
    assert attempt.status == "timeout" and attempt.signal == signal.SIGTERM


def test_a_retry_is_queued_when_its_back_off_ends(tmp_path):
    task = corral.Task(fail_first, (str(tmp_path / "flag"),), key="flaky")
    report = _run([task], workers=1, retries=1, backoff=0.2)
    first, second = report.outcomes[0].history
    assert first.status == "failed" and second.status == "ok"
    assert first.queued <= first.started
    assert second.queued >= first.finished + 0.2 - 1e-3
    assert second.started >= second.queued - 1e-3


def test_telemetry_off_still_gives_cpu_and_the_lifetime_peak():
    tasks = [corral.Task(burn, (0.05,), key=i) for i in range(3)]
    report = _run(tasks, workers=1, telemetry=False)
    for outcome in report.outcomes:
        attempt = outcome.history[-1]
        assert attempt.cpu is not None and attempt.cpu > 0
        assert attempt.peak_rss == outcome.max_rss > 0


def test_telemetry_must_be_a_bool():
    with pytest.raises(corral.ConfigError, match="telemetry"):
        corral.run([corral.Task(nap, (0,))], telemetry="yes")


def test_in_process_runs_measure_without_resetting_the_callers_peak(monkeypatch):
    monkeypatch.setenv("CORRAL_WORKERS", "1")
    report = _run([corral.Task(burn, (0.05,), key=0)])
    attempt = report.outcomes[0].history[0]
    assert attempt.worker == -1 and attempt.cpu >= 0.05 and attempt.peak_rss > 0


# -- the event stream's rare subscribers -----------------------------------------------------------


def test_a_rare_subscriber_gets_worker_events_and_costs_no_task_events():
    events = Events()
    heard = []
    events.subscribe(heard.append, tasks=False)
    assert events.rare and not events.active
    events.emit(TaskStarted(1, 0, 0, 0, 1, 1))
    events.emit(WorkerStarted(0, 1))
    assert heard == [WorkerStarted(0, 1)]
    everything = []
    events.subscribe(everything.append)
    assert events.active
    events.emit(TaskStarted(1, 0, 0, 0, 1, 1))
    assert len(heard) == 1 and len(everything) == 1
    events.unsubscribe(everything.append)
    assert not events.active and events.rare


def test_a_pool_logs_its_workers_without_turning_task_events_on():
    with corral.Pool(2, progress=False) as pool:
        assert not pool._events.active
        report = pool.run([corral.Task(nap, (0.01,), key=i) for i in range(4)])
    assert {s.worker for s in report.worker_spans} == {0, 1}
    assert all(s.started <= report.started + report.wall for s in report.worker_spans)


# -- per run ---------------------------------------------------------------------------------------


def test_run_figures_agree_with_the_attempts():
    tasks = [corral.Task(nap, (0.1,), key=i) for i in range(8)]
    tasks.append(corral.Task(nap, (0.4,), key="long"))
    report = _run(tasks, workers=2, chunksize=1)
    attempts = [o.history[-1] for o in report.outcomes]
    busy = math.fsum(a.finished - a.started for a in attempts)
    assert report.wall == report.wall_seconds > 0
    assert report.busy_seconds == pytest.approx(busy)
    assert report.speedup == pytest.approx(busy / report.wall)
    assert report.utilisation == pytest.approx(report.speedup / 2)
    assert 0 < report.utilisation <= 1
    assert report.tasks_per_second == pytest.approx(9 / report.wall)
    assert report.slowest(1)[0].key == "long"
    durations = [o.duration for o in report.slowest(5)]
    assert durations == sorted(durations, reverse=True)

    startups = report.worker_startup()
    assert {s.worker for s in startups} == {0, 1}
    for s in startups:
        assert s.ready is not None and s.ready >= s.started and s.seconds == s.ready - s.started
    idle = report.idle_seconds()
    assert set(idle) == {0, 1}
    for worker, seconds in idle.items():
        mine = math.fsum(a.finished - a.started for a in attempts if a.worker == worker)
        assert 0 <= seconds <= report.wall - mine + 1e-9

    steps = report.concurrency()
    assert max(n for _, n in steps) <= 2 and steps[-1][1] == 0
    area = math.fsum((t1 - t0) * n for (t0, n), (t1, _) in itertools.pairwise(steps))
    assert area == pytest.approx(busy)
    bins = report.concurrency(bins=20)
    assert len(bins) == 20 and all(0 <= n <= 2 + 1e-9 for _, n in bins)
    width = bins[1][0] - bins[0][0]
    assert math.fsum(n * width for _, n in bins) == pytest.approx(busy, rel=1e-6)


def test_an_empty_report_has_zero_figures():
    report = corral.Report([])
    assert (report.utilisation, report.speedup, report.tasks_per_second) == (0.0, 0.0, 0.0)
    assert report.concurrency() == [] and report.slowest() == []


# -- records -------------------------------------------------------------------------------------


def test_records_have_one_row_per_attempt(tmp_path):
    tasks = [
        corral.Task(fail_first, (str(tmp_path / "flag"),), key="flaky", group="g"),
        corral.Task(explode, (1,), key="bad"),
        corral.Task(nap, (0,), key="fine"),
    ]
    report = _run(tasks, workers=1, retries=1, backoff=0, retry_on=(OSError,))
    rows = report.to_records()
    assert [(r["key"], r["attempt"], r["final"]) for r in rows] == [
        ("flaky", 1, True),
        ("bad", 1, True),
        ("fine", 1, True),
    ]
    flaky, bad, fine = rows
    assert flaky["group"] == "g" and flaky["status"] == "failed"
    assert bad["error"] == "ValueError: bad 1" and fine["error"] is None
    assert fine["duration"] == pytest.approx(fine["finished"] - fine["started"])
    assert set(fine) == set(COLUMNS)


def test_records_of_a_retried_task_and_the_dataframe(tmp_path):
    pd = require_module("pandas")
    report = _run([corral.Task(fail_first, (str(tmp_path / "f"),), key="k")], retries=1, backoff=0)
    rows = report.to_records()
    assert [(r["attempt"], r["attempt_status"], r["final"]) for r in rows] == [
        (1, "failed", False),
        (2, "ok", True),
    ]
    frame = report.to_dataframe()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["attempt"].tolist() == [1, 2]


def test_the_dataframe_says_what_to_install_without_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match="pip install pandas"):
        corral.Report([]).to_dataframe()
