"""The Dask worker's side of the ``dask`` backend: corral worker processes under a Dask worker.

    Dask worker process (one per node or per job)                corral child processes
    ─────────────────────────────────────────────                ─────────────────────
    task thread: run_call(name, call_id, bytes)
      claim the key ──► scheduler (LostWorkers.claim) ─ refused: began on a lost worker ─►
                                                        answer ("lost",), nothing runs
      Local.run ─► requests ─► local thread (owns a ProcessBackend) ═ conn k ═► _worker.loop
                                 │  (a fresh child first answers the WARM_UP Call)
                                 │  send the Call ══════════════════════════► execute
                                 │  stamp k: item i began ◄───────────────── (shared memory)
                                 │  log_event(name, start i) ─► scheduler ─► coordinator
                                 │  wait(): Message / Died of child k ◄═══════ Result ...
      ◄── answer (future) ───────┘
    client.run(kill_call) ──► Local.kill ─► requests ─► ProcessBackend.kill(k): group SIGTERM,
                                                        SIGKILL after the grace period

``CorralPlugin`` (a ``distributed.WorkerPlugin``, registered by the coordinator's backend under
a name of its own) sets up one ``Local`` per Dask worker: a thread that owns a corral
``ProcessBackend`` with one slot per Dask thread, so every Call runs in a corral worker
process, exactly as on one machine: its own process group, killed with what it started on a
timeout, its crash reported with the item it was running, fixtures set up once per child.
Children start when a Call first needs one and are reused by the next Calls; the plugin's
teardown (the Pool closes) retires them (fixtures torn down). If the Dask worker dies, each
child's lifeline breaks and its watchdog kills it (``_worker.loop``): no orphans.

Ownership: only the local thread touches the ProcessBackend; task threads and ``client.run``
hand it requests through a queue and its wakeup pipe. A task thread blocks on its request's
future, so a Dask thread is busy exactly as long as its Call runs.

What a task returns to the coordinator (``_backends.dask``): ``("answer", message)``, a
Result or CallFailed; ``("died", exitcode, index, last words or None)``, the child died on
its own while running item ``index``; ``("undecodable", text)``; ``("killed",)``, the
coordinator killed it (the answer is not read); ``("lost",)``, its claim was refused: the
Call began on a Dask worker the scheduler has since removed (``LostWorkers``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from distributed import SchedulerPlugin, WorkerPlugin, get_worker
from distributed.utils import sync

from .. import _codec
from .._messages import Call, Handover, InitFailed, Logged, Ready
from .._platform import cpu_count
from .contract import Died, Message, Prepared, Undecodable
from .process import ProcessBackend

WARM_UP = _codec.dumps_call(Call(-2, {}, 0, [], True, []))
"""A Call of no items, sent first to a fresh child: its answer says the child is ready (its
start-up, imports and initializer done), and only then does the real Call's clock start."""

RECHECK = 0.02
"""How often the local thread looks at a child's stamp while an item start is to be reported
(the stamp is shared memory, written by the child without a message per item)."""

STOP_GRACE = 10.0
"""How long the children may take to stop when the plugin is torn down (fixtures included)."""


@dataclass(frozen=True)
class Settings:
    """What the coordinator's Pool tells every Dask worker about its corral children."""

    start_method: str
    initializer: bytes | None
    fixtures: bytes | None
    kill_grace: float
    teardown_grace: float
    measure_rss: bool


