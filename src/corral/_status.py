"""``Status``: how a task ended, in a module of its own.

Both sides of a worker's pipe name statuses (``_reasons`` words a failure by them), but only
the coordinator builds the records that hold them (``_outcome``): a worker, and the fork server
that preloads the worker's code, import this small module, not ``_outcome``'s records
(issue 15, start-up). ``corral.Status`` and ``_outcome.Status`` are this class.
"""

from __future__ import annotations

import enum

from ._public import public


@public
class Status(str, enum.Enum):
    """How a task ended. Compares equal to its string value (``outcome.status == "ok"``)."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    CACHED = "cached"
    """Taken from an earlier run: the task was not run again (its value or error is the one
    that run left)."""

    def __str__(self) -> str:
        return self.value
