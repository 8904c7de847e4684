"""The process backend: starts, feeds, watches and kills the local worker processes.

    engine thread (coordinator process)                      worker process k (_worker.loop)
    ───────────────────────────────────                      ──────────────────────────
    prepare(k, Call) → bytes (+ fns k lacks, drop)
    send(k, bytes) ═══ conn k (duplex pipe) ═══════════════► recv → execute → send
    wait() → Message ◄═ conn k (decoded here) ═════════════ Result / CallFailed / InitFailed
    wait() → Died ◄──── sentinel k (fd, readable at exit) ── process exit
    lifeline k (write end, never written) ─────────────────► EOF if the coordinator dies
    running_item(k) ◄── stamp k (4 shared doubles) ───────── [item index, start, call id,
                                                               items begun]
    hand_over(k) ────── SIGUSR1 to the worker alone ───────► Handover on conn k (_worker.handover)

Only the engine thread calls into this object (``running_item`` also from the progress
thread: it reads the stamp). The engine hands ``prepare`` a Call that names its functions by
id; this backend decides which bytes go with it. It keeps, per worker, the functions whose bytes
that worker holds (``fn_ids``) and those it may forget (``drop``, from ``forget``); a Call
carries the bytes of the functions its worker lacks (``fns``) and the drops due. When a worker
says it could not load a Call's functions (a CallFailed at the function or arguments edge), the
functions that Call carried are taken back from its record (``_shipped``), so the next Call
carries them again. A restarted worker starts with an empty record.

A worker that is killed (timeout, cancel) or
retired (recycling) leaves its slot at once and waits in the graveyard, where ``wait`` reaps
it and escalates SIGTERM to SIGKILL after the grace period; its slot gets a fresh process
immediately, so the pool never runs short while a stubborn process dies.

Workers never run the user's main script. Under spawn and forkserver, multiprocessing tells
each new process to re-import ``__main__`` (as ``__mp_main__``) so that pickles naming
``__main__`` resolve there; a script without ``if __name__ == "__main__":`` would then run its
whole batch again inside every worker. corral does not need it: cloudpickle sends functions
and classes of ``__main__`` by value. So workers are started without the main-module entries of
multiprocessing's preparation data (``_forkserver.without_main``), and the fork server is told
to preload corral only, never ``__main__``. The fork server may have been started before the
pool (``_forkserver.start_early``): a worker it forks is sent the coordinator's environment.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from .. import _codec
from .._errors import SerializationError
from .._forkserver import PRELOAD, without_main
from .._forwarding import logger_levels
from .._messages import (
    ARGUMENTS,
    FUNCTION,
    STAMP_SIZE,
    STOP,
    TEARDOWN,
    Call,
    CallFailed,
    Handover,
    Result,
)
from .._platform import (
    WORKER_ENV,
    children_of,
    cpu_count,
    default_start_method,
    descendants,
    kill_group,
    kill_marked,
    signal_processes,
    signal_tree,
    worker_mark,
)
from .._record import Record
from .._worker import loop as worker_loop
from .._worker.handover import HANDOVER_SIGNAL
from .contract import PROCESS, BackendSetup, Died, Event, Message, Prepared, Remains, Undecodable
from .inbox import Inbox
from .outbox import Outbox
from .remains import WorkerFiles

if TYPE_CHECKING:
    from .._options import PoolOptions

log = logging.getLogger("corral")

RETIRE_GRACE = 10.0
"""How long a retired (recycled) worker may take to exit on its own before it is killed; a
worker with fixtures to tear down has the pool's ``fixture_teardown_timeout`` instead."""


