"""``corral exec`` on real programs through the console script: replacement strings, a
non-zero exit, a signal, a program that hangs past its timeout leaving a grandchild (both
gone), --workdir, and Ctrl-C (exit 130, nothing left behind)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from corral._platform import marked
from tests._procs import corral_cli, wait_until

MARK = "CORRAL_TEST_CLI_MARK"


def _left_behind(mark: str) -> list[int]:
    """Live processes (not zombies) that carry this test's mark in their environment."""
    import psutil

    out = []
    for pid in marked(MARK, mark):
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replacement_strings_and_output_in_input_order(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for name in ("b.tar.gz", "a.txt"):
        (tmp_path / "d" / name).write_text("")
    proc = corral_cli(
        "exec", "echo {} {.} {/} {//} {/.} {#} {%}", "d/*", "--workers", "2", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        "d/a.txt d/a a.txt d a 1",
        "d/b.tar.gz d/b.tar b.tar.gz d b.tar 2",
    ]
    assert {line.rsplit(" ", 1)[1] for line in lines} <= {"1", "2"}


def test_port_and_token_are_the_workers_own(tmp_path: Path) -> None:
    proc = corral_cli(
        "exec", "echo {port} {token} # {}", "a", "b", "c", "--workers", "1", "--out", "o.jsonl",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = {tuple(line.split()) for line in proc.stdout.splitlines()}
    assert len(seen) == 1  # one worker: one port, one token
    port, token = seen.pop()
    assert 0 < int(port) < 65536 and len(token) == 32
    rows = _rows(tmp_path / "o.jsonl")
    assert [r["value"]["exit_code"] for r in rows] == [0, 0, 0]  # type: ignore[index]


def test_nonzero_exit_and_signal_are_failures_with_code_signal_and_stderr(tmp_path: Path) -> None:
    script = (
        'case {} in ok) echo fine;; three) echo "first\\nlast words" >&2; exit 3;; '
        "segv) kill -SEGV $$;; esac"
    )
    proc = corral_cli("exec", script, "ok", "three", "segv", "--out", "o.jsonl", cwd=tmp_path)
    assert proc.returncode == 1
    rows = {r["key"]: r for r in _rows(tmp_path / "o.jsonl")}
    assert rows["ok"]["status"] == "ok"
    assert rows["three"]["status"] == "failed"
    assert "CommandFailed" in str(rows["three"]["error"])
    assert "exited with status 3" in str(rows["three"]["error"])
    assert "last words" in str(rows["three"]["error"])
    assert "killed by SIGSEGV" in str(rows["segv"]["error"])
    assert "fine" in proc.stdout


def test_command_failed_carries_exit_code_signal_and_stderr_tail(
    request: pytest.FixtureRequest,
) -> None:
    import shutil

    import corral
    from corral._command import run_command, slots_dir

    run = uuid.uuid4().hex
    request.addfinalizer(lambda: shutil.rmtree(slots_dir(run), ignore_errors=True))
    report = corral.run(
        [
            corral.Task(run_command, ("echo {} >&2; exit 4", "x"), kwargs=dict(
                job=1, run=run, slots=1), key="x"),
            corral.Task(run_command, ("kill -TERM $$ # {}", "y"), kwargs=dict(
                job=2, run=run, slots=1), key="y"),
        ],
        errors="return",
        backend="serial",
    )  # fmt: skip
    x, y = (o.error for o in report.outcomes)
    assert isinstance(x, corral.CommandFailed) and isinstance(y, corral.CommandFailed)
    assert (x.exit_code, x.signal, x.stderr_tail) == (4, None, "x")
    assert (y.exit_code, y.signal) == (None, "SIGTERM")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["process", "serial"])
def test_timeout_kills_the_program_and_its_grandchild(tmp_path: Path, backend: str) -> None:
    mark = uuid.uuid4().hex
    # the grandchild leaves the program's session (setsid) too
    command = "(setsid sleep 600 &); (sleep 600 &); sleep 600 # {}"
    proc = corral_cli(
        "exec", command, "case", "--timeout", "1", "--retries", "0", "--backend", backend,
        "--out", "o.jsonl", cwd=tmp_path, env={MARK: mark},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    [row] = _rows(tmp_path / "o.jsonl")
    assert row["status"] == "timeout"
    wait_until(lambda: not _left_behind(mark), "the program and its grandchildren to be gone")


def test_workdir_per_task(tmp_path: Path) -> None:
    proc = corral_cli("exec", "pwd > out.txt # {}", "a", "b", "--workdir", "runs/{}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("a", "b"):
        written = (tmp_path / "runs" / name / "out.txt").read_text().strip()
        assert Path(written).resolve() == (tmp_path / "runs" / name).resolve()


@pytest.mark.slow
def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update({MARK: mark, "PYTHONPATH": src})
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "exec", "touch started-{#}; sleep 600", "a", "b",
         "--workers", "2", "--no-progress", "--out", "o.jsonl"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: len(list(tmp_path.glob("started-*"))) == 2, "both programs", proc=proc)
        assert len(_left_behind(mark)) >= 4  # the CLI, workers, programs: the mark finds them
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert {r["status"] for r in _rows(tmp_path / "o.jsonl")} == {"cancelled"}
        wait_until(lambda: not _left_behind(mark), "every process of the run to be gone")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
