"""``Report.to_trace(path)``: the run as Chrome trace-event JSON, for Perfetto and chrome://tracing.

The format is the "JSON Object Format" of the Trace Event Format (Google's document, which
ui.perfetto.dev and chrome://tracing both read)::

    {"displayTimeUnit": "ms", "otherData": {...}, "traceEvents": [event, ...]}

What goes in (all in process 1, "corral run"; times are microseconds from the run's start,
the start's ``time.time()`` is ``otherData.origin``):

    track (tid)                    events
    ─────────────────────────────  ─────────────────────────────────────────────────────────
    w + 1, "worker w"              ph X per attempt (name: the key; cat: its status; args:
                                   key, group, attempt, status, exitcode, signal, error), ph
                                   X "start-up" per worker process (started → first task),
                                   ph i when a worker process ends (died, killed, recycled)
    SERVICES + w + 1, "worker w    services and anything else heard from the worker that is
      services"                    neither a task nor the worker (``ServiceStarted``, ...):
                                   ph X when it says how long it took, else ph i
    SERVICES, "pool"               the same, for events that name no worker
    counter "peak RSS worker w"    ph C, MiB: each attempt's peak (``Attempt.peak_rss``),
                                   written when it changes

Invariant: the X events of one track never overlap. Attempts of one worker slot follow each
other, but their times come from two clocks of one machine read at different points (the
worker's, the coordinator's for a task it killed), so a later event that would start a
hair before the previous one ended starts at that end instead (and is shortened).

Size: about 150 bytes per attempt (short keys), so 100,000 tasks give ~15 MB (a test keeps
it under 30 MB); each event is written as soon as it is made.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .telemetry import Happening, run_window

if TYPE_CHECKING:
    from .report import Report

PID = 1
SERVICES = 100_000
"""tid of the "pool" track of other events; a worker's own other events: SERVICES + w + 1."""
KEY_CHARS = 80
"""A key longer than this is cut in the event's name and args (a trace is not a dump)."""
DURATION_FIELDS = ("seconds", "startup_seconds", "startup", "duration", "elapsed")
"""Fields of an unknown event that say how long it took (seconds, ending when heard)."""
COLOUR = {"failed": "terrible", "timeout": "bad", "crashed": "terrible", "cancelled": "grey"}
"""Chrome's reserved colour names (``cname``) by status; Perfetto colours by name."""


def write_trace(report: Report, path: str | os.PathLike[str]) -> None:
    origin, _ = run_window(report)
    origin = min([origin, *(s.started for s in report.worker_spans)])
    for happening in report.happenings:  # a service's start may begin before the run
        origin = min(origin, happening.when - (_happening(happening)[2] or 0.0))
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"displayTimeUnit":"ms","otherData":')
        f.write(json.dumps(_other_data(report, origin)))
        f.write(',"traceEvents":[\n')
        f.write(",\n".join(_events(report, origin)))
        f.write("\n]}\n")


def _other_data(report: Report, origin: float) -> dict[str, Any]:
    return {
        "generator": "corral",
        "origin": origin,
        "tasks": len(report.outcomes),
        "workers": report.workers,
        "wall_seconds": report.wall_seconds,
    }


def _dump(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), default=str)


