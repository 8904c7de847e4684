"""corral: run batches of independent Python jobs on supervised worker processes.

The public names, and nothing else::

    corral.map(fn, items, ...)        -> list, in input order
    corral.imap(fn, items, ...)       -> iterator, bounded memory
    corral.run([corral.Task(...)])    -> corral.Report
    corral.Pool(...)                  warm workers reused across calls
    corral.Executor(...)              a concurrent.futures.Executor

Everything in underscore modules is internal and may change.
"""

from __future__ import annotations

import contextlib

from ._api import imap, map, run
from ._errors import (
    BatchError,
    ConfigError,
    CorralError,
    RemoteError,
    SerializationError,
    TaskCancelled,
    TaskError,
    TaskTimeout,
    WorkerCrashed,
    WorkerStartError,
)
from ._executor import Executor
from ._outcome import Failure, Outcome, Report, Status
from ._platform import cpu_count
from ._pool import Pool
from ._task import Task

__version__ = "0.1.0"

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
    "Status",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkerStartError",
    "cpu_count",
    "imap",
    "map",
    "run",
]

# Public objects say they live in ``corral``: stable reprs, and pickles (in journals and
# error reports) that survive moving code between internal modules.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("corral._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = "corral"
del _name, _obj
