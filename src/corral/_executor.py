"""``corral.Executor``: a ``concurrent.futures.Executor`` on a corral Pool.

It behaves as ``ProcessPoolExecutor`` documents (Python 3.14's, ``map(buffersize=)`` and
``terminate_workers()``/``kill_workers()`` included), on every supported Python: plain
``Future`` objects that work with ``wait`` and ``as_completed``; an exception raised by a task
is re-raised with its own type and args, its ``__cause__`` a
``concurrent.futures.process._RemoteTraceback`` holding the worker's traceback; an argument
that cannot be pickled fails its future with the exception pickling raised (the task named in
a note); ``shutdown(cancel_futures=True)`` lets the calls already handed to workers finish;
an executor dropped without ``shutdown()`` finishes its submitted work when it is collected;
``submit`` after ``shutdown()`` or after interpreter exit began raises ``RuntimeError``.

The deliberate differences (``docs/executor.md``) are the point of it: a worker that dies
fails only its own future with ``corral.WorkerCrashed`` and the executor keeps working (no
``BrokenProcessPool``); a failing initializer fails the futures with
``corral.WorkerStartError``, with the initializer's traceback, instead of breaking the
pool (``submit`` keeps working, and its futures fail the same way); at
interpreter exit, work still queued or running is cancelled and its workers stopped (exit
never waits on a task that may never end).
"""

from __future__ import annotations

import collections
import inspect
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

from ._pool import Pool
from ._public import public


@public
class Executor(futures.Executor):
    """A ``concurrent.futures`` executor on corral workers. ``options``: those of
    ``corral.Pool`` (``timeout=``, ``retries=``, ``fixtures=``...)."""

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        **options: Any,
    ) -> None:
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers <= 0):
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if mp_context is not None:
            options["start_method"] = mp_context.get_start_method()
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or max_tasks_per_child < 1:
                raise ValueError("max_tasks_per_child must be >= 1")
            if options.get("start_method") == "fork":
                raise ValueError(
                    "max_tasks_per_child is incompatible with the 'fork' multiprocessing "
                    "start method; supply a different mp_context."
                )
            options["max_tasks_per_worker"] = max_tasks_per_child
        self._pool = Pool(
            max_workers if max_workers is not None else "auto",
            initializer=initializer,
            initargs=initargs,
            **options,
        )
        self._max_workers = self._pool.workers
        # concurrent.futures' conventions for the futures' errors (``_conform``)
        self._pool._conform_errors()
        self._lock = threading.Lock()
        self._shutdown = False
        # In submission order, weakly: a future the caller dropped is not kept alive here.
        self._pending: weakref.WeakValueDictionary[int, futures.Future[Any]] = (
            weakref.WeakValueDictionary()
        )
        self._numbers = itertools.count()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool._closed:  # closed by the interpreter's exit
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            future = self._pool._submit(fn, args, kwargs)
            self._pending[next(self._numbers)] = future
            return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """As ``ProcessPoolExecutor.map`` (3.14): results in order; ``chunksize`` calls per
        task; with ``buffersize``, at most that many tasks submitted ahead of the results
        read (the input is read lazily), else every task is submitted now."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        args: Iterator[tuple[Any, ...]] = zip(*iterables)  # noqa: B905 (stops at the shortest)
        if chunksize == 1:
            return _map(self, fn, args, timeout, buffersize)
        chunks = ((chunk,) for chunk in _chunks(args, chunksize))
        return itertools.chain.from_iterable(
            _map(self, _ChunkRunner(fn), chunks, timeout, buffersize)
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
        if cancel_futures:  # not under the lock: a done callback may submit meanwhile
            self._cancel_pending()
        self._pool.close(wait=wait)

    def _cancel_pending(self) -> None:
        """Cancel the futures no worker has started. First let the engine take what was
        just submitted and hand out what it can (``ProcessPoolExecutor`` moves calls to its
        workers' queue as they are submitted): right after many submits, the first ones
        still run, the rest are cancelled."""
        self._pool._sync_submissions()
        for future in list(self._pending.values()):
            future.cancel()  # no effect on a running or finished one

    def terminate_workers(self) -> None:
        """Stop the workers now (3.14): cancel what waits, stop what runs (its future fails
        with ``corral.TaskCancelled``), and shut down. corral stops a worker's whole process
        group: SIGTERM, then SIGKILL after the pool's ``kill_grace``."""
        self._force_shutdown()

    def kill_workers(self) -> None:
        """As ``terminate_workers`` (3.14's SIGKILL variant; corral's stop already ends in
        SIGKILL for a worker that does not exit on SIGTERM)."""
        self._force_shutdown()

    def _force_shutdown(self) -> None:
        with self._lock:
            self._shutdown = True
            for future in list(self._pending.values()):
                future.cancel()
        self._pool.close(cancel=True, wait=False)


def _map(
    executor: Executor,
    fn: Callable[..., Any],
    args: Iterator[tuple[Any, ...]],
    timeout: float | None,
    buffersize: int | None,
) -> Iterator[Any]:
    """Submit (all now, or ``buffersize`` ahead) and return the iterator of results."""
    end = None if timeout is None else time.monotonic() + timeout
    if buffersize is None:
        fs = collections.deque(executor.submit(fn, *a) for a in args)
        source = None
    else:
        fs = collections.deque(executor.submit(fn, *a) for a in itertools.islice(args, buffersize))
        source = args
    return _results(weakref.ref(executor), fn, fs, source, end)


def _results(
    executor_ref: Callable[[], Executor | None],
    fn: Callable[..., Any],
    fs: collections.deque[futures.Future[Any]],
    source: Iterator[tuple[Any, ...]] | None,
    end: float | None,
) -> Iterator[Any]:
    """Yield each result in order; refill from ``source`` (buffersize) before waiting on one.
    Holds the executor weakly, as concurrent.futures does: a dropped executor is collected
    and the rest of the input is not submitted. What is left is cancelled when the iterator
    is closed or fails."""
    try:
        while fs:
            if source is not None:
                executor = executor_ref()
                a = next(source, None) if executor is not None else None
                if executor is not None and a is not None:
                    fs.append(executor.submit(fn, *a))
                del executor
            # yielded straight away: a local would keep the value alive while suspended
            yield _result_or_cancel(fs.popleft(), None if end is None else end - time.monotonic())
    finally:
        for future in fs:
            future.cancel()


def _result_or_cancel(future: futures.Future[Any], timeout: float | None) -> Any:
    """Its result; cancelled when that fails (a timeout: it will not be read)."""
    try:
        return future.result(timeout)
    finally:
        future.cancel()


def _chunks(items: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


class _ChunkRunner:
    """Runs ``fn`` over a chunk of argument tuples in one task.

    Its signature shows ``fn``'s keyword-only parameters, so that fixtures (``fixtures=``)
    are checked and given to it as they would be to ``fn``, and passed on to every call.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    @property
    def __signature__(self) -> inspect.Signature:
        chunk = inspect.Parameter("chunk", inspect.Parameter.POSITIONAL_ONLY)
        try:
            params = inspect.signature(self.fn).parameters.values()
        except (TypeError, ValueError):
            return inspect.Signature([chunk])
        keyword = [p for p in params if p.kind is p.KEYWORD_ONLY]
        return inspect.Signature([chunk, *keyword])

    def __call__(self, chunk: list[tuple[Any, ...]], **fixtures: Any) -> list[Any]:
        fn = self.fn
        return [fn(*args, **fixtures) for args in chunk]
