"""Run one Call in this process and describe what happened: the only place user code is called.

Runs in a worker process (``_worker``) or, for the serial backend, in the caller's own process.
Every exception a task raises is caught here and turned into an entry of ``Result.errors``;
nothing a task does can stop the loop over the Call's other items.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import ExceptionWithTraceback
from ._messages import Call, Result
from ._platform import max_rss_bytes, rss_bytes


class ItemWatch(Protocol):
    """Told when each item of a Call starts, so the coordinator can see which one is running."""

    def begin(self, index: int) -> None: ...

    def end(self) -> None: ...


class NoWatch:
    def begin(self, index: int) -> None:
        pass

    def end(self) -> None:
        pass


def execute(
    call: Call,
    resolve: Callable[[int], Callable[..., Any]],
    watch: ItemWatch,
    *,
    reraise: tuple[type[BaseException], ...] = (),
) -> Result:
    """Run every item of ``call`` in order; exceptions become ``Result.errors`` entries.

    ``reraise`` names exception types that must escape (the serial backend lets
    KeyboardInterrupt through so that Ctrl-C stops the caller; a worker ignores SIGINT).
    """
    values: list[Any] = []
    errors: dict[int, ExceptionWithTraceback] | None = None
    finished: list[float] = []
    fn = resolve(call.fn_id) if not call.star else None
    started = time.time()
    cpu0 = time.process_time()
    for i, item in enumerate(call.items):
        watch.begin(i)
        try:
            if fn is not None:
                values.append(fn(item))
            else:
                fn_id, args, kwargs = item
                values.append(resolve(fn_id)(*args, **kwargs))
        except reraise:
            watch.end()
            raise
        except BaseException as exc:
            values.append(None)
            if errors is None:
                errors = {}
            errors[i] = ExceptionWithTraceback(exc)
            del exc
        watch.end()
        finished.append(time.time())
    return Result(
        call_id=call.call_id,
        values=values,
        errors=errors,
        started=started,
        finished=finished,
        cpu=time.process_time() - cpu0,
        max_rss=max_rss_bytes(),
        rss=rss_bytes(),
    )
