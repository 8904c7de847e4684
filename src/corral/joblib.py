"""corral as a joblib backend: ``import corral.joblib`` registers the backend ``"corral"``.

    import corral.joblib
    with joblib.parallel_config(backend="corral", n_jobs=4, timeout=600, retries=1):
        scores = cross_val_score(model, X, y, n_jobs=4)

``joblib.Parallel`` (and so scikit-learn's ``n_jobs``) then runs its batches of calls on corral
worker processes. What corral adds to joblib's own process backends:

- A worker that dies (a segfault, the OOM killer, ``os._exit``) fails only the call it was
  running: ``Parallel`` raises ``corral.WorkerCrashed`` naming the joblib task (``joblib task
  3: 1 call of fit_and_score``), its exit code and signal; with ``retries=`` the task runs
  again on a fresh worker. The other workers and their tasks are not touched.
- Keyword options of ``parallel_config`` other than joblib's own go to the corral ``Pool``:
  ``timeout=`` (seconds per call: the worker running past it is killed and the call fails
  with ``corral.TaskTimeout``; joblib's batching is then one call per task), ``retries=``,
  ``retry_on=``, ``backoff=``, ``max_tasks_per_worker=``, ``max_worker_memory=``,
  ``start_method=``, ``fixtures=``, ``progress=``. A bad option is a ``ConfigError`` when
  the backend is made, before any work.
- Nested ``Parallel`` calls inside a task run sequentially in that worker (joblib's own
  process backends run them in threads): the pool already uses ``n_jobs`` processes, and a
  worker's BLAS/OpenMP thread pools are capped to its share of the CPUs, so a nested call
  cannot oversubscribe the machine.

The pool is started by the first ``Parallel`` call (``configure``) and kept for the next ones
of the same ``parallel_config`` block (its workers have imported joblib and the task's
modules already, as loky keeps its executor); it closes when the block's backend is dropped
(the Pool's finalizer), at interpreter exit, or after a failed call (``abort_everything``:
running tasks are stopped, a new pool serves the next call). ``n_jobs=1`` runs in the calling
process, as with joblib's ``loky``.

How joblib drives a backend (all in ``joblib._parallel_backends``): ``configure`` per call,
``submit`` per batch of calls with a callback that joblib runs when the batch is done (here on
the pool's engine thread, where it may submit the next batch), ``retrieve_result_callback`` to
read it, ``abort_everything`` when a batch failed, ``terminate`` at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import joblib
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

from ._calls import call
from ._options import split_options
from ._platform import cpu_count
from ._pool import Pool
from ._report.progress import make_observer

__all__ = ["NAME", "CorralBackend", "register"]

NAME = "corral"
"""The backend's name for ``joblib.parallel_config(backend=...)``."""


class CorralBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's backend protocol on a corral ``Pool``: see the module docstring."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = 1

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **options
        )
        _, run_kw = split_options(dict(options))  # a bad option fails here
        self._options = options
        self._progress = run_kw.pop("progress", None)
        self._options.pop("progress", None)
        self._one_call_per_task = run_kw.get("timeout") is not None
        self._pool: Pool | None = None
        self._parallel: Any = None
        self._numbers: Iterator[int] = itertools.count()
        self._progress_cm: contextlib.AbstractContextManager[Any] | None = None
        self._observer: Any = None
        self._lock = threading.Lock()

    # -- joblib's protocol ----------------------------------------------------------------
    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(cpu_count() + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **options: Any,
    ) -> int:
        n = self.effective_n_jobs(n_jobs)
        if n == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self._parallel = self.parallel = parallel  # joblib's AutoBatchingMixin reads .parallel
        self._numbers = itertools.count()
        pool = self._pool
        if pool is not None and (pool.workers != n or pool._closed):
            self._pool = None
            pool.close(wait=True)
        if self._pool is None:
            # ``options`` are joblib's memmapping ones (temp_folder, max_nbytes, mmap_mode...):
            # arguments travel by pickle here, so they do not apply.
            self._pool = Pool(n, **self._options)
        self._start_progress()
        return n

    def compute_batch_size(self) -> int:
        if self._one_call_per_task:  # a timeout is per call: never several in one task
            return 1
        return int(super().compute_batch_size())

    def submit(self, func: Any, callback: Callable[[Any], None] | None = None) -> Future[Any]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("the corral joblib backend is not configured (or was terminated)")
        key = _describe(func, next(self._numbers))
        future = pool._submit(call, (func,), {}, key=key)
        if self._observer is not None:
            future.add_done_callback(self._advance)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed: cancel the rest (running ones are stopped), and start afresh when
        joblib will submit more."""
        self._stop_progress()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(cancel=True, wait=True)
        if ensure_ready and self._parallel is not None:
            self.configure(n_jobs=self._parallel.n_jobs, parallel=self._parallel)

    def terminate(self) -> None:
        """The ``Parallel`` call ended. The pool stays for the next call in the same
        ``parallel_config`` block (its workers have imported what the tasks need); it is
        closed when this backend is dropped (the Pool's finalizer) or at interpreter exit."""
        self._stop_progress()
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        # Sequential in the worker: see "Nested" in the module docstring.
        nesting_level = (self.nesting_level or 0) + 1
        return SequentialBackend(nesting_level=nesting_level), None

    # -- ours -------------------------------------------------------------------------------
    def _start_progress(self) -> None:
        if not self._progress:
            return
        # the total is unknown (joblib reads its input lazily): the bar counts tasks done
        cm = make_observer(self._progress, None, list)  # type: ignore[arg-type]
        observer = cm.__enter__()
        if observer is None:
            cm.__exit__(None, None, None)
            return
        self._progress_cm, self._observer = cm, observer

    def _stop_progress(self) -> None:
        cm, self._progress_cm, self._observer = self._progress_cm, None, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def _advance(self, future: Future[Any]) -> None:
        """A joblib task ended (engine thread): one step of the bar."""
        observer = self._observer
        if observer is None or future.cancelled():
            return
        failed = future.exception() is not None
        observer.advance(int(not failed), int(failed), None)


def _describe(batch: Any, number: int) -> str:
    """``joblib task 3: 2 calls of fit_and_score``: the key in corral's errors."""
    items = getattr(batch, "items", None)
    if not items:
        return f"joblib task {number}"
    names = {_name(item[0]) for item in items}
    what = names.pop() if len(names) == 1 else "several functions"
    calls = "call" if len(items) == 1 else "calls"
    return f"joblib task {number}: {len(items)} {calls} of {what}"


def _name(fn: Any) -> str:
    fn = getattr(fn, "func", fn)  # functools.partial, sklearn's delayed wrappers
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def register() -> None:
    """Register the backend with joblib under ``"corral"`` (done on import)."""
    joblib.register_parallel_backend(NAME, CorralBackend)


register()
