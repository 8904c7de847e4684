"""The fault matrix: what corral survives (docs/reliability.md keeps the table; this module
keeps it true).

Each row injects one fault into one task of a batch (``BAD`` of ``N``, two real workers) and
checks: the failing task's typed error and reason, every other task's result, and (through
the autouse guards of conftest.py) 0 processes and 0 shared-memory segments left behind.
Rows that existing tests already keep true are listed in ``ELSEWHERE`` with the test that
does; ``test_every_row_is_kept_true_somewhere`` checks those tests exist, so the table cannot
point at nothing. Every row of the issue's matrix has its test now: ``PENDING`` (a row not
kept true yet, and what it waits for) is empty, and ``test_nothing_is_pending`` keeps it so.

Each row prints its measured figure (``FIGURE ...`` lines, seen with ``-s``): the batch's
wall time, and for a timeout how long after its limit the task was stopped.
"""

from __future__ import annotations

import ast
import ctypes
import os
import re
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from _procs import alive, marked, wait_until

import corral

pytestmark = pytest.mark.timeout(120)

N = 6
BAD = 3
TIMEOUT = 1.0
HERE = Path(__file__).parent


# -- the faults (module level: they travel to the workers by reference) ---------------------------
def _fault(kind: str) -> Any:
    if kind == "exception":
        raise ValueError("bad item")
    if kind == "os._exit":
        os._exit(3)
    if kind == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "SIGSEGV":
        ctypes.string_at(0)  # reads address 0
    if kind == "SIGABRT":
        os.abort()
    if kind == "hang: pure Python":
        while True:
            pass
    if kind == "hang: time.sleep":
        time.sleep(1000)
    if kind == "hang: C code holding the GIL":
        # the re engine matches in C without releasing the GIL: exponential backtracking
        # (ctypes calls, such as libc sleep, release it, so they would not show this)
        re.match(r"(a+)+$", "a" * 64 + "b")
    if kind == "hang: in a child process":
        subprocess.run(["sleep", "1000"], check=False)
    if kind == "hang, ignoring SIGTERM":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(1000)
    if kind == "memory past RLIMIT_AS":
        return bytearray(1 << 30)  # the worker's address space is limited to 512 MiB
    raise AssertionError(kind)


def faulty(x: int, kind: str) -> Any:
    if x == BAD:
        return _fault(kind)
    return x * x


def limit_address_space() -> None:
    """Worker initializer: a real kernel limit on this worker's memory (RLIMIT_AS)."""
    limit = 512 * 1024**2 + psutil.Process().memory_info().vms
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@dataclass(frozen=True)
class Row:
    fault: str
    status: str
    error: type[BaseException]
    reason: str  # in the error's message
    options: tuple[tuple[str, Any], ...] = ()


TIMED = (("timeout", TIMEOUT), ("kill_grace", 0.5))
ROWS = [
    Row("exception", "failed", ValueError, "bad item"),
    Row("os._exit", "crashed", corral.WorkerCrashed, "exited with code 3"),
    Row("SIGKILL", "crashed", corral.WorkerCrashed, "SIGKILL"),
    Row("SIGSEGV", "crashed", corral.WorkerCrashed, "SIGSEGV"),
    Row("SIGABRT", "crashed", corral.WorkerCrashed, "SIGABRT"),
    Row("hang: pure Python", "timeout", corral.TaskTimeout, "timed out after 1 s", TIMED),
    Row("hang: time.sleep", "timeout", corral.TaskTimeout, "timed out after 1 s", TIMED),
    Row("hang: C code holding the GIL", "timeout", corral.TaskTimeout, "timed out", TIMED),
    Row("hang: in a child process", "timeout", corral.TaskTimeout, "timed out", TIMED),
    Row("hang, ignoring SIGTERM", "timeout", corral.TaskTimeout, "timed out", TIMED),
    Row(
        "memory past RLIMIT_AS",
        "failed",
        MemoryError,
        "",
        (("initializer", limit_address_space),),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.fault for r in ROWS])
