"""Plain progress lines come from one thread per process (``_report.ticker``): no thread is
started or joined per batch, and a display that closed is never written to again."""

from __future__ import annotations

import io
import threading
import time

from corral._report.progress import PlainLines
from corral._report.ticker import ticker

WAIT = 30.0


def wait_for(condition, what):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_two_displays_share_one_thread_and_stop_when_closed():
    first, second = io.StringIO(), io.StringIO()
    one, two = PlainLines(10, 0.02, 2, stream=first), PlainLines(10, 0.02, 2, stream=second)
    with one, two:
        wait_for(lambda: first.getvalue() and second.getvalue(), "a line from each")
        threads = [t for t in threading.enumerate() if t.name == "corral-progress"]
        assert len(threads) == 1
    assert one._token not in ticker()._due and two._token not in ticker()._due
    assert first.getvalue().endswith("\n") and first.getvalue().count("corral: 0/10") >= 2
