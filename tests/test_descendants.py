"""What a task starts outside its worker's process group (a grandchild in a new session, a
double-fork daemon) does not outlive a timeout, a cancel, a worker crash or the coordinator's
SIGKILL; a Service keeps its own keeper and stops its own escaped processes; the worker, a
child subreaper, reaps the orphans it adopts and no child a task may still wait for.

The escaped processes are re-parented away from the test process, so the leak guard of
``conftest`` cannot see them: they are found by a unique tag in their argv.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from _procs import wait_until

import corral

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="subreaper: Linux")

SCRIPTS = Path(__file__).parent / "scripts"
ESCAPE = SCRIPTS / "escape.py"
BATCH = SCRIPTS / "escape_batch.py"
GONE_WAIT = 20.0


def tagged(tag):
    """Live processes with ``tag`` in an argument."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(
                tag in arg for arg in proc.info["cmdline"] or ()
            ):
                found.append(proc)
    return found


def survivors(tag, seconds=GONE_WAIT):
    """The tagged processes still alive once ``seconds`` have passed (returns when none is)."""
    deadline = time.monotonic() + seconds
    while True:
        left = tagged(tag)
        if not left or time.monotonic() > deadline:
            return [" ".join(p.info["cmdline"]) for p in left]
        time.sleep(0.1)  # polling interval, not synchronisation


@pytest.fixture
def tag():
    tag = f"corral-escapee-{uuid.uuid4().hex}"
    yield tag
    for proc in tagged(tag):  # a failed test must not leak them either
        with contextlib.suppress(psutil.Error):
            proc.kill()


def escape(markers, tag, *, bare=False, then="hang"):
    """A task: start the escapees (escape.py), then hang or crash."""
    extra = ["--bare-daemon"] if bare else []
    subprocess.run([sys.executable, str(ESCAPE), markers, tag, *extra], check=True)
    Path(markers, "running").touch()
    if then == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(1000)


def run_one(task, **pool_options):
    """Run ``task`` in a worker process (a Pool of one would run it in this process)."""
    with corral.Pool(2, **pool_options) as pool:
        return pool.run([task], errors="return")


def started(tmp_path, tag):
    wait_until(lambda: (tmp_path / "running").exists(), "the escapees", timeout=60)
    assert {p.info["cmdline"][-2] for p in tagged(tag)} == {f"{tag}-session", f"{tag}-daemon"}


# -- timeout, cancel, crash ------------------------------------------------------------------------
@linux_only
def test_escapees_of_a_timed_out_task_are_killed(tmp_path, tag):
    task = corral.Task(escape, (str(tmp_path), tag), {"bare": True}, timeout=3.0)
    report = run_one(task, kill_grace=1.0)
    assert report.outcomes[0].status == "timeout"
    assert (tmp_path / "running").exists()
    assert not survivors(tag)


@linux_only
def test_escapees_of_a_cancelled_task_are_killed(tmp_path, tag):
    with corral.Pool(2, kill_grace=1.0) as pool:
        future = pool.submit(escape, str(tmp_path), tag, bare=True)
        started(tmp_path, tag)
        pool.terminate()
        with pytest.raises(corral.TaskCancelled):
            future.result(timeout=60)
    assert not survivors(tag)


@linux_only
def test_escapees_of_a_crashed_worker_are_killed(tmp_path, tag):
    # The worker is gone, and its tree with it: the environment mark finds them.
    task = corral.Task(escape, (str(tmp_path), tag), {"then": "crash"})
    report = run_one(task)
    assert isinstance(report.outcomes[0].error, corral.WorkerCrashed)
    assert not survivors(tag)