def _events(report: Report, origin: float) -> Iterator[str]:
    """The trace's events, each as its JSON text. Attempts are formatted by hand: at
    100,000 tasks ``json.dumps`` per event was most of the time taken."""

    def us(t: float) -> float:
        return round((t - origin) * 1e6, 3)

    yield _dump({"ph": "M", "name": "process_name", "pid": PID, "tid": 0,
                 "args": {"name": "corral run"}})  # fmt: skip
    tracks: set[int] = set()
    # Per track, X events as (ts, dur, text before ts, text after dur): put in time order
    # and made disjoint before writing.
    slices: dict[int, list[tuple[float, float, str, str]]] = {}
    instants: list[dict[str, Any]] = []
    group_text: dict[Any, str] = {}

    for outcome, number, attempt, started, finished in report._timed:
        tid = _tid(attempt.worker)
        key = _quote(_text(outcome.key))
        status = attempt.status.value
        args = f'"key":{key},"attempt":{number}'
        group = outcome.group
        if group is not None:
            text = group_text.get(group)
            if text is None:
                text = group_text[group] = f',"group":{_quote(_text(group))}'
            args += text
        args += f',"status":"{status}"'
        if attempt.exitcode is not None:
            args += f',"exitcode":{int(attempt.exitcode)}'
        if attempt.signal is not None:
            args += f',"signal":{int(attempt.signal)}'
        if attempt.error is not None:
            args += f',"error":{_quote(attempt.error)}'
        colour = COLOUR.get(status)
        head = f'{{"ph":"X","name":{key},"cat":"{status}","pid":{PID},"tid":{tid},'
        if colour is not None:
            head += f'"cname":"{colour}",'
        ts = us(started)
        slices.setdefault(tid, []).append((ts, us(finished) - ts, head, f',"args":{{{args}}}}}'))

    for s in report._startups:
        tid = _tid(s.worker)
        tracks.add(tid)
        sargs = {"pid": s.pid, "seconds": s.seconds}
        if s.ready is not None:
            ts = us(s.started)
            head = f'{{"ph":"X","name":"start-up","cat":"worker","pid":{PID},"tid":{tid},'
            slices.setdefault(tid, []).append(
                (ts, us(s.ready) - ts, head, f',"args":{_dump(sargs)}}}')
            )
        else:
            instant = {"ph": "i", "s": "t", "name": "worker started", "cat": "worker"}
            instants.append({**instant, "ts": us(s.started), "pid": PID, "tid": tid, "args": sargs})
    for span in report.worker_spans:
        if span.ended is not None and span.how not in ("retired", None):
            wargs = {"pid": span.pid, "exitcode": span.exitcode, "signal": span.signal}
            instant = {"ph": "i", "s": "t", "name": f"worker {span.how}", "cat": "worker"}
            instants.append(
                {
                    **instant,
                    "ts": us(span.ended),
                    "pid": PID,
                    "tid": _tid(span.worker),
                    "args": {k: v for k, v in wargs.items() if v is not None},
                }
            )

    for happening in report.happenings:
        tid, event, seconds = _happening(happening)
        if seconds is not None:
            ts = us(happening.when - seconds)
            head = _dump({"ph": "X", **event})[:-1] + ","  # without its closing brace
            slices.setdefault(tid, []).append((ts, us(happening.when) - ts, head, "}"))
        else:
            instants.append({**event, "ph": "i", "s": "t", "ts": us(happening.when)})

    tracks |= slices.keys() | {e["tid"] for e in instants}
    for tid in sorted(tracks):
        yield _dump({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid,
                     "args": {"name": _track_name(tid)}})  # fmt: skip
        yield _dump({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid,
                     "args": {"sort_index": tid}})  # fmt: skip
    for tid in sorted(slices):
        yield from _disjoint(slices[tid])
    for event in instants:
        yield _dump(event)
    yield from _rss_counters(report, us)


def _disjoint(track: list[tuple[float, float, str, str]]) -> Iterator[str]:
    """The X events of one track in time order, none starting before the previous ended.

    ``end`` is ``ts + dur`` computed as a reader computes it (floats), and a clamped start
    is that very float: so ``next ts >= ts + dur`` holds in the reader's arithmetic too."""
    track.sort(key=lambda s: s[0])
    end = -math.inf
    for ts, dur, head, tail in track:
        dur = round(dur, 3)
        if ts < end:
            dur = max(0.0, round(ts + dur - end, 3))
            ts = end
        end = max(end, ts + dur)
        yield f'{head}"ts":{ts!r},"dur":{dur!r}{tail}'


def _rss_counters(report: Report, us: Any) -> Iterator[str]:
    last: dict[int | None, float] = {}
    samples = []
    for _, _, attempt, started, _ in report._timed:
        if attempt.peak_rss is None:
            continue
        mib = round(attempt.peak_rss / 2**20, 1)
        if last.get(attempt.worker) != mib:  # per worker, in time order already
            last[attempt.worker] = mib
            samples.append((started, attempt.worker, mib))
    samples.sort(key=lambda s: s[0])
    for started, worker, mib in samples:
        yield (
            f'{{"ph":"C","name":"peak RSS worker {worker}","pid":{PID},'
            f'"ts":{us(started)!r},"args":{{"MiB":{mib!r}}}}}'
        )


def _happening(h: Happening) -> tuple[int, dict[str, Any], float | None]:
    worker = h.fields.get("worker")
    tid = SERVICES + _tid(worker) if isinstance(worker, int) else SERVICES
    seconds = None
    for name in DURATION_FIELDS:
        value = h.fields.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            seconds = float(value)
            break
    args = {k: _jsonable(v) for k, v in h.fields.items()}
    name = h.kind
    label = h.fields.get("name") or h.fields.get("program")
    if label is not None:
        name = f"{h.kind} {_text(label)}"
    return tid, {"name": name, "cat": "service", "pid": PID, "tid": tid, "args": args}, seconds


def _tid(worker: int | None) -> int:
    """The track of worker slot ``worker``: ``w + 1`` (0: in the calling process)."""
    return (worker if worker is not None else -1) + 1


def _track_name(tid: int) -> str:
    if tid == SERVICES:
        return "pool"
    if tid > SERVICES:
        return f"{_track_name(tid - SERVICES)} services"
    return "in-process" if tid == 0 else f"worker {tid - 1}"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= KEY_CHARS else text[: KEY_CHARS - 1] + "…"


_quote = json.encoder.encode_basestring
"""A str as a JSON string, quotes included (the C encoder's)."""


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _text(value)
