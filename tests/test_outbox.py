"""The coordinator never blocks writing a Call to a worker that is busy (``_backends.outbox``):
Calls queued behind a running one are written only while they fit in the pipe, so a worker
writing a large Result to a full pipe can always finish (no deadlock), and Calls queued in
one step leave together."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

import corral
from corral._backends.outbox import OVERHEAD, Outbox
from corral._codec import CALL_HEADER

BIG = 512 * 1024  # larger than a socket pair's buffer (about 208 KiB by default on Linux)


def call_bytes(call_id: int, size: int) -> bytes:
    return CALL_HEADER.pack(call_id) + b"x" * size


def echo(data: bytes) -> bytes:
    return bytes(reversed(data[:16])) + data[16:]


def test_flush_writes_only_what_fits_behind_the_first_call_then_the_rest_after_answers():
    ours, theirs = multiprocessing.Pipe(duplex=True)
    try:
        box = Outbox()
        for call_id in range(100):
            box.put(call_bytes(call_id, 10_000))
        box.flush(ours)  # nobody reads: this returns only because it wrote what fits
        waiting = len(box.waiting)
        assert 0 < waiting < 99
        got = []
        while len(got) < 100:
            data = theirs.recv_bytes()  # the worker reads a Call and answers it
            got.append(CALL_HEADER.unpack_from(data)[0])
            box.answered(got[-1])
            box.flush(ours)
        assert got == list(range(100))
        assert not box.waiting
    finally:
        ours.close()
        theirs.close()


def test_first_unanswered_call_is_written_whatever_its_size():
    ours, theirs = multiprocessing.Pipe(duplex=True)
    try:
        box = Outbox()
        box.put(call_bytes(0, 8))
        box.put(call_bytes(1, 4 * OVERHEAD * 100))  # queued behind call 0: must wait
        box.flush(ours)
        assert len(box.waiting) == 1
        assert CALL_HEADER.unpack_from(theirs.recv_bytes())[0] == 0
        box.answered(0)  # now call 1 is the first unanswered: written (the worker reads it)
        received: list[bytes] = []
        thread = threading.Thread(target=lambda: received.append(theirs.recv_bytes()))
        thread.start()
        box.flush(ours)
        thread.join(30)
        assert not box.waiting
        assert CALL_HEADER.unpack_from(received[0])[0] == 1
    finally:
        ours.close()
        theirs.close()


@pytest.mark.slow
def test_large_arguments_and_large_results_one_task_per_call_do_not_deadlock():
    items = [bytes([i]) * BIG for i in range(24)]
    with corral.Pool(workers=2) as pool:
        pool.map(echo, items[:2], chunksize=1)  # timed: the next Calls are prefetched
        out = pool.map(echo, items, chunksize=1)
        assert out == [echo(b) for b in items]
        streamed = list(pool.imap(echo, iter(items), chunksize=1))
        assert streamed == out
