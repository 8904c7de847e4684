"""``corral.map``, ``corral.imap`` and ``corral.run``: one batch on a temporary Pool.

Options are checked here, before any worker starts: an unknown option, a bad value, a
non-callable or unpicklable function are errors at the call, not failures later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._errors import ConfigError
from ._options import PoolOptions, RunOptions, split_options
from ._outcome import Report
from ._pool import Pool
from ._public import public
from ._task import Task


@public
def map(
    fn: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    workers: int | str = "auto",
    timeout: float | None = None,
    retries: int = 0,
    errors: str = "raise",
    chunksize: int | str = "auto",
    start_method: str | None = None,
    backend: str = "process",
    progress: bool | None = None,
    **options: Any,
) -> list[Any]:
    """``[fn(x) for x in iterable]`` on worker processes, in input order.

    Every task runs even when some fail. With ``errors="raise"`` (default) a
    ``corral.BatchError`` naming the failed items is raised afterwards, its ``.report``
    holding every outcome; with ``errors="return"`` failed items are ``corral.Failure``
    objects in the returned list.

    Example::

        import corral
        squares = corral.map(lambda x: x * x, range(1000), timeout=30, retries=1)
    """
    if not callable(fn):
        raise ConfigError(f"fn must be callable, not {fn!r}")
    opts = dict(
        timeout=timeout, retries=retries, errors=errors, chunksize=chunksize,
        start_method=start_method, backend=backend, progress=progress, **options,
    )  # fmt: skip
    _validate(workers, opts).fixtures.check(fn)  # issue 4: before any worker starts
    items = list(iterable)
    with Pool(workers, _n_tasks=len(items), **opts) as pool:
        return pool.map(fn, items)


@public
def imap(
    fn: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    ordered: bool = True,
    workers: int | str = "auto",
    **options: Any,
) -> Iterator[Any]:
    """Like ``map``, but an iterator: the input is consumed lazily, with a bounded number of
    tasks in flight, so an endless generator streams in bounded memory.

    ``ordered=False`` yields results as they finish. With ``errors="raise"`` the iterator
    raises a failed task's own exception when it reaches it (queued tasks are cancelled);
    with ``errors="return"`` it yields a ``corral.Failure`` in its place and goes on.
    """
    if not callable(fn):
        raise ConfigError(f"fn must be callable, not {fn!r}")
    _validate(workers, options).fixtures.check(fn)  # issue 4: before any worker starts

    def generate() -> Iterator[Any]:
        # The Pool starts at the first next(): an iterator never iterated starts nothing.
        pool = Pool(workers, **options)
        try:
            yield from pool.imap(fn, iterable, ordered=ordered)
        except BaseException:
            pool.close(cancel=True)
            raise
        finally:
            pool.close()

    return generate()


@public
def run(tasks: Iterable[Task], *, workers: int | str = "auto", **options: Any) -> Report:
    """Run ``corral.Task`` objects and return a ``corral.Report`` (outcomes in task order).

    With ``errors="raise"`` (default) a ``BatchError`` is raised after the batch if any task
    failed; its ``.report`` is the Report.
    """
    _validate(workers, options)
    task_list = list(tasks)
    with Pool(workers, _n_tasks=len(task_list), **options) as pool:
        return pool.run(task_list)


def _validate(workers: Any, options: dict[str, Any]) -> PoolOptions:
    """Every option checked before the input is read or a process started."""
    pool_kw, run_kw = split_options(options)
    pool_options = PoolOptions(workers=workers, **pool_kw)
    RunOptions(**run_kw)
    return pool_options
