"""examples/model_search with features built on demand: the workers record the features the
frozen table lacked, the coordinator replays them into its live FeatureManager (on_effect),
and the manager ends as a serial run leaves it, results equal too; also after a resume."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import corral

sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "model_search"))

import model_search


@pytest.fixture(scope="module")
def table():
    return model_search.make_table(3_000)


def specs() -> list[model_search.Spec]:
    # derived features alone, and pairs with load (which pass): ~130 specs
    chosen = [
        s
        for s in model_search.all_specs()
        if (len(s.features) == 1 and s.features[0] in model_search.DERIVED)
        or (len(s.features) == 2 and "load" in s.features)
    ]
    chosen += [
        model_search.Spec(tuple(reversed(s.features)), s.alpha, s.region) for s in chosen[::5]
    ]
    assert {f for s in chosen for f in s.features} >= set(model_search.DERIVED)
    return chosen


def serial_state(table: Any) -> tuple[list[model_search.Scored], Any]:
    manager = model_search.FeatureManager(table.columns)
    return model_search.search_serial(table, specs(), manager), manager.state()


def test_the_managers_state_and_the_results_equal_the_serial_runs(table) -> None:
    manager = model_search.FeatureManager(table.columns)
    passed = model_search.search(table, specs(), manager, workers=2)
    serial, state = serial_state(table)
    assert passed == serial
    assert manager.state() == state
    assert list(manager.derived) == ["temp_sq", "load_x_temp", "wind_log"]  # first use order
    assert any(f in model_search.DERIVED for s in passed for f in s.spec.features)


def test_a_passing_model_whose_feature_was_never_registered_is_caught(table) -> None:
    manager = model_search.FeatureManager(table.columns)
    passed = model_search.search_serial(table, specs())  # no manager: nothing registered
    with pytest.raises(LookupError, match=r"temp_sq|load_x_temp|wind_log"):
        manager.validate(passed)


def test_after_a_resume_the_manager_and_results_equal_the_serial_runs(table, tmp_path) -> None:
    # The first run stops part-way: its on_effect raises after 5 features (an EffectError
    # stops the run, cancelling what had not finished). The second run resumes from the
    # journal into a fresh manager: the cached tasks' effects are replayed, in order.
    journal = tmp_path / "search.corral"
    first = model_search.FeatureManager(table.columns)

    def add_five(key: Any, feature: Any) -> None:
        if first.offers >= 5:
            raise RuntimeError("stopped part-way")
        first.add(feature)

    with corral.share(table) as handle:  # one handle: the tasks' arguments are the same
        items = [(handle, spec) for spec in specs()]
        with pytest.raises(corral.EffectError):
            corral.map(model_search.evaluate, items, workers=2, journal=journal, on_effect=add_five)
        resumed = model_search.FeatureManager(table.columns)
        passed = model_search.search_shared(handle, specs(), resumed, workers=2, journal=journal)
    serial, state = serial_state(table)
    assert passed == serial
    assert resumed.state() == state
