"""Locks, counted resources, memory, dependencies and order, with real worker processes.

Exclusion is checked twice: by the tasks themselves (each claims its lock or resource slot
with a file it creates with O_EXCL, or counts the claims present, and fails if it is not
alone), and afterwards from the outcomes' timestamps, which workers take with the same clock.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corral
from corral import ConfigError, Status, Task, TaskSkipped


# -- task bodies (module level: workers import them) --------------------------------------------
def claim(claims: str, locks: list[str], uses: dict[str, float], seconds: float) -> str:
    """Hold a claim on each lock and resource unit for ``seconds``; fail if not alone."""
    folder = Path(claims)
    mine = []
    try:
        for name in locks:
            path = folder / f"lock-{name}"
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            mine.append(path)
        for name, amount in uses.items():
            path = folder / f"use-{name}-{os.getpid()}-{amount}"
            path.touch()
            mine.append(path)
        for name, capacity in CAPACITY.items():
            used = sum(float(p.name.rsplit("-", 1)[1]) for p in folder.glob(f"use-{name}-*"))
            if used > capacity + 1e-9:
                raise RuntimeError(f"{name} over capacity: {used}")
        time.sleep(seconds)
        return "done"
    finally:
        for path in mine:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def sleep_then(seconds: float, value: object = None, fail: bool = False) -> object:
    time.sleep(seconds)
    if fail:
        raise ValueError(f"bad {value}")
    return value


def record(log: str, name: str) -> str:
    with open(log, "a") as f:
        f.write(name + "\n")
    return name


def meet(folder: str, me: str, *others: str) -> str:
    """Succeed only if ``others`` run at the same time: wait (generously) for their markers."""
    Path(folder, me).touch()
    deadline = time.monotonic() + 60
    while not all(Path(folder, other).exists() for other in others):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{others} never all ran alongside {me}")
        time.sleep(0.01)
    return me


def crash(code: int) -> None:
    os._exit(code)


def hang() -> None:
    time.sleep(1000)


def fail_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).touch()
        raise OSError("first attempt fails")
    return "second"


CAPACITY = {"lic": 2.0}


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- exclusion, checked by the tasks and by the timestamps ---------------------------------------
def overlapping(report: corral.Report, a: object, b: object) -> bool:
    oa = next(o for o in report.outcomes if o.key == a)
    ob = next(o for o in report.outcomes if o.key == b)
    assert oa.started is not None and ob.started is not None
    return oa.started < ob.finished and ob.started < oa.finished  # type: ignore[operator]


def test_tasks_sharing_a_lock_never_overlap(tmp_path):
    tasks = [
        Task(claim, (str(tmp_path), [f"f{i % 2}"], {}, 0.2), key=f"t{i}", locks=[f"f{i % 2}"])
        for i in range(6)
    ]
    report = corral.run(tasks, workers=4)
    assert report.ok, report.summary()
    for i in range(6):
        for j in range(i + 1, 6):
            if i % 2 == j % 2:
                assert not overlapping(report, f"t{i}", f"t{j}")


def test_tasks_with_disjoint_locks_or_spare_capacity_run_at_the_same_time(tmp_path):
    folder = str(tmp_path)
    tasks = [
        Task(meet, (folder, "a", "b"), locks="x", uses={"lic": 1}, memory=100),
        Task(meet, (folder, "b", "a"), locks="y", uses={"lic": 1}, memory=100),
    ]
    report = corral.run(tasks, workers=2, resources=CAPACITY, memory_budget=200)
    assert report.results == ["a", "b"]


def test_map_takes_locks_from_a_callable(tmp_path):
    files = ["a.nc", "b.nc", "a.nc", "a.nc", "b.nc", "c.nc"]
    results = corral.map(
        lambda f: claim(str(tmp_path), [f], {}, 0.1),
        files,
        workers=4,
        locks=lambda f: [f],
    )
    assert results == ["done"] * len(files)


def test_counted_resources_never_exceed_their_capacity(tmp_path):
    tasks = [
        Task(claim, (str(tmp_path), [], {"lic": 1.0}, 0.15), key=i, uses={"lic": 1})
        for i in range(8)
    ]
    report = corral.run(tasks, workers=4, resources=CAPACITY)
    assert report.ok, report.summary()
    assert max_concurrency(report) <= 2


def test_fractional_uses_add_up(tmp_path):
    tasks = [
        Task(claim, (str(tmp_path), [], {"lic": 0.5}, 0.15), key=i, uses={"lic": 0.5})
        for i in range(8)
    ]
    report = corral.run(tasks, workers=4, resources=CAPACITY)
    assert report.ok, report.summary()
    assert max_concurrency(report) <= 4
    # Four halves fit in a capacity of 2: four tasks that each wait for all the others.
    names = ["a", "b", "c", "d"]
    meeting = [Task(meet, (str(tmp_path), me, *names), uses={"lic": 0.5}) for me in names]
    assert corral.run(meeting, workers=4, resources=CAPACITY).ok


def test_memory_estimates_never_exceed_the_budget(tmp_path):
    tasks = [Task(sleep_then, (0.15, i), key=i, memory="3GiB") for i in range(6)]
    report = corral.run(tasks, workers=4, memory_budget="7GiB")
    assert report.ok
    assert max_concurrency(report) <= 2


def test_map_takes_memory_and_uses_as_constants():
    report_values = corral.map(
        lambda x: sleep_then(0.05, x), range(6), workers=3, memory="1GiB", memory_budget="1GiB"
    )
    assert report_values == list(range(6))


def max_concurrency(report: corral.Report) -> int:
    spans = [(o.started, o.finished) for o in report.outcomes if o.started is not None]
    return max(sum(1 for s, f in spans if s <= t < f) for t, _ in spans)


# -- dependencies ----------------------------------------------------------------------------------
def test_a_task_starts_only_after_its_dependencies_succeeded(tmp_path):
    log = tmp_path / "log"
    tasks = [
        Task(record, (str(log), "agg"), key="agg", after=["a", "b"]),
        Task(sleep_then, (0.2, "a"), key="a"),
        Task(sleep_then, (0.1, "b"), key="b"),
    ]
    report = corral.run(tasks, workers=3)
    outcomes = {o.key: o for o in report.outcomes}
    assert [o.key for o in report.outcomes] == ["agg", "a", "b"]  # task order, not run order
    assert outcomes["agg"].started >= max(outcomes["a"].finished, outcomes["b"].finished)


def test_dependants_of_a_failure_are_skipped_naming_it(tmp_path):
    log = tmp_path / "log"
    tasks = [
        Task(sleep_then, (0.0, "a", True), key="a"),
        Task(record, (str(log), "b"), key="b", after="a"),
        Task(record, (str(log), "c"), key="c", after=["b"]),
        Task(record, (str(log), "d"), key="d"),
    ]
    report = corral.run(tasks, workers=2, errors="return")
    status = {o.key: o.status for o in report.outcomes}
    assert status == {"a": "failed", "b": "skipped", "c": "skipped", "d": "ok"}
    b = next(o for o in report.outcomes if o.key == "b")
    c = next(o for o in report.outcomes if o.key == "c")
    assert isinstance(b.error, TaskSkipped) and b.error.dependency == "a"
    assert str(b.error) == "task 'b' skipped: its dependency 'a' failed"
    assert c.error.dependency == "b" and "'b' was skipped" in str(c.error)
    assert b.attempts == 0 and b.started is None
    assert lines(log) == ["d"]  # nothing downstream of the failure ran


def test_skipped_tasks_make_run_raise_with_the_report():
    tasks = [Task(sleep_then, (0.0, 1, True), key="a"), Task(sleep_then, (0.0,), after="a")]
    with pytest.raises(corral.BatchError) as caught:
        corral.run(tasks, workers=2)
    assert [o.status for o in caught.value.report.outcomes] == [Status.FAILED, Status.SKIPPED]


def test_a_dependency_that_times_out_skips_its_dependants():
    tasks = [Task(hang, key="slow", timeout=0.5), Task(sleep_then, (0.0,), key="x", after="slow")]
    report = corral.run(tasks, workers=2, errors="return")
    assert [o.status for o in report.outcomes] == [Status.TIMEOUT, Status.SKIPPED]
    assert "its dependency 'slow' timed out" in str(report.outcomes[1].error)


def test_map_dependencies_name_input_positions(tmp_path):
    log = tmp_path / "log"
    # Item 0 waits for items 1 and 2.
    corral.map(
        lambda name: record(str(log), name),
        ["last", "x", "y"],
        workers=3,
        after=lambda name: [1, 2] if name == "last" else [],
    )
    assert lines(log)[-1] == "last"


# -- order --------------------------------------------------------------------------------
def test_one_worker_runs_by_priority_then_cost_then_submission_order(tmp_path):
    log = str(tmp_path / "log")
    tasks = [
        Task(record, (log, "cheap"), cost=1),
        Task(record, (log, "dear"), cost=10),
        Task(record, (log, "urgent"), priority=5),
        Task(record, (log, "plain")),
        Task(record, (log, "dear2"), cost=10),
    ]
    corral.run(tasks, workers=1)
    assert lines(tmp_path / "log") == ["urgent", "dear", "dear2", "cheap", "plain"]


def test_longest_tasks_first_shortens_the_makespan():
    # One 0.6 s task among short ones, submitted last: LPT dispatches it first, so two
    # workers finish in about 0.6 s instead of 0.3 + 0.6.
    from corral._events import TaskStarted

    tasks = [Task(sleep_then, (0.1, i), key=i, cost=0.1) for i in range(6)]
    tasks.append(Task(sleep_then, (0.6, "long"), key="long", cost=0.6))
    started: list[object] = []
    with corral.Pool(2) as pool:
        pool.map(abs, range(4))  # both workers up: a late-starting worker would let the
        pool._events.subscribe(  # other run two short tasks before "long" is dispatched
            lambda e: started.append(e.key) if isinstance(e, TaskStarted) else None
        )
        report = pool.run(tasks)
    assert report.ok
    # The order of dispatch, not of the workers' clocks (a loaded machine may start a worker's
    # first task late): "long" is one of the first two tasks handed to a worker, never later.
    assert "long" in started[:2], started


# -- releases, however a task ends -----------------------------------------------------------------
@pytest.mark.parametrize("how", ["crash", "timeout", "raise"])
def test_a_lock_is_released_once_when_its_holder_fails(tmp_path, how):
    body = {
        "crash": Task(crash, (3,), key="bad", locks="x", uses={"lic": 2}),
        "timeout": Task(hang, key="bad", locks="x", uses={"lic": 2}, timeout=0.5),
        "raise": Task(sleep_then, (0.0, 0, True), key="bad", locks="x", uses={"lic": 2}),
    }[how]
    later = [
        Task(claim, (str(tmp_path), ["x"], {"lic": 1.0}, 0.1), key=i, locks="x", uses={"lic": 1})
        for i in range(4)
    ]
    report = corral.run([body, *later], workers=3, resources=CAPACITY, errors="return")
    assert report.outcomes[0].status != Status.OK
    assert [o.status for o in report.outcomes[1:]] == [Status.OK] * 4, report.summary()
    assert max_concurrency(corral.Report(report.outcomes[1:])) == 1


def test_a_retry_gives_its_lock_back_while_it_waits(tmp_path):
    marker = str(tmp_path / "failed-once")
    tasks = [
        Task(fail_once, (marker,), key="flaky", locks="x", retries=1),
        Task(claim, (str(tmp_path), ["x"], {}, 0.05), key="other", locks="x"),
    ]
    report = corral.run(tasks, workers=2, backoff=0.5)
    assert report.results == ["second", "done"]
    assert report.outcomes[0].attempts == 2
    assert not overlapping(report, "flaky", "other")


def test_a_pool_runs_scheduled_batches_one_after_another(tmp_path):
    with corral.Pool(workers=3, resources=CAPACITY) as pool:
        for _ in range(2):
            tasks = [
                Task(claim, (str(tmp_path), [], {"lic": 1.0}, 0.05), key=i, uses={"lic": 1})
                for i in range(5)
            ]
            assert pool.run(tasks).ok


def test_two_runs_at_once_in_one_pool_share_its_locks_and_resources(tmp_path):
    import threading

    folder = str(tmp_path)
    reports: list[corral.Report] = []

    def one_run(tag: str) -> None:
        tasks = [
            Task(claim, (folder, ["x"], {"lic": 1.0}, 0.05), key=f"{tag}{i}", locks="x",
                 uses={"lic": 1})
            for i in range(4)
        ]  # fmt: skip
        reports.append(pool.run(tasks))

    with corral.Pool(workers=4, resources=CAPACITY) as pool:
        threads = [threading.Thread(target=one_run, args=(tag,)) for tag in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(reports) == 2 and all(r.ok for r in reports), [r.summary() for r in reports]
    both = corral.Report([*reports[0].outcomes, *reports[1].outcomes])
    assert max_concurrency(both) == 1  # one lock "x" across both runs


# -- validation, before anything starts --------------------------------------------------
@pytest.mark.parametrize(
    ("tasks", "options", "message"),
    [
        ([Task(record, uses={"orcaflex": 1})], {}, "uses 'orcaflex', which has no capacity"),
        ([Task(record, uses={"lic": 5})], {"resources": {"lic": 4}}, "could never start"),
        ([Task(record, memory="100TiB")], {}, "memory_budget"),
        ([Task(record, key="a", after="zz")], {}, "depends on 'zz'"),
        (
            [Task(record, key="a", after="b"), Task(record, key="b", after="a")],
            {},
            "dependency cycle: 'a' -> 'b' -> 'a'|dependency cycle: 'b' -> 'a' -> 'b'",
        ),
        ([Task(record, key="a"), Task(record, key="a")], {}, "duplicate task key 'a'"),
    ],
)
def test_run_rejects_an_impossible_batch_before_starting_a_worker(tasks, options, message):
    before = set(psutil.Process().children(recursive=True))
    with pytest.raises(ConfigError, match=message):
        corral.run(tasks, workers=2, **options)
    assert set(psutil.Process().children(recursive=True)) <= before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("locks", [1]),
        ("uses", {"lic": -1}),
        ("uses", ["lic"]),
        ("memory", "lots"),
        ("cost", -1),
        ("priority", 1.5),
        ("after", [[1]]),
    ],
)
def test_task_rejects_bad_needs(field, value):
    with pytest.raises(ConfigError):
        Task(record, **{field: value})


@pytest.mark.parametrize(
    "options",
    [{"resources": {"lic": 0}}, {"resources": ["lic"]}, {"memory_budget": "nope"}],
)
def test_bad_run_capacities_are_rejected(options):
    with pytest.raises(ConfigError):
        corral.run([Task(record)], **options)


def test_map_rejects_a_spec_that_raises_before_any_work(tmp_path):
    log = tmp_path / "log"
    with pytest.raises(ConfigError, match="locks= raised KeyError"):
        corral.map(lambda x: record(str(log), str(x)), [1, 2], workers=2, locks=lambda x: {}[x])
    assert not log.exists()


def test_imap_refuses_scheduling_options():
    with pytest.raises(ConfigError, match="imap does not take locks="):
        corral.imap(record, [], locks="x")


# -- groups ---------------------------------------------------------------------------------------
def test_groups_are_kept_in_outcomes_and_counted_in_the_report():
    tasks = [
        Task(sleep_then, (0.0, v, v == "pr3"), key=v, group=v[:-1])
        for v in ["tas1", "tas2", "pr1", "pr3"]
    ]
    report = corral.run(tasks, workers=2, errors="return")
    assert [o.group for o in report.outcomes] == ["tas", "tas", "pr", "pr"]
    by_group = report.by_group()
    assert list(by_group) == ["tas", "pr"]
    assert by_group["tas"][Status.OK] == 2
    assert by_group["pr"][Status.OK] == 1 and by_group["pr"][Status.FAILED] == 1
    cells = [[c for c in line.split() if c != "│"] for line in report.summary().splitlines()]
    rows = {row[0]: row[1:] for row in cells if row and row[0] in ("tas", "pr")}
    assert rows == {"tas": ["2", "0", "2"], "pr": ["1", "1", "2"]}  # ok, failed, tasks


def test_map_groups_from_a_callable():
    with corral.Pool(workers=2) as pool:
        values = pool.map(
            lambda x: x * 2, range(4), group=lambda x: "even" if x % 2 == 0 else "odd"
        )
    assert values == [0, 2, 4, 6]


# -- random task sets on real workers --------------------------------------------------------------
@st.composite
def real_task_sets(draw: st.DrawFn) -> list[Task]:
    n = draw(st.integers(2, 10))
    tasks = []
    for pos in range(n):
        tasks.append(
            Task(
                sleep_then,
                (draw(st.sampled_from([0.0, 0.01, 0.03])), pos, draw(st.integers(0, 6)) == 0),
                key=pos,
                locks=draw(st.lists(st.sampled_from("ab"), max_size=2, unique=True)),
                uses=draw(st.dictionaries(st.just("lic"), st.sampled_from([0.5, 1.0, 2.0]))),
                memory=draw(st.sampled_from([None, 1000, 3000])),
                after=draw(st.lists(st.integers(0, pos - 1), max_size=2, unique=True))
                if pos
                else [],
            )
        )
    return tasks


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(real_task_sets())
def test_random_batches_on_real_workers_respect_every_constraint(tasks):
    report = corral.run(tasks, workers=3, resources=CAPACITY, memory_budget=4000, errors="return")
    outcomes = report.outcomes
    ran = [o for o in outcomes if o.started is not None]
    for i, a in enumerate(ran):
        for b in ran[i + 1 :]:
            both = a.started < b.finished and b.started < a.finished
            if both:
                ta, tb = tasks[a.key], tasks[b.key]
                assert not set(ta.locks) & set(tb.locks), (a.key, b.key)
    for o in ran:
        live = [x for x in ran if x.started <= o.started < x.finished]
        assert sum(dict(tasks[x.key].uses or {}).get("lic", 0) for x in live) <= 2
        assert sum(tasks[x.key].memory or 0 for x in live) <= 4000
    for o, task in zip(outcomes, tasks, strict=True):
        deps = [outcomes[d] for d in task.after]
        if all(d.status == Status.OK for d in deps):
            assert o.status in (Status.OK, Status.FAILED)
            assert all(d.finished <= o.started for d in deps)
        else:
            assert o.status == Status.SKIPPED
