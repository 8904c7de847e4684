"""``Report.to_trace``: Chrome trace-event JSON (Perfetto, chrome://tracing), checked against
the format: phases, pid/tid, microsecond timestamps, one event per attempt, no overlapping
events on a track, worker start-ups, services when their events exist, RSS counters; and a
100,000-task trace under 30 MB."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

import corral
from corral._events import ServiceStarted, ServiceStopped, TaskStarted
from corral._report.trace import SERVICES
from tests._reports import synthetic_report

pytestmark = pytest.mark.timeout(180)

PHASES = {"X", "i", "C", "M"}


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fail_first(path):
    p = Path(path)
    if not p.exists():
        p.write_text("1")
        raise ValueError("first attempt fails")
    return 1


def explode(x):
    raise ValueError(f"bad {x}")


def kill_self(_):
    os.kill(os.getpid(), signal.SIGKILL)


def load(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    assert set(data) >= {"traceEvents", "displayTimeUnit", "otherData"}
    return data["traceEvents"]


def check_format(events: list[dict]) -> None:
    """What the trace-event format asks of every event, and corral's no-overlap invariant."""
    per_track = defaultdict(list)
    for e in events:
        assert e["ph"] in PHASES, e
        assert isinstance(e["pid"], int) and isinstance(e.get("tid", 0), int), e
        assert isinstance(e["name"], str), e
        if e["ph"] == "M":
            continue
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
            per_track[e["pid"], e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
        if e["ph"] == "i":
            assert e["s"] in ("t", "p", "g")
        if e["ph"] == "C":
            assert all(isinstance(v, (int, float)) for v in e["args"].values())
    for spans in per_track.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, "two events overlap on one track"


def test_a_real_run_as_a_trace(tmp_path):
    tasks = [corral.Task(nap, (0.02,), key=f"t{i}", group="ab"[i % 2]) for i in range(8)]
    tasks += [
        corral.Task(explode, (1,), key="bad"),
        corral.Task(fail_first, (str(tmp_path / "flag"),), key="flaky", retries=1),
        corral.Task(kill_self, (0,), key="crash"),
    ]
    report = corral.run(tasks, workers=2, errors="return", progress=False, backoff=0)
    report.to_trace(tmp_path / "trace.json")
    events = load(tmp_path / "trace.json")
    check_format(events)

    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert names[1] == "worker 0" and names[2] == "worker 1"
    statuses = {s.value for s in corral.Status}
    attempts = [e for e in events if e["ph"] == "X" and e["cat"] in statuses]
    assert len(attempts) == sum(len(o.history) for o in report.outcomes)
    by_key = defaultdict(list)
    for e in attempts:
        by_key[e["args"]["key"]].append(e["args"])
        assert e["tid"] in (1, 2)
    flaky = sorted(by_key["flaky"], key=lambda a: a["attempt"])
    assert [(a["attempt"], a["status"]) for a in flaky] == [(1, "failed"), (2, "ok")]
    assert by_key["bad"][0]["error"] == "ValueError: bad 1"
    assert by_key["crash"][0]["signal"] == signal.SIGKILL
    assert by_key["t0"][0]["group"] == "a" and by_key["t1"][0]["group"] == "b"

    # microseconds from the run's start: an attempt's dur is its duration * 1e6
    t0 = next(o for o in report.outcomes if o.key == "t0")
    event = next(e for e in attempts if e["args"]["key"] == "t0")
    assert event["dur"] == pytest.approx(t0.duration * 1e6, abs=1.0)
    assert event["dur"] >= 20_000
    origin = json.loads((tmp_path / "trace.json").read_text())["otherData"]["origin"]
    assert event["ts"] == pytest.approx((t0.started - origin) * 1e6, abs=1.0)

    startups = [e for e in events if e["name"] == "start-up"]
    assert len(startups) == len([s for s in report.worker_startup() if s.ready is not None])
    assert {e["tid"] for e in startups} == {1, 2}
    died = [e for e in events if e["ph"] == "i" and e["name"] == "worker died"]
    assert died and died[0]["args"]["signal"] == signal.SIGKILL
    counters = [e for e in events if e["ph"] == "C"]
    assert counters and all(e["args"]["MiB"] > 1 for e in counters)


def test_service_events_get_their_own_tracks_when_they_exist(tmp_path):
    with corral.Pool(1, progress=False) as pool:
        told = []

        def on_event(event):
            if isinstance(event, TaskStarted) and not told:
                told.append(event)
                pool._events.emit(ServiceStarted(event.worker, "redis", 6379, 4242, 0.05))
                pool._events.emit(ServiceStopped(event.worker, "redis", 6379, 4242))

        pool._events.subscribe(on_event)
        report = pool.run([corral.Task(nap, (0.01,), key="t")])
    kinds = [h.kind for h in report.happenings]
    assert [k for k in kinds if k.startswith("Service")] == ["ServiceStarted", "ServiceStopped"]
    report.to_trace(tmp_path / "trace.json")
    events = load(tmp_path / "trace.json")
    check_format(events)
    started = next(e for e in events if e["name"] == "ServiceStarted redis")
    assert started["ph"] == "X" and started["dur"] == pytest.approx(50_000, abs=1)
    assert started["tid"] == SERVICES + 1 and started["args"]["port"] == 6379
    stopped = next(e for e in events if e["name"] == "ServiceStopped redis")
    assert stopped["ph"] == "i"
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert names[SERVICES + 1] == "worker 0 services"


@pytest.mark.slow
def test_a_trace_of_100000_tasks_stays_under_30_mb(tmp_path):
    report = synthetic_report(100_000, 8)
    path = tmp_path / "trace.json"
    report.to_trace(path)
    size = path.stat().st_size
    assert size < 30 * 2**20, f"{size / 2**20:.1f} MiB"
    events = load(path)
    check_format(events)
    assert sum(1 for e in events if e["ph"] == "X" and e["cat"] in ("ok", "failed")) == 100_000
