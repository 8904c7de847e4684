"""Serial mode (``backend="serial"``, ``CORRAL_WORKERS=1``) off the main thread:
SIGALRM, which enforces timeouts in-process, reaches only the main thread, so timeouts there
cannot be enforced. corral says so once, with the cause and the fix, instead of ignoring them
silently; in the main thread they are enforced as before (``test_serial``)."""

from __future__ import annotations

import threading
import warnings

import pytest

import corral
from corral._backends import serial


def _square(x):
    return x * x


def run_in_thread(fn):  # type: ignore[no-untyped-def]
    box = {}

    def target():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            box["value"] = fn()
            box["warnings"] = [str(w.message) for w in caught if w.category is RuntimeWarning]

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    return box


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch):
    monkeypatch.setattr(serial, "_warned_off_main_thread", False)


def test_timeouts_off_the_main_thread_in_serial_mode_warn_once():
    def batches():
        first = corral.map(_square, range(3), backend="serial", timeout=5)
        second = corral.map(_square, range(3), backend="serial", timeout=5)
        return first + second

    box = run_in_thread(batches)
    assert box["value"] == [0, 1, 4] * 2
    assert len(box["warnings"]) == 1
    message = box["warnings"][0]
    assert "timeouts are not enforced" in message and "main thread" in message
    assert "SIGALRM" in message and "workers >= 2" in message


def test_no_warning_without_timeouts_or_in_the_main_thread():
    box = run_in_thread(lambda: corral.map(_square, range(3), backend="serial"))
    assert box["warnings"] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert corral.map(_square, range(3), backend="serial", timeout=5) == [0, 1, 4]


def test_a_task_timeout_off_the_main_thread_warns_too():
    tasks = [corral.Task(_square, (x,), timeout=5 if x == 2 else None) for x in range(3)]
    box = run_in_thread(lambda: corral.run(tasks, backend="serial"))
    assert [o.value for o in box["value"].outcomes] == [0, 1, 4]
    assert len(box["warnings"]) == 1
