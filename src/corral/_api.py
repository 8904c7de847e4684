"""``corral.map``, ``corral.imap`` and ``corral.run``: one batch on a temporary Pool.

Options are checked here, before any worker starts: an unknown option, a bad value, a
non-callable or unpicklable function are errors at the call, not failures later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._errors import ConfigError, check_callable
from ._needs import check_item_specs, needs_for_items, plan, pop_item_specs
from ._options import PoolOptions, RunOptions, split_options
from ._pool import Pool, _check_tasks, plan_tasks
from ._public import public
from ._report.report import Report
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

    Per-item scheduling (see ``corral.Task``): ``locks=``, ``uses=``, ``memory=``, ``after=``
    (input positions), ``cost=``, ``priority=`` and ``group=``, each a callable of the item or
    a constant; with ``resources=`` and ``memory_budget=`` for the run.

    What the run tells (``docs/observability.md``): the tasks' log records reach your loggers
    (``forward_logging=True``); ``capture_output=True`` keeps each task's stdout/stderr in its
    Outcome (the last ``output_limit`` bytes, default ``"1MiB"``); ``progress=None`` shows a
    live display on a terminal or in Jupyter, else a plain line every ``progress_interval``
    seconds (default 30).

    Example::

        import corral
        squares = corral.map(lambda x: x * x, range(1000), timeout=30, retries=1)
        means = corral.map(reduce_file, files, locks=lambda f: [f], memory="2GiB")
    """
    check_callable(fn, "fn")
    specs = pop_item_specs(options)
    check_item_specs(specs)
    config = options.pop("config", None)
    opts = dict(
        timeout=timeout, retries=retries, errors=errors, chunksize=chunksize,
        start_method=start_method, backend=backend, progress=progress, **options,
    )  # fmt: skip
    if config is not None:  # corral.Settings (_config): the file under the arguments
        from ._config.apply import apply_config  # pydantic and yaml: only when asked for

        workers, opts = apply_config(config, workers, opts, map)
    checked_options = _validate(workers, opts, fn)
    items = list(iterable)
    needs, groups = needs_for_items(specs, items)
    checked = plan(range(len(items)), needs, checked_options[1])
    with Pool(workers, _n_tasks=len(items), _checked=checked_options) as pool:
        return pool._map(fn, items, pool.run_options, checked, groups)


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
    tasks in flight, so an endless generator streams in bounded memory: 512 items at first,
    then (``chunksize="auto"``, once tasks are timed) enough for four full chunks per worker,
    at most 65,536 items and 32 MiB of pickled arguments.

    ``ordered=False`` yields results as they finish. With ``errors="raise"`` the iterator
    raises a failed task's own exception when it reaches it (queued tasks are cancelled);
    with ``errors="return"`` it yields a ``corral.Failure`` in its place and goes on.
    """
    check_callable(fn, "fn")
    if pop_item_specs(options):
        raise ConfigError(
            "imap does not take locks=, uses=, memory=, after=, cost=, priority= or group=: "
            "use map or run, which see the whole batch"
        )
    config = options.pop("config", None)
    if config is not None:  # corral.Settings (_config): the file under the arguments
        from ._config.apply import apply_config

        workers, options = apply_config(config, workers, options, imap)
    checked = _validate(workers, options, fn)

    def generate() -> Iterator[Any]:
        # The Pool starts at the first next(): an iterator never iterated starts nothing.
        pool = Pool(workers, _checked=checked)
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
    failed; its ``.report`` is the Report. Tasks may declare locks, counted resources (with
    capacities in ``resources=``), memory (against ``memory_budget=``), dependencies and
    cost hints; the whole batch is checked before any worker starts.
    """
    config = options.pop("config", None)
    if config is not None:  # corral.Settings (_config): the file under the arguments
        from ._config.apply import apply_config

        workers, options = apply_config(config, workers, options, run)
    checked_options = _validate(workers, options)
    task_list = _check_tasks(tasks)
    checked = plan_tasks(task_list, checked_options[1])
    with Pool(workers, _n_tasks=len(task_list), _checked=checked_options) as pool:
        return pool._run_tasks(task_list, pool.run_options, checked)


def _validate(
    workers: Any, options: dict[str, Any], fn: Callable[..., Any] | None = None
) -> tuple[PoolOptions, RunOptions]:
    """Every option checked, once, before the input is read or a process started (the Pool
    takes them as they are); with ``fn``, also that every keyword-only parameter of it has a
    value (a fixture or a default)."""
    pool_kw, run_kw = split_options(options)
    pool_options = PoolOptions(workers=workers, **pool_kw)
    if fn is not None:
        pool_options.fixtures.check(fn)
    return pool_options, RunOptions(**run_kw)
