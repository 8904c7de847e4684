"""The coordinator's side of ``_worker.observe``: the files each worker process writes for it.

One temporary directory per process backend (removed when it closes; named after this
process, so that the first backend of a later process removes the directories of processes
that died without closing theirs: ``_sweep_once``); per slot, the files of its current worker
(the stack file always, the stdout/stderr files with ``capture_output``).
A slot's files stay until its next worker starts, so the engine reads what a dead worker left
(its fatal-signal traceback, the output of the task it ran) after learning of its death.

``dump_stack`` is the one wait on the engine thread: the worker's faulthandler writes from
its signal handler as soon as the signal lands (no GIL needed), so the text is there within
milliseconds; the wait ends when it has stopped growing, or after ``STACK_WAIT`` (a worker
that is stopped, or has replaced the signal's handler, gives nothing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time

from .._messages import STACK_SIGNAL, Observe
from .._worker.observe import read_tail
from .contract import Remains

STACK_WAIT = 1.0
"""Longest the engine waits for a timed-out worker's stacks before it kills the worker."""

STACK_POLL = 0.005
"""Seconds between looks at the stack file while it is being written."""

STACK_LIMIT = 256 * 1024
"""Bytes of a stack dump kept (a worker with thousands of threads writes a lot)."""


PREFIX = "corral-run-"
_swept = False


def _sweep_once() -> None:
    """Remove the directories of dead processes (killed before they could close their
    pools), once per process."""
    global _swept
    if _swept:
        return
    _swept = True
    root = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(root) if n.startswith(PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class _Files:
    __slots__ = ("read", "stack", "stderr", "stdout")

    def __init__(self, stack: str, stdout: str | None, stderr: str | None) -> None:
        self.stack = stack
        self.stdout = stdout
        self.stderr = stderr
        self.read = 0  # how much of the stack file has been read already


class WorkerFiles:
    def __init__(self, slots: int, capture: bool, output_limit: int) -> None:
        _sweep_once()
        self._dir = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        self._capture = capture
        self._limit = output_limit
        self._files: list[_Files | None] = [None] * slots
        self._started = 0

    def for_new_worker(self, slot: int, log_levels: dict[str, int] | None) -> Observe:
        """The files of the slot's next worker (the previous worker's are removed)."""
        self._remove(slot)
        self._started += 1
        base = os.path.join(self._dir, f"w{slot}-{self._started}")
        files = _Files(
            base + ".stack",
            base + ".out" if self._capture else None,
            base + ".err" if self._capture else None,
        )
        self._files[slot] = files
        return Observe(files.stack, files.stdout, files.stderr, self._limit, log_levels)

    def dump_stack(self, slot: int, pid: int | None) -> str | None:
        """Ask the slot's live worker for every thread's stack; None if it did not answer."""
        files = self._files[slot]
        if files is None or pid is None:
            return None
        start = _size(files.stack)
        try:
            os.kill(pid, STACK_SIGNAL)
        except ProcessLookupError:
            return None
        deadline = time.monotonic() + STACK_WAIT
        last = start
        while time.monotonic() < deadline:
            time.sleep(STACK_POLL)  # a file cannot be waited on; the dump takes microseconds
            size = _size(files.stack)
            if size > start and size == last:
                break
            last = size
        return self._read_stack(files) or None

    def remains(self, slot: int) -> Remains:
        """What the slot's last worker left: the stack text written since last read (a fatal
        signal's traceback), and the running item's output so far."""
        files = self._files[slot]
        if files is None:
            return Remains(None, None, None)
        stack = self._read_stack(files) or None
        out = _read(files.stdout, self._limit)
        err = _read(files.stderr, self._limit)
        return Remains(stack, out, err)

    def _read_stack(self, files: _Files) -> str:
        try:
            text = read_tail(files.stack, STACK_LIMIT, files.read)
        except OSError:
            return ""
        files.read = _size(files.stack)
        return text

    def _remove(self, slot: int) -> None:
        files = self._files[slot]
        self._files[slot] = None
        if files is None:
            return
        for path in (files.stack, files.stdout, files.stderr):
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _read(path: str | None, limit: int) -> str | None:
    if path is None:
        return None
    try:
        return read_tail(path, limit)
    except OSError:
        return None