class _Worker(Record):
    """One worker process and the coordinator's side of its pipe. ``stamp``: a ctypes array
    of 3 doubles in shared memory: index, start, call id. ``mark``: ``_platform.worker_mark``,
    read at start (under forkserver a dead worker is reaped by the fork server, so nothing of
    it is left to read by the time we learn of it). ``fn_ids``: functions whose bytes it holds;
    ``drop``: functions it may forget (the next Call says). ``shipped``: (call_id, fns, drop)
    carried by sent Calls that carried any, oldest first: taken back if the worker could not
    load them, forgotten once the Call is answered. ``inbox``: what it sent, read many at a
    time, made on first read; ``outbox``: Calls not yet written, and those written and not
    yet answered (call id, bytes counted)."""

    __slots__ = ("process", "conn", "lifeline", "stamp", "mark", "fn_ids", "drop",  # noqa: RUF023
                 "shipped", "inbox", "outbox")  # fmt: skip

    def __init__(
        self,
        process: Any,  # multiprocessing.process.BaseProcess
        conn: Connection,
        lifeline: Connection,
        stamp: Any,
        mark: str = "",
        fn_ids: set[int] | None = None,
        drop: list[int] | None = None,
        shipped: deque[tuple[int, frozenset[int], list[int]]] | None = None,
        inbox: Inbox | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.process = process
        self.conn = conn
        self.lifeline = lifeline
        self.stamp = stamp
        self.mark = mark
        self.fn_ids: set[int] = set() if fn_ids is None else fn_ids
        self.drop: list[int] = [] if drop is None else drop
        self.shipped: deque[tuple[int, frozenset[int], list[int]]] = shipped or deque()
        self.inbox = inbox
        self.outbox: Outbox = Outbox() if outbox is None else outbox


class _Dying(Record):
    """A worker on its way out. ``stopped_at``: retired: when it was told to stop
    (monotonic). Killed (not retired): ``escaped``, what its tasks started outside its group,
    found while it lived, and its ``mark``, to find what they started after that (see
    ``_platform``)."""

    __slots__ = ("worker", "kill_at", "killed", "stopped_at", "escaped", "mark")  # noqa: RUF023

    def __init__(
        self,
        worker: _Worker,
        kill_at: float,
        killed: bool = False,
        stopped_at: float | None = None,
        escaped: list[Any] | None = None,
        mark: str = "",
    ) -> None:
        self.worker = worker
        self.kill_at = kill_at
        self.killed = killed
        self.stopped_at = stopped_at
        self.escaped = escaped
        self.mark = mark


def create(setup: BackendSetup) -> ProcessBackend:
    """The ``process`` backend of a Pool (``_backends.BACKENDS``)."""
    options = setup.options
    init = setup.initializer
    return ProcessBackend(
        setup.workers,
        setup.functions.blob,
        start_method=options.start_method or default_start_method(),
        threads=max(1, cpu_count() // setup.workers),
        initializer=_codec.dumps(init) if init is not None else None,
        measure_rss=options.max_worker_memory is not None,
        kill_grace=options.kill_grace,
        wakeup=setup.wakeup,
        fixtures=_worker_fixtures(options),
        teardown_grace=options.fixture_teardown_timeout,
        telemetry=options.telemetry,
        capture_output=options.capture_output,
        output_limit=int(options.output_limit),
        forward_logging=options.forward_logging,
    )


def _worker_fixtures(options: PoolOptions) -> bytes | None:
    """The pool's fixtures for its worker processes, pickled once, or None."""
    if not options.fixtures:
        return None
    try:
        return _codec.dumps((options.fixtures, options.fixture_failures))
    except Exception as exc:
        raise SerializationError(f"the fixtures cannot be pickled for the workers: {exc}") from exc


class ProcessBackend:
    capabilities = PROCESS

    def __init__(
        self,
        slots: int,
        blob: Callable[[int], bytes],
        *,
        start_method: str,
        threads: int,
        initializer: bytes | None,
        kill_grace: float,
        wakeup: int,
        measure_rss: bool = False,
        fixtures: bytes | None = None,
        teardown_grace: float = RETIRE_GRACE,
        telemetry: bool = True,
        capture_output: bool = False,
        output_limit: int = 1 << 20,
        forward_logging: bool = True,
    ) -> None:
        self.slots = slots
        self._telemetry = telemetry
        # the files workers write for us: stacks, captured output (_backends.remains)
        self._files = WorkerFiles(slots, capture_output, output_limit)
        self._forward_logging = forward_logging
        self.start_method: str | None = start_method
        self._blob = blob  # a function's bytes, by id (the Pool's FunctionTable)
        self._fixtures = fixtures  # pickled (FixtureSet, fixture_failures), or None
        # how long a retired worker may take to exit: tearing fixtures down, or just exiting
        self._retire_grace = teardown_grace if fixtures is not None else RETIRE_GRACE
        self._ctx: Any = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # The fork server then imports corral once (and names itself); each worker forks
            # with it loaded. Never "__main__": the server would run the user's script.
            self._ctx.set_forkserver_preload(PRELOAD)
        self._fork = start_method == "fork"
        self._threads = threads
        self._measure_rss = measure_rss
        self._initializer = initializer
        self._grace = kill_grace
        self._wakeup = wakeup
        self._workers: list[_Worker | None] = [None] * slots
        self._graveyard: list[_Dying] = []

    # -- starting -------------------------------------------------------------------------
    def start_worker(self, slot: int) -> int | None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        lifeline_r, lifeline_w = self._ctx.Pipe(duplex=False)
        stamp = self._ctx.RawArray("d", STAMP_SIZE)
        stamp[0] = stamp[2] = -1.0
        process = self._ctx.Process(
            target=worker_loop.main,
            args=(
                child_conn,
                lifeline_r,
                stamp,
                self._threads,
                self._initializer,
                self._measure_rss,
            ),
            kwargs={
                "close_fds": self._inherited_fds(parent_conn, lifeline_w),
                "fixtures": self._fixtures,
                "title": f"corral worker {slot} [pool {os.getpid()}]",
                "telemetry": self._telemetry,
                # levels read now: a worker started later (recycled) gets the levels of then
                "observe": self._files.for_new_worker(
                    slot, logger_levels() if self._forward_logging else None
                ),
                # the server's environment is that of when it started (perhaps before the pool:
                # _forkserver.start_early); a forked or spawned worker inherits this one anyway
                "environ": dict(os.environ) if self.start_method == "forkserver" else None,
            },
            name=f"corral-worker-{slot}",
        )
        try:
            with without_main():
                process.start()
        finally:
            child_conn.close()
            lifeline_r.close()
        self._workers[slot] = _Worker(process, parent_conn, lifeline_w, stamp)
        self._marked(slot)
        pid: int | None = process.pid
        return pid

    def _marked(self, slot: int) -> None:
        worker = self._workers[slot]
        if worker is not None:
            worker.mark = worker_mark(worker.process.pid)

    def _inherited_fds(self, *own: Connection) -> list[int]:
        """Under fork, the child inherits the coordinator's ends of every pipe; it must close
        them, or its own lifeline would never report EOF."""
        if not self._fork:
            return []
        fds = [self._wakeup]
        for conn in own:
            fds.append(conn.fileno())
        for w in self._workers:
            if w is not None:
                fds += [w.conn.fileno(), w.lifeline.fileno()]
        return fds

    # -- feeding and watching -------------------------------------------------------------
    def prepare(self, slot: int, call: Call) -> Prepared:
        """The Call's bytes for the slot's worker, with the bytes of the functions it lacks
        and the drops due. Items whose arguments do not pickle are rejected alone, the rest
        go; if the rest do not pickle either, all are rejected (``failed``). Pickling runs the
        arguments' own code, which may raise anything: SystemExit too."""
        worker = self._workers[slot]
        assert worker is not None
        if not call.star and call.fn_id in worker.fn_ids and not worker.drop:
            return encode_call(call)  # the common case: nothing to ship, nothing to drop
        needed = {call.fn_id} if not call.star else {item[0] for item in call.items}
        fresh = needed - worker.fn_ids
        call.fns = {f: self._blob(f) for f in fresh} if fresh else {}
        call.drop = worker.drop
        prepared = encode_call(call)
        if prepared.payload is None:
            return prepared
        if prepared.argument_bytes is not None:  # the arguments alone, not the functions
            prepared.argument_bytes -= sum(len(b) for b in call.fns.values())
        worker.fn_ids |= needed
        if fresh or worker.drop:
            worker.shipped.append((call.call_id, frozenset(fresh), worker.drop))
            worker.drop = []
        return prepared

    def send(self, slot: int, prepared: Prepared) -> None:
        """Queue the Call for the worker; ``wait`` writes it, with the others queued in the
        same step, in one write, as far as the pipe takes them without blocking (``outbox``)."""
        worker = self._workers[slot]
        assert worker is not None and prepared.payload is not None
        worker.outbox.put(prepared.payload)

    def _flush(self) -> None:
        for worker in self._workers:
            if worker is not None and worker.outbox.waiting:
                # A worker that died a moment ago: its sentinel reports the death on this wait.
                with contextlib.suppress(OSError):
                    worker.outbox.flush(worker.conn)

    def forget(self, fn_id: int) -> None:
        for worker in self._workers:
            if worker is not None and fn_id in worker.fn_ids:
                worker.fn_ids.discard(fn_id)
                worker.drop.append(fn_id)

    def _answered(self, worker: _Worker, message: Any) -> None:
        """A Result or CallFailed arrived: forget the record of the Calls it answers; a
        worker that could not load a Call's functions does not hold them."""
        if not isinstance(message, (Result, CallFailed)):
            return
        worker.outbox.answered(message.call_id)
        shipped = worker.shipped
        if not shipped:
            return
        while shipped and shipped[0][0] < message.call_id:
            shipped.popleft()
        if shipped and shipped[0][0] == message.call_id:
            _, fns, drop = shipped.popleft()
            if isinstance(message, CallFailed) and message.edge in (ARGUMENTS, FUNCTION):
                worker.fn_ids -= fns
                if message.edge == ARGUMENTS:
                    worker.drop.extend(drop)

    def running_item(self, slot: int) -> tuple[int, int, float]:
        worker = self._workers[slot]
        if worker is None:
            return -1, -1, 0.0
        stamp = worker.stamp
        return int(stamp[2]), int(stamp[0]), float(stamp[1])

    def wait(self, timeout: float | None) -> list[Event]:
        self._flush()
        watched: dict[Any, tuple[str, int]] = {self._wakeup: ("wakeup", -1)}
        for slot, w in enumerate(self._workers):
            if w is not None:
                watched[w.conn] = ("conn", slot)
                watched[w.process.sentinel] = ("sentinel", slot)
        for i, dying in enumerate(self._graveyard):
            watched[dying.worker.process.sentinel] = ("grave", i)
        timeout = self._graveyard_timeout(timeout)
        events: list[Event] = []
        dead: set[int] = set()
        for obj in wait(list(watched), timeout):
            kind, slot = watched[obj]
            if kind == "wakeup":
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wakeup, 65536)
            elif kind == "conn":
                self._read(slot, events)
            elif kind == "sentinel":
                dead.add(slot)
        for slot in sorted(dead):
            self._read(slot, events)  # what it sent before dying comes first
            worker = self._workers[slot]
            if worker is not None:
                index, call_id = int(worker.stamp[0]), int(worker.stamp[2])
                begun = int(worker.stamp[3])
                self._workers[slot] = None
                # It died on its own (a crash): its tree is gone, its mark finds the rest.
                exitcode = self._reap(worker, mark=worker.mark)
                events.append(Died(slot, exitcode, call_id, index, begun))
        self._tend_graveyard()
        return events

    def _read(self, slot: int, events: list[Event]) -> None:
        worker = self._workers[slot]
        if worker is None:
            return
        if worker.inbox is None:
            worker.inbox = Inbox(worker.conn.fileno())
        try:
            received, _ = worker.inbox.read()  # (an ended pipe: the sentinel reports the death)
        except OSError:
            received = []
        for data in received:
            try:
                message = _codec.loads(data)
            except BaseException as exc:  # a result's own code (__setstate__) may raise
                worker.outbox.answered(None)  # the engine takes it as the running Call's
                events.append(Undecodable(slot, exc))
                continue
            self._answered(worker, message)
            events.append(Message(slot, message))
        if worker.outbox.waiting:  # answers make room in the pipe: the next Calls go now
            with contextlib.suppress(OSError):
                worker.outbox.flush(worker.conn)

    def hand_over(self, slot: int) -> Handover | None:
        worker = self._workers[slot]
        if worker is not None and worker.process.pid is not None:
            # A worker that died a moment ago: its sentinel reports the death on the next wait.
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, HANDOVER_SIGNAL)
        return None

    def dump_stack(self, slot: int) -> str | None:
        worker = self._workers[slot]
        return self._files.dump_stack(slot, worker.process.pid if worker is not None else None)

    def remains(self, slot: int) -> Remains:
        return self._files.remains(slot)

    # -- stopping -------------------------------------------------------------------------
    def kill(self, slot: int) -> None:
        """Timeout or cancel: SIGTERM to the worker's group and to what its tasks started in
        other sessions (found now, while the worker, a subreaper, still holds them all in its
        tree); SIGKILL to all of them after the grace period (``_tend_graveyard``)."""
        worker = self._workers[slot]
        if worker is None:
            return
        self._workers[slot] = None
        pid = worker.process.pid
        escaped = _escaped(pid)
        signal_tree(pid, signal.SIGTERM)
        signal_processes(escaped, signal.SIGTERM)
        self._graveyard.append(_Dying(worker, time.monotonic() + self._grace, escaped=escaped,
                                      mark=worker.mark))  # fmt: skip

    def retire(self, slot: int) -> None:
        worker = self._workers[slot]
        if worker is None:
            return
        self._workers[slot] = None
        # Retired with no Call (``_crew``): nothing waits in its outbox.
        with contextlib.suppress(OSError):
            worker.conn.send_bytes(STOP)
        now = time.monotonic()
        self._graveyard.append(_Dying(worker, now + self._retire_grace, stopped_at=now))

    def close(self, timeout: float) -> None:
        if self._fixtures is not None:  # retiring workers tear their fixtures down
            timeout = max(timeout, self._retire_grace)
        for slot in range(self.slots):
            self.retire(slot)
        deadline = time.monotonic() + timeout
        for dying in self._graveyard:
            dying.kill_at = min(dying.kill_at, deadline)
        while self._graveyard:
            self.wait(None)
        self._files.close()

    def _graveyard_timeout(self, timeout: float | None) -> float | None:
        pending = [d.kill_at for d in self._graveyard if not d.killed]
        if not pending:
            return timeout
        until = max(0.0, min(pending) - time.monotonic())
        return until if timeout is None else min(timeout, until)

    def _tend_graveyard(self) -> None:
        now = time.monotonic()
        alive = []
        for dying in self._graveyard:
            process = dying.worker.process
            if process.exitcode is not None or not process.is_alive():
                self._reap(dying.worker, escaped=dying.escaped, mark=dying.mark)
                continue
            if not dying.killed and now >= dying.kill_at:
                if dying.escaped is not None:  # killed, not retired: and all it started
                    dying.escaped += _escaped(process.pid)
                    signal_processes(dying.escaped, signal.SIGKILL)
                signal_tree(process.pid, signal.SIGKILL)
                dying.killed = True
                if dying.stopped_at is not None:
                    _log_overrun(dying.worker, dying.kill_at - dying.stopped_at)
            alive.append(dying)
        self._graveyard = alive

    def _reap(
        self, worker: _Worker, *, escaped: list[Any] | None = None, mark: str = ""
    ) -> int | None:
        """Join a dead (or dying) worker; then kill what its tasks started: its group, the
        ``escaped`` processes found while it lived, and, given its ``mark``, every process
        that carries it (a crashed or killed worker; a retired one has no mark to pass)."""
        process = worker.process
        process.join(timeout=5)
        if process.exitcode is None:  # pragma: no cover - join gave up on an unkillable process
            signal_tree(process.pid, signal.SIGKILL)
            process.join()
        # The group may outlive its leader: what the task started (a subprocess) is still in it.
        kill_group(process.pid, signal.SIGKILL)
        if escaped:
            signal_processes(escaped, signal.SIGKILL)
        if mark:
            kill_marked(WORKER_ENV, mark, signal.SIGKILL)
        exitcode: int | None = process.exitcode
        for conn in (worker.conn, worker.lifeline):
            conn.close()
        with contextlib.suppress(ValueError):
            process.close()
        return exitcode


