"""``Pool``: the lifetime of one engine and its workers, and the verbs that feed it.

A Pool owns an engine (``_engine``), its backend and, for worker processes, the engine thread,
through its ``Lifetime`` (``_lifetime``), which never refers back to the Pool.
It turns ``map``/``imap``/``run``/``submit`` calls into batches, waits for them on the caller's
thread, and handles Ctrl-C there. The backend is made by name through the registry
(``_backends.BACKENDS``); the Pool talks to the engine through one driver (``_drivers``): an
engine thread, or (serial backend) the caller's thread driving the engine until its batch is
done.
"""

from __future__ import annotations

import functools
import multiprocessing.process
import os
import signal
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from . import _lifecycle, _signals
from ._backends import BackendSetup
from ._backends import lookup as lookup_backend
from ._batch import Batch, CollectSink, FutureSink, Sink, StreamSink
from ._draining import draining
from ._drivers import Driver, SerialDriver, ThreadDriver
from ._engine import Engine
from ._errors import BatchError, ConfigError, CorralError, check_callable
from ._functions import FunctionTable
from ._lifetime import Lifetime
from ._needs import Plan, needs_for_items, plan, pop_item_specs
from ._options import (
    PoolOptions,
    RunOptions,
    resolve_workers,
    serial_forced,
    split_options,
    with_run_overrides,
)
from ._outcome import Outcome, result_of
from ._public import public
from ._report.progress import make_observer
from ._report.report import Report
from ._scheduler import Scheduler
from ._task import Task

FALLBACK = "serial"
"""The backend a Pool runs on when its worker processes cannot be started at all."""


