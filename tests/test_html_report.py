"""``Report.to_html``: one self-contained file, opened in a real headless Chromium: it loads
with no console error and no network request, has one timeline row per worker, shows a
failure's full traceback, switches colours, and a screenshot is written (an artefact: set
``CORRAL_SCREENSHOT_DIR`` to keep it, e.g. ``docs/images``). At 100,000 tasks it stays
under 10 MB and still loads."""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import corral
from corral._errors import TaskTimeout
from corral._outcome import Attempt, Outcome, Status
from tests._chromium import chromium, open_page
from tests._reports import synthetic_report

pytestmark = pytest.mark.timeout(240)


def simulate(x):
    time.sleep(0.03)
    return x


def explode_on_negative(x):
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x


def real_report() -> corral.Report:
    tasks = [
        corral.Task(simulate, (i,), key=f"sim-{i:02d}", group=("tas", "pr")[i % 2])
        for i in range(16)
    ]
    tasks.append(corral.Task(explode_on_negative, (-1,), key="sim-bad", group="pr"))
    return corral.run(tasks, workers=2, errors="return", progress=False)


def loaded_cleanly(page, path: Path) -> None:
    assert page.console_errors() == []
    url = path.resolve().as_uri()
    others = [u for u in page.requested() if u != url and not u.startswith("data:")]
    assert others == [], f"network requests besides the file itself: {others}"


@pytest.mark.slow
def test_the_report_in_chromium(tmp_path):
    report = real_report()
    path = tmp_path / "report.html"
    report.to_html(path)
    with chromium(tmp_path / "profile") as browser:
        page = open_page(browser, path.resolve().as_uri())
        rows = page.evaluate("document.querySelectorAll('#timeline g.row').length")
        assert rows == 2
        bars = page.evaluate("document.querySelectorAll('#timeline rect.s-ok').length")
        assert bars == 16
        traceback = page.evaluate(
            "Array.from(document.querySelectorAll('.failure pre.traceback'))"
            ".map(e => e.textContent).join('\\n')"
        )
        assert "explode_on_negative" in traceback and "ValueError: negative input -1" in traceback
        assert page.evaluate("document.querySelector('#summary') !== null")
        page.evaluate("document.querySelector('input[value=group]').click()")
        assert page.evaluate("document.getElementById('timeline').getAttribute('class')") == (
            "by-group"
        )
        page.evaluate("document.querySelector('input[value=status]').click()")
        shot = tmp_path / "report.png"
        page.screenshot(shot)
        loaded_cleanly(page, path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    keep = os.environ.get("CORRAL_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "report.png")


def test_the_file_fetches_nothing(tmp_path):
    path = tmp_path / "report.html"
    real_report().to_html(path)
    text = path.read_text()
    urls = set(re.findall(r"https?://[^\s'\"<>]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched
    assert not re.search(r"\ssrc=", text)
    assert re.findall(r"<link[^>]*>", text) == ["<link rel='icon' href='data:,'>"]


@dataclass(frozen=True, slots=True)
class OutcomeWithOutput(Outcome):
    """An Outcome carrying captured output, as corral's output capture will give it."""

    stdout: str | None = None
    stderr: str | None = None


def test_captured_output_and_a_hung_tasks_stack_are_shown_when_present(tmp_path):
    error = TaskTimeout("stuck", 5.0, pid=123)
    error.stack = 'File "solver.py", line 212, in step\n    while not converged:'  # type: ignore[attr-defined]
    attempt = Attempt(0, 123, 1.0, 6.0, Status.TIMEOUT, "TaskTimeout", 0.5, 4.9, 2**20, None, 15)
    outcomes = [
        OutcomeWithOutput(key="stuck", status=Status.TIMEOUT, error=error, attempts=1, worker=0,
                          pid=123, started=1.0, finished=6.0, history=(attempt,),
                          stdout="iteration 1\niteration 2\n", stderr="warning: slow\n"),
        OutcomeWithOutput(key="chatty", status=Status.OK, value=1, attempts=1, worker=0, pid=123,
                          started=0.5, finished=1.0, history=(attempt._replace(
                              started=0.5, finished=1.0, status=Status.OK, signal=None),),
                          stdout="hello from a task\n"),
    ]  # fmt: skip
    report = corral.Report(outcomes, wall_seconds=6.0, workers=1, started=0.4)
    path = tmp_path / "report.html"
    report.to_html(path)
    text = path.read_text()
    assert "line 212, in step" in text
    assert "iteration 2" in text and "warning: slow" in text
    assert "hello from a task" in text
    assert "signal 15" in text


@pytest.mark.slow
def test_100000_tasks_give_a_file_under_10_mb_that_loads(tmp_path):
    report = synthetic_report(100_000, 8)
    path = tmp_path / "report.html"
    report.to_html(path)
    size = path.stat().st_size
    assert size < 10 * 2**20, f"{size / 2**20:.1f} MiB"
    with chromium(tmp_path / "profile") as browser:
        page = open_page(browser, path.resolve().as_uri())
        assert page.evaluate("document.querySelectorAll('#timeline g.row').length") == 8
        failed = page.evaluate("document.querySelectorAll('#timeline rect.s-failed').length")
        assert failed == 100  # failures are drawn one by one, never lost in an aggregate
        assert page.evaluate("document.querySelectorAll('.failure').length") == 100
        loaded_cleanly(page, path)


def test_an_in_process_run_has_one_row(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_WORKERS", "1")
    report = corral.run([corral.Task(simulate, (i,), key=i) for i in range(3)], progress=False)
    path = tmp_path / "report.html"
    report.to_html(path)
    text = path.read_text()
    assert text.count("<g class='row'") == 1 and "in-process" in text
