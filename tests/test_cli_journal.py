"""``corral status`` and ``corral report`` against the journal's reading interface
(``corral.open_journal(path)`` with ``counts()``, ``failures()``, ``outcomes()``).

The journal itself is another part of corral: until it is installed these commands say so
(exit 2); the formatting is checked here against the interface, with Outcomes from a real
run standing in for what a journal reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import corral
from corral._cli import main


def _picky(x: int) -> int:
    if x == 2:
        raise ValueError("two is bad")
    return x


class _Recorded:
    """The reading interface of a journal, over the outcomes of a real run."""

    def __init__(self, report: corral.Report) -> None:
        self.report = report

    def counts(self) -> dict[Any, int]:
        return self.report.counts()

    def failures(self) -> list[corral.Outcome]:
        return self.report.failures

    def outcomes(self) -> list[corral.Outcome]:
        return list(self.report.outcomes)


def test_without_the_journal_feature_status_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if hasattr(corral, "open_journal"):
        pytest.skip("this corral has the journal")
    assert main(["status", "run.journal"]) == 2
    assert "needs the journal feature" in capsys.readouterr().err


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> _Recorded:
    tasks = [corral.Task(_picky, (x,), key=f"case-{x}") for x in (1, 2, 3)]
    recorded = _Recorded(corral.run(tasks, errors="return", backend="serial"))
    opened: list[str] = []

    def open_journal(path: str) -> _Recorded:
        opened.append(path)
        return recorded

    monkeypatch.setattr(corral, "open_journal", open_journal, raising=False)
    return recorded


def test_status_counts_and_failed_keys(
    journal: _Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "run.journal"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "run.journal: 3 tasks: 2 ok, 1 failed"
    assert "case-2  failed  ValueError: two is bad" in out


def test_report_summary_and_results(
    journal: _Recorded, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    assert main(["report", "run.journal", "--out", str(out)]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["key"], r["status"]) for r in rows] == [
        ("case-1", "ok"), ("case-2", "failed"), ("case-3", "ok"),
    ]  # fmt: skip
    assert "two is bad" in capsys.readouterr().err
