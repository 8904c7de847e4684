"""What the coordinator reads from one worker's pipe: whole messages, many per system call.

    worker k ═══ Result / Logged / ... (framed by multiprocessing.connection) ═══► conn k
                                            Inbox.read: poll(0), one read of what is there,
                                            cut into messages; a partial one waits here

``Connection.recv_bytes`` costs two reads per message (its header, then its body) and a poll
before each (``Connection.poll`` builds a selector); with one-task Calls that was a good part
of the coordinator's time per task. Here the answers that arrived together are taken in one
read. Every read follows a ``poll`` that said the pipe is readable, so it never blocks: a
dead worker's socket may stay open in a process that inherited it, where a blind read would
wait forever.

Ownership: the process backend's, on the engine thread; one per worker, gone with it.
"""

from __future__ import annotations

import os
import select
import struct

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")  # after a short header of -1: a message over 2 GiB

READ_SIZE = 1 << 16
"""Bytes asked of each read; a large message's remainder is asked for in one read."""


class Inbox:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._need = 0  # bytes the buffer needs to hold the message it starts with (0: unknown)

    def readable(self) -> bool:
        return bool(self._poller.poll(0))

    def read(self) -> tuple[list[bytes], bool]:
        """The whole messages readable now, oldest first, and whether the pipe has ended."""
        messages: list[bytes] = []
        buffer = self._buffer
        while self._poller.poll(0):
            want = max(READ_SIZE, self._need - len(buffer))
            chunk = os.read(self._fd, want)
            if not chunk:
                return messages, True
            buffer += chunk
            self._cut(messages)
            if len(chunk) < want:  # all there was (more may come: the next poll says)
                break
        return messages, False

    def _cut(self, messages: list[bytes]) -> None:
        buffer = self._buffer
        while len(buffer) >= _SHORT.size:
            size = _SHORT.unpack_from(buffer)[0]
            header = _SHORT.size
            if size == -1:
                if len(buffer) < _SHORT.size + _LONG.size:
                    self._need = _SHORT.size + _LONG.size
                    return
                size = _LONG.unpack_from(buffer, _SHORT.size)[0]
                header += _LONG.size
            end = header + size
            if len(buffer) < end:
                self._need = end
                return
            with memoryview(buffer) as view:
                messages.append(bytes(view[header:end]))
            del buffer[:end]  # (a bytearray drops its head without moving the rest)
        self._need = 0
