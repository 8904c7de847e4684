"""Progress outside a terminal (plain lines every ``progress_interval`` seconds, no control
characters), and the retries and worker count the displays take from the event stream."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from rich.console import Console

import corral
from corral._report.progress import PlainLines, ProgressView, progress_enabled

pytestmark = pytest.mark.timeout(120)

LINE = re.compile(
    r"^corral: \d+/\d+ done \(\d+%\), \d+ failed, \d+ workers?(, \d+ retried)?, "
    r"[0-9.e+]+ tasks/s, ETA [-0-9hms]+, elapsed [0-9hms]+$"
)


def nap(x):
    time.sleep(0.3)
    return x


def fail_first(path):
    p = Path(path)
    if not p.exists():
        p.write_text("1")
        raise ValueError("first attempt fails")
    return 1


def test_not_on_a_terminal_none_picks_plain_lines(capfd):
    assert not progress_enabled(None)  # pytest's stderr is not a terminal
    corral.map(nap, range(8), workers=2, progress_interval=0.2)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("corral:")]
    assert len(lines) >= 2, err
    for line in lines:
        assert LINE.match(line), line
        assert not any(ord(c) < 32 for c in line)  # no control characters
    assert lines[-1].startswith("corral: 8/8 done (100%), 0 failed, 2 workers")


def test_a_short_run_prints_no_line(capfd):
    corral.map(abs, range(10), workers=2)  # the default interval, 30 s: nothing to say
    assert "corral:" not in capfd.readouterr().err


def test_progress_false_prints_nothing(capfd):
    corral.map(nap, range(4), workers=2, progress=False, progress_interval=0.1)
    assert "corral:" not in capfd.readouterr().err


def test_retries_and_workers_are_counted_from_events(tmp_path, capfd):
    with corral.Pool(2, progress_interval=0.1) as pool:
        pool.run([corral.Task(fail_first, (str(tmp_path / "f"),)),
                  corral.Task(nap, (1,)), corral.Task(nap, (2,))],
                 retries=1, backoff=0.5)  # fmt: skip
    last = [line for line in capfd.readouterr().err.splitlines() if line.startswith("corral:")][-1]
    assert "3/3 done" in last and "2 workers, 1 retried" in last


def test_the_plain_line_says_rate_and_eta():
    lines = PlainLines(100, 30.0, 4, stream=io.StringIO())
    lines.advance(20, 5, None)
    text = lines.line(now=lines._started + 10.0)
    assert text == (
        "corral: 25/100 done (25%), 5 failed, 4 workers, 2.5 tasks/s, ETA 30s, elapsed 10s"
    )


def test_the_live_display_shows_workers_and_retries():
    console = Console(file=io.StringIO(), width=120, color_system=None)
    view = ProgressView(3, lambda: [], console, None, workers=3)
    view.fleet.retried = 2
    console.print(view)
    assert "3 workers, 2 retried" in console.file.getvalue()


def test_a_bad_progress_interval_is_refused():
    with pytest.raises(corral.ConfigError, match="progress_interval"):
        corral.map(abs, [1], progress_interval=0)
