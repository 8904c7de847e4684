"""The fault matrix's rows that need the journal (docs/reliability.md): the journal's disk
full, /dev/shm full, kill -9 of the coordinator then resume, drain then resume in the next
allocation. (The coordinator kill loop, 20 SIGKILLs, is in test_journal_durability.py.)

Each row runs corral in a child process (tests/scripts/) and checks, besides its fault's
typed error: every task's result equal to serial after the resume; the journal consistent,
read with ``corral.open_journal`` (each task's success journaled exactly once, nothing
unfinished); no task run again after its success was journaled (marker files, one per task
and attempt, named with the coordinator's pid); 0 processes left (each worker the child
noted, by pid: the children are not the test's descendants once they have exited, so the
leak guards of conftest.py cannot see them) and 0 shared-memory segments of theirs left.

A full filesystem is a real one: a small tmpfs mounted in a mount namespace of its own
(``unshare -m``), held open by a process (``Namespace``); the children run inside it
(``nsenter``), and the test reads it through ``/proc/<holder>/root``. Under CI a machine
that cannot make one fails these rows; elsewhere they are skipped, saying why.

Each row prints its measured figure (``FIGURE ...`` lines, seen with ``-s``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from _deps import missing, require_program
from _procs import left_of_pools, marked, still_alive_after, wait_until
from test_journal_durability import markers as attempts  # (task, coordinator pid) per start

import corral
from corral._sharing import segments as _shm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SCRIPTS = Path(__file__).parent / "scripts"
SRC = Path(__file__).resolve().parent.parent / "src"


# -- a small filesystem of our own ---------------------------------------------------------------
class Namespace:
    """A mount namespace of its own with a tmpfs of ``size`` at ``mount`` (which must exist),
    held by a process (``cat``, until its standard input closes: then the namespace and
    its tmpfs go away). ``start`` runs a script inside it; ``outside`` is the path through
    which this process sees a path inside it."""

    def __init__(self, mount: Path, size: str) -> None:
        require_program("unshare")
        require_program("nsenter")
        self.mount = mount
        root = os.geteuid() == 0  # else a user namespace too, where we are root
        unshare = ["unshare", "-m", "--propagation", "private"]
        if not root:
            unshare.insert(1, "-r")
        script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && echo mounted && exec cat'
        self.holder = subprocess.Popen(
            [*unshare, "sh", "-c", script, "sh", size, str(mount)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.holder.stdout is not None and self.holder.stderr is not None
        if self.holder.stdout.readline().strip() != "mounted":
            self.holder.wait(10)
            why = self.holder.stderr.read().strip()
            missing(f"cannot mount a tmpfs in a mount namespace of its own (unshare): {why}")
        self._enter = ["nsenter", "-t", str(self.holder.pid), "-m"]
        if not root:
            self._enter[4:4] = ["-U", "--preserve-credentials"]

    def outside(self, inside: Path) -> Path:
        return Path(f"/proc/{self.holder.pid}/root") / inside.relative_to("/")

    def copy_out(self, journal: Path, to: Path) -> Path:
        """A copy of the journal inside (its file and write-ahead log) in ``to``, for
        reading. (SQLite resolves symbolic links in a path, ``/proc/<pid>/root`` too, so it
        cannot open the journal through ``outside``.)"""
        to.mkdir()
        for suffix in ("", "-wal"):
            source = self.outside(journal.with_name(journal.name + suffix))
            if source.exists():
                shutil.copyfile(source, to / (journal.name + suffix))
        return to / journal.name

    def free(self) -> int:
        st = os.statvfs(self.outside(self.mount))
        return st.f_bavail * st.f_frsize

    def start(self, script: Path, *args: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self._enter, "--", sys.executable, str(script), *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
            start_new_session=True,
        )  # fmt: skip

    def close(self) -> None:
        assert self.holder.stdin is not None
        self.holder.stdin.close()
        self.holder.wait(10)


def _env(**extra: str) -> dict[str, str]:
    """This environment, corral importable, without the CORRAL_* settings of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the script still ran after {timeout} s (a hang): {err}") from None


