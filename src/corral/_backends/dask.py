"""The dask backend: Dask places and runs the Calls; corral's engine decides everything else.

    coordinator: engine thread (this backend)          Dask                 Dask worker w
    ─────────────────────────────────────────          ────                 ─────────────
    send(k, bytes) ─ client.submit(run_call, pure=False, retries=0) ─► scheduler ─► task thread
                                                                          (_backends.dask_remote:
                                                                           a corral child runs it)
    wait() ◄─ done callback ─ own pipe ◄─ future done ◄─────────────────── answer
    running_item(k) ◄─ topic handler ◄─ log_event "start" (call, worker) ◄─ task thread
                                        scheduler plugin ◄── claim (key, w) ── task thread,
                                        (LostWorkers)                          before the Call
    wait() → Died ◄─── topic corral-lost-workers ◄─ a Dask worker removed: w and the keys
                                                    claimed on w
    kill(k) ─ cancel the future; killer thread: client.run(kill_call, workers=[w]) ─► child killed

Slots are virtual: ``workers`` of them ("auto": the cluster's threads when the Pool starts),
each holding at most one Call (no prefetch: Dask queues, corral decides what runs next).
``start_worker`` starts nothing (the corral children live under the Dask workers, started on
first need); a slot's "pid" is None.

Retries stay corral's: every Call is submitted with ``retries=0`` and ``pure=False`` (never
deduplicated), under a key ``corral-<function>-<call>-<pool>``: the dashboard shows corral's
tasks by function. Dask would still re-run a task whose worker died while it ran
(``allowed-failures``, a scheduler-wide setting corral does not change). So a Dask task
claims its Call on the scheduler before running it (one round trip, ``dask_remote``); when
the scheduler removes a worker, corral hears the keys claimed there, those Calls end with
``Died`` (WorkerCrashed, or a retry when asked) and their futures are cancelled, and the copy
Dask sent elsewhere is refused its claim and runs nothing (its answer ``("lost",)`` also ends
the Call, should the topic's message not arrive). The Call's start event could not do this
alone: it is sent after the Call began, and is lost with a worker killed in between (a
Call then ran twice under one attempt). A copy whose start is reported for an unknown Call
(killed by corral meanwhile) is killed.

Timing: a Call's clock starts when its start event arrives here (a Call queued in Dask, e.g.
while a SLURM job waits for a node, is not timing out). Which item of a multi-item Call runs
is not reported: ``running_item`` says item 0, so with an explicit ``chunksize`` a timeout
applies to the whole Call (with ``chunksize="auto"`` a batch with timeouts sends one task per
Call). A child that dies on its own reports the item it ran (its stamp, read on the Dask
worker).

Threads: the done callbacks and topic handlers run on the client's threads; they only put
what happened on ``_inbox`` and write a byte to ``_pipe``. Everything else runs on the engine
thread, except ``client.run`` for kills, on one killer thread so the engine never waits on a
round trip.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import select
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _codec
from .._errors import ConfigError, SerializationError
from .._messages import CALL, Call, CallFailed
from .._platform import default_start_method
from .contract import (
    DASK,
    BackendSetup,
    Died,
    Event,
    Message,
    Prepared,
    Remains,
    Undecodable,
)
from .process import encode_call

if TYPE_CHECKING:
    from .._options import PoolOptions

log = logging.getLogger("corral")

NEEDS_DISTRIBUTED = (
    "backend='dask' needs the distributed package (pip install 'corral[dask]', or "
    "pip install distributed)"
)


def check_options(options: PoolOptions) -> None:
    """The dask options, checked at the boundary (``PoolOptions``), before any work starts."""
    if options.backend != "dask":
        raise ConfigError(
            f"dask_client is used only with backend='dask' (backend is {options.backend!r})"
        )
    try:
        import distributed
    except ImportError:
        raise ConfigError(NEEDS_DISTRIBUTED) from None
    client = options.dask_client
    if client is None:
        raise ConfigError(
            "backend='dask' needs dask_client=: a distributed.Client, a scheduler address "
            "('tcp://host:8786') or a cluster object (LocalCluster, SLURMCluster)"
        )
    if not (isinstance(client, (str, distributed.Client)) or hasattr(client, "scheduler_address")):
        raise ConfigError(
            "dask_client must be a distributed.Client, a scheduler address or a cluster "
            f"object, not {client!r}"
        )
    for name in ("max_tasks_per_worker", "max_worker_memory"):
        if getattr(options, name) is not None:
            raise ConfigError(f"{name} is not supported with backend='dask'")


def create(setup: BackendSetup) -> DaskBackend:
    """The ``dask`` backend of a Pool (``_backends.BACKENDS``)."""
    import distributed

    from .dask_remote import LOST_WORKERS_PLUGIN, CorralPlugin, LostWorkers, Settings

    options = setup.options
    given = options.dask_client
    owns = not isinstance(given, distributed.Client)
    client = distributed.Client(given) if owns else given  # type: ignore[no-untyped-call]
    try:
        if options.workers == "auto":
            slots = sum(client.nthreads().values()) or setup.workers
        else:
            slots = setup.workers
        name = f"corral-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        init = setup.initializer
        settings = Settings(
            start_method=options.start_method or default_start_method(),
            initializer=_codec.dumps(init) if init is not None else None,
            fixtures=_fixtures(options),
            kill_grace=options.kill_grace,
            teardown_grace=options.fixture_teardown_timeout,
            measure_rss=options.max_worker_memory is not None,
        )
        client.register_plugin(LostWorkers(), name=LOST_WORKERS_PLUGIN)
        client.register_plugin(CorralPlugin(name, settings), name=name)
    except BaseException:
        if owns:
            client.close()
        raise
    return DaskBackend(client, owns, slots, name, setup)


def _fixtures(options: PoolOptions) -> bytes | None:
    if not options.fixtures:
        return None
    try:
        return _codec.dumps((options.fixtures, options.fixture_failures))
    except Exception as exc:
        raise SerializationError(f"the fixtures cannot be pickled for the workers: {exc}") from exc


@dataclass
class _Flight:
    slot: int
    future: Any  # distributed.Future
    key: str  # its Dask key
    worker: str | None = None  # the Dask worker it started on (its start event)
    started: float | None = None  # time.monotonic() when the last start event arrived
    item: int = -1  # the item it said began then


class DaskBackend:
    capabilities = DASK
    # Workers never inherit this process's memory: a corral.share is written to a segment
    # (which Dask workers on this host read; see docs/dask.md for other hosts).
    start_method: str | None = "spawn"

    def __init__(
        self, client: Any, owns_client: bool, slots: int, name: str, setup: BackendSetup
    ) -> None:
        from .dask_remote import run_call

        self.slots = slots
        self._client = client
        self._owns_client = owns_client
        self._name = name
        self._run_call = run_call
        self._blob = setup.functions.blob
        self._function = setup.functions.function
        self._wakeup = setup.wakeup
        self._pipe_r, self._pipe_w = os.pipe()
        os.set_blocking(self._pipe_r, False)
        self._inbox: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        self._flights: dict[int, _Flight] = {}  # call id → its Call in Dask
        self._running: list[int | None] = [None] * slots  # slot → its call id
        self._timed: dict[int, bool] = {}  # slot → whether its prepared Call has timeouts
        self._named: dict[int, str] = {}  # slot → the task function of its prepared Call
        self._killer = ThreadPoolExecutor(1, thread_name_prefix="corral-dask-kill")
        client.subscribe_topic(name, self._on_start)
        _lost_workers.listen(client, self._on_lost)

    # -- client threads: only record and wake the engine ------------------------------------
    def _tell(self, what: str, a: Any, b: Any = None) -> None:
        self._inbox.put((what, a, b))
        with contextlib.suppress(OSError):
            os.write(self._pipe_w, b"x")

    def _on_start(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        flight = self._flights.get(msg["start"])
        if flight is None:  # killed or lost before it started: a copy to stop
            self._tell("stray", msg["start"], msg["worker"])
            return
        flight.worker = msg["worker"]
        flight.item = msg["item"]
        flight.started = time.monotonic()

    def _on_lost(self, worker: str, began: list[str]) -> None:
        self._tell("lost", worker, began)

    # -- the contract ---------------------------------------------------------------------
    def start_worker(self, slot: int) -> int | None:
        self._running[slot] = None
        return None

    def prepare(self, slot: int, call: Call) -> Prepared:
        """The Call's bytes with the bytes of all its functions (a Call may run on any Dask
        worker and in any of its children; function pickles are small, the arguments are
        not sent twice). Items whose arguments do not pickle are rejected alone."""
        needed = {call.fn_id} if not call.star else {item[0] for item in call.items}
        call.fns = {f: self._blob(f) for f in needed}
        call.drop = []
        self._timed[slot] = call.timeouts is not None
        self._named[slot] = self._name_of(call)
        return encode_call(call)

    def _name_of(self, call: Call) -> str:
        """The task function's name, for the Dask key (the dashboard groups tasks by it)."""
        if call.star:
            return "tasks"
        try:
            name = getattr(self._function(call.fn_id), "__name__", "call")
        except LookupError:
            return "call"
        return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "call"

    def send(self, slot: int, prepared: Prepared) -> None:
        call_id, timed = _codec.call_id_of(prepared.payload), self._timed.pop(slot, False)
        key = f"corral-{self._named.pop(slot, 'call')}-{call_id}-{self._name}"
        future = self._client.submit(
            self._run_call, self._name, call_id, prepared.payload, timed,
            key=key, pure=False, retries=0,
        )  # fmt: skip
        self._flights[call_id] = _Flight(slot, future, key)
        self._running[slot] = call_id
        future.add_done_callback(lambda _f, c=call_id: self._tell("done", c))

    def forget(self, fn_id: int) -> None:
        pass  # every Call carries its functions

    def running_item(self, slot: int) -> tuple[int, int, float]:
        call_id = self._running[slot]
        flight = self._flights.get(call_id) if call_id is not None else None
        if flight is None or flight.started is None:
            return (-1 if call_id is None else call_id), -1, 0.0
        return call_id, flight.item, flight.started  # type: ignore[return-value]

    def wait(self, timeout: float | None) -> list[Event]:
        with contextlib.suppress(InterruptedError):
            select.select([self._wakeup, self._pipe_r], [], [], timeout)
        for fd in (self._wakeup, self._pipe_r):
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(fd, 65536)
        events: list[Event] = []
        done: list[tuple[int, _Flight]] = []
        while True:
            try:
                what, a, b = self._inbox.get_nowait()
            except queue.Empty:
                break
            if what == "done":
                flight = self._flights.get(a)
                if flight is not None and self._running[flight.slot] == a:
                    done.append((a, flight))
            elif what == "lost":
                self._lost(a, b, events)
            elif what == "stray":
                self._kill_remote(a, b)
        if done:
            self._answers(done, events)
        return events

    def _answers(self, done: list[tuple[int, _Flight]], events: list[Event]) -> None:
        finished = [(c, f) for c, f in done if f.future.status == "finished"]
        try:  # one round trip for all the answers at hand
            values = self._client.gather([f.future for _, f in finished]) if finished else []
        except Exception as error:  # e.g. the client lost its scheduler meanwhile
            log.warning("corral: could not fetch answers from the Dask workers: %s", error)
            finished, values = [], []
        answers = dict(zip((c for c, _ in finished), values, strict=True))
        for call_id, flight in done:
            del self._flights[call_id]
            self._running[flight.slot] = None
            slot = flight.slot
            if call_id in answers:
                events.extend(_events_of(slot, call_id, answers[call_id]))
            elif flight.future.status == "error":
                exc = flight.future.exception()
                if type(exc).__name__ == "KilledWorker":  # lost before its start was seen
                    events.append(Died(slot, None, call_id, 0 if flight.started else -1))
                else:
                    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                    text = f"{type(exc).__name__}: {exc}"
                    events.append(Message(slot, CallFailed(call_id, CALL, text, tb)))
            else:  # cancelled, not by corral: the client or the scheduler went away
                events.append(Died(slot, None, call_id, 0 if flight.started else -1))

    def _lost(self, worker: str | None, began: list[str], events: list[Event]) -> None:
        """The scheduler removed Dask worker ``worker``: the Calls that began there (claimed
        there, ``dask_remote.LostWorkers``, or said so by their start event) die with it;
        Dask would run them again elsewhere, but corral decides on retries. Died at the item
        their last start event named (0 when none arrived: it died with the worker)."""
        keys = set(began)
        for call_id, flight in list(self._flights.items()):
            if flight.key in keys or (flight.worker is not None and flight.worker == worker):
                del self._flights[call_id]
                self._running[flight.slot] = None
                flight.future.cancel()
                events.append(Died(flight.slot, None, call_id, max(flight.item, 0)))

    def dump_stack(self, slot: int) -> str | None:
        # The task's process is on another node, under a Dask worker: asking it for its
        # stacks would need a round trip through the scheduler while its deadline has passed.
        return None

    def remains(self, slot: int) -> Remains:
        return Remains(None, None, None)  # stacks and captured output stay on the node

    def kill(self, slot: int) -> None:
        call_id = self._running[slot]
        self._running[slot] = None
        flight = self._flights.pop(call_id, None) if call_id is not None else None
        if flight is None or call_id is None:
            return
        flight.future.cancel()
        self._kill_remote(call_id, flight.worker)

    def _kill_remote(self, call_id: int, worker: str | None) -> None:
        """Kill the child running ``call_id`` on ``worker`` (every worker when not known:
        the Call may be starting anywhere), on the killer thread."""
        from .dask_remote import kill_call

        workers = [worker] if worker is not None else None
        self._killer.submit(self._run_quietly, kill_call, self._name, call_id, workers)

    def _run_quietly(self, fn: Any, name: str, call_id: int, workers: list[str] | None) -> None:
        with contextlib.suppress(Exception):  # the worker is gone: so is its child
            self._client.run(fn, name, call_id, workers=workers, on_error="ignore")

    def hand_over(self, slot: int) -> None:
        """Ctrl-C: ask the child running the slot's Call for its finished part; its
        Handover comes back as the Call's answer. When the Call's start has not been heard
        yet (the start event travels through the scheduler, and may still be on its way
        while the Call runs), every Dask worker is asked: only the one running it answers.
        The engine stops the Call after ``capabilities.handover_seconds`` without one."""
        from .dask_remote import hand_over_call

        call_id = self._running[slot]
        flight = self._flights.get(call_id) if call_id is not None else None
        if call_id is not None and flight is not None:
            workers = [flight.worker] if flight.worker is not None else None
            self._killer.submit(self._run_quietly, hand_over_call, self._name, call_id, workers)
        return None

    def retire(self, slot: int) -> None:
        pass  # children belong to the Dask workers; they stop when the Pool closes

    def close(self, timeout: float) -> None:
        for flight in self._flights.values():
            flight.future.cancel()
        self._flights.clear()
        self._killer.shutdown(wait=True)
        client = self._client
        _lost_workers.ignore(client, self._on_lost)
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(self._name)
        try:  # the plugin's teardown stops this Pool's children on every Dask worker
            client.unregister_worker_plugin(self._name)
        except Exception as exc:
            log.warning("corral: could not stop the corral processes on the Dask workers: %s", exc)
        if self._owns_client:
            client.close()
        os.close(self._pipe_r)
        os.close(self._pipe_w)


