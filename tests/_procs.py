"""Which processes of the test process are corral's workers (shared by the test files)."""

from __future__ import annotations

import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import sys
import time
from pathlib import Path

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


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has finished: only its exit status is left)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_alive_after(pids, seconds):  # type: ignore[no-untyped-def]
    """The pids among ``pids`` still alive (not zombies) once ``seconds`` have passed; returns
    as soon as none is left."""
    deadline = time.monotonic() + seconds
    while True:
        left = {p for p in pids if alive(p)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def wait_until(predicate, what, timeout=30.0, proc=None):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true; fail after ``timeout`` s, or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"the script exited early ({proc.returncode}): {proc.stderr.read()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.02)  # polling interval, not synchronisation


def marked(marker_dir, prefix):  # type: ignore[no-untyped-def]
    """Pids that tasks wrote as marker files named ``PREFIX-PID`` in ``marker_dir``."""
    return {
        int(p.name.split("-")[1]) for p in Path(marker_dir).glob(f"{prefix}-*") if "." not in p.name
    }


def run_script(script, *args):  # type: ignore[no-untyped-def]
    """Start ``python script args...`` in a session of its own (so a signal sent to it, or a
    Ctrl-C in the terminal running the tests, reaches only it), with text pipes for its output."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_script(proc, marker_dir):  # type: ignore[no-untyped-def]
    """After a test: SIGKILL the script if it still runs, and every worker it noted in
    ``marker_dir`` (``worker-PID`` files) that is still alive."""
    import os
    import signal

    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in marked(marker_dir, "worker") - {proc.pid}:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def corral_cli(*args, cwd, env=None, timeout=120, input=None):  # type: ignore[no-untyped-def]
    """Run the real command line, ``python -m corral ARGS``, in ``cwd``; the finished process
    (stdout, stderr, returncode). ``env`` adds to this environment (CORRAL_* settings of the
    test run removed, so each test says its own)."""
    import pathlib
    import subprocess

    src = str(pathlib.Path(__file__).resolve().parent.parent / "src")
    full = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (src, full.get("PYTHONPATH", "")) if p)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout, input=input,
    )  # fmt: skip


def left_of_pools(coordinators, seconds=10.0):  # type: ignore[no-untyped-def]
    """corral's processes (workers, watchdogs, fork servers: titled ``... [pool PID]``) of the
    coordinators ``coordinators`` still alive once ``seconds`` have passed, as ``pid: title``;
    returns as soon as none is left. For coordinators that were not this process's children
    or that were killed: their orphans are no longer this process's descendants."""
    marks = tuple(f"[pool {pid}]" for pid in coordinators)
    deadline = time.monotonic() + seconds
    while True:
        left = {}
        for proc in psutil.process_iter(["pid", "cmdline", "status"]):
            title = " ".join(proc.info["cmdline"] or ())
            if proc.info["status"] != psutil.STATUS_ZOMBIE and title.endswith(marks):
                left[proc.info["pid"]] = title
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def corral_processes():  # type: ignore[no-untyped-def]
    """corral's workers and watchdogs among this process's descendants (by title): those a
    module-scoped Dask cluster's workers run, which conftest's guard cannot tell apart."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            line = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "corral worker" in line or "corral watchdog" in line:
            found.append(p)
    return found


def fail_on_corral_processes(seconds):  # type: ignore[no-untyped-def]
    """After a test on a Dask cluster that stays: corral's children must be gone within
    ``seconds`` (killed, and the test failed, if not)."""
    import pytest

    deadline = time.monotonic() + seconds
    left = corral_processes()
    while left and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.2)
        left = corral_processes()
    if left:
        for p in left:
            p.kill()
        pytest.fail(f"corral processes left under the Dask workers: {left}")
