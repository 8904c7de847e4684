"""corral: run batches of independent Python jobs on supervised worker processes.

The public names, and nothing else::

    corral.map(fn, items, ...)        -> list, in input order
    corral.imap(fn, items, ...)       -> iterator, bounded memory
    corral.run([corral.Task(...)])    -> corral.Report
    corral.Pool(...)                  warm workers reused across calls
    corral.Executor(...)              a concurrent.futures.Executor
    corral.share(data)                -> corral.Shared, read-only zero-copy data for tasks

Everything in underscore modules is internal and may change.

The names are loaded on first use (PEP 562): a worker process imports ``corral._worker``,
which imports this package, and must not pay for the coordinator's modules (the engine,
the pools, rich) at every start.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._api import imap, map, run
    from ._errors import (
        BatchError,
        ConfigError,
        CorralError,
        RemoteError,
        SerializationError,
        TaskCancelled,
        TaskError,
        TaskSkipped,
        TaskTimeout,
        WorkerCrashed,
        WorkerStartError,
    )
    from ._executor import Executor
    from ._outcome import Failure, Outcome, Report, Status
    from ._platform import cpu_count
    from ._pool import Pool
    from ._share import Shared, share
    from ._task import Task

__version__ = "0.1.0"

_HOMES = {
    "BatchError": "_errors",
    "ConfigError": "_errors",
    "CorralError": "_errors",
    "Executor": "_executor",
    "Failure": "_outcome",
    "Outcome": "_outcome",
    "Pool": "_pool",
    "RemoteError": "_errors",
    "Report": "_outcome",
    "SerializationError": "_errors",
    "Shared": "_share",
    "Status": "_outcome",
    "Task": "_task",
    "TaskCancelled": "_errors",
    "TaskError": "_errors",
    "TaskSkipped": "_errors",
    "TaskTimeout": "_errors",
    "WorkerCrashed": "_errors",
    "WorkerStartError": "_errors",
    "cpu_count": "_platform",
    "imap": "_api",
    "map": "_api",
    "run": "_api",
    "share": "_share",
}

__all__ = [
    "BatchError",
    "ConfigError",
    "CorralError",
    "Executor",
    "Failure",
    "Outcome",
    "Pool",
    "RemoteError",
    "Report",
    "SerializationError",
    "Shared",
    "Status",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskSkipped",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkerStartError",
    "cpu_count",
    "imap",
    "map",
    "run",
    "share",
]


def __getattr__(name: str) -> _typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"corral.{home}"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
