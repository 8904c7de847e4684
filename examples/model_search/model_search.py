"""Exhaustive model search against one shared feature table, with features built on demand.

Every spec (a feature subset, a ridge penalty, a region) is fitted and scored against the same
pandas DataFrame. The table is copied once into shared memory with ``corral.share``; each
worker maps it once and every task reads it without a copy. Specs that pass the score
threshold are merged in submission order, and a spec that was submitted twice (the same
features in another order) is kept once.

Some specs ask for derived features (``temp_sq``, ``load_x_temp``, ``wind_log``) that the
frozen table lacks. A worker builds what it needs from the feature's recipe and records it
(``corral.record``); the coordinator replays those records into its live ``FeatureManager``
(``on_effect``), in submission order, on its own thread, while the search runs; afterwards it
checks that every passing model's features exist. The manager ends in the state a serial run
leaves it in.

    python examples/model_search/model_search.py            # 50,000 rows, ~1,500 specs

The search runs in segments (the 1-, 2- and 3-feature specs) through one warm ``corral.Pool``:
the workers, their map of the shared table and their imports outlive each segment, and each
segment's ``Report`` says how busy the workers were (``utilisation``, ``concurrency()``).

``search(table, specs)`` and ``search_serial(table, specs)`` return the same list, and leave
two ``FeatureManager`` objects given to them in the same state.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import corral

FEATURES = ("temp", "wind", "load", "price", "hour_sin", "hour_cos")
REGIONS = ("all", "north", "south", "east")
THRESHOLD = 0.30
"""Minimum out-of-sample R² for a spec to pass."""


@dataclass(frozen=True)
class Feature:
    """A derived feature: how to build it from the table's own columns."""

    name: str
    op: str  # "square", "product" or "log1p"
    inputs: tuple[str, ...]

    def build(self, rows: pd.DataFrame) -> np.ndarray:
        columns = [rows[c].to_numpy() for c in self.inputs]
        if self.op == "square":
            return columns[0] ** 2
        if self.op == "product":
            return np.prod(columns, axis=0)
        if self.op == "log1p":
            return np.log1p(columns[0])
        raise ValueError(f"unknown feature op {self.op!r}")


DERIVED = {
    f.name: f
    for f in (
        Feature("temp_sq", "square", ("temp",)),
        Feature("load_x_temp", "product", ("load", "temp")),
        Feature("wind_log", "log1p", ("wind",)),
    )
}
CANDIDATES = FEATURES + tuple(DERIVED)


class FeatureManager:
    """The coordinator's live registry of features: the table's own columns, and the derived
    features registered since. Like most live state it is not thread-safe, and says so: it
    refuses to be changed from any thread but the one that made it."""

    def __init__(self, columns: Iterable[str]) -> None:
        self.columns = frozenset(columns)
        self.derived: dict[str, Feature] = {}
        self.offers = 0  # how many times a feature was offered (one per record)
        self._owner = threading.get_ident()

    def add(self, feature: Feature) -> None:
        if threading.get_ident() != self._owner:
            raise RuntimeError("FeatureManager changed from another thread")
        self.offers += 1
        known = self.derived.setdefault(feature.name, feature)
        if known != feature:
            raise ValueError(f"feature {feature.name!r} built two ways: {known} and {feature}")

    def has(self, name: str) -> bool:
        return name in self.columns or name in self.derived

    def validate(self, passed: Iterable[Scored]) -> None:
        """Every feature of every passing model exists now."""
        missing = {f for s in passed for f in s.spec.features if not self.has(f)}
        if missing:
            raise LookupError(f"passing models use features never registered: {sorted(missing)}")

    def state(self) -> tuple[list[str], list[tuple[str, Feature]], int]:
        return sorted(self.columns), list(self.derived.items()), self.offers


@dataclass(frozen=True)
class Spec:
    features: tuple[str, ...]
    alpha: float
    region: str

    def key(self) -> tuple[frozenset[str], float, str]:
        """Specs that fit the same model have the same key, whatever the feature order."""
        return frozenset(self.features), self.alpha, self.region


@dataclass(frozen=True)
class Scored:
    spec: Spec
    r2: float
    rows: int


def make_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """A synthetic feature table: numeric features, a categorical region, timestamps, target."""
    rng = np.random.default_rng(seed)
    when = pd.date_range("2024-01-01", periods=rows, freq="min")
    hour = when.hour.to_numpy()
    table = pd.DataFrame(
        {
            "when": when,
            "region": pd.Categorical(rng.choice(REGIONS[1:], rows)),
            "temp": rng.normal(15, 8, rows),
            "wind": rng.gamma(2, 3, rows),
            "load": rng.normal(100, 20, rows),
            "price": rng.normal(50, 10, rows),
            "hour_sin": np.sin(2 * np.pi * hour / 24),
            "hour_cos": np.cos(2 * np.pi * hour / 24),
        }
    )
    noise = rng.normal(0, 1, rows)
    table["demand"] = 0.8 * table["load"] - 0.5 * table["temp"] + 3 * table["hour_sin"] + noise * 15
    return table


def all_specs() -> list[Spec]:
    specs = []
    for k in (1, 2, 3):
        for features in itertools.combinations(CANDIDATES, k):
            for alpha in (0.0, 1.0, 100.0):
                for region in REGIONS:
                    specs.append(Spec(features, alpha, region))
    return specs


