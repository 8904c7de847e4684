"""The backend contract (``corral._backends``): the registry of backends by name, the typed
events a backend emits, and the function bytes the process backend decides to ship."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import corral
from corral import _backends
from corral._backends import (
    BACKENDS,
    BackendFactory,
    BackendSetup,
    Died,
    Message,
    Undecodable,
)
from corral._backends.process import create as create_process
from corral._messages import Ready, Result


class Recording:
    """A process backend that keeps every event it emits (a backend registered by name)."""

    made: list[Recording] = []

    def __init__(self, setup: BackendSetup) -> None:
        self._inner = create_process(setup)
        self.events: list[Any] = []
        self.prepared: list[Any] = []
        Recording.made.append(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def prepare(self, slot: int, call: Any) -> Any:
        prepared = self._inner.prepare(slot, call)
        self.prepared.append(prepared)
        return prepared

    def wait(self, timeout: float | None) -> Any:
        events = self._inner.wait(timeout)
        self.events.extend(events)
        return events


@pytest.fixture
def recording() -> Iterator[type[Recording]]:
    Recording.made.clear()
    _backends.register("recording", BackendFactory(Recording, _backends.PROCESS))
    try:
        yield Recording
    finally:
        del BACKENDS["recording"]


def crash_on_three(x: int) -> int:
    if x == 3:
        os._exit(7)
    return x


def test_an_unknown_backend_is_refused_with_the_registered_names() -> None:
    for start in (
        lambda: corral.Pool(backend="ray"),
        lambda: corral.map(abs, [1], backend="ray"),
    ):
        with pytest.raises(corral.ConfigError) as caught:
            start()
        message = str(caught.value)
        assert "'ray'" in message
        assert "'process'" in message and "'serial'" in message


def test_a_backend_registered_by_name_is_used_and_listed(recording: type[Recording]) -> None:
    with pytest.raises(corral.ConfigError, match="'recording'"):
        corral.Pool(backend="nope")
    assert corral.map(abs, range(-5, 5), workers=2, backend="recording") == [
        abs(x) for x in range(-5, 5)
    ]
    assert len(recording.made) == 1
    backend = recording.made[0]
    # (each worker first says it is ready: a Ready message, then its Results)
    messages = [e for e in backend.events if isinstance(e, Message)]
    messages = [e for e in messages if not isinstance(e.message, Ready)]
    assert messages and all(isinstance(e.message, Result) for e in messages)
    assert sum(len(e.message.values) for e in messages) == 10


def test_a_worker_death_is_a_typed_event(recording: type[Recording]) -> None:
    report = corral.run(
        [corral.Task(crash_on_three, (x,)) for x in range(5)],
        workers=2,
        chunksize=1,
        backend="recording",
        errors="return",
    )
    assert [o.status for o in report.outcomes].count(corral.Status.CRASHED) == 1
    deaths = [e for e in recording.made[0].events if isinstance(e, Died)]
    assert len(deaths) == 1
    assert deaths[0].exitcode == 7 and deaths[0].index == 0


def test_events_are_frozen() -> None:
    for event in (Message(0, None), Died(0, -9, 1, 0), Undecodable(0, ValueError())):
        with pytest.raises(AttributeError):  # NamedTuples: no field can be set
            event.slot = 1  # type: ignore[misc]


def test_the_process_backend_ships_a_function_once_per_worker(
    recording: type[Recording],
) -> None:
    with corral.Pool(workers=1, backend="recording") as pool:
        assert pool.map(abs, range(-50, 0), chunksize=5) == list(range(50, 0, -1))
        assert pool.map(abs, [-1, -2], chunksize=1) == [1, 2]
    prepared = recording.made[0].prepared
    carried = [p for p in prepared if p.payload is not None]
    assert len(carried) == len(prepared) == 12
    # the first Call carries the function's bytes, the later ones only its id: they are smaller
    assert len(carried[0].payload) > len(carried[1].payload)
    assert len({len(p.payload) for p in carried[1:10]}) == 1


def test_serial_and_process_backends_declare_what_the_engine_asks() -> None:
    process, serial = BACKENDS["process"].capabilities, BACKENDS["serial"].capabilities
    assert process.can_kill_one_call and not serial.can_kill_one_call
    assert serial.shares_memory_with_coordinator and not process.shares_memory_with_coordinator
    assert serial.runs_in_caller_thread and not process.runs_in_caller_thread
    assert process.has_running_stamp and process.can_queue_calls
