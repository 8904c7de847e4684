"""``corral run --trace F --html F``: the run's exports (``Report.to_trace``/``to_html``),
written by the real console script, also when a task failed."""

from __future__ import annotations

import json
from pathlib import Path

from _procs import corral_cli


def test_run_writes_its_trace_and_html_report(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(
        "def shout(x):\n    if x == 'bad':\n        raise ValueError('bad input')\n"
        "    return x.upper()\n"
    )
    proc = corral_cli(
        "run", "jobs:shout", "a", "bad", "c", "--workers", "2", "--trace", "t.json",
        "--html", "r.html", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    events = json.loads((tmp_path / "t.json").read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    assert any("bad" in json.dumps(e) for e in events)
    html = (tmp_path / "r.html").read_text()
    assert "<html" in html.lower() and "bad input" in html


def test_trace_and_html_from_the_settings_file(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text("def shout(x):\n    return x.upper()\n")
    (tmp_path / "corral.yaml").write_text("trace: out/t.json\nhtml: out/r.html\n")
    (tmp_path / "out").mkdir()
    proc = corral_cli("run", "jobs:shout", "a", "--backend", "serial", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "t.json").is_file() and (tmp_path / "out" / "r.html").is_file()