# -- what every row checks ---------------------------------------------------------------------
def successes(journal: Path) -> dict[Any, list[int]]:
    """Each task's journaled successes: the runs that committed them (raw rows: the reader
    shows only a task's latest)."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT run, positions, keys FROM finished WHERE status = 'ok'")
        ok: dict[Any, list[int]] = collections.defaultdict(list)
        for run, positions, keys in rows:
            for key in pickle.loads(keys if keys is not None else positions):
                ok[key].append(run)
    finally:
        conn.close()
    return dict(ok)


def check_journal(journal: Path, expected: dict[Any, Any]) -> corral.JournalView:
    """The journal holds ``expected`` (key → value) and nothing else: every task's success
    journaled once, its value equal to serial, nothing started and left unfinished."""
    view = corral.open_journal(journal)
    assert view.counts.get("ok") == len(expected), view.counts
    assert view.unfinished == [], view.unfinished
    assert {o.key: o.value for o in view.outcomes} == expected
    assert all(len(runs) == 1 for runs in successes(journal).values()), successes(journal)
    return view


def never_after_success(journal: Path, starts: list[tuple[Any, int]]) -> None:
    """No task started (``(task, coordinator pid)``) in a run after the one that journaled
    its success."""
    view = corral.open_journal(journal)
    run_of = {r.pid: r.run for r in view.runs}
    ok = successes(journal)
    for task, pid in starts:
        assert run_of[pid] <= ok[task][0], f"task {task} ran again after its journaled success"


def nothing_left(coordinator: int, workers: set[int], shm: Path | None = None) -> None:
    """0 processes (the coordinator, its workers by pid, any process titled as its pool's)
    and 0 segments of theirs in /dev/shm (or ``shm``) and the temporary folder."""
    pids = workers | {coordinator}
    assert not still_alive_after(pids, 10), "processes left behind"
    assert left_of_pools({coordinator}) == {}, "processes left behind"
    for folder in (str(shm or _shm.SHM_DIR), tempfile.gettempdir()):
        assert _shm.owned_by(pids, folder) == [], f"segments left behind in {folder}"


# -- journal disk full (ENOSPC) ----------------------------------------------------------------
@pytest.mark.parametrize("verb", ["map", "imap"])
def test_journal_disk_full_stops_the_run_and_resumes_once_space_is_back(
    tmp_path: Path, verb: str
) -> None:
    """A real full filesystem: the journal on an 8 MiB tmpfs with ~768 KiB left, 40 results
    of 64 KiB (10 ms each). The run stops with a JournalError naming the journal and ENOSPC
    (no hang, no sqlite traceback); what was journaled stays; once the filler is removed,
    the same program resumes and runs exactly the tasks that were not journaled."""
    n, size = 40, 64 * 1024
    expected = {x: bytes([x % 256]) * size for x in range(n)}
    (tmp_path / "disk").mkdir()
    markers = tmp_path / "m"
    ns = Namespace(tmp_path / "disk", "8m")
    try:
        inside = ns.mount / "run.corral"
        filler = ns.outside(ns.mount / "filler")
        filler.write_bytes(bytes(ns.free() - 768 * 1024))
        started = time.monotonic()
        proc = ns.start(SCRIPTS / "journal_disk_full.py", inside, markers, n, size, verb)
        out, err = finish(proc)
        stopped = time.monotonic() - started
        assert proc.returncode == 3, err
        error = json.loads(out.splitlines()[-1])
        assert error["error"] == "JournalError", error
        assert f"journal {inside}: cannot be written: no space left" in error["message"], error
        assert "ENOSPC" in error["message"] and "Traceback" not in err, err
        first = {task for task, _ in attempts(markers)}
        assert len(first) < n, "the run went on after its journal could not be written"
        workers = marked(markers, "worker")
        nothing_left(proc.pid, workers)

        # what was journaled before the disk filled is there, whole
        view = corral.open_journal(ns.copy_out(inside, tmp_path / "after-the-error"))
        kept = {o.key for o in view.outcomes if o.status.value == "ok"}
        assert kept and all(o.value == expected[o.key] for o in view.outcomes)
        assert kept <= first

        if verb == "map":  # a new journal on the disk, now full to the last byte
            with contextlib.suppress(OSError), open(filler, "ab") as f:
                f.write(bytes(ns.free() + (1 << 20)))  # (fails with ENOSPC once full)
            proc = ns.start(SCRIPTS / "journal_disk_full.py", ns.mount / "new.corral", markers,
                            n, size, verb)  # fmt: skip
            out, err = finish(proc)
            assert proc.returncode == 3, err
            error = json.loads(out.splitlines()[-1])
            assert error["error"] == "JournalError" and "nothing ran" in error["message"], error
            assert "no space left" in error["message"], error
            assert not [pid for _, pid in attempts(markers) if pid == proc.pid]
            nothing_left(proc.pid, set())

        filler.unlink()  # space is back
        started = time.monotonic()
        proc = ns.start(SCRIPTS / "journal_disk_full.py", inside, markers, n, size, verb)
        out, err = finish(proc)
        resumed = time.monotonic() - started
        assert proc.returncode == 0, err
        assert json.loads(out)["results"] == [[size, x % 256] for x in range(n)]
        second = [task for task, pid in attempts(markers) if pid == proc.pid]
        assert sorted(second) == sorted(set(range(n)) - kept), "a journaled task ran again"
        journal = ns.copy_out(inside, tmp_path / "after-the-resume")
        check_journal(journal, expected)
        never_after_success(journal, attempts(markers))
        nothing_left(proc.pid, marked(markers, "worker"))
    finally:
        ns.close()
    print(
        f"FIGURE journal disk full ({verb}): stopped {stopped:.2f} s after the start, "
        f"{len(kept)} of {n} results journaled, {len(first)} run; resume ran {len(second)} "
        f"in {resumed:.2f} s"
    )


# -- /dev/shm full ------------------------------------------------------------------------------
def test_dev_shm_full_fails_the_share_before_any_work_and_batches_still_run() -> None:
    """A real full /dev/shm: a 4 MiB tmpfs over it in the child's mount namespace
    (``scripts/shm_full.py``)."""
    ns = Namespace(Path("/dev/shm"), "4m")
    try:
        started = time.monotonic()
        proc = ns.start(SCRIPTS / "shm_full.py")
        out, err = finish(proc)
        wall = time.monotonic() - started
        assert proc.returncode == 0, err
        got = json.loads(out)
        nothing_left(proc.pid, set(got["workers"]), ns.outside(Path("/dev/shm")))
    finally:
        ns.close()
    for step in ("share_big", "share_small_when_full"):
        kind, message = got[step]
        assert kind == "ConfigError", got[step]
        assert "not enough space in /dev/shm" in message and 'backing="file"' in message
    assert got["left_after_big"] == got["left_when_full"] == got["left"] == []
    assert got["free_when_full"] < 64 * 1024, got  # full for real
    assert got["map_error"] is None and got["map_when_full"] == [x * x for x in range(6)]
    assert got["share_error"] is None
    assert got["shared_results"] == [499500.0 + x for x in range(4)]
    print(f"FIGURE /dev/shm full: refused at once (share of 2 x /dev/shm), run in {wall:.2f} s")


# -- kill -9 of the coordinator, then resume ------------------------------------------------------
IN_FLIGHT = 2 * 2 * 4 + 2 * 4
"""Most tasks of journal_batch.py (2 workers, chunks of 4) started and not yet committed at
once (test_journal_durability.py): a kill makes at most these run again."""


def test_kill_9_of_the_coordinator_then_resume_runs_each_task_to_success_once(
    tmp_path: Path,
) -> None:
    n = 400
    journal, markers = tmp_path / "run.corral", tmp_path / "m"
    script = SCRIPTS / "journal_batch.py"
    proc = subprocess.Popen(
        [sys.executable, *map(str, (script, journal, markers, n)), "slow"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: markers.exists() and len(attempts(markers)) >= 60,
            "60 tasks to start", timeout=60, proc=proc,
        )  # fmt: skip
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the killed coordinator's workers die (their lifeline's watchdog), by pid
    nothing_left(proc.pid, marked(markers, "worker"))
    view = corral.open_journal(journal)
    kept = {o.key for o in view.outcomes}
    assert view.counts.get("ok", 0) == len(kept) < n
    assert view.runs[0].ended is None  # it was killed

    started = time.monotonic()
    again = subprocess.Popen(
        [sys.executable, *map(str, (script, journal, markers, n)), "slow"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    out, err = finish(again)
    resumed = time.monotonic() - started
    assert again.returncode == 0, err
    assert out.strip() == f"done {n}"  # its results equal serial (the script checks)
    check_journal(journal, {x: 2 * x for x in range(n)})
    starts = attempts(markers)
    never_after_success(journal, starts)
    extra = len(starts) - n
    assert extra <= IN_FLIGHT, f"{extra} tasks ran twice"
    nothing_left(again.pid, marked(markers, "worker"))
    interrupted = {key for _, key in corral.open_journal(journal).interrupted}
    print(
        f"FIGURE kill -9 of the coordinator: {len(kept)} of {n} journaled at the kill, "
        f"{len(interrupted)} interrupted, {extra} ran twice; resume in {resumed:.2f} s"
    )


# -- drain, then resume in the next allocation ---------------------------------------------------
def test_drain_then_resume_in_the_next_allocation(tmp_path: Path) -> None:
    """``corral run --journal`` (the real command line) drained by SIGUSR1, as SLURM's
    ``--signal`` does before the time limit: the running tasks finish (``drain_grace``), the
    rest are cancelled, exit status 75; the same command then runs exactly the rest."""
    n = 8
    journal, markers = tmp_path / "run.corral", tmp_path / "m"
    markers.mkdir()
    command = [
        sys.executable, "-m", "corral", "run", "journal_drain_tasks:gated",
        *map(str, range(n)), "--workers", "2", "--journal", str(journal), "--out", "-",
    ]  # fmt: skip
    env = _env(DRAIN_MARKERS=str(markers), CORRAL_DRAIN_GRACE="60")

    def ran(prefix: str) -> collections.Counter[str]:
        return collections.Counter(
            p.name.split("-")[1] for p in markers.glob(f"{prefix}-*") if ".tmp" not in p.name
        )

    proc = subprocess.Popen(
        command, cwd=SCRIPTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: len(ran("running")) >= 2, "2 running tasks", timeout=60, proc=proc)
        os.kill(proc.pid, signal.SIGUSR1)
        drained_at = time.monotonic()
        # Each task that runs (the two now; any the drain did not stop in time) may finish:
        # released one by one, so the drain lands while most tasks wait.
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            for x in ran("running"):
                (markers / f"release-{x}").touch()
            time.sleep(0.02)  # polling the markers the tasks leave
        out, err = finish(proc, 60)
        drain_wall = time.monotonic() - drained_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75, err
    assert "drained (SIGUSR1)" in err
    done = set(ran("done"))
    assert set(ran("running")) == done  # the running tasks finished, within drain_grace
    assert 2 <= len(done) < n
    for row in map(json.loads, out.splitlines()):
        if row["key"] in done:
            assert (row["status"], row["value"]) == ("ok", int(row["key"]) ** 2), row
        else:
            assert row["status"] == "cancelled" and "drained (SIGUSR1)" in row["error"], row
    assert {o.key for o in corral.open_journal(journal).outcomes} == done
    nothing_left(proc.pid, marked(markers, "worker"))

    for x in range(n):  # the next allocation: nothing waits
        (markers / f"release-{x}").touch()
    started = time.monotonic()
    again = subprocess.Popen(command, cwd=SCRIPTS, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    out, err = finish(again)
    resumed = time.monotonic() - started
    assert again.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["key"], r["value"]) for r in rows] == [(str(x), x * x) for x in range(n)]
    assert [r["status"] for r in rows] == ["cached" if str(x) in done else "ok" for x in range(n)]
    assert ran("running") == collections.Counter({str(x): 1 for x in range(n)})  # each once
    check_journal(journal, {str(x): x * x for x in range(n)})
    nothing_left(again.pid, marked(markers, "worker"))
    print(
        f"FIGURE drain then resume: {len(done)} of {n} finished within the grace, drained in "
        f"{drain_wall:.2f} s (exit 75); the next run ran {n - len(done)} in {resumed:.2f} s"
    )
