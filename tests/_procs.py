"""Which processes of the test process are corral's workers (shared by the test files)."""

from __future__ import annotations

import multiprocessing.forkserver
import multiprocessing.resource_tracker

import psutil


def multiprocessing_helpers() -> set[int]:
    """The fork server and resource tracker: they belong to the test process, not a Pool."""
    pids = set()
    fs = getattr(multiprocessing.forkserver, "_forkserver", None)
    if fs is not None and getattr(fs, "_forkserver_pid", None):
        pids.add(fs._forkserver_pid)
    rt = getattr(multiprocessing.resource_tracker, "_resource_tracker", None)
    if rt is not None and getattr(rt, "_pid", None):
        pids.add(rt._pid)
    return pids


def live_workers() -> set[int]:
    """Live worker processes: descendants, less the helpers, zombies, and each worker's
    lifeline watchdog (a child of its worker)."""
    helpers = multiprocessing_helpers()
    live = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in helpers and child.status() != psutil.STATUS_ZOMBIE:
                live[child.pid] = child.ppid()
        except psutil.NoSuchProcess:
            pass
    return {pid for pid, parent in live.items() if parent not in live}
