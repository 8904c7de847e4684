"""``Pool``: the lifetime of one engine and its workers, and the verbs that feed it.

A Pool owns an engine (``_engine``), its backend and, for worker processes, the engine thread,
through its ``Lifetime`` (``_lifetime``), which never refers back to the Pool.
It turns ``map``/``imap``/``run`` calls into batches, waits for them on the caller's
thread, and handles Ctrl-C there; ``submit`` calls go through ``_submissions``, which gathers
them into shared batches. The backend is made by name through the registry
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
from typing import TYPE_CHECKING, Any

from . import _lifecycle, _signals
from ._backends import BackendSetup
from ._backends import lookup as lookup_backend
from ._batch import Batch, Sink
from ._draining import draining
from ._drivers import Driver, SerialDriver, ThreadDriver
from ._effects import Replay, collect_sink, replay_of, stream_sink
from ._engine import Engine
from ._errors import BatchError, ConfigError, CorralError, EffectError, check_callable
from ._functions import FunctionTable
from ._journal import calls as journal_calls
from ._journal import open_journal_for
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
from ._outcome import Outcome
from ._public import public
from ._report.progress import make_observer
from ._report.report import Report
from ._report.telemetry import WorkerLog
from ._scheduler import Scheduler
from ._sinks import CollectSink, FutureSink
from ._streaming import stream as _stream
from ._streaming import value_or_raise as _value_or_raise
from ._submissions import Submissions
from ._task import Task

if TYPE_CHECKING:
    from ._report.error_dir import CallOf, ErrorReports

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
        # The journal (``_journal``): locked and checked before any worker starts.
        self._journal = open_journal_for(self.options)
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        init = (initializer, tuple(initargs)) if initializer is not None else None
        try:
            with _lifecycle.starting(self.born):
                self.engine = self._start(name, init)
        except BaseException:
            if self._journal is not None:
                self._journal.close()
            raise
        if self._journal is not None:
            self._journal.attach(self.engine.events, self.engine)  # (stops a batch: disk full)
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
        # One task at a time (submit): gathered into shared batches (``_submissions``); the
        # serial backend runs each before submit returns, in a batch of its own.
        self._submissions = (
            None
            if runs_here
            else Submissions(self.engine, self.functions, self.run_options, self._driver.post)
        )
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
        self.workers = backend.slots  # a backend may size itself (dask: the cluster's threads)
        self.backend = name
        self.start_method = backend.start_method
        engine = Engine(backend, self.functions, self.options, self._wakeup_r)
        # Telemetry hook: the workers' lives, for each Report (_report.telemetry). Before the
        # first worker starts; rare events only, so a bulk map pays nothing per task.
        self._worker_log = WorkerLog()
        engine.events.subscribe(self._worker_log.on_event, tasks=False)
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

    def _run_batch(
        self, batch: Batch, sink: CollectSink, options: RunOptions, total: int, call_of: CallOf
    ) -> float:
        """Run a batch to completion; its wall time. On Ctrl-C, cancel it and re-raise the
        KeyboardInterrupt with the partial Report as ``.report``. On SIGTERM or SIGHUP (with
        their default disposition), clean up and end the process by the signal
        (``_signals``). With ``on_effect``, the effects are applied on this thread as tasks
        finish (``_effects``); with ``error_dir``, failures are written there (``call_of``
        names a position's function and arguments: ``_report.error_dir``)."""
        self._check_open()
        started = time.time()
        replay = replay_of(sink)
        reports = self._error_reports(batch, options, call_of)
        complete = False
        with make_observer(
            options.progress,
            total,
            functools.partial(self.engine.running_now, batch),
            batch.groups,
            events=self._events,
            batch=id(batch),
            workers=self.workers,
            interval=options.progress_interval,
        ) as observer:
            batch.observer = observer
            self._post(functools.partial(self.engine.accept, batch))
            drain = functools.partial(self._drain, batch)  # survival hook: SIGUSR1, SIGTERM
            try:
                with draining(drain, options.drain_grace) as drained, _signals.terminating():
                    if replay is not None:
                        self._follow(replay, batch)
                    self._wait(batch)
                complete = True
            except _signals.Terminated as terminated:
                _signals.die(terminated.signum)
            except KeyboardInterrupt as interrupt:
                self._interrupted(batch)
                wall = time.time() - started
                report = sink.report(batch, wall, self.workers, self._worker_log)
                interrupt.report = report  # type: ignore[attr-defined]
                raise
            except EffectError as error:
                error.report = sink.report(
                    batch, time.time() - started, self.workers, self._worker_log
                )
                raise
            finally:
                if reports is not None:
                    reports.finish(complete)
            if drained.signum == signal.SIGTERM:  # drained for its grace: now end by it
                _signals.die(drained.signum)
        return time.time() - started

    def _follow(self, replay: Replay, batch: Batch) -> None:
        """Apply effects until the batch is done; when ``on_effect`` raised, stop the batch
        (what has not finished is cancelled) and raise its EffectError."""
        replay.key_of = batch.key_of
        replay.follow(self._driver, batch)
        if replay.error is not None:
            self._post(functools.partial(self.engine.cancel, batch))
            self._wait(batch)
            raise replay.error

    def _error_reports(
        self, batch: Batch, options: RunOptions, call_of: CallOf
    ) -> ErrorReports | None:
        """The writer of ``error_dir``, subscribed before the batch is accepted (its cached
        failures are reported too)."""
        if options.error_dir is None:
            return None
        from ._report.error_dir import ErrorReports  # hashlib, pathlib: only with error_dir

        try:
            reports = ErrorReports(options.error_dir, call_of)
        except ConfigError:  # before the engine saw the batch: it will not release them
            for fn_id in batch.fn_ids:
                self.functions.release(fn_id)
            raise
        reports.subscribe(self._events, batch)
        return reports

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
        sink = collect_sink(len(items), run_options.on_effect)
        jc = journal_calls.for_map(self._journal, fn, items)  # resume: journaled → given
        batch = self._batch_for_map(
            fn, items, run_options, jc.sink(sink), plan=plan, groups=groups, given=jc.given(given)
        )
        jc.bind(batch)
        wall = self._run_batch(batch, sink, run_options, len(items), _map_call(fn))
        jc.check()
        if sink.failures and run_options.errors == "raise":
            report = jc.report(sink.report(batch, wall, self.workers, self._worker_log))
            raise BatchError(report, items=items)
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
        sink = collect_sink(len(task_list), run_options.on_effect)
        jc = journal_calls.for_tasks(self._journal, task_list)  # resume: journaled → given
        batch = self._batch_for_tasks(task_list, run_options, jc.sink(sink), plan, jc.given(given))
        jc.bind(batch)
        wall = self._run_batch(batch, sink, run_options, len(task_list), _task_call(task_list))
        jc.check()
        report = jc.report(sink.report(batch, wall, self.workers, self._worker_log))
        if not report.ok and run_options.errors == "raise":
            raise BatchError(report)
        return report

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; a standard ``concurrent.futures.Future``."""
        return self._submit(fn, args, kwargs)

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], key: Any = None
    ) -> Future[Any]:
        """``submit``, with the task's ``key`` for its errors (default: the number of submits
        before it)."""
        self._check_open()
        if self._submissions is not None:
            check_callable(fn, "fn")
            self.options.fixtures.check(fn, kwargs, len(args))
            return self._submissions.submit(fn, args, kwargs, key)
        future: Future[Any] = Future()  # serial: the task runs before submit returns
        task = Task(fn, args, kwargs, key=key)
        batch = self._batch_for_tasks([task], self.run_options, FutureSink(future))
        self._post(functools.partial(self.engine.accept, batch))
        self._driver.submitted(batch)
        return future

    def _sync_submissions(self) -> None:
        """Wait until the engine has handed out what it can of the tasks submitted so far
        (``Submissions.sync``); nothing to wait for with the serial backend."""
        if self._submissions is not None and not self._closed:
            self._submissions.sync()

    def _conform_errors(self) -> None:
        """Fail submitted tasks the way ``concurrent.futures`` does (``Executor``): see
        ``_submissions.conform``."""
        if self._submissions is not None:
            self._submissions.conform_errors()

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
        sink = stream_sink(run_options.on_effect)
        # journaled: the journaled items are held back and put back in place (resume)
        batch, source, merge = journal_calls.for_stream(
            self._journal, fn, iter(iterable), ordered,
            functools.partial(_value_or_raise, None, options=run_options), sink, replay_of(sink),
            lambda jsink: self._batch_for_map(fn, {}, run_options, jsink, closed=False),  # type: ignore[arg-type]
        )  # fmt: skip
        return merge(_stream(self, batch, sink, source, ordered, run_options, _map_call(fn)))

    # -- lifetime ---------------------------------------------------------------------------
    def close(self, *, cancel: bool = False, wait: bool = True) -> None:
        """Stop the workers after the submitted work is done (or cancelled, with ``cancel``)."""
        self._finalizer.detach()
        self._life.close(cancel=cancel, wait=wait)
        if self._journal is not None and wait:  # (wait=False: batches may still run)
            self._journal.close()

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


def _map_call(fn: Callable[..., Any]) -> CallOf:
    return lambda pos, item: (fn, (item,), {})


def _task_call(tasks: list[Task]) -> CallOf:
    return lambda pos, item: (tasks[pos].fn, tasks[pos].args, tasks[pos]._kwargs)
