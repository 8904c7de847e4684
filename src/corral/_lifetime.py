"""A Pool's running parts, held apart from the public ``Pool`` object so that a Pool dropped
without ``close()`` is closed when it is collected, and none can hang interpreter exit.

    Pool / Executor (public)
      │ strong                      weakref.finalize(pool): close(cancel=False, wait=False)
      ▼
    Lifetime ──► engine, backend, wakeup pipe     ◄── engine thread (its target: Lifetime._run)
      ▲ weak, while not yet released
    _lifecycle registry: at interpreter exit, close(cancel=True, wait=True) each

Nothing below the Pool points back at it: the engine thread holds the Lifetime, never the
Pool, so dropping the last reference to a Pool (or to the Executor around it) collects it, and
its finalizer closes it the way ``ProcessPoolExecutor`` does: the work already submitted runs
to the end (futures the caller still holds get their results), then the workers stop. At
interpreter exit corral's own exit hook, which runs before ``multiprocessing``'s (that one
would wait forever on workers nobody stops), closes every Lifetime still registered: what is
left is cancelled, workers are stopped, and the hook waits for their end.

States (``_lock`` guards them; each changes in one method)::

    open ──close()──► closing ──engine thread ends──► released
                      (no new work)                   (wakeup pipe closed, unregistered)

A serial Lifetime has no thread: ``close`` goes straight to released. The registry holds a
Lifetime until it is released, so a Pool closed with ``wait=False`` (or collected) is still
waited for at exit.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _lifecycle

if TYPE_CHECKING:
    from ._engine import Engine


class Lifetime:
    """Owns the engine thread, the wakeup pipe and the open / closing / released state of
    one Pool. ``born`` and ``start_method`` are the Pool's (``_sharing.share`` reads them of every
    live Lifetime to know whether its workers inherited a share)."""

    def __init__(
        self,
        engine: Engine,
        wakeup: tuple[int, int],
        *,
        born: int,
        start_method: str | None,
        serial: bool,
    ) -> None:
        self.engine = engine
        self.born = born  # the _lifecycle tick before its first worker was started
        self.start_method = start_method
        self.serial = serial
        self._wakeup_r, self._wakeup_w = wakeup
        self._lock = threading.Lock()
        self.closed = False  # closing or released: no new work
        self._released = False
        self._thread: threading.Thread | None = None
        _lifecycle.register(self)

    def start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.engine.loop()
        finally:
            self._release()

    # -- talking to the engine --------------------------------------------------------------
    def post(self, action: Callable[[], None]) -> None:
        if self.serial:
            action()
        else:
            self.engine.post(action, self.wake)

    def wake(self) -> None:
        with self._lock:  # never write to a closed (maybe reused) descriptor
            if not self._released:
                with contextlib.suppress(OSError):
                    os.write(self._wakeup_w, b"x")

    # -- ending -------------------------------------------------------------------------------
    def close(self, cancel: bool = False, wait: bool = True) -> None:
        """Take no more work; stop the workers once what was submitted is done (``cancel``:
        cancel it). ``wait``: return when the workers are gone. Safe to call again (a later
        ``cancel`` still cancels) and from any thread, the engine thread included."""
        with self._lock:
            first = not self.closed
            self.closed = True
        if self.serial:
            if first:
                try:
                    self.engine.close(cancel=cancel)
                    self.engine.backend.close(timeout=0)
                finally:
                    self._release()
            return
        if first or cancel:
            self.post(lambda: self.engine.close(cancel=cancel))
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def _release(self) -> None:
        """The workers are gone: close the wakeup pipe and leave the registry of live pools."""
        with self._lock:
            if self._released:
                return
            self._released = True
            for fd in (self._wakeup_r, self._wakeup_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        _lifecycle.unregister(self)