# -- the coordinator is SIGKILLed ------------------------------------------------------------------
@linux_only
@pytest.mark.parametrize("start_method", ["forkserver", "fork", "spawn"])
def test_escapees_die_with_the_coordinator_and_the_service_is_stopped_by_its_keeper(
    tmp_path, tag, start_method
):
    # Its output goes to a file: the escapees inherit it, and a pipe would stay open with them.
    log = open(tmp_path / "output", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, str(BATCH), str(tmp_path), tag, start_method],
                            stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: (tmp_path / "running").exists(), "the task", timeout=90)
        names = {p.info["cmdline"][-2] for p in tagged(tag)}
        assert {f"{tag}-session", f"{tag}-daemon"} <= names
        assert any(p.info["cmdline"][-1] == f"{tag}-service" for p in tagged(tag))
        before = [(p.pid, p.ppid(), p.info["cmdline"][-2]) for p in tagged(tag)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left = survivors(tag)
        assert not left, (left, before, (tmp_path / "output").read_text()[-3000:])
        # The worker's watchdog spared the Service: its keeper stopped it with SIGTERM.
        assert (tmp_path / "terminated").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


# -- services --------------------------------------------------------------------------------------
def service_argv(tmp_path, tag):
    """A program that starts escapees (a new-session grandchild, a daemon), then serves."""
    code = (
        "import subprocess, sys, time; "
        "subprocess.run([sys.executable, sys.argv[1], sys.argv[2], sys.argv[3]], check=True); "
        "print('up', flush=True); time.sleep(1000)"
    )
    return [sys.executable, "-c", code, str(ESCAPE), str(tmp_path), tag]


@linux_only
def test_stopping_a_service_kills_what_it_started_in_other_sessions(tmp_path, tag):
    with corral.Service(service_argv(tmp_path, tag), ready="up", port=None):
        assert len(tagged(tag)) == 3  # the program, its grandchild and its daemon
    assert not survivors(tag, 0)  # stop() returned: they are gone already


def uses_escaping_service(markers, *, escaping):
    Path(markers, "running").touch()
    time.sleep(1000)


@linux_only
def test_the_keeper_kills_what_a_service_started_when_its_worker_times_out(tmp_path, tag):
    @corral.fixture
    def escaping():
        with corral.Service(service_argv(tmp_path, tag), ready="up", port=None) as service:
            yield service.pid

    task = corral.Task(uses_escaping_service, (str(tmp_path),), timeout=2.0)
    report = run_one(task, fixtures=[escaping], kill_grace=1.0)
    assert report.outcomes[0].status == "timeout"
    assert not survivors(tag)


# -- reaping ---------------------------------------------------------------------------------------
_kept: list[subprocess.Popen] = []


def zombie_children():
    me = os.getpid()
    zombies = []
    for tid in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{tid}/children") as f:
            for pid in map(int, f.read().split()):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                        zombies.append(pid)
    return zombies


def leave_an_exited_daemon_and_an_unwaited_child(markers, tag):
    """Call 1: a daemon that exits at once (adopted by this worker, then a zombie), and a
    child of our own that exits 7, not waited for yet."""
    _kept.append(subprocess.Popen(["sh", "-c", "exit 7"]))
    subprocess.run([sys.executable, str(ESCAPE), markers, tag, "--linger", "0"], check=True)
    own = _kept[-1].pid
    wait_until(lambda: len(zombie_children()) >= 3, "the daemon, grandchild and child to exit")
    return own


def zombies_then_wait(own):
    """Call 2: after call 1 ended, only our own child is left as a zombie; waiting for it
    still gives its real exit code."""
    left = zombie_children()
    return left, _kept[-1].wait()


@linux_only
def test_the_worker_reaps_adopted_zombies_but_not_its_own_children(tmp_path, tag):
    with corral.Executor(max_workers=1) as pool:  # one worker process, both Calls in it
        own = pool.submit(leave_an_exited_daemon_and_an_unwaited_child, str(tmp_path), tag)
        own = own.result(timeout=90)
        left, code = pool.submit(zombies_then_wait, own).result(timeout=60)
    # The daemon (a session it does not lead) is reaped; the orphaned session leader cannot
    # be told from a child of the worker's own and is left for the worker's exit.
    assert own in left and code == 7
    assert len(left) == 2
