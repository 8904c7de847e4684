"""Durability of the journal: a journaled run killed at random moments, resumed each time.

The coordinator is ``scripts/journal_batch.py`` (2 workers, chunks of 4) in a subprocess.
Each task leaves a marker file per attempt, named with the coordinator's pid, so the test
knows which run ran what. After the last resume:

- every task has exactly one journaled success, and the results equal the serial ones;
- no task ran again after its success was journaled (a marker of run r for a task whose
  success was committed by run c < r would be one);
- the tasks run more than once are at most those in flight at each kill (printed: run with
  ``-s`` to see the counts).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from _procs import alive, kill_script, left_of_pools, run_script, wait_until

import corral

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCRIPT = Path(__file__).parent / "scripts" / "journal_batch.py"
WORKERS, CHUNK = 2, 4
IN_FLIGHT = WORKERS * 2 * CHUNK + WORKERS * CHUNK
"""Most tasks that can be started and not yet committed at once: each worker's running and
prefetched Call, plus a Call per worker whose Result waits for its commit."""


def markers(folder: Path) -> list[tuple[int, int]]:
    """``(task, coordinator pid)`` of every attempt that started."""
    out = []
    for p in folder.iterdir():
        parts = p.name.split("-")
        if parts[0].isdigit():
            out.append((int(parts[0]), int(parts[1])))
    return out


def committed(journal: Path) -> tuple[dict[int, list[int]], dict[int, int]]:
    """Each task's runs whose success is journaled, and each run's coordinator pid → run."""
    conn = sqlite3.connect(journal)
    try:
        runs = dict(conn.execute("SELECT pid, run FROM runs").fetchall())
        ok: dict[int, list[int]] = collections.defaultdict(list)
        import pickle

        for run, blob in conn.execute("SELECT run, positions FROM finished WHERE status = 'ok'"):
            for pos in pickle.loads(blob):
                ok[pos].append(run)
    finally:
        conn.close()
    return ok, runs


def check_journal(journal: Path, marker_dir: Path, n: int) -> dict[int, int]:
    """The invariants above; the number of extra attempts per run that was stopped."""
    ok, runs = committed(journal)
    assert sorted(ok) == list(range(n))
    assert all(len(r) == 1 for r in ok.values()), "a task has two journaled successes"
    view = corral.open_journal(journal)
    assert view.counts["ok"] == n
    assert sorted((o.key, o.value) for o in view.outcomes) == [(x, 2 * x) for x in range(n)]
    extra: collections.Counter[int] = collections.Counter()
    for task, pid in markers(marker_dir):
        run = runs[pid]
        first = ok[task][0]
        assert run <= first, f"task {task} ran in run {run} after its success in run {first}"
        if run < ok[task][0]:
            extra[run] += 1
    return dict(extra)


def resume_until_done(
    journal, marker_dir, n, mode, stop, times, seed, early=0.0, pids=None, start_method=None
):
    """Start the batch, ``stop`` it once its tasks run, ``times`` times; then let it finish.
    ``early``: the share of the stops that come at a random moment of the start-up instead
    (python, the journal opened and resumed, the workers starting: up to the time the last
    run took to its first task). Returns how many stops came early; ``pids`` gets each
    coordinator's pid; ``start_method``: the workers' (the script's default: corral's)."""
    extra = [start_method] if start_method else []
    rng = random.Random(seed)
    stopped = early_stops = 0
    startup = 0.5  # seconds from a start to its first task, as last seen
    while stopped < times:
        began = time.monotonic()
        proc = run_script(SCRIPT, journal, marker_dir, n, mode, *extra)
        if pids is not None:
            pids.append(proc.pid)
        try:
            if rng.random() < early:
                at = began + rng.uniform(0, startup)
                wait_until(
                    lambda at=at, proc=proc: time.monotonic() >= at or proc.poll() is not None,
                    "a random moment of the start-up",
                )
                early_stops += 1
            else:
                wait_until(  # a task of this coordinator ran (not a late one of the last)
                    lambda proc=proc: (
                        marker_dir.exists()
                        and any(pid == proc.pid for _, pid in markers(marker_dir))
                    ),
                    "the batch to run tasks",
                    timeout=60,
                    proc=proc,
                )
                startup = time.monotonic() - began
                wait_until(lambda: rng.random() < 0.3, "a random moment", timeout=5)
            if proc.poll() is not None:  # it finished first: nothing left to interrupt
                break
            stop(proc)
            stopped += 1
        finally:
            kill_script(proc, marker_dir)
    assert stopped == times, f"the batch finished after {stopped} interruptions"
    proc = run_script(SCRIPT, journal, marker_dir, n, mode, *extra)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        kill_script(proc, marker_dir)
    assert proc.returncode == 0, err
    assert out.strip() == f"done {n}"
    return early_stops


def sigkill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def ctrl_c(proc):
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, 0), err  # 0: it finished before the signal landed


KILLS = 20
"""The coordinator kill loop of the fault matrix (docs/reliability.md): 20 SIGKILLs."""


def test_coordinator_sigkilled_twenty_times_loses_and_duplicates_nothing(tmp_path):
    journal, marker_dir = tmp_path / "run.corral", tmp_path / "m"
    n = int(os.environ.get("CORRAL_JOURNAL_KILL_TASKS", "400"))
    started = time.monotonic()
    # Half of the kills while tasks run, half during a start-up (resume included): random
    # moments of both, in a bounded time (a start-up is most of a killed run's time, so the
    # workers are forked: the cheapest start; the fork server's fate when its coordinator
    # is killed is test_reliability_journal.py's kill -9 row).
    pids: list[int] = []
    early = resume_until_done(
        journal, marker_dir, n, "slow", sigkill, KILLS, seed=1, early=0.5, pids=pids,
        start_method="fork",
    )  # fmt: skip
    wall = time.monotonic() - started
    assert left_of_pools(pids) == {}  # no orphan of a killed coordinator (by its pool's pid)
    extra = check_journal(journal, marker_dir, n)
    print(f"\nSIGKILL x{KILLS} of {n} tasks: re-runs per kill {extra}")
    print(
        f"FIGURE coordinator kill loop: {KILLS} SIGKILLs ({early} during a start-up) of {n} "
        f"tasks in {wall:.1f} s, each "
        f"task's success journaled once, {sum(extra.values())} re-runs (at most {IN_FLIGHT} "
        f"a kill, the tasks in flight: {max(extra.values(), default=0)})"
    )
    assert all(count <= IN_FLIGHT for count in extra.values()), extra
    view = corral.open_journal(journal)
    # each run that got as far as opening the journal has its row (a kill may come before)
    assert KILLS - early + 1 <= len(view.runs) <= KILLS + 1
    # tasks running at a kill were marked interrupted by the next run, and ran then
    assert view.interrupted and {key for _, key in view.interrupted} <= set(range(n))
    print(f"interrupted marks: {len(view.interrupted)}")


def test_ctrl_c_three_times_loses_and_duplicates_nothing(tmp_path):
    journal, marker_dir = tmp_path / "run.corral", tmp_path / "m"
    resume_until_done(journal, marker_dir, 600, "slow", ctrl_c, times=3, seed=2)
    extra = check_journal(journal, marker_dir, 600)
    print(f"\nCtrl-C x3 of 600 tasks: re-runs per interruption {extra}")
    # The item running at Ctrl-C is cancelled (it ran, not to its end) and the finished items
    # of a chunk are handed over, when the worker answers within the hand-over's bound (2 s);
    # on a loaded machine it may not, and then its chunk runs again. The promise is the one
    # the journal makes for any interruption: at most the tasks in flight run again.
    assert all(count <= WORKERS * CHUNK for count in extra.values()), extra


def test_workers_sigkilled_during_a_journaled_run(tmp_path):
    journal, marker_dir = tmp_path / "run.corral", tmp_path / "m"
    n, kills = 600, 4
    proc = run_script(SCRIPT, journal, marker_dir, n, "crashy")
    killed: set[int] = set()
    try:
        for _ in range(kills):

            def a_worker() -> int | None:
                live = [
                    int(p.name.split("-")[1])
                    for p in marker_dir.glob("worker-*")
                    if int(p.name.split("-")[1]) not in killed
                ]
                live = [pid for pid in live if alive(pid)]
                return live[0] if live else None

            wait_until(lambda: a_worker() is not None, "a live worker", timeout=60, proc=proc)
            pid = a_worker()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    finally:
        kill_script(proc, marker_dir)
    ok, _ = committed(journal)
    assert sorted(ok) == list(range(n)) and all(len(r) == 1 for r in ok.values())
    attempts = collections.Counter(task for task, _ in markers(marker_dir))
    extra = sum(attempts.values()) - n
    print(f"\nworkers SIGKILLed x{kills} during {n} tasks: {extra} re-runs")
    assert extra <= kills * CHUNK * 2
    # a resume now runs nothing
    before = len(markers(marker_dir))
    proc = run_script(SCRIPT, journal, marker_dir, n, "crashy")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(markers(marker_dir)) == before
