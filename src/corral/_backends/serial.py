"""The serial backend: runs each Call in the calling thread, with the engine's own semantics.

Used for ``backend="serial"`` and ``CORRAL_WORKERS=1`` (so pdb works), and as the fallback
when worker processes cannot be started at all. Never chosen by the size of a batch or of a
pool: a single task, or ``workers=1``, runs in one worker process, isolated like any other.
Results, ordering, retries, outcomes and errors are produced by the same engine code as with
processes; what differs:

- nothing is pickled (a task sees the caller's objects, as with joblib's ``n_jobs=1``);
- a timeout interrupts the task with ``TaskTimeout`` through ``SIGALRM`` when running in the
  main thread (code stuck inside a C call is interrupted only when it returns); in other
  threads timeouts cannot be enforced in-process: they are ignored, with a ``RuntimeWarning``
  (once per process) that says so and how to get them;
- Ctrl-C (KeyboardInterrupt) stops the running task; the items of its Call that had finished
  are kept (``hand_over`` gives them to the engine, which reports them ``ok``);
- a crash of the task (a segfault, ``os._exit``) ends the caller's process, as it would
  without corral;
- fixtures are set up in the caller's process on first need and torn down by ``close``
  (when the Pool closes, or at the end of ``corral.map``/``run``).
"""

from __future__ import annotations

import os
import signal
import threading
import warnings
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._errors import TaskTimeout
from .._messages import Call, Handover
from .._worker.execute import Progress, execute, partial_result
from .._worker.fixture_cache import FixtureCache
from .._worker.meter import Meter
from .contract import SERIAL, BackendSetup, Event, Message, Prepared, Remains

NOTHING_LEFT = Remains(None, None, None)

if TYPE_CHECKING:
    from .._options import PoolOptions


TIMEOUTS_OFF_MAIN_THREAD = (
    "corral: timeouts are not enforced in serial mode outside the main thread (they use "
    "SIGALRM, which only the main thread receives); these tasks run without a time limit. "
    "Run the batch from the main thread, or use worker processes (workers >= 2, "
    "backend='process', and CORRAL_WORKERS unset or above 1), which enforce timeouts from "
    "any thread."
)
_warned_off_main_thread = False


def _warn_timeouts_ignored() -> None:
    """Say once per process that timeouts are ignored here (a silent no-op hid it)."""
    global _warned_off_main_thread
    if not _warned_off_main_thread:
        _warned_off_main_thread = True
        warnings.warn(TIMEOUTS_OFF_MAIN_THREAD, RuntimeWarning, stacklevel=2)


class _AlarmWatch:
    """Arms ``SIGALRM`` for each item that has a timeout (main thread only)."""

    def __init__(self, timeouts: list[float | None] | None) -> None:
        self._timeouts = timeouts
        main = threading.current_thread() is threading.main_thread()
        self._enabled = timeouts is not None and main
        if timeouts is not None and not main and any(t is not None for t in timeouts):
            _warn_timeouts_ignored()
        self._previous: Any = None

    def begin(self, index: int) -> None:
        if not self._enabled:
            return
        assert self._timeouts is not None
        limit = self._timeouts[index]
        if limit is None:
            return

        def on_alarm(signum: int, frame: FrameType | None) -> None:
            raise TaskTimeout(None, limit, pid=os.getpid())

        self._previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)

    def index_buffer(self) -> Any:
        return None

    def start(self, call_id: int) -> None:
        pass

    def end(self) -> None:
        if self._previous is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        self._previous = None


class _Live:
    """Keeps the Progress of the Call running in this thread (read after KeyboardInterrupt)."""

    progress: Progress | None = None

    def running(self, progress: Progress) -> None:
        self.progress = progress

    def stopped(self) -> None:
        pass  # kept: a KeyboardInterrupt ends the loop through here too


def create(setup: BackendSetup) -> SerialBackend:
    """The ``serial`` backend of a Pool (``_backends.BACKENDS``): the initializer runs here,
    now, in the calling process."""
    backend = SerialBackend(
        setup.functions.function,
        _serial_fixtures(setup.options),
        # in the caller's process: its high-water mark is the user's, not reset (_worker.meter)
        meter=Meter(reset_peak=False) if setup.options.telemetry else None,
    )
    if setup.initializer is not None:
        fn, args = setup.initializer
        fn(*args)
    return backend


def _serial_fixtures(options: PoolOptions) -> FixtureCache | None:
    """The fixture cache of a serial pool: set up in this process, or None."""
    if not options.fixtures:
        return None
    return FixtureCache(
        options.fixtures, options.fixture_failures, warn_after=options.fixture_teardown_timeout
    )


class SerialBackend:
    capabilities = SERIAL
    start_method: str | None = None
    slots = 1

    def __init__(
        self,
        resolve: Callable[[int], Callable[..., Any]],
        fixtures: FixtureCache | None = None,
        meter: Meter | None = None,
    ) -> None:
        self._meter = meter
        # with fixtures, functions are bound to them here and torn down in close()
        self._fixtures = fixtures
        self._resolve = fixtures.resolver(resolve) if fixtures is not None else resolve
        self._pending: Call | None = None
        self._interrupted: Progress | None = None
        self._idle = threading.Event()

    def start_worker(self, slot: int) -> int | None:
        return os.getpid()

    def prepare(self, slot: int, call: Call) -> Prepared:
        return Prepared(call)  # nothing is pickled: the task sees the caller's objects

    def send(self, slot: int, prepared: Prepared) -> None:
        self._pending = prepared.payload

    def forget(self, fn_id: int) -> None:
        pass  # functions are the caller's own objects, looked up by the Pool's table

    def wait(self, timeout: float | None) -> list[Event]:
        call, self._pending = self._pending, None
        if call is None:
            if timeout:
                self._idle.wait(timeout)  # nothing to run until a retry's back-off ends
            return []
        live = _Live()
        self._interrupted = None
        try:
            result = execute(
                call,
                self._resolve,
                _AlarmWatch(call.timeouts),
                reraise=(KeyboardInterrupt,),
                live=live,
                meter=self._meter,
            )
        except KeyboardInterrupt:
            self._interrupted = live.progress  # what finished before it: see hand_over
            raise
        return [Message(0, result)]

    def running_item(self, slot: int) -> tuple[int, int, float]:
        return -1, -1, 0.0

    def hand_over(self, slot: int) -> Handover | None:
        progress, self._interrupted = self._interrupted, None
        if progress is None:
            return Handover(-1, None)
        return Handover(progress.call_id, partial_result(progress))

    def dump_stack(self, slot: int) -> str | None:
        return None  # a timeout here interrupts the task itself: its traceback says where

    def remains(self, slot: int) -> Remains:
        return NOTHING_LEFT

    def kill(self, slot: int) -> None:
        self._pending = None

    def retire(self, slot: int) -> None:
        pass

    def close(self, timeout: float) -> None:
        self._pending = None
        fixtures, self._fixtures = self._fixtures, None
        if fixtures is not None:
            fixtures.close()
