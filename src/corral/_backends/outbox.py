"""What the coordinator writes to one worker's pipe, and when: Calls wait here until the pipe
takes them without blocking.

    engine thread                       Outbox (one per worker)                 worker k
    ─────────────                       ──────────────────────                  ────────
    send(k, Call) ──► put ──► waiting ──flush (wait(): one write)──► conn ══► recv → run
                                          ▲                    written: sent, unanswered
    Result / CallFailed read ─► answered ─┘ (room in the pipe: flush again)

Why. Both directions share one socket pair. If the coordinator blocked writing a Call queued
behind a running one (prefetch) while the worker blocked writing that Call's Result (or a
log record) to a full pipe, each would wait for the other forever. So a Call is written
only when it cannot block: the first unanswered Call always (the worker reads it whole
before it writes anything), a later one only while the bytes queued behind the first,
counted with a per-write overhead, stay within a quarter of the socket's send buffer. Calls
that do not fit wait here and go when an answer makes room; the coordinator keeps reading.

Calls queued in one engine step (prefetch, chunksize=1) leave in one write: one system call
and one wake-up of the worker for many Calls.

Ownership: the process backend's, on the engine thread. A worker that dies or is killed takes
its Outbox with it; its unsent Calls are the engine's queued InFlights, requeued by the Crew.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import deque
from multiprocessing.connection import Connection

from .._codec import call_id_of

_FRAME = struct.Struct("!i")
"""``multiprocessing.connection``'s frame header (a message's length), so that the worker's
``Connection.recv_bytes`` reads the Calls written together one by one."""

OVERHEAD = 2048
"""Bytes a queued message is counted for beyond its length: the kernel's own bookkeeping
of a socket buffer (an skb, about 1 KiB) is charged to the sender's budget."""

JOIN_LIMIT = 1 << 20
"""Calls are joined into one write up to this many bytes; a bigger one goes alone."""

DEFAULT_SNDBUF = 1 << 16
"""The send buffer assumed where the socket does not say (a conservative size)."""


class Outbox:
    def __init__(self) -> None:
        self.waiting: deque[bytes] = deque()  # given to send, not yet written
        self._written: deque[tuple[int, int]] = deque()  # (call id, bytes counted), oldest first
        self._bytes = 0  # counted bytes of all written Calls
        self._budget = 0  # bytes that may queue behind the first unanswered Call (0: not read)

    def put(self, payload: bytes) -> None:
        self.waiting.append(payload)

    def answered(self, call_id: int | None) -> None:
        """The worker answered Call ``call_id`` (None: an answer that did not decode, which
        the engine takes as the running Call's): it and any older ones are off the pipe."""
        written = self._written
        if call_id is None:
            if written:
                self._bytes -= written.popleft()[1]
            return
        while written and written[0][0] <= call_id:
            self._bytes -= written.popleft()[1]

    def flush(self, conn: Connection) -> None:
        """Write the waiting Calls that fit (see the module docstring), together."""
        if not self._budget:
            self._budget = _send_buffer(conn) // 4
        written, size = self._written, 0
        frames: list[bytes] = []
        while self.waiting:
            payload = self.waiting[0]
            cost = len(payload) + OVERHEAD
            if written and self._bytes - written[0][1] + cost > self._budget:
                break
            self.waiting.popleft()
            written.append((call_id_of(payload), cost))
            self._bytes += cost
            if len(payload) > JOIN_LIMIT:  # no copy of a big one; it goes first or alone
                _write(conn, frames)
                frames, size = [], 0
                conn.send_bytes(payload)
                continue
            frames.append(_FRAME.pack(len(payload)))
            frames.append(payload)
            size += len(payload)
            if size > JOIN_LIMIT:
                _write(conn, frames)
                frames, size = [], 0
        _write(conn, frames)


def _write(conn: Connection, frames: list[bytes]) -> None:
    if not frames:
        return
    view = memoryview(b"".join(frames))
    fd = conn.fileno()
    while view:
        view = view[os.write(fd, view) :]


def _send_buffer(conn: Connection) -> int:
    """The socket's send buffer size in bytes (SO_SNDBUF), or ``DEFAULT_SNDBUF``."""
    try:
        with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            return max(int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)), 4 * OVERHEAD)
    except OSError:
        return DEFAULT_SNDBUF
