"""The progress display: one bar for the batch, one per group, and the running tasks."""

from __future__ import annotations

import io

from rich.console import Console

from corral._report.progress import ProgressView


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


def test_cancelled_tasks_are_shown_as_cancelled_not_failed():
    console = Console(file=io.StringIO(), width=120, color_system=None)
    view = ProgressView(10, lambda: [], console)
    view.advance(3, 0, None)
    view.advance(0, 1, None)
    view.advance(0, 0, None, n_cancelled=6)  # Ctrl-C
    text = render(view)
    assert "4/10" in text and "40%" in text  # the bar stops where the work stopped
    assert "1 failed" in text and "6 cancelled" in text
    assert "7 failed" not in text and "100%" not in text


def test_group_bars_count_cancelled_tasks_apart_from_failed_ones():
    groups = ["a"] * 3 + ["b"] * 3
    console = Console(file=io.StringIO(), width=120, color_system=None)
    view = ProgressView(6, lambda: [], console, groups)
    view.advance(1, 0, ["a"])
    view.advance(0, 1, ["a"])
    view.advance(0, 0, ["a"], n_cancelled=1)
    view.advance(0, 0, ["b", "b", "b"], n_cancelled=3)
    text = render(view)
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "2/3" in lines["a"] and "1 failed" in lines["a"] and "1 cancelled" in lines["a"]
    assert "0/3" in lines["b"] and "3 cancelled" in lines["b"] and "failed" not in lines["b"]
    assert "2/6" in lines["corral"] and "4 cancelled" in lines["corral"]