def score(
    table: pd.DataFrame, spec: Spec, built: Callable[[Feature], object] = lambda f: None
) -> Scored | None:
    """Fit ridge regression on the first 80 % of the region's rows (by time), score R² on the
    rest; None when it does not pass. Reads ``table`` only: a feature it lacks is built from
    its recipe for these rows, and ``built`` is told."""
    rows = table if spec.region == "all" else table[table["region"] == spec.region]
    columns = []
    for name in spec.features:
        if name in rows.columns:
            columns.append(rows[name].to_numpy())
        else:
            feature = DERIVED[name]
            columns.append(feature.build(rows))
            built(feature)
    x = np.column_stack([np.ones(len(rows)), *columns])
    when = rows["when"]
    train = (when <= when.quantile(0.8)).to_numpy()
    x_train, x_test = x[train], x[~train]
    demand = rows["demand"].to_numpy()
    penalty = spec.alpha * np.eye(x_train.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not penalised
    coef = np.linalg.solve(x_train.T @ x_train + penalty, x_train.T @ demand[train])
    y = demand[~train]
    r2 = 1.0 - float(np.sum((y - x_test @ coef) ** 2)) / float(np.sum((y - y.mean()) ** 2))
    r2 = round(r2, 9)  # BLAS may round the last bits differently from one process to another
    return Scored(spec, r2, len(rows)) if r2 >= THRESHOLD else None


def evaluate(args: tuple[corral.Shared, Spec]) -> Scored | None:
    """The task: the shared table is a read-only view, mapped once per worker; the features
    built for it are recorded for the coordinator's manager."""
    handle, spec = args
    return score(handle.value, spec, built=corral.record)


def merge(results: list[Scored | None]) -> list[Scored]:
    """Passing results in submission order; a spec seen before (same key) is dropped."""
    seen: set[tuple[frozenset[str], float, str]] = set()
    merged = []
    for result in results:
        if result is None or result.spec.key() in seen:
            continue
        seen.add(result.spec.key())
        merged.append(result)
    return merged


def search(
    table: pd.DataFrame,
    specs: list[Spec],
    features: FeatureManager | None = None,
    **options: object,
) -> list[Scored]:
    """The parallel search; with ``features``, the features the workers built are registered
    there as the search runs (on this thread, in submission order), and every passing
    model's features are checked to exist at the end."""
    with corral.share(table) as handle:
        return search_shared(handle, specs, features, **options)


def search_shared(
    handle: corral.Shared,
    specs: list[Spec],
    features: FeatureManager | None = None,
    **options: object,
) -> list[Scored]:
    """``search`` on a table shared already (several searches, or a search and its resume
    with a journal, share it once)."""
    if features is not None:
        options["on_effect"] = lambda key, feature: features.add(feature)
    results = corral.map(evaluate, [(handle, spec) for spec in specs], **options)
    passed = merge(results)
    if features is not None:
        features.validate(passed)
    return passed


def segments(specs: list[Spec]) -> list[list[Spec]]:
    """The search in segments, by number of features (in submission order within each)."""
    sizes = sorted({len(s.features) for s in specs})
    return [[s for s in specs if len(s.features) == k] for k in sizes]


@dataclass
class Searched:
    """A segmented search: the passing specs (merged over all segments, in submission order,
    de-duplicated) and each segment's Report."""

    passed: list[Scored]
    reports: list[corral.Report] = field(default_factory=list)


def search_segments(
    table: pd.DataFrame,
    parts: list[list[Spec]],
    features: FeatureManager | None = None,
    **pool_options: object,
) -> Searched:
    """Each segment through one warm Pool, against a table shared once."""
    run_options: dict[str, object] = {}
    if features is not None:
        run_options["on_effect"] = lambda key, feature: features.add(feature)
    results: list[Scored | None] = []
    reports = []
    with corral.share(table) as handle, corral.Pool(**pool_options) as pool:  # type: ignore[arg-type]
        for part in parts:
            report = pool.run([corral.Task(evaluate, ((handle, s),)) for s in part], **run_options)
            results += report.results
            reports.append(report)
    passed = merge(results)
    if features is not None:
        features.validate(passed)
    return Searched(passed, reports)


def evaluate_copy(args: tuple[pd.DataFrame, Spec]) -> Scored | None:
    """The task as it was before corral.share: the table itself in every task's arguments
    (pickled with each one). For the memory comparison in ``benchmarks/examples.py``."""
    table, spec = args
    return score(table, spec)


def search_serial(
    table: pd.DataFrame, specs: list[Spec], features: FeatureManager | None = None
) -> list[Scored]:
    built = features.add if features is not None else (lambda f: None)
    passed = merge([score(table, spec, built) for spec in specs])
    if features is not None:
        features.validate(passed)
    return passed


def main(rows: int = 50_000) -> None:
    table = make_table(rows)
    specs = all_specs()
    specs += [Spec(tuple(reversed(s.features)), s.alpha, s.region) for s in specs[::7]]
    features = FeatureManager(table.columns)
    searched = search_segments(table, segments(specs), features)
    passed = searched.passed
    for k, report in enumerate(searched.reports, 1):
        busy = [round(n) for _, n in report.concurrency(bins=20)]
        print(f"segment {k}: {len(report.outcomes)} specs in {report.wall:.1f} s on "
              f"{report.workers} workers, {report.utilisation:.0%} busy; "
              f"tasks running, over time: {busy}")  # fmt: skip
    print(f"{len(specs)} specs, {len(passed)} passed (R² ≥ {THRESHOLD}); "
          f"features built: {', '.join(features.derived)}; best 5:")  # fmt: skip
    for scored in sorted(passed, key=lambda s: -s.r2)[:5]:
        spec = scored.spec
        print(f"  R² {scored.r2:.3f}  {'+'.join(spec.features):<24} alpha={spec.alpha:<6g} "
              f"region={spec.region} ({scored.rows} rows)")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
