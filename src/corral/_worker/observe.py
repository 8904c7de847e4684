"""What a worker keeps for the coordinator to read: where it was, and what its tasks wrote.

    coordinator (_backends.remains)                 worker process (this module)
    ───────────────────────────────                 ────────────────────────────
    chooses the files (one set per worker) ───────► Observe(stack_path, stdout_path, ...)
    STACK_SIGNAL (SIGUSR2) to the worker ─────────► faulthandler, in its C signal handler:
    reads the stack file ◄───────────────────────── every thread's stack, appended
    a fatal signal (SIGSEGV, SIGABRT, ...) ────────► faulthandler: the traceback, appended
    after a death, reads the stack file ◄──────────┘
    capture_output: fds 1 and 2 ═══════════════════ the stdout / stderr files, emptied as each
    reads them after a timeout or a crash ◄──────── item starts (the task, its C code and its
                                                    child processes write there); each item's
                                                    text travels back in ``Result.output``

Why files: faulthandler writes from its signal handler without the GIL, so it answers even
while the task is stuck in C code (as far as the stack goes: it shows the Python frames that
called the C function, not the C frames). A file outlives the worker, so the coordinator
reads what a worker that was killed or crashed wrote up to its death.

Why fds and not ``sys.stdout``: C extensions and child processes write to fd 1 and 2 directly.
The worker's ``sys.stdout``/``sys.stderr`` are made fresh writers on those fds (a fork may
have inherited the coordinator's replacements, which write elsewhere), flushed at each item's
end. The files are shared open file descriptions: emptying them (``ftruncate`` and ``lseek``
on our descriptor) moves the offset a child process writes at too.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
from typing import IO, Any

from .._messages import STACK_SIGNAL

CUT_MARKER = "[corral: {cut} bytes cut; the last {limit} bytes follow]\n"


def keep_stacks(path: str) -> IO[bytes]:
    """faulthandler writes a fatal signal's traceback, and every thread's stack on
    ``STACK_SIGNAL``, to ``path`` (appended). The file must stay open: returned to be kept."""
    file = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open for the worker's life
    faulthandler.enable(file, all_threads=True)
    faulthandler.register(STACK_SIGNAL, file, all_threads=True, chain=False)
    return file


def read_tail(fd_or_path: int | str, limit: int, start: int = 0) -> str:
    """The text of a file from ``start``, cut to its last ``limit`` bytes (with a marker)."""
    fd = os.open(fd_or_path, os.O_RDONLY) if isinstance(fd_or_path, str) else fd_or_path
    try:
        size = os.fstat(fd).st_size
        begin = max(start, size - limit)
        data = os.pread(fd, size - begin, begin) if size > begin else b""
    finally:
        if isinstance(fd_or_path, str):
            os.close(fd)
    text = data.decode("utf-8", errors="replace")
    if begin > start:
        return CUT_MARKER.format(cut=begin - start, limit=limit) + text
    return text


class Capture:
    """Points fds 1 and 2 at the capture files and reads them back per item."""

    def __init__(self, stdout_path: str, stderr_path: str, limit: int) -> None:
        self.limit = limit
        self.output: dict[int, tuple[str, str]] = {}
        self._dirty = True  # something may be in the files: empty them at the next item
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        self._fds = (os.open(stdout_path, flags, 0o600), os.open(stderr_path, flags, 0o600))
        _flush()
        os.dup2(self._fds[0], 1)
        os.dup2(self._fds[1], 2)
        # line-buffered: a task's prints and its fd-level writes stay in the order made
        sys.stdout = _writer(1)
        sys.stderr = _writer(2)

    def begin(self) -> None:
        _flush()
        if self._dirty:  # (an item that wrote nothing costs two fstat calls, no more)
            for fd in self._fds:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
            self._dirty = False

    def end(self, index: int) -> None:
        _flush()
        if os.fstat(self._fds[0]).st_size or os.fstat(self._fds[1]).st_size:
            self._dirty = True
            out, err = (read_tail(fd, self.limit) for fd in self._fds)
            self.output[index] = (out, err)

    def take(self) -> dict[int, tuple[str, str]]:
        """Each item's output; an item that wrote nothing has no entry (its output is "")."""
        output, self.output = self.output, {}
        return output


def _writer(fd: int) -> IO[str]:
    return open(  # the worker's stdio for its life
        fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1
    )


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a task may have closed or replaced it
            stream.flush()


class CapturingWatch:
    """An ``ItemWatch`` (``execute``) that captures each item's output around the worker's
    own watch. Its ``index_buffer`` is None: every item goes through ``begin``/``end``."""

    def __init__(self, watch: Any, capture: Capture) -> None:
        self._watch = watch
        self._capture = capture
        self._index = -1

    def start(self, call_id: int) -> None:
        self._watch.start(call_id)

    def begin(self, index: int) -> None:
        self._index = index
        self._capture.begin()
        self._watch.begin(index)

    def end(self) -> None:
        self._watch.end()
        self._capture.end(self._index)

    def index_buffer(self) -> Any:
        return None