class _LostWorkers:
    """Who hears of Dask workers the scheduler removes (``dask_remote.LostWorkers``), per
    client: a client has one handler per topic, and several Pools may share a client, so one
    handler tells them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Callable[[str, list[str]], None]]] = {}

    def listen(self, client: Any, fn: Callable[[str, list[str]], None]) -> None:
        from .dask_remote import LOST_WORKERS

        with self._lock:
            listeners = self._listeners.setdefault(client.id, [])
            listeners.append(fn)
            if len(listeners) == 1:
                client.subscribe_topic(LOST_WORKERS, functools.partial(self._heard, client.id))

    def ignore(self, client: Any, fn: Callable[[str, list[str]], None]) -> None:
        from .dask_remote import LOST_WORKERS

        with self._lock:
            listeners = self._listeners.get(client.id, [])
            with contextlib.suppress(ValueError):
                listeners.remove(fn)
            if listeners:
                return
            self._listeners.pop(client.id, None)
        with contextlib.suppress(Exception):  # a closed client has no subscriptions left
            client.unsubscribe_topic(LOST_WORKERS)

    def _heard(self, client_id: str, event: tuple[float, Any]) -> None:
        msg = event[1]
        with self._lock:
            listeners = list(self._listeners.get(client_id, ()))
        for fn in listeners:
            fn(str(msg.get("worker")), list(msg.get("began", ())))


_lost_workers = _LostWorkers()


def _events_of(slot: int, call_id: int, answer: tuple[Any, ...]) -> list[Event]:
    """The events a Call's answer from its Dask worker stands for (``dask_remote``)."""
    kind = answer[0]
    if kind == "answer":
        return [Message(slot, answer[1])]
    if kind == "died":
        _, exitcode, index, last_words = answer
        died = Died(slot, exitcode, call_id, index)
        return [Message(slot, last_words), died] if last_words is not None else [died]
    if kind == "undecodable":
        return [Undecodable(slot, SerializationError(answer[1]))]
    if kind == "lost":  # it began on a Dask worker since lost (``dask_remote.LostWorkers``)
        return [Died(slot, None, call_id, 0)]
    return []  # "killed": the engine killed it and no longer waits for it
