"""Effects are journaled and replayed on resume: a cached task's effects (``Outcome.effects``,
``Report.effects``, ``on_effect``) are the ones its first run recorded, in task order then
record order, as if the whole batch had run at once. Real workers; marker files show which
tasks ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import corral


def record_and_mark(directory: str, x: int) -> int:
    """Record two effects; fail while ``fail-<x>`` exists; leave a marker per run."""
    d = Path(directory)
    runs = len(list(d.glob(f"ran-{x}-*")))
    (d / f"ran-{x}-{runs}").write_text("")
    corral.record(("a", x))
    if (d / f"fail-{x}").exists():
        raise ValueError(f"fail {x}")
    if x % 3 == 0:
        corral.record(("b", x))
    return x * 10


def expected_effects(xs: range) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    for x in xs:
        out.append((x, ("a", x)))
        if x % 3 == 0:
            out.append((x, ("b", x)))
    return out


def ran(directory: Path, x: int) -> int:
    return len(list(directory.glob(f"ran-{x}-*")))


def test_a_resumed_map_replays_the_cached_tasks_effects_in_order(tmp_path: Path) -> None:
    journal = tmp_path / "run.corral"
    failing = {2, 7, 11}
    for x in failing:
        (tmp_path / f"fail-{x}").write_text("")
    items = [(str(tmp_path), x) for x in range(16)]
    # chunks of 4 with failures among them: a row's positions are not its chunk's items
    first = corral.run(
        [corral.Task(record_and_mark, item) for item in items],
        workers=2, chunksize=4, journal=journal, errors="return",
    )  # fmt: skip
    assert {o.key for o in first.outcomes if not o.ok} == failing
    assert first.effects == [e for e in expected_effects(range(16)) if e[0] not in failing]

    for x in failing:
        (tmp_path / f"fail-{x}").unlink()
    got: list[tuple[Any, Any]] = []
    second = corral.run(
        [corral.Task(record_and_mark, item) for item in items],
        workers=2, chunksize=4, journal=journal, on_effect=lambda k, e: got.append((k, e)),
    )  # fmt: skip
    assert [o.value for o in second.outcomes] == [x * 10 for x in range(16)]
    statuses = {o.key: o.status for o in second.outcomes}
    assert {k for k, s in statuses.items() if s == "cached"} == set(range(16)) - failing
    assert second.effects == expected_effects(range(16)) == got
    assert [o.effects for o in second.outcomes if o.key == 3] == [(("a", 3), ("b", 3))]
    # only the failed ones ran again
    assert [ran(tmp_path, x) for x in range(16)] == [2 if x in failing else 1 for x in range(16)]


def test_map_and_imap_replay_cached_effects_and_open_journal_shows_them(tmp_path: Path) -> None:
    journal = tmp_path / "run.corral"
    (tmp_path / "fail-4").write_text("")
    items = [(str(tmp_path), x) for x in range(9)]
    corral.map(_star, items, workers=2, journal=journal, errors="return")
    (tmp_path / "fail-4").unlink()
    got: list[tuple[Any, Any]] = []
    results = list(
        corral.imap(_star, items, workers=2, journal=journal,
                    on_effect=lambda k, e: got.append((k, e)))
    )  # fmt: skip
    assert results == [x * 10 for x in range(9)]
    assert got == expected_effects(range(9))
    assert ran(tmp_path, 4) == 2 and ran(tmp_path, 5) == 1

    view = corral.open_journal(journal)
    by_key = {o.key: o.effects for o in view.outcomes if o.ok}
    assert by_key[3] == (("a", 3), ("b", 3)) and by_key[4] == (("a", 4),)

    got.clear()
    again = corral.map(_star, items, workers=2, journal=journal,
                       on_effect=lambda k, e: got.append((k, e)))  # fmt: skip
    assert again == results and got == expected_effects(range(9))
    assert ran(tmp_path, 4) == 2  # all cached: nothing ran


def _star(item: tuple[str, int]) -> int:
    return record_and_mark(*item)
