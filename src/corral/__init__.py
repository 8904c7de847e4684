"""corral: run batches of independent Python jobs on supervised worker processes.

The public names, and nothing else::

    corral.map(fn, items, ...)        -> list, in input order
    corral.imap(fn, items, ...)       -> iterator, bounded memory
    corral.run([corral.Task(...)])    -> corral.Report
    corral.Pool(...)                  warm workers reused across calls
    corral.Executor(...)              a concurrent.futures.Executor
    @corral.fixture                   per-worker state given to tasks by parameter name
    corral.Service(argv, ...)         an external program on a free port, never left behind
    corral.free_port()                a port no other corral process will be given
    corral.share(data)                -> corral.Shared, read-only zero-copy data for tasks
    corral.record(effect)             in a task: an effect, replayed in order by on_effect=
    corral.open_journal(path)         -> corral.JournalView, a snapshot of a run's journal

Everything in underscore modules is internal and may change.

The names are loaded on first use (PEP 562): a worker process imports ``corral._worker.loop``,
which imports this package, and must not pay for the coordinator's modules (the engine,
the pools, rich) at every start. The first name that makes a pool starts the fork server
before the coordinator's modules are imported, so that both start up at once
(``_forkserver.start_early``).
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._api import imap, map, run
    from ._command import CommandFailed
    from ._config.settings import Settings
    from ._errors import (
        BatchError,
        ConfigError,
        CorralError,
        EffectError,
        FixtureError,
        JournalError,
        JournalLocked,
        RemoteError,
        SerializationError,
        ServiceError,
        TaskCancelled,
        TaskError,
        TaskSkipped,
        TaskTimeout,
        WorkerCrashed,
        WorkerStartError,
    )
    from ._executor import Executor
    from ._fixtures import fixture
    from ._journal.reader import JournalView, open_journal
    from ._outcome import Attempt, Failure, Outcome
    from ._platform import cpu_count
    from ._pool import Pool
    from ._report.report import Report
    from ._services.ports import free_port
    from ._services.service import Service
    from ._sharing.share import Shared, share
    from ._status import Status
    from ._task import Task
    from ._worker.effects import record

__version__ = "0.1.0"

_HOMES = {
    "Attempt": "_outcome",
    "BatchError": "_errors",
    "CommandFailed": "_command",
    "ConfigError": "_errors",
    "CorralError": "_errors",
    "EffectError": "_errors",
    "Executor": "_executor",
    "Failure": "_outcome",
    "JournalError": "_errors",
    "JournalLocked": "_errors",
    "JournalView": "_journal.reader",
    "FixtureError": "_errors",
    "Outcome": "_outcome",
    "Pool": "_pool",
    "RemoteError": "_errors",
    "Report": "_report.report",
    "SerializationError": "_errors",
    "Service": "_services.service",
    "ServiceError": "_errors",
    "Settings": "_config.settings",
    "Shared": "_sharing.share",
    "Status": "_status",
    "Task": "_task",
    "TaskCancelled": "_errors",
    "TaskError": "_errors",
    "TaskSkipped": "_errors",
    "TaskTimeout": "_errors",
    "WorkerCrashed": "_errors",
    "WorkerStartError": "_errors",
    "cpu_count": "_platform",
    "fixture": "_fixtures",
    "free_port": "_services.ports",
    "imap": "_api",
    "map": "_api",
    "record": "_worker.effects",
    "open_journal": "_journal.reader",
    "run": "_api",
    "share": "_sharing.share",
}

__all__ = [
    "Attempt",
    "BatchError",
    "CommandFailed",
    "ConfigError",
    "CorralError",
    "EffectError",
    "Executor",
    "Failure",
    "FixtureError",
    "JournalError",
    "JournalLocked",
    "JournalView",
    "Outcome",
    "Pool",
    "RemoteError",
    "Report",
    "SerializationError",
    "Service",
    "ServiceError",
    "Settings",
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
    "fixture",
    "free_port",
    "imap",
    "map",
    "open_journal",
    "record",
    "run",
    "share",
]


_MAKES_POOLS = frozenset({"Executor", "Pool", "imap", "map", "run"})


def __getattr__(name: str) -> _typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    if name in _MAKES_POOLS and f"corral.{home}" not in _sys.modules:
        # loaded like the names themselves: the package (which workers import) depends on none
        _importlib.import_module("corral._forkserver").start_early()
    value = getattr(_importlib.import_module(f"corral.{home}"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