def _log_overrun(worker: _Worker, grace: float) -> None:
    """A retired worker was killed for not exiting within ``grace`` seconds: say which
    fixture's teardown it was stuck on (the last one it announced), or that it hung on its
    way out."""
    fixture = ""
    with contextlib.suppress(EOFError, OSError):
        while worker.conn.poll():
            data = worker.conn.recv_bytes()
            if data.startswith(TEARDOWN):
                fixture = data[len(TEARDOWN) :].decode(errors="replace")
    if fixture:
        log.warning(
            "corral: worker pid %s did not finish tearing down fixture %r within %g s "
            "(fixture_teardown_timeout); the worker was killed",
            worker.process.pid, fixture, grace,
        )  # fmt: skip
    else:
        log.warning(
            "corral: worker pid %s did not exit within %g s of being stopped; it was killed",
            worker.process.pid, grace,
        )  # fmt: skip


def _escaped(pid: int) -> list[Any]:
    """What the worker ``pid`` started outside its own process group (other sessions,
    daemons), Services excepted. The walk reads the whole process table, so it is skipped
    when every child is in the worker's group and childless (the watchdog, plain
    subprocesses): the group kill reaches those."""
    if all(_in_group(child, pid) and not children_of(child) for child in children_of(pid)):
        return []
    found = []
    for proc in descendants(pid):
        with contextlib.suppress(Exception):  # gone meanwhile: nothing to kill
            if os.getpgid(proc.pid) != pid:
                found.append(proc)
    return found


def _in_group(pid: int, group: int) -> bool:
    try:
        return os.getpgid(pid) == group
    except OSError:
        return True  # gone: nothing to find under it


def encode_call(call: Call) -> Prepared:
    """``call`` as bytes, without the items that cannot be pickled (``rejected``; the Call's
    items and timeouts lose them), or nothing when no item is left or the rest still fails
    (the function's bytes or the whole Call: ``failed``). ``argument_bytes``: the bytes'
    length when nothing was dropped (a Call that needed a second try is not measured: it was
    warned about on the first)."""
    rejected: dict[int, BaseException] = {}
    try:
        data = _codec.dumps_call(call)
    except BaseException:
        rejected.update(_codec.unpicklable(call.items))
        keep = [i for i in range(len(call.items)) if i not in rejected]
        call.items = [call.items[i] for i in keep]
        if call.timeouts is not None:
            call.timeouts = [call.timeouts[i] for i in keep]
        if not keep:
            return Prepared(None, rejected)
        try:
            data = _codec.dumps_call(call)
        except BaseException as exc:
            return Prepared(None, rejected, failed=exc)
        return Prepared(data, rejected)
    return Prepared(data, rejected, argument_bytes=len(data))
