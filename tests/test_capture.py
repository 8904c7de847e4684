"""``capture_output=True``: each attempt's stdout and stderr, at the file-descriptor level
(prints, C-level writes, child processes), in ``Outcome.stdout``/``.stderr``; bounded to the
last ``output_limit`` bytes; kept up to the death of a task that timed out or crashed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import corral
from corral._worker.observe import CUT_MARKER

pytestmark = pytest.mark.timeout(120)


def chatty(x):
    print(f"print {x}")
    print(f"warn {x}", file=sys.stderr)
    os.write(1, f"fd1 {x}\n".encode())
    os.write(2, f"fd2 {x}\n".encode())
    return x


def from_a_child(x):
    subprocess.run([sys.executable, "-c", f"print('child {x}')"], check=True)
    subprocess.run(["sh", "-c", f"echo 'shell err {x}' >&2"], check=True)
    return x


def talk_then_hang(x):
    print("before the hang", flush=False)
    os.write(1, b"raw before the hang\n")
    time.sleep(1000)


def talk_then_die(x):
    print("last words")
    os._exit(7)


def loud(x):
    os.write(1, b"a" * 5000 + b"END")
    return x


def fails_loudly(x):
    print("about to fail")
    raise ValueError("no")


def test_prints_and_fd_writes_of_each_task_are_its_own():
    report = corral.run([corral.Task(chatty, (i,)) for i in range(6)], workers=2,
                        capture_output=True)  # fmt: skip
    for i, outcome in enumerate(report.outcomes):
        assert outcome.stdout == f"print {i}\nfd1 {i}\n"
        assert outcome.stderr == f"warn {i}\nfd2 {i}\n"


def test_a_child_processs_output_is_captured():
    report = corral.run([corral.Task(from_a_child, (1,))], workers=1, capture_output=True)
    outcome = report.outcomes[0]
    assert outcome.stdout == "child 1\n" and outcome.stderr == "shell err 1\n"


@pytest.mark.slow
def test_a_task_killed_by_its_timeout_keeps_its_output():
    report = corral.run([corral.Task(talk_then_hang, (1,), timeout=1.0)], workers=1,
                        capture_output=True, errors="return")  # fmt: skip
    outcome = report.outcomes[0]
    assert outcome.status == "timeout"
    assert "before the hang\n" in outcome.stdout and "raw before the hang\n" in outcome.stdout


def test_a_crashed_task_keeps_its_output():
    report = corral.run([corral.Task(talk_then_die, (1,))], workers=1, capture_output=True,
                        errors="return")  # fmt: skip
    outcome = report.outcomes[0]
    assert outcome.status == "crashed" and outcome.stdout == "last words\n"


def test_a_failed_task_keeps_its_output():
    report = corral.run([corral.Task(fails_loudly, (1,))], workers=1, capture_output=True,
                        errors="return")  # fmt: skip
    assert report.outcomes[0].stdout == "about to fail\n"


def test_output_is_cut_to_its_last_bytes_with_a_marker():
    report = corral.run([corral.Task(loud, (1,))], workers=1, capture_output=True,
                        output_limit=1000)  # fmt: skip
    out = report.outcomes[0].stdout
    assert out.startswith(CUT_MARKER.format(cut=4003, limit=1000))
    assert out.endswith("a" * 997 + "END")


def test_a_map_chunk_captures_each_item():
    with corral.Pool(1, capture_output=True) as pool:
        pool.map(chatty, range(50), chunksize=25)
        report = pool.run([corral.Task(chatty, (i,)) for i in range(3)])
    assert [o.stdout for o in report.outcomes] == [f"print {i}\nfd1 {i}\n" for i in range(3)]


def test_without_capture_there_is_no_output_on_the_outcome(capfd):
    report = corral.run([corral.Task(chatty, (1,))], workers=1)
    assert report.outcomes[0].stdout is None and report.outcomes[0].stderr is None


def test_a_bad_output_limit_is_refused_at_the_boundary():
    with pytest.raises(corral.ConfigError, match="output_limit"):
        corral.map(chatty, [1], capture_output=True, output_limit="lots")
    with pytest.raises(corral.ConfigError, match="capture_output"):
        corral.map(chatty, [1], capture_output="yes")
