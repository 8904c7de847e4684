"""Port lock files: removed when released, never while another live process holds them.

Every test points ``CORRAL_RUNTIME_DIR`` at its own directory, so the lock files counted are
only the ones the test's processes made.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from _procs import wait_until

import corral
from corral._services.ports import ports_dir, reserve

pytestmark = pytest.mark.timeout(180)

# Reserve and release ports from START upward, ROUNDS times; while holding a port, own a
# marker file created with O_EXCL: a second holder of the same port cannot create it.
CHURN = r"""
import os, sys
from corral._services.ports import reserve
start, rounds, markers = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sys.stdin.readline()  # every process started: go together
for _ in range(rounds):
    r = reserve(start=start)
    marker = os.path.join(markers, str(r.port))
    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # FileExistsError: two holders
    os.close(fd)
    os.unlink(marker)
    r.release()
print("done", flush=True)
"""

HOLD = r"""
import sys
from corral._services.ports import reserve
r = reserve(start=int(sys.argv[1]))
print(r.port, flush=True)
sys.stdin.read()  # hold it until the test closes our stdin (or kills us)
r.release()
"""


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    directory = tmp_path / "runtime"
    monkeypatch.setenv("CORRAL_RUNTIME_DIR", str(directory))
    return directory


def lock_files(runtime_dir):
    return sorted(p.name for p in (runtime_dir / "ports").glob("*.lock"))


def start(code, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip


def test_a_released_port_leaves_no_lock_file(runtime_dir):
    reservation = reserve()
    assert lock_files(runtime_dir) == [f"{reservation.port}.lock"]
    reservation.release()
    assert lock_files(runtime_dir) == []
    reservation.release()  # twice is harmless


def test_a_service_removes_its_port_lock_when_stopped(runtime_dir):
    with corral.Service(["sleep", "1000"], ready=lambda s: True) as service:
        assert lock_files(runtime_dir) == [f"{service.port}.lock"]
    assert lock_files(runtime_dir) == []


def test_concurrent_processes_never_share_a_port_and_leave_no_lock_files(runtime_dir, tmp_path):
    markers = tmp_path / "held"
    markers.mkdir()
    first = reserve()
    base = first.port
    first.release()
    procs = [start(CHURN, base, 150, markers) for _ in range(6)]
    try:
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout.readline().strip() == "done"
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdin.close()
            p.stdout.close()
    assert lock_files(runtime_dir) == []


def test_the_lock_file_of_a_live_holder_is_never_removed(runtime_dir):
    holder = start(HOLD, reserve_then_release_port())
    try:
        held = int(holder.stdout.readline())
        path = ports_dir() / f"{held}.lock"
        inode = path.stat().st_ino
        for _ in range(20):  # others come and go around the held port
            mine = reserve(start=held)
            assert mine.port != held
            mine.release()
        assert path.stat().st_ino == inode  # still the holder's file
        assert lock_files(runtime_dir) == [f"{held}.lock"]
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
        holder.stdout.close()
    assert lock_files(runtime_dir) == []


def test_a_killed_holders_file_is_removed_by_the_next_taker(runtime_dir):
    holder = start(HOLD, reserve_then_release_port())
    try:
        held = int(holder.stdout.readline())
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        holder.stdin.close()
        holder.stdout.close()
    assert lock_files(runtime_dir) == [f"{held}.lock"]  # nothing ran to remove it
    wait_until(lambda: _bindable(held), "the killed holder's socket state to clear")
    again = reserve(start=held)
    assert again.port == held  # the kernel dropped the dead holder's lock
    again.release()
    assert lock_files(runtime_dir) == []


def reserve_then_release_port():
    reservation = reserve()
    reservation.release()
    return reservation.port


def _bindable(port):
    from corral._services.ports import _bindable as bindable

    return bindable("127.0.0.1", port)
