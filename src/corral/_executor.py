"""``corral.Executor``: a ``concurrent.futures.Executor`` on a corral Pool.

Standard semantics (``submit``, ``map(timeout=, chunksize=)``, ``shutdown(wait=,
cancel_futures=)``, plain ``Future`` objects that work with ``wait`` and ``as_completed``),
with one difference that is the point: a worker that dies fails only its own future with
``corral.WorkerCrashed``, and the executor keeps working (no ``BrokenProcessPool``); so does
a worker that dies or raises (``SystemExit`` included) while unpickling a task or pickling
its result. Each future is set running once and completed once. An executor dropped without
``shutdown()`` shuts down when it is collected, as ``ProcessPoolExecutor`` does: submitted
work finishes, then the workers stop; interpreter exit never waits on its workers.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

from ._pool import Pool
from ._public import public


@public
class Executor(futures.Executor):
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
        if mp_context is not None:
            options["start_method"] = mp_context.get_start_method()
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or max_tasks_per_child < 1:
                raise ValueError("max_tasks_per_child must be >= 1")
            options["max_tasks_per_worker"] = max_tasks_per_child
        self._pool = Pool(
            max_workers if max_workers is not None else "auto",
            initializer=initializer,
            initargs=initargs,
            **options,
        )
        self._lock = threading.Lock()
        self._shutdown = False
        self._pending: weakref.WeakSet[futures.Future[Any]] = weakref.WeakSet()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future = self._pool.submit(fn, *args, **kwargs)
            self._pending.add(future)
            return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        **kwargs: Any,
    ) -> Iterator[Any]:
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout, **kwargs)
        chunks = _chunks(zip(*iterables, strict=False), chunksize)
        results = super().map(_ChunkRunner(fn), chunks, timeout=timeout, **kwargs)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for future in list(self._pending):
                    future.cancel()
        self._pool.close(wait=wait)


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