def test_a_fault_fails_only_its_task_with_a_typed_error(row: Row) -> None:
    started = time.monotonic()
    with corral.Pool(workers=2, errors="return", **dict(row.options)) as pool:
        report = pool.run([corral.Task(faulty, (x, row.fault), key=x) for x in range(N)])
    wall = time.monotonic() - started
    bad = report.outcomes[BAD]
    assert bad.status == row.status, bad
    assert isinstance(bad.error, row.error), repr(bad.error)
    assert row.reason in str(bad.error), str(bad.error)
    assert [o.value for o in report.outcomes if o.key != BAD] == [
        x * x for x in range(N) if x != BAD
    ]
    late = ""
    if row.status == "timeout" and bad.started is not None and bad.finished is not None:
        late = f", stopped {bad.finished - bad.started - TIMEOUT:.2f} s after its limit"
    print(f"FIGURE {row.fault}: batch of {N} in {wall:.2f} s{late}")


# -- faults from outside: kill -9 of a worker, of its watchdog ----------------------------------
def note_and_wait(x: int, marker_dir: str) -> int:
    """``x == BAD``: note ``worker-<pid>`` and wait for ``release`` (or 60 s); then x * x."""
    markers = Path(marker_dir)
    if x == BAD:
        (markers / f"worker-{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while not (markers / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a file the test creates
    return x * x


def _run_with_killer(tmp_path: Path, kill: Any) -> corral.Report:
    """Run the batch in a Pool; once task BAD runs, ``kill(worker pid)``, then release it."""
    with corral.Pool(workers=2) as pool:
        future_report: dict[str, corral.Report] = {}
        tasks = [corral.Task(note_and_wait, (x, str(tmp_path)), key=x) for x in range(N)]
        runner = threading.Thread(
            target=lambda: future_report.update(r=pool.run(tasks, errors="return"))
        )
        runner.start()
        try:
            wait_until(lambda: marked(tmp_path, "worker"), "task BAD running")
            (pid,) = marked(tmp_path, "worker")
            kill(pid)
        finally:
            (tmp_path / "release").touch()
            runner.join(60)
        return future_report["r"]


def test_kill_9_of_a_worker_fails_its_task_with_worker_crashed(tmp_path: Path) -> None:
    report = _run_with_killer(tmp_path, lambda pid: os.kill(pid, signal.SIGKILL))
    bad = report.outcomes[BAD]
    assert bad.status == "crashed" and isinstance(bad.error, corral.WorkerCrashed)
    assert bad.error.signal == "SIGKILL"
    assert [o.value for o in report.outcomes if o.key != BAD] == [
        x * x for x in range(N) if x != BAD
    ]


def watchdog_of(pid: int) -> psutil.Process:
    for child in psutil.Process(pid).children():
        if "watchdog" in " ".join(child.cmdline()):
            return child
    raise AssertionError(f"worker {pid} has no watchdog child")


def test_kill_9_of_a_watchdog_leaves_its_worker_and_every_task_fine(tmp_path: Path) -> None:
    """The watchdog only acts when the coordinator is gone: its death changes no result,
    and the worker (which reaps it) still exits with the Pool (the leak guard checks)."""
    killed = []

    def kill_watchdog(pid: int) -> None:
        watchdog = watchdog_of(pid)
        watchdog.kill()
        killed.append(watchdog.pid)

    report = _run_with_killer(tmp_path, kill_watchdog)
    assert report.ok and [o.value for o in report.outcomes] == [x * x for x in range(N)]
    assert killed and not alive(killed[0])


# -- memory past a cgroup limit: the kernel's OOM killer acts for real ---------------------------
def memory_cgroup_root() -> tuple[Path, str] | None:
    """This process's memory cgroup folder and the name of its limit file (v1 or v2), when
    this process may create a child cgroup there (root, cgroup fs mounted writable)."""
    if os.geteuid() != 0:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit = "memory.limit_in_bytes"
            break
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            folder, limit = Path("/sys/fs/cgroup") / path.lstrip("/"), "memory.max"
            break
    else:
        return None
    return (folder, limit) if os.access(folder, os.W_OK) else None


def join_cgroup(procs: str) -> None:
    """Worker initializer: move this worker into the test's memory cgroup."""
    Path(procs).write_text(str(os.getpid()))


def blow_up(x: int) -> Any:
    if x == BAD:
        return len(bytearray(1 << 30))  # 1 GiB of touched pages, in a 256 MiB cgroup
    return x * x


@pytest.mark.slow
def test_memory_past_a_cgroup_limit_is_a_crash_that_says_out_of_memory() -> None:
    found = memory_cgroup_root()
    if found is None:
        pytest.skip("needs root and a writable memory cgroup (v1 or v2) to make a limited one")
    folder, limit_file = found
    group = folder / f"corral-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / limit_file).write_text(str(256 * 2**20))
        procs = str(group / "cgroup.procs")
        with corral.Pool(workers=2, initializer=join_cgroup, initargs=(procs,)) as pool:
            report = pool.run(
                [corral.Task(blow_up, (x,), key=x) for x in range(N)], errors="return"
            )
    finally:
        deadline = time.monotonic() + 10
        while group.exists():
            try:
                group.rmdir()
            except OSError:  # its last worker is still exiting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    bad = report.outcomes[BAD]
    assert bad.status == "crashed" and isinstance(bad.error, corral.WorkerCrashed), bad
    assert bad.error.signal == "SIGKILL"
    assert "out of memory" in str(bad.error), str(bad.error)
    assert [o.value for o in report.outcomes if o.key != BAD] == [
        x * x for x in range(N) if x != BAD
    ]


# -- big results --------------------------------------------------------------------------------
def big_result(n_bytes: int) -> bytes:
    return b"\x01" * n_bytes


@pytest.mark.slow
def test_a_1_gib_result_arrives_whole() -> None:
    """1 GiB, or an eighth of the memory available now if that is less (the result exists in
    the worker, in the pipe's pickle and in the coordinator at once)."""
    size = min(1 << 30, psutil.virtual_memory().available // 8)
    started = time.monotonic()
    (value,) = corral.map(big_result, [size], workers=2)
    wall = time.monotonic() - started
    assert len(value) == size and value[:1] == b"\x01" and value[-1:] == b"\x01"
    print(f"FIGURE 1 GiB result: {size / 2**20:.0f} MiB in {wall:.2f} s")


# -- rows kept true by other test modules --------------------------------------------------------
ELSEWHERE = {
    "unpicklable argument": "test_faults.py::test_unpicklable_argument_fails_only_that_item",
    "unpicklable result": "test_faults.py::test_unpicklable_result_fails_only_that_item",
    "result that cannot be unpickled": (
        "test_faults.py::test_result_that_cannot_be_unpickled_fails_only_that_item"
    ),
    "unpicklable exception": "test_faults.py::test_unpicklable_exception_arrives_as_remote_error",
    "memory past a cgroup limit (kernel OOM killer)": (
        "test_reliability.py::test_memory_past_a_cgroup_limit_is_a_crash_that_says_out_of_memory"
    ),
    "soak with random faults (process backend)": (
        "test_soak.py::test_random_faults_and_kills_lose_nothing"
    ),
    "memory past max_worker_memory": (
        "test_recycling.py::test_max_worker_memory_recycles_a_worker_that_grows"
    ),
    "fixture set-up fails": (
        "test_fixtures.py::test_failed_set_up_fails_the_task_with_fixture_error_and_is_retried_next_task"
    ),
    "service never ready": "test_services.py::test_program_never_ready_is_stopped_and_retried",
    "port squatted by a foreign listener": (
        "test_services.py::test_ports_squatted_by_foreign_listeners_are_skipped"
    ),
    "service ignores SIGTERM": (
        "test_services.py::test_a_service_ignoring_sigterm_is_killed_after_the_grace_period"
    ),
    "kill -9 of a Dask worker": (
        "test_reliability_dask.py::"
        "test_kill_9_of_a_dask_worker_fails_or_retries_its_task_and_loses_nothing"
    ),
    "soak on the Dask backend (killing Dask workers)": (
        "test_reliability_dask.py::"
        "test_soak_with_random_faults_and_dask_workers_killed_loses_nothing"
    ),
    "kill -9 of a service (the program itself)": (
        "test_reliability_service.py::"
        "test_kill_9_of_a_service_fails_the_task_using_it_and_the_next_tasks_get_a_new_one"
    ),
    "kill -9 of a worker running a service": (
        "test_services.py::test_server_dies_with_a_worker_killed_by_sigkill"
    ),
    "kill -9 of the coordinator": (
        "test_orphans.py::test_busy_workers_and_their_subprocesses_exit_when_the_coordinator_is_killed"
    ),
    "Ctrl-C once": (
        "test_interrupt.py::test_ctrl_c_raises_keyboard_interrupt_with_the_partial_report"
    ),
    "Ctrl-C twice": "test_interrupt.py::test_repeated_ctrl_c_still_stops_everything",
    "SIGTERM": (
        "test_sigterm.py::test_sigterm_exits_by_the_signal_and_leaves_no_segment_or_worker"
    ),
    "/dev/shm full": (
        "test_reliability_journal.py::"
        "test_dev_shm_full_fails_the_share_before_any_work_and_batches_still_run"
    ),
    "escapees of a timed-out task": (
        "test_descendants.py::test_escapees_of_a_timed_out_task_are_killed"
    ),
    "stuck task among many (timeout='3x')": (
        "test_survival.py::test_a_stuck_task_among_many_is_killed_at_a_multiple_of_the_median"
    ),
    "memory short (min_free_memory)": (
        "test_survival.py::test_below_half_the_floor_the_youngest_task_is_stopped_and_requeued"
    ),
    "SIGUSR1 / deadline (drain)": (
        "test_survival.py::test_sigusr1_drains_running_tasks_finish_the_rest_are_cancelled"
    ),
    "journal disk full (ENOSPC)": (
        "test_reliability_journal.py::"
        "test_journal_disk_full_stops_the_run_and_resumes_once_space_is_back"
    ),
    "kill -9 of the coordinator, then resume": (
        "test_reliability_journal.py::"
        "test_kill_9_of_the_coordinator_then_resume_runs_each_task_to_success_once"
    ),
    "coordinator kill loop (20 SIGKILLs, each task once)": (
        "test_journal_durability.py::"
        "test_coordinator_sigkilled_twenty_times_loses_and_duplicates_nothing"
    ),
    "drain, then resume in the next allocation": (
        "test_reliability_journal.py::test_drain_then_resume_in_the_next_allocation"
    ),
}

PENDING: dict[str, str] = {}


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_every_row_is_kept_true_somewhere() -> None:
    for fault, where in ELSEWHERE.items():
        module, name = where.split("::")
        assert name in _test_names(HERE / module), f"{fault}: {where} does not exist"


def test_nothing_is_pending() -> None:
    assert not PENDING, f"rows without a test: {sorted(PENDING)}"


def test_the_docs_table_has_every_row() -> None:
    docs = (HERE.parent / "docs" / "reliability.md").read_text()
    rows = [r.fault for r in ROWS] + list(ELSEWHERE) + list(PENDING)
    missing = [row for row in rows if f"| {row} |" not in docs]
    assert not missing, f"docs/reliability.md lacks rows: {missing}"
