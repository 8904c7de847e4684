"""The progress display: one bar for the batch, one per group, and the running tasks."""

from __future__ import annotations

import io

from rich.console import Console

from corral._progress import ProgressView


def render(view: ProgressView) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(view)
    return console.file.getvalue()


def test_groups_get_a_bar_each_with_their_own_counts():
    groups = ["tas"] * 3 + ["pr"] * 2
    console = Console(file=io.StringIO(), width=120, color_system=None)
    view = ProgressView(5, lambda: [(("tas", 1980), 2.5)], console, groups)
    view.advance(2, 0, ["tas", "tas"])
    view.advance(0, 1, ["pr"])
    text = render(view)
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "3/5" in lines["corral"]
    assert "2/3" in lines["tas"]
    assert "1/2" in lines["pr"] and "1 failed" in lines["pr"]
    assert "('tas', 1980)" in text  # the running task is listed


def test_a_single_group_or_none_shows_only_the_total():
    console = Console(file=io.StringIO(), width=120, color_system=None)
    view = ProgressView(2, lambda: [], console, ["only", "only"])
    view.advance(1, 0, ["only"])
    text = render(view)
    assert "only" not in text and "1/2" in text
