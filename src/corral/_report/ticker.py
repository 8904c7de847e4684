"""One thread that writes every plain progress line of this process (``PlainLines``).

    caller threads                       the ticker's thread (a daemon, started on first use)
    ──────────────                       ───────────────────────────────────────────────────
    PlainLines.__enter__ ── add ──►      due times; at each, calls the display's ``tick``
    PlainLines.__exit__  ── remove ─►    (never again once ``remove`` has returned)

A thread per batch cost a thread start and a join on every ``map``: two hand-offs between
threads, each of which waits for a CPU on a busy machine (milliseconds per batch, benchmark
S1), for a display that says nothing during a run shorter than ``progress_interval``.

Ownership: the displays and their due times are the ticker's, under its lock; each
``tick`` runs under that lock, so ``remove`` returns only when no line is being written. A
process forked from this one gets a ticker of its own (``ticker()`` checks the pid): the
parent's thread and lock do not exist there.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("corral")


class Ticker:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, float, Callable[[], None]]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, tick: Callable[[], None], interval: float) -> int:
        """Call ``tick`` every ``interval`` seconds from now on; a token for ``remove``."""
        with self._cond:
            token = next(self._tokens)
            self._due[token] = (time.monotonic() + interval, interval, tick)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="corral-progress",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            self._cond.notify()
            return token

    def remove(self, token: int) -> None:
        """No more calls of that ``tick`` (nor one running) once this returns."""
        with self._cond:
            self._due.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (at, interval, tick) in list(self._due.items()):
                    if at <= now:
                        self._due[token] = (now + interval, interval, tick)
                        try:
                            tick()
                        except Exception:  # a display never stops the others, nor a batch
                            log.exception("corral: a progress line failed")
                            self._due.pop(token, None)
                soonest = min((at for at, _, _ in self._due.values()), default=None)
                self._cond.wait(None if soonest is None else max(0.0, soonest - time.monotonic()))


_ticker: Ticker | None = None
_lock = threading.Lock()


def ticker() -> Ticker:
    """This process's ticker (made on first use)."""
    global _ticker
    with _lock:
        if _ticker is None or _ticker.pid != os.getpid():
            _ticker = Ticker()
        return _ticker
