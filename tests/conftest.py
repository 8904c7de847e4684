"""Shared test set-up: the leak guards that every test runs under.

No test may leave a process behind. After each test, every descendant of the test process
(workers, and anything tasks started) must be gone within a generous bound; the only
exceptions are multiprocessing's long-lived helpers (the fork server and the resource
tracker), which belong to the test process, not to a Pool. Their own children are checked.

No test may leave a corral shared-memory segment behind either (``corral.share``).
"""

from __future__ import annotations

import faulthandler
import gc
import os
import sys
import time

import psutil
import pytest
from _procs import multiprocessing_helpers

from corral._sharing import segments as _shm

LEAK_WAIT = 10.0

faulthandler.enable()

# Every engine checks its batches' position invariants after each step and each batch, and
# each position transition its "from" state (``_positions``): a violation fails the test.
os.environ["CORRAL_VALIDATE"] = "1"


def leftover_processes() -> list[psutil.Process]:
    helpers = multiprocessing_helpers()
    me = psutil.Process()
    left = []
    for child in me.children(recursive=True):
        try:
            if child.pid in helpers or child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        left.append(child)
    return left


@pytest.fixture(autouse=True)
def no_leftover_processes():
    yield
    deadline = time.monotonic() + LEAK_WAIT
    left = leftover_processes()
    while left and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.2)
        left = leftover_processes()
    if left:
        described = []
        for p in left:
            try:
                described.append(f"pid {p.pid}: {' '.join(p.cmdline())[:120]}")
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if described:
            pytest.fail("processes left behind by the test:\n  " + "\n  ".join(described))


def leftover_segments() -> list[str]:
    """corral segments in /dev/shm owned by this test process or one of its descendants.

    Other people's test runs share this machine's /dev/shm: their segments are not ours."""
    pids = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    return _shm.owned_by(pids)


@pytest.fixture(autouse=True)
def no_leftover_segments():
    yield
    gc.collect()  # a handle that the test dropped is released when collected
    left = leftover_segments()
    if left:
        for name in left:
            _shm.unlink(_shm.Segment(os.path.join(_shm.SHM_DIR, name), 0))
        pytest.fail("shared-memory segments left behind by the test:\n  " + "\n  ".join(left))


def pytest_configure(config):
    # Tests that need a real dependency fail under CI instead of skipping.
    config.ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))


# -- the working tree stays clean --------------------------------------------------------------
# A test that writes into the checkout (a marker folder given as "", a job log in the current
# directory, an example's output beside its config) leaves files a careless `git add -A` then
# commits: thousands were, once. The run fails if it adds files git does not ignore. Checked by
# the process that runs the session (the xdist controller, or pytest alone), not by its workers.

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _untracked() -> set[str] | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=_ROOT, capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an sdist): nothing to compare
    return {line[3:] for line in out.splitlines() if line.startswith("??")}


def _is_controller(config) -> bool:
    return not hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    if _is_controller(session.config):
        session.config.untracked_before = _untracked()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "untracked_before", None)
    if not _is_controller(session.config) or before is None:
        return
    added = sorted((_untracked() or set()) - before)
    if added:
        more = f"\n  ... {len(added) - 20} more" if len(added) > 20 else ""
        shown = "\n  ".join(added[:20]) + more
        sys.stderr.write(f"\nthe test run left files in the checkout:\n  {shown}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