class CorralPlugin(WorkerPlugin):
    """One corral Pool's children on one Dask worker (see the module docstring)."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.local: Local | None = None

    def setup(self, worker: Any) -> None:
        self.local = Local(self.settings, max(1, worker.state.nthreads), self.name)

    async def teardown(self, worker: Any) -> None:
        import asyncio

        local, self.local = self.local, None
        if local is not None:  # off the event loop: children tear their fixtures down
            await asyncio.to_thread(local.close)


LOST_WORKERS = "corral-lost-workers"
"""The scheduler topic on which ``LostWorkers`` names each Dask worker it removes."""

LOST_WORKERS_PLUGIN = "corral-lost-workers-claims"
"""The name ``LostWorkers`` is registered under on the scheduler: not the topic's, which an
earlier corral's plugin (no claims) may hold on a long-lived scheduler (registration is
idempotent by name, so it would never be replaced, and every claim would fail)."""

CLAIM = "corral_claim"
"""The scheduler handler (``LostWorkers.claim``) a Dask task asks before it runs its Call."""


class LostWorkers(SchedulerPlugin):
    """On the scheduler: the Calls each Dask worker has begun, and what becomes of them when
    the scheduler removes that worker.

    Before a Dask task runs its Call it claims it here (``claim``: one round trip, answered
    on the scheduler's event loop). When the scheduler removes a worker, this names the
    worker and the keys claimed there on a topic of corral's own (subscribing to the
    scheduler's "all" would replace a handler of the user's on a shared client); the
    coordinator ends those Calls as crashes. The scheduler has already sent them to another
    worker by then (``allowed-failures``): that copy's claim is refused, so it returns
    ``("lost",)`` without running anything, and no Call ever runs twice under one attempt.
    A start event could not promise this: it is sent after the Call began, and dies with a
    worker killed in between.

    Scheduler event loop only: ``claim``, ``remove_worker`` and ``transition`` never run at
    the same time (nothing between the scheduler's re-sending of a lost worker's tasks and
    this plugin's ``remove_worker`` awaits), so a copy cannot claim a key before it is
    known lost. A key's entries go when the scheduler forgets it.
    """

    idempotent = True  # one per scheduler, whichever Pool registers it first

    def __init__(self) -> None:
        self.claimed: dict[str, set[str]] = {}  # Dask worker → keys whose Call began there
        self.where: dict[str, str] = {}  # key → its Dask worker
        self.lost: set[str] = set()  # keys claimed on a worker since removed

    async def start(self, scheduler: Any) -> None:
        scheduler.handlers[CLAIM] = self.claim

    def claim(self, key: str, worker: str) -> bool:
        """Whether the Call of ``key`` may run on ``worker`` (not when it began elsewhere)."""
        if key in self.lost or key in self.where:
            return False
        self.where[key] = worker
        self.claimed.setdefault(worker, set()).add(key)
        return True

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        began = self.claimed.pop(worker, set())
        for key in began:
            del self.where[key]
        self.lost |= began
        scheduler.log_event(LOST_WORKERS, {"worker": worker, "began": sorted(began)})

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish != "forgotten":
            return
        self.lost.discard(key)
        worker = self.where.pop(key, None)
        if worker is not None:
            self.claimed[worker].discard(key)


def run_call(name: str, call_id: int, payload: bytes, timed: bool) -> tuple[Any, ...]:
    """The Dask task of one Call: run it in one of this worker's corral children, once it
    is claimed (``LostWorkers``); ``("lost",)`` when it began on a worker since lost."""
    worker = get_worker()
    plugin = worker.plugins.get(name)
    local = getattr(plugin, "local", None)
    if local is None:
        raise RuntimeError(f"corral's worker plugin {name!r} is not set up on {worker.address}")
    address = worker.address
    claim = getattr(worker.scheduler, CLAIM)
    if not sync(worker.loop, claim, key=worker.get_current_task(), worker=address):
        return ("lost",)

    def started(index: int) -> None:  # the coordinator's clock for this item starts now
        worker.log_event(name, {"start": call_id, "item": index, "worker": address})

    answer: tuple[Any, ...] = local.run(call_id, payload, started, timed)
    return answer


def kill_call(name: str, call_id: int, dask_worker: Any = None) -> None:
    """Run by ``client.run`` on the Dask worker: kill the child running ``call_id``."""
    local = getattr(dask_worker.plugins.get(name), "local", None)
    if local is not None:
        local.kill(call_id)


def hand_over_call(name: str, call_id: int, dask_worker: Any = None) -> None:
    """Run by ``client.run`` on the Dask worker (Ctrl-C): ask the child running ``call_id``
    for the finished part of it (``_worker.handover``); the Handover is that Call's answer."""
    local = getattr(dask_worker.plugins.get(name), "local", None)
    if local is not None:
        local.hand_over(call_id)


@dataclass
class _Request:
    call_id: int
    payload: bytes
    answer: Future[tuple[Any, ...]]
    started: Callable[[int], None]
    timed: bool  # some item has a timeout: every item's start is reported, not the first only
    last_words: Any = None  # an InitFailed the child sent before dying
    reported: int = -1  # the item whose start was reported last


class Local:
    """A ProcessBackend driven by its own thread, fed by the Dask worker's task threads."""

    def __init__(self, settings: Settings, slots: int, name: str) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        self._backend = ProcessBackend(
            slots,
            _no_blob,  # every Call from the coordinator carries its functions' bytes
            start_method=settings.start_method,
            threads=max(1, cpu_count() // slots),
            initializer=settings.initializer,
            kill_grace=settings.kill_grace,
            wakeup=self._wakeup_r,
            measure_rss=settings.measure_rss,
            fixtures=settings.fixtures,
            teardown_grace=settings.teardown_grace,
            # Log records would have to travel on through the Dask worker to the coordinator:
            # not wired yet, so the children do not ship them (docs/dask.md).
            forward_logging=False,
        )
        self._requests: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._running: list[_Request | None] = [None] * slots
        self._alive = [False] * slots
        self._warming: set[int] = set()  # fresh children answering the warm-up Call
        self._waiting: deque[_Request] = deque()
        self._killed: set[int] = set()  # calls killed before they arrived here
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"{name} children", daemon=True)
        self._thread.start()

    # -- any thread -------------------------------------------------------------------------
    def run(
        self, call_id: int, payload: bytes, started: Callable[[int], None], timed: bool
    ) -> tuple[Any, ...]:
        """Run the Call ``payload`` in a child; ``started(index)`` is called (on the local
        thread) when its first item begins, and, if ``timed``, when each next one does."""
        answer: Future[tuple[Any, ...]] = Future()
        self._post("run", _Request(call_id, payload, answer, started, timed))
        return answer.result()

    def kill(self, call_id: int) -> None:
        self._post("kill", call_id)

    def hand_over(self, call_id: int) -> None:
        self._post("handover", call_id)

    def close(self) -> None:
        self._post("close", None)
        self._thread.join()
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)

    def _post(self, what: str, arg: Any) -> None:
        self._requests.put((what, arg))
        with contextlib.suppress(OSError):
            os.write(self._wakeup_w, b"x")

    # -- the local thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed:
            watching = self._watching()
            for event in self._backend.wait(RECHECK if watching else None):
                self._on_event(event)
            if watching:
                self._report_starts(watching)
            self._take_requests()
            self._start_waiting()
        self._backend.close(STOP_GRACE)
        for request in self._running:
            if request is not None:
                _answer(request, ("killed",))

    def _watching(self) -> list[int]:
        """The slots whose item starts are still to be reported: a Call sent whose first
        item has not been seen to begin, or a timed Call."""
        return [
            slot
            for slot, request in enumerate(self._running)
            if request is not None
            and slot not in self._warming
            and (request.timed or request.reported < 0)
        ]

    def _report_starts(self, slots: list[int]) -> None:
        """Report the items that began since the last look (the child's stamp)."""
        for slot in slots:
            request = self._running[slot]
            if request is None:
                continue
            call_id, index, _ = self._backend.running_item(slot)
            if call_id == request.call_id and index >= 0 and index != request.reported:
                request.reported = index
                request.started(index)

    def _take_requests(self) -> None:
        while True:
            try:
                what, arg = self._requests.get_nowait()
            except queue.Empty:
                return
            if what == "run":
                if arg.call_id in self._killed:
                    self._killed.discard(arg.call_id)
                    _answer(arg, ("killed",))
                else:
                    self._waiting.append(arg)
            elif what == "kill":
                self._kill(arg)
            elif what == "handover":
                for slot, request in enumerate(self._running):
                    if request is not None and request.call_id == arg:
                        self._backend.hand_over(slot)
            else:
                self._closed = True
                for request in self._waiting:
                    _answer(request, ("killed",))
                self._waiting.clear()

    def _kill(self, call_id: int) -> None:
        for slot, request in enumerate(self._running):
            if request is not None and request.call_id == call_id:
                self._backend.kill(slot)
                self._warming.discard(slot)
                self._running[slot] = None
                self._alive[slot] = False
                _answer(request, ("killed",))
                return
        for request in self._waiting:
            if request.call_id == call_id:
                self._waiting.remove(request)
                _answer(request, ("killed",))
                return
        self._killed.add(call_id)

    def _start_waiting(self) -> None:
        for slot in range(len(self._running)):
            if not self._waiting:
                return
            if self._running[slot] is not None:
                continue
            request = self._waiting.popleft()
            fresh = not self._alive[slot]
            try:
                if fresh:
                    _start(self._backend, slot)
                    self._alive[slot] = True
            except Exception as exc:
                _answer(request, ("died", None, -1, _start_failed(exc)))
                continue
            self._running[slot] = request
            if fresh:
                self._warming.add(slot)
                self._backend.send(slot, Prepared(WARM_UP))
            else:
                self._send(slot, request)

    def _send(self, slot: int, request: _Request) -> None:
        self._backend.send(slot, Prepared(request.payload))

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Message) and isinstance(event.message, (Ready, Logged)):
            return  # a child's start-up notice, or a Service's record: not an answer
        request = self._running[event.slot]
        if isinstance(event, Died):
            self._warming.discard(event.slot)
            self._alive[event.slot] = False
            self._running[event.slot] = None
            if request is not None:
                index = event.index if event.call_id == request.call_id else -1
                _answer(request, ("died", event.exitcode, index, request.last_words))
        elif request is None:
            return
        elif isinstance(event, Undecodable):
            self._running[event.slot] = None
            _answer(request, ("undecodable", f"{type(event.error).__name__}: {event.error}"))
        elif isinstance(event, Message) and isinstance(event.message, InitFailed):
            request.last_words = event.message  # the child exits next: Died answers
        elif isinstance(event, Message) and isinstance(event.message, Handover):
            if event.message.call_id != request.call_id:
                return  # asked after its Call ended: the Result went already
            # The answer of a cancelled Call; the child would run on: it is stopped now.
            self._backend.kill(event.slot)
            self._running[event.slot] = None
            self._alive[event.slot] = False
            _answer(request, ("answer", event.message))
        elif event.slot in self._warming:
            self._warming.discard(event.slot)  # the child is ready: the Call starts now
            self._send(event.slot, request)
        elif isinstance(event, Message):
            self._running[event.slot] = None
            _answer(request, ("answer", event.message))


def _start(backend: ProcessBackend, slot: int) -> None:
    """Start a child; a Dask worker is a daemonic process (``distributed.worker.daemon``),
    which multiprocessing forbids to have children. The rule is there so that children do not
    outlive their parent; corral's children have a lifeline of their own for that
    (``_worker.loop``), so the flag is lifted while one starts."""
    process: Any = multiprocessing.current_process()
    config = process._config  # private: there is no public way to lift the daemon rule
    daemon = config.get("daemon")
    config["daemon"] = False
    try:
        backend.start_worker(slot)
    finally:
        if daemon is not None:
            config["daemon"] = daemon


def _start_failed(exc: BaseException) -> InitFailed:
    from .._errors import ExceptionWithTraceback

    return InitFailed(ExceptionWithTraceback(exc), "start-up")


def _answer(request: _Request, answer: tuple[Any, ...]) -> None:
    if not request.answer.done():
        request.answer.set_result(answer)


def _no_blob(fn_id: int) -> bytes:
    raise AssertionError("Calls reach the Dask worker with their functions' bytes")
