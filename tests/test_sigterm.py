"""SIGTERM (kill, timeout, systemd, docker, SLURM) or SIGHUP to a coordinator running a batch:
corral stops the batch as on Ctrl-C, stops every worker, unlinks its shared-memory segments,
then the process dies of the signal as it would have without corral (status -15 / -1). A
SIGTERM handler the program installed itself is left alone.

Each test runs ``scripts/partial_batch.py`` in a subprocess of its own session, holding a
``corral.share`` segment, waits until its tasks hang, sends the signal to the script alone,
and checks what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from _procs import kill_script, marked, run_script, still_alive_after, wait_until

import corral
from corral._sharing import segments as _shm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).parent / "scripts" / "partial_batch.py"
EXIT_WAIT = 30.0


def signalled(tmp_path: Path, mode: str, signum: int, running: int = 2):
    """Run the script in ``mode``; once ``running`` tasks hang, send ``signum``; return
    (returncode, segment path, pids of the workers that ran tasks, stderr)."""
    proc = run_script(SCRIPT, tmp_path, mode)
    try:
        path = json.loads(proc.stdout.readline())["path"]
        assert os.path.exists(path)
        wait_until(
            lambda: len(marked(tmp_path, "running")) >= running,
            f"{running} hanging tasks",
            proc=proc,
        )
        os.kill(proc.pid, signum)
        try:
            _, stderr = proc.communicate(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the script still runs {EXIT_WAIT} s after {signum}") from None
        return proc.returncode, path, marked(tmp_path, "worker") - {proc.pid}, stderr, proc.pid
    finally:
        kill_script(proc, tmp_path)


def segments_of(pid: int) -> list[str]:
    return _shm.owned_by({pid})


def test_sigterm_exits_by_the_signal_and_leaves_no_segment_or_worker(tmp_path):
    rc, path, workers, stderr, pid = signalled(tmp_path, "share", signal.SIGTERM)
    assert rc == -signal.SIGTERM, stderr
    assert not os.path.exists(path)
    assert not segments_of(pid)
    assert len(workers) == 2
    assert not still_alive_after(workers, 10.0)


def test_sigterm_in_serial_mode_exits_by_the_signal_and_leaves_no_segment(tmp_path):
    rc, path, _, stderr, pid = signalled(tmp_path, "share-serial", signal.SIGTERM, running=1)
    assert rc == -signal.SIGTERM, stderr
    assert not os.path.exists(path)
    assert not segments_of(pid)


def test_sigterm_while_imap_waits_for_a_result_is_handled_too(tmp_path):
    rc, path, workers, stderr, pid = signalled(tmp_path, "share-imap", signal.SIGTERM)
    assert rc == -signal.SIGTERM, stderr
    assert not os.path.exists(path)
    assert not segments_of(pid)
    assert not still_alive_after(workers, 10.0)


def test_sighup_is_handled_like_sigterm(tmp_path):
    rc, path, workers, stderr, _ = signalled(tmp_path, "share", signal.SIGHUP)
    assert rc == -signal.SIGHUP, stderr
    assert not os.path.exists(path)
    assert not still_alive_after(workers, 10.0)


def test_a_sigterm_handler_of_the_program_is_left_in_charge(tmp_path):
    # the script's own handler calls sys.exit(3): its exit status, and the SystemExit
    # unwinds through corral, which still closes its pool and unlinks the segment
    rc, path, workers, stderr, _ = signalled(tmp_path, "own-handler", signal.SIGTERM)
    assert rc == 3, stderr
    assert not os.path.exists(path)
    assert not still_alive_after(workers, 10.0)


def _square(x):
    return x * x


def test_the_dispositions_are_restored_after_a_batch():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        corral.map(_square, range(4), workers=2)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_handler_of_the_program_is_not_replaced_during_a_batch():
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        values = corral.map(_during_batch, range(2), backend="serial")  # runs here
        assert values == [mine.__name__] * 2
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def _during_batch(x):
    return getattr(signal.getsignal(signal.SIGTERM), "__name__", None)
