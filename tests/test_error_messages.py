"""What a BatchError says, from real failing batches: the item of each failed ``map`` task,
whole multi-line reasons, skipped and cancelled tasks counted as what they are, the first
failure chained as ``__cause__`` (an uncaught BatchError shows the worker's traceback), and a
hint at the end of a long error never cut off."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import corral
from corral import Outcome, Report, Status, Task
from corral._errors import RemoteTraceback
from corral._reasons import LINE_CHARS, REASON_LINES

pytestmark = pytest.mark.timeout(180)

SCRIPTS = Path(__file__).parent / "scripts"
HINT = "use `with corral.share(x) as h:` to keep one share across several runs"
SHARE_HINT = "release a share only after the last run that uses it"


# -- task bodies (module level: workers import them) --------------------------------------------
def parse(text: str) -> int:
    return int(text)


def fail_with_lines(x: int) -> int:
    if x % 2:
        raise ValueError(f"item {x} is odd\nsecond line of the reason\nthird line names the fix")
    return x


def fail_with_a_long_line(x: int) -> int:
    raise RuntimeError("x" * (3 * LINE_CHARS) + "; " + HINT)


def fail_with_many_lines(x: int) -> int:
    raise RuntimeError("\n".join(f"line {i}" for i in range(500)))


def fail_if(fail: bool) -> str:
    if fail:
        raise ValueError("the first task failed")
    return "ok"


def identity(x: object) -> object:
    return x


USAGE_ERROR = (
    "import argparse; p = argparse.ArgumentParser(); p.add_argument('--port', required=True); "
    "p.parse_args()"
)


def start_a_service_that_needs_a_port(x: int) -> None:
    with corral.Service([sys.executable, "-c", USAGE_ERROR], retries=1):
        pass


# -- map: the position and the item ---------------------------------------------------------------
def test_map_failures_name_the_position_and_the_item():
    with pytest.raises(corral.BatchError) as info:
        corral.map(parse, ["1", "two", "3", "four"], workers=2)
    message = str(info.value)
    assert message.splitlines()[0] == "2 of 4 tasks failed:"
    assert "1 ('two'): failed: ValueError: invalid literal for int()" in message
    assert "3 ('four'): failed: ValueError" in message


def test_a_long_item_is_named_by_a_short_repr():
    item = "z" * 10_000
    with pytest.raises(corral.BatchError) as info:
        corral.map(parse, ["1", item], workers=2)
    (line,) = [ln for ln in str(info.value).splitlines() if ln.startswith("  1 (")]
    item_part = line[: line.index("): failed")]
    assert "zzz" in item_part and len(item_part) < 120


def test_run_failures_are_named_by_their_keys():
    tasks = [Task(parse, ("x",), key=("tas", 1980)), Task(parse, ("2",), key="pr")]
    with pytest.raises(corral.BatchError) as info:
        corral.run(tasks, workers=2)
    assert "  ('tas', 1980): failed: ValueError" in str(info.value)


# -- whole reasons --------------------------------------------------------------------------------
def test_multi_line_reasons_keep_every_line():
    with pytest.raises(corral.BatchError) as info:
        corral.map(fail_with_lines, range(4), workers=2)
    lines = str(info.value).splitlines()
    first = lines.index("  1 (1): failed: ValueError: item 1 is odd")
    assert lines[first + 1 : first + 3] == [
        "      second line of the reason",
        "      third line names the fix",
    ]


def test_a_service_error_shows_why_the_program_did_not_start():
    with pytest.raises(corral.BatchError) as info:
        corral.map(start_a_service_that_needs_a_port, [0], workers=1, backend="process")
    message = str(info.value)
    assert "ServiceError:" in message and "cannot start" in message
    first = message.splitlines()[1]  # why, on the failure's own line
    assert first.endswith("the following arguments are required: --port")
    assert "| usage: -c [-h] --port PORT" in message  # and the program's last output lines


@corral.fixture
def server_that_needs_a_port():
    with corral.Service([sys.executable, "-c", USAGE_ERROR], retries=1) as service:
        yield service


def use_server(x: int, *, server_that_needs_a_port: corral.Service) -> int:
    return x


def test_the_same_reason_of_many_tasks_is_shown_once():
    with pytest.raises(corral.BatchError) as info:
        corral.map(use_server, range(6), workers=2, fixtures=[server_that_needs_a_port])
    lines = str(info.value).splitlines()
    assert lines[0] == "6 of 6 tasks failed:"
    output = [ln for ln in lines if "| -c: error: the following arguments are required" in ln]
    assert len(output) == 1  # the program's output once, for the first failed task
    for key in range(1, 6):
        (line,) = [ln for ln in lines if ln.startswith(f"  {key} ({key}): failed: FixtureError")]
        assert line.endswith("lines, as for 0]")


def test_the_hint_at_the_end_of_a_long_line_is_kept():
    with pytest.raises(corral.BatchError) as info:
        corral.map(fail_with_a_long_line, [0, 1], workers=2)
    message = str(info.value)
    assert message.count(HINT) == 2
    assert "characters ...]" in message  # the middle was cut
    assert max(len(line) for line in message.splitlines()) < LINE_CHARS + 100


def test_a_released_share_error_keeps_its_hint():
    with corral.share(np.arange(10)) as handle:
        pass
    with pytest.raises(corral.BatchError) as info:
        corral.map(identity, [handle, 2], workers=2)
    assert SHARE_HINT in str(info.value)


def test_a_very_long_reason_keeps_its_first_and_last_lines():
    with pytest.raises(corral.BatchError) as info:
        corral.map(fail_with_many_lines, [0], workers=1, backend="process")
    lines = str(info.value).splitlines()
    assert lines[1].endswith("RuntimeError: line 0")
    assert lines[-1].strip() == "line 499"
    assert any("lines left out" in line for line in lines)
    assert len(lines) <= 1 + REASON_LINES


# -- counting -------------------------------------------------------------------------------------
def test_skipped_tasks_are_counted_as_skipped_not_failed():
    tasks = [Task(fail_if, (True,), key="a")]
    tasks += [Task(fail_if, (False,), key=f"after-{i}", after="a") for i in range(3)]
    tasks += [Task(fail_if, (False,), key="free")]
    with pytest.raises(corral.BatchError) as info:
        corral.run(tasks, workers=2)
    message = str(info.value)
    assert message.splitlines()[0] == "1 of 5 tasks failed, 3 were skipped:"
    assert "skipped, after a task that did not succeed: 'after-0', 'after-1', 'after-2'" in message
    assert "failed (failed)" not in message
    skipped = info.value.report.outcomes[1].error
    assert str(skipped) == "task 'after-0' skipped: its dependency 'a' failed"


def test_cancelled_tasks_are_counted_as_cancelled():
    outcomes = [
        Outcome(key=0, status=Status.FAILED, error=ValueError("bad")),
        Outcome(key=1, status=Status.CANCELLED),
        Outcome(key=2, status=Status.CANCELLED),
        Outcome(key=3, status=Status.OK, value=3),
    ]
    message = str(corral.BatchError(Report(outcomes)))
    assert message.splitlines()[0] == "1 of 4 tasks failed, 2 were cancelled:"
    assert message.splitlines()[-1] == "  cancelled: 1, 2"


# -- the cause ------------------------------------------------------------------------------------
def test_the_first_failure_is_the_cause_with_the_workers_traceback():
    with pytest.raises(corral.BatchError) as info:
        corral.map(parse, ["1", "two", "three"], workers=2)
    cause = info.value.__cause__
    assert cause is info.value.report.failures[0].error
    assert isinstance(cause, ValueError) and "'two'" in str(cause)
    assert isinstance(cause.__cause__, RemoteTraceback)
    assert "in parse" in str(cause.__cause__)


def test_the_cause_is_a_failure_not_a_skipped_task():
    outcomes = [
        Outcome(key="s", status=Status.SKIPPED, error=corral.TaskSkipped("skipped", key="s")),
        Outcome(key="t", status=Status.TIMEOUT, error=corral.TaskTimeout("t", 1.0)),
    ]
    assert isinstance(corral.BatchError(Report(outcomes)).__cause__, corral.TaskTimeout)


def test_an_uncaught_batch_error_shows_the_remote_traceback():
    script = SCRIPTS / "uncaught_batch_error.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    err = done.stderr
    assert "corral.BatchError: 1 of 3 tasks failed:" in err
    assert "1 ('two'): failed: ValueError" in err
    assert "in parse_number" in err  # the worker's frame, from the remote traceback
    assert err.index("in parse_number") < err.index("corral.BatchError")


def test_a_batch_error_pickles_with_its_message_and_report():
    with pytest.raises(corral.BatchError) as info:
        corral.map(parse, ["1", "two"], workers=2)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert [o.key for o in copy.report.failures] == [1]


# -- the summary ----------------------------------------------------------------------------------
def test_the_summary_shows_multi_line_reasons():
    report = corral.map(fail_with_lines, range(2), workers=2, errors="return")
    assert isinstance(report[1], corral.Failure)
    outcomes = [
        Outcome(key=0, status=Status.OK, value=0),
        Outcome(key=1, status=Status.FAILED, error=report[1].error),
    ]
    text = Report(outcomes).summary()
    assert "third line names the fix" in text
