"""examples/model_search: the parallel search over a shared table equals the serial one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "model_search"))

import model_search


@pytest.fixture(scope="module")
def table():
    return model_search.make_table(3_000)


def test_parallel_search_equals_serial(table):
    specs = model_search.all_specs()[:120]
    specs += [model_search.Spec(tuple(reversed(s.features)), s.alpha, s.region) for s in specs[::5]]
    parallel = model_search.search(table, specs, workers=2)
    serial = model_search.search_serial(table, specs)
    assert parallel == serial
    assert 0 < len(parallel) < len(specs)


def test_merge_keeps_submission_order_and_drops_repeated_specs():
    a = model_search.Spec(("temp", "load"), 1.0, "all")
    b = model_search.Spec(("load", "temp"), 1.0, "all")  # the same model as a
    c = model_search.Spec(("wind",), 0.0, "north")
    scored = [model_search.Scored(s, 0.5, 10) for s in (c, a, b)]
    assert model_search.merge([None, scored[0], scored[1], None, scored[2]]) == scored[:2]