@public
class Pool:
    """Warm worker processes, reused across ``map``, ``imap``, ``run`` and ``submit`` calls.

    Example::

        with corral.Pool(workers=4, timeout=60) as pool:
            first = pool.map(simulate, sweep_a)
            second = pool.map(simulate, sweep_b)   # same workers, no start-up cost

    Keyword options are those of ``corral.map``; those about a batch (``timeout``, ``retries``,
    ``errors``, ...) are defaults that each call may override.

    A Pool that is dropped without ``close()`` is closed when it is collected (what was
    submitted still runs to the end), and any pool still running at interpreter exit is
    closed then (what is left is cancelled); see ``_lifetime``.
    """

    def __init__(
        self,
        workers: int | str = "auto",
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        _n_tasks: int | None = None,
        _checked: tuple[PoolOptions, RunOptions] | None = None,
        **options: Any,
    ) -> None:
        _refuse_while_importing_main()
        # Before any worker is forked: a share born before this tick is in their memory.
        self.born = _lifecycle.tick()
        self.start_method: str | None = None  # how the workers start; None: in-process
        if _checked is not None:  # corral.map/imap/run checked them already
            self.options, self.run_options = _checked
        else:
            config = options.pop("config", None)
            if config is not None:  # corral.Settings (_config): the file under the arguments
                from ._config.apply import apply_config

                workers, options = apply_config(config, workers, options, Pool.__init__)
            pool_kw, run_kw = split_options(options)
            self.options = PoolOptions(workers=workers, **pool_kw)  # type: ignore[arg-type]
            self.run_options = RunOptions(**run_kw)
        if initializer is not None:
            check_callable(initializer, "initializer")
        self.workers = resolve_workers(self.options.workers, _n_tasks)
        # In-process only when asked for: a batch of one task (or a Pool of one worker) runs
        # in a worker process too, so a crash, an os.chdir or an os.environ change of the task
        # stays there, whatever the batch size.
        name = "serial" if serial_forced() else self.options.backend
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        init = (initializer, tuple(initargs)) if initializer is not None else None
        with _lifecycle.starting(self.born):
            self.engine = self._start(name, init)
        # The event stream (``_events``), internal API: ``pool._events.subscribe(fn)``.
        self._events = self.engine.events
        runs_here = self.engine.capabilities.runs_in_caller_thread
        # What runs (engine thread, workers, pipe) lives in the Lifetime, which never refers
        # back to this object: a Pool dropped without close() is collected and closed then.
        self._life = Lifetime(
            self.engine,
            (self._wakeup_r, self._wakeup_w),
            born=self.born,
            start_method=self.start_method,
            serial=runs_here,
        )
        self._driver: Driver = (SerialDriver if runs_here else ThreadDriver)(
            self.engine, self._life
        )
        self._driver.start()
        self._finalizer = weakref.finalize(self, self._life.close, cancel=False, wait=False)
        self._finalizer.atexit = False  # at exit, _lifecycle closes every Lifetime itself

    # -- start-up -------------------------------------------------------------------------
    def _start(
        self, name: str, initializer: tuple[Callable[..., Any], tuple[Any, ...]] | None
    ) -> Engine:
        """The engine of backend ``name`` (``_backends.BACKENDS``), its workers started."""
        factory = lookup_backend(name)
        caps = factory.capabilities
        if caps.runs_in_caller_thread:
            self.workers = 1
        self.functions = FunctionTable(pickle=not caps.shares_memory_with_coordinator)
        setup = BackendSetup(
            self.workers, self.options, self.functions, initializer, self._wakeup_r
        )
        backend = factory.create(setup)
        self.backend = name
        self.start_method = backend.start_method
        engine = Engine(backend, self.functions, self.options, self._wakeup_r)
        try:
            engine.start_workers()
        except Exception as exc:
            if name == FALLBACK:
                raise
            # Only the pool's own failure gets here: the OS refused a process (EAGAIN, ENOMEM,
            # EMFILE), a daemonic process may not have children, the fork server did not
            # answer. No user code runs while a worker is started: what a worker fails on
            # (initializer, imports, fixtures) comes back as a WorkerStartError on the tasks.
            backend.close(timeout=1.0)
            warnings.warn(
                f"corral: worker processes could not be started ({type(exc).__name__}: {exc}); "
                "running serially",
                RuntimeWarning,
                stacklevel=4,
            )
            return self._start(FALLBACK, initializer)
        return engine

    # -- talking to the engine --------------------------------------------------------------
    def _post(self, action: Callable[[], None]) -> None:
        # ``action`` must not refer to this Pool (partials of the engine's methods, not lambdas
        # over ``self``): it waits in the engine's inbox, and a Pool dropped meanwhile must be
        # collectable so that its finalizer closes it.
        self._driver.post(action)

    @property
    def _closed(self) -> bool:
        return self._life.closed

    def _check_open(self) -> None:
        if self._closed:
            raise CorralError("this Pool is closed")
        if self.engine.fatal is not None:
            raise CorralError(
                f"the corral engine failed: {self.engine.fatal!r}"
            ) from self.engine.fatal

    def _wait(self, batch: Batch) -> None:
        """Block until ``batch`` is done; on Ctrl-C cancel it and re-raise with the report."""
        self._driver.wait(batch)
        if self.engine.fatal is not None:
            raise CorralError(
                f"the corral engine failed: {self.engine.fatal!r}"
            ) from self.engine.fatal

    def _drain(self, batch: Batch, why: str) -> None:
        self._post(functools.partial(self.engine.survival.drain, batch, why))

    def _interrupted(self, batch: Batch) -> None:
        # harvest: the finished items of running chunks end ok, with their values
        self._post(functools.partial(self.engine.cancel, batch, harvest=True))
        self._driver.interrupted(batch)

    # -- batches ----------------------------------------------------------------------------
    def _batch_for_map(
        self,
        fn: Callable[..., Any],
        items: list[Any],
        options: RunOptions,
        sink: Sink,
        closed: bool = True,
        plan: Plan | None = None,
        groups: list[str | None] | None = None,
        given: Mapping[int, Outcome] | None = None,
    ) -> Batch:
        check_callable(fn, "fn")
        self.options.fixtures.check(fn)  # a parameter nobody fills fails here
        fn_id = self.functions.acquire(fn)
        batch = Batch(
            items,
            fn_ids=frozenset((fn_id,)),
            fn_id=fn_id,
            star=False,
            options=options,
            sink=sink,
            closed=closed,
            scheduler=Scheduler(plan) if plan is not None else None,
            groups=groups,
            given=given,
        )
        batch.assume_duration(self.functions.mean_seconds(fn_id))
        return batch

    def _batch_for_tasks(
        self,
        tasks: list[Task],
        options: RunOptions,
        sink: Sink,
        plan: Plan | None = None,
        given: Mapping[int, Outcome] | None = None,
    ) -> Batch:
        for task in tasks:  # a parameter nobody fills fails here, before any work
            self.options.fixtures.check(task.fn, task._kwargs, len(task.args))
        fn_ids = self.functions.acquire_all(task.fn for task in tasks)  # each pickled once
        items = [
            (fn_id, task.args, task._kwargs) for fn_id, task in zip(fn_ids, tasks, strict=False)
        ]
        groups = [t.group for t in tasks]
        return Batch(
            items,
            fn_ids=frozenset(fn_ids),
            fn_id=-1,
            star=True,
            options=options,
            sink=sink,
            keys=[t.key for t in tasks],
            timeouts=[t.timeout for t in tasks],
            retries=[t.retries for t in tasks],
            scheduler=Scheduler(plan) if plan is not None else None,
            groups=groups if any(g is not None for g in groups) else None,
            given=given,
        )

    def _run_batch(self, batch: Batch, sink: CollectSink, options: RunOptions, total: int) -> float:
        """Run a batch to completion; its wall time. On Ctrl-C, cancel it and re-raise the
        KeyboardInterrupt with the partial Report as ``.report``. On SIGTERM or SIGHUP (with
        their default disposition), clean up and end the process by the signal
        (``_signals``)."""
        self._check_open()
        started = time.time()
        with make_observer(
            options.progress, total, functools.partial(self.engine.running_now, batch), batch.groups
        ) as observer:
            batch.observer = observer
            self._post(functools.partial(self.engine.accept, batch))
            drain = functools.partial(self._drain, batch)  # survival hook: SIGUSR1, SIGTERM
            try:
                with draining(drain, options.drain_grace) as drained, _signals.terminating():
                    self._wait(batch)
            except _signals.Terminated as terminated:
                _signals.die(terminated.signum)
            except KeyboardInterrupt as interrupt:
                self._interrupted(batch)
                interrupt.report = sink.report(batch, time.time() - started, self.workers)  # type: ignore[attr-defined]
                raise
            if drained.signum == signal.SIGTERM:  # drained for its grace: now end by it
                _signals.die(drained.signum)
        return time.time() - started

    def map(self, fn: Callable[[Any], Any], iterable: Iterable[Any], **options: Any) -> list[Any]:
        """``[fn(x) for x in iterable]``, in parallel, in input order. See ``corral.map``."""
        self._check_open()
        specs = pop_item_specs(options)
        run_options = with_run_overrides(self.run_options, options)
        items = list(iterable)
        needs, groups = needs_for_items(specs, items)
        return self._map(
            fn, items, run_options, plan(range(len(items)), needs, run_options), groups
        )

    def _map(
        self,
        fn: Callable[[Any], Any],
        items: list[Any],
        run_options: RunOptions,
        plan: Plan | None,
        groups: list[str | None] | None,
        given: Mapping[int, Outcome] | None = None,
    ) -> list[Any]:
        """``map`` once its input is read and checked. ``given``: positions final already
        (an earlier run's outcomes), which end ``cached`` and are not run."""
        sink = CollectSink(len(items))
        batch = self._batch_for_map(
            fn, items, run_options, sink, plan=plan, groups=groups, given=given
        )
        wall = self._run_batch(batch, sink, run_options, len(items))
        if sink.failures and run_options.errors == "raise":
            raise BatchError(sink.report(batch, wall, self.workers), items=items)
        return sink.values

    def run(self, tasks: Iterable[Task], **options: Any) -> Report:
        """Run ``corral.Task`` objects; a Report of every outcome, in task order."""
        self._check_open()
        run_options = with_run_overrides(self.run_options, options)
        task_list = _check_tasks(tasks)
        return self._run_tasks(task_list, run_options, plan_tasks(task_list, run_options))

    def _run_tasks(
        self,
        task_list: list[Task],
        run_options: RunOptions,
        plan: Plan | None,
        given: Mapping[int, Outcome] | None = None,
    ) -> Report:
        """``run`` once its tasks are checked. ``given``: as for ``_map``."""
        sink = CollectSink(len(task_list))
        batch = self._batch_for_tasks(task_list, run_options, sink, plan, given)
        wall = self._run_batch(batch, sink, run_options, len(task_list))
        report = sink.report(batch, wall, self.workers)
        if not report.ok and run_options.errors == "raise":
            raise BatchError(report)
        return report

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; a standard ``concurrent.futures.Future``."""
        self._check_open()
        future: Future[Any] = Future()
        task = Task(fn, args, kwargs)
        batch = self._batch_for_tasks([task], self.run_options, FutureSink(future))
        self._post(functools.partial(self.engine.accept, batch))
        self._driver.submitted(batch)
        return future

    def imap(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        ordered: bool = True,
        **options: Any,
    ) -> Iterator[Any]:
        """Results as they are ready, consuming ``iterable`` lazily. See ``corral.imap``."""
        self._check_open()
        if pop_item_specs(options):
            raise ConfigError(
                "imap does not take locks=, uses=, memory=, after=, cost=, priority= or group=: "
                "use map or run, which see the whole batch"
            )
        run_options = with_run_overrides(self.run_options, options)
        sink = StreamSink()
        batch = self._batch_for_map(fn, {}, run_options, sink, closed=False)  # type: ignore[arg-type]
        return _stream(self, batch, sink, iter(iterable), ordered, run_options)

    # -- lifetime ---------------------------------------------------------------------------
    def close(self, *, cancel: bool = False, wait: bool = True) -> None:
        """Stop the workers after the submitted work is done (or cancelled, with ``cancel``)."""
        self._finalizer.detach()
        self._life.close(cancel=cancel, wait=wait)

    def terminate(self) -> None:
        """Cancel everything and stop the workers now."""
        self.close(cancel=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(cancel=exc_type is not None)

    def __repr__(self) -> str:
        kind = "serial" if self.backend == "serial" else f"{self.workers} workers"
        return f"<corral.Pool {kind}{' closed' if self._closed else ''}>"


def _refuse_while_importing_main() -> None:
    """Fail at once in a process that multiprocessing is still preparing.

    corral's own workers never import the user's main script (``_backends.process``), but a
    child process started by the user's own multiprocessing (spawn, forkserver) imports it as
    ``__mp_main__``. A script without a main guard then calls corral again in that child;
    running the batch there (serially: the child may not start processes yet) would repeat
    the whole batch once per child. Raise an error naming the fix instead.
    """
    if not getattr(multiprocessing.process.current_process(), "_inheriting", False):
        return
    raise CorralError(
        "corral was called while multiprocessing was importing the main script in a child "
        "process (as __mp_main__): the script starts its work when imported. Put that code "
        'under `if __name__ == "__main__":` (corral\'s own workers never import the main '
        "script; this child was started by other multiprocessing code)"
    )


def plan_tasks(tasks: list[Task], options: RunOptions) -> Plan | None:
    """The checked scheduling plan of ``tasks`` (None when none declares a need)."""
    keys = [pos if t.key is None else t.key for pos, t in enumerate(tasks)]
    return plan(keys, [t._needs for t in tasks], options)


def _check_tasks(tasks: Iterable[Task]) -> list[Task]:
    task_list = list(tasks)
    seen: set[Any] = set()
    for i, task in enumerate(task_list):
        if not isinstance(task, Task):
            raise ConfigError(f"run() takes corral.Task objects; item {i} is {task!r}")
        if task.key is not None:
            try:
                duplicate = task.key in seen
                seen.add(task.key)
            except TypeError:
                raise ConfigError(f"task key {task.key!r} is not hashable") from None
            if duplicate:
                raise ConfigError(f"duplicate task key {task.key!r}")
    return task_list


def _stream(
    pool: Pool,
    batch: Batch,
    sink: StreamSink,
    source: Iterator[Any],
    ordered: bool,
    options: RunOptions,
) -> Iterator[Any]:
    """The iterator behind ``imap``: keeps at most ``window`` tasks submitted but not yet
    yielded, so an endless generator streams in bounded memory."""
    chunk = options.chunksize if options.chunksize != "auto" else 64
    window = max(256, 4 * pool.workers * chunk)
    submitted = yielded = 0
    exhausted = False
    pending: dict[int, tuple[Any, Outcome | None]] = {}
    next_pos = 0

    def feed(limit: int) -> None:
        nonlocal submitted, exhausted
        items: list[Any] = []
        while not exhausted and submitted + len(items) - yielded < limit:
            try:
                items.append(next(source))
            except StopIteration:
                exhausted = True
        submitted += len(items)
        done = exhausted
        pool._post(functools.partial(pool.engine.extend, batch, items, done))

    def receive() -> tuple[int, Any, Any] | None:
        if not sink.queue.empty():
            return sink.queue.get()
        try:
            with _signals.terminating():  # only around a wait: never in the caller's code
                entry: tuple[int, Any, Any] | None = pool._driver.receive(sink.queue, batch)
                return entry
        except _signals.Terminated as terminated:
            _signals.die(terminated.signum)

    pool._post(functools.partial(pool.engine.accept, batch))
    try:
        feed(window)
        while True:
            entry = receive()
            if entry is None:
                if pool.engine.fatal is not None:  # not a normal end: the engine failed
                    raise CorralError(
                        f"the corral engine failed: {pool.engine.fatal!r}"
                    ) from pool.engine.fatal
                break
            pos, value, outcome = entry
            if not ordered:
                yielded += 1
                yield _value_or_raise(value, outcome, options)
                continue
            pending[pos] = (value, outcome)
            while next_pos in pending:
                value, outcome = pending.pop(next_pos)
                yielded += 1
                next_pos += 1
                yield _value_or_raise(value, outcome, options)
            if not exhausted and submitted - yielded < window // 2:
                feed(window)
    finally:
        if not batch.done_event.is_set():
            pool._driver.abandon(batch)


def _value_or_raise(value: Any, outcome: Outcome | None, options: RunOptions) -> Any:
    """What ``imap`` yields for one task: its value, its Failure, or (errors="raise") its error."""
    if outcome is None:
        return value
    if options.errors == "raise" and outcome.error is not None:
        raise outcome.error
    return result_of(outcome)
