"""examples/model_search in segments through one warm Pool: the merged, de-duplicated result
equals the serial search's, the workers (and their map of the shared table) serve every
segment, and each segment's Report carries the telemetry the example prints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "model_search"))

import model_search

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def table():
    return model_search.make_table(3_000)


def specs() -> list[model_search.Spec]:
    chosen = [s for s in model_search.all_specs() if s.region in ("all", "north")][::4]
    # the same models again with the features in another order: kept once, where first seen
    chosen += [
        model_search.Spec(tuple(reversed(s.features)), s.alpha, s.region) for s in chosen[::3]
    ]
    return chosen


def test_segments_through_one_pool_equal_the_serial_search(table) -> None:
    chosen = specs()
    parts = model_search.segments(chosen)
    assert len(parts) == 3 and sum(map(len, parts)) == len(chosen)
    manager = model_search.FeatureManager(table.columns)
    searched = model_search.search_segments(table, parts, manager, workers=2)

    serial_manager = model_search.FeatureManager(table.columns)
    serial = model_search.search_serial(table, [s for p in parts for s in p], serial_manager)
    assert searched.passed == serial
    assert 0 < len(serial) < len(chosen)
    assert len({s.spec.key() for s in serial}) == len(serial)  # de-duplicated
    assert manager.derived == serial_manager.derived

    # one warm pool: every segment ran on the workers the first one started
    first = {span.pid for span in searched.reports[0].worker_spans}
    assert len(first) == 2
    for report in searched.reports:
        assert report.ok and report.workers == 2
        assert {o.pid for o in report.outcomes} <= first
        assert 0.0 < report.utilisation <= 1.0
        assert all(0 <= n <= 2 for _, n in report.concurrency())
        assert max(n for _, n in report.concurrency()) >= 1
