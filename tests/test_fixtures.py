"""Fixtures: injected by parameter name, set up once per worker (or per task), kept across the
calls of a Pool, torn down when workers retire; set-up failures are FixtureErrors, and a fixture
that keeps failing stops being tried. The same semantics in serial mode.

Fixtures leave marker files (``WHAT-PID-UNIQUE``) in a test's directory, so the test counts
set-ups and teardowns per process. They are built by factories (closures over the directory):
a worker started by the fork server cannot see environment variables set by a test.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path

import pytest

import corral

pytestmark = pytest.mark.timeout(120)


# -- helpers ---------------------------------------------------------------------------------------
def note(marker_dir, what):
    (Path(marker_dir) / f"{what}-{os.getpid()}-{uuid.uuid4().hex}").touch()


def notes(marker_dir, what):
    """The pids of every ``what`` marker, one entry per marker (a Counter of pid -> count)."""
    return Counter(int(p.name.split("-")[1]) for p in Path(marker_dir).glob(f"{what}-*"))


def tracked(marker_dir, name="resource", *, scope="worker", fail=False, requests=()):
    """A generator fixture that notes its set-ups and teardowns; yields ``(name, pid)``."""
    marker_dir = str(marker_dir)

    def resource(**deps):
        note(marker_dir, f"setup.{name}")
        if fail:
            raise ValueError(f"{name} cannot start")
        yield (name, os.getpid(), deps)
        note(marker_dir, f"teardown.{name}")

    resource.__name__ = name
    if requests:  # give it named parameters: fixtures request others by parameter name
        import inspect

        params = [inspect.Parameter(r, inspect.Parameter.KEYWORD_ONLY) for r in requests]
        resource.__signature__ = inspect.Signature(params)
    return corral.fixture(resource, scope=scope)


def use(x, *, resource):
    return x, resource[1], os.getpid()


def use_two(x, *, resource, other):
    return x, resource, other


def with_default(x, *, resource, scale=2):
    return x * scale


# -- worker scope --------------------------------------------------------------------------------
def test_worker_fixture_is_set_up_once_per_worker_and_torn_down_at_the_end(tmp_path):
    results = corral.map(use, range(20), workers=2, chunksize=1, fixtures=[tracked(tmp_path)])
    assert [r[0] for r in results] == list(range(20))
    assert all(fixture_pid == worker_pid for _, fixture_pid, worker_pid in results)
    setups = notes(tmp_path, "setup.resource")
    assert set(setups) == {pid for _, _, pid in results}
    assert all(n == 1 for n in setups.values())
    assert notes(tmp_path, "teardown.resource") == setups


def test_pool_keeps_worker_fixtures_across_calls(tmp_path):
    with corral.Pool(2, fixtures=[tracked(tmp_path)]) as pool:
        first = pool.map(use, range(10), chunksize=1)
        second = pool.map(use, range(10), chunksize=1)
        third = pool.run([corral.Task(use, (x,)) for x in range(4)]).results
        assert not notes(tmp_path, "teardown.resource")
        setups = notes(tmp_path, "setup.resource")
    assert all(n == 1 for n in setups.values())
    assert {r[2] for r in first + second + third} == set(setups)
    assert notes(tmp_path, "teardown.resource") == setups


def test_a_fixture_is_not_set_up_in_a_worker_whose_tasks_do_not_need_it(tmp_path):
    assert corral.map(abs, [-1, -2], workers=2, fixtures=[tracked(tmp_path)]) == [1, 2]
    assert not notes(tmp_path, "setup.resource")


def test_recycled_workers_tear_their_fixtures_down(tmp_path):
    results = corral.map(
        use, range(8), workers=2, chunksize=1, max_tasks_per_worker=2, fixtures=[tracked(tmp_path)]
    )
    setups = notes(tmp_path, "setup.resource")
    assert len(setups) >= 4  # a new worker (and a new set-up) every 2 tasks
    assert set(setups) == {r[2] for r in results}
    assert notes(tmp_path, "teardown.resource") == setups


def test_plain_function_fixture_has_no_teardown():
    @corral.fixture
    def resource():
        return ("plain", os.getpid(), {})

    assert [r[0] for r in corral.map(use, range(4), workers=2, fixtures=[resource])] == [0, 1, 2, 3]


def test_parameters_with_defaults_keep_them_when_no_fixture_provides_them(tmp_path):
    assert corral.map(with_default, [1, 2], workers=2, fixtures=[tracked(tmp_path)]) == [2, 4]


# -- task scope and dependencies -----------------------------------------------------------------
def test_task_fixture_is_set_up_and_torn_down_around_each_task(tmp_path):
    fx = tracked(tmp_path, scope="task")
    corral.map(use, range(6), workers=2, chunksize=2, fixtures=[fx])
    assert sum(notes(tmp_path, "setup.resource").values()) == 6
    assert notes(tmp_path, "teardown.resource") == notes(tmp_path, "setup.resource")


def test_fixture_requests_another_by_parameter_name(tmp_path):
    base = tracked(tmp_path, "other")
    top = tracked(tmp_path, "resource", scope="task", requests=("other",))
    results = corral.map(use_two, range(4), workers=2, chunksize=1, fixtures=[top, base])
    for _, resource, other in results:
        name, _, deps = resource
        assert name == "resource" and deps == {"other": other}
    assert all(n == 1 for n in notes(tmp_path, "setup.other").values())
    assert sum(notes(tmp_path, "setup.resource").values()) == 4


def test_a_fixture_shared_by_two_requests_is_set_up_once_per_task(tmp_path):
    shared = tracked(tmp_path, "other", scope="task")
    top = tracked(tmp_path, "resource", scope="task", requests=("other",))
    results = corral.map(use_two, range(3), backend="serial", fixtures=[top, shared])
    for _, resource, other in results:
        assert resource[2]["other"] is other
    assert sum(notes(tmp_path, "setup.other").values()) == 3


def test_the_tasks_own_keyword_arguments_win_over_a_fixture(tmp_path):
    tasks = [corral.Task(use, (1,), {"resource": ("mine", -1, {})}), corral.Task(use, (2,))]
    report = corral.run(tasks, workers=2, fixtures=[tracked(tmp_path)])
    assert report.results[0] == (1, -1, report.outcomes[0].pid)
    assert report.results[1][1] == report.outcomes[1].pid


def test_the_tasks_own_arguments_win_after_the_fixture_was_given_to_others(tmp_path):
    tasks = [
        corral.Task(use, (1,)),
        corral.Task(use, (2,), {"resource": ("mine", -1, {})}),
        corral.Task(use, (3,)),
    ]
    report = corral.run(tasks, backend="serial", fixtures=[tracked(tmp_path)])
    assert [r[1] for r in report.results] == [os.getpid(), -1, os.getpid()]


def test_imap_and_executor_inject_fixtures(tmp_path):
    fx = tracked(tmp_path)
    assert [r[0] for r in corral.imap(use, range(5), workers=2, fixtures=[fx])] == list(range(5))
    with corral.Executor(max_workers=2, fixtures=[fx]) as executor:
        assert executor.submit(use, 7).result()[0] == 7
        assert [r[0] for r in executor.map(use, range(7), chunksize=3)] == list(range(7))


# -- serial mode ---------------------------------------------------------------------------------
def test_serial_mode_has_the_same_semantics_torn_down_at_the_end(tmp_path):
    worker = tracked(tmp_path)
    task = tracked(tmp_path, "other", scope="task")
    results = corral.map(use_two, range(5), backend="serial", fixtures=[worker, task])
    assert [r[0] for r in results] == list(range(5))
    assert notes(tmp_path, "setup.resource") == {os.getpid(): 1}
    assert notes(tmp_path, "teardown.resource") == {os.getpid(): 1}
    assert notes(tmp_path, "setup.other") == {os.getpid(): 5}
    assert notes(tmp_path, "teardown.other") == {os.getpid(): 5}


def test_serial_pool_keeps_fixtures_until_closed(tmp_path):
    with corral.Pool(backend="serial", fixtures=[tracked(tmp_path)]) as pool:
        pool.map(use, range(3))
        pool.map(use, range(3))
        assert not notes(tmp_path, "teardown.resource")
    assert notes(tmp_path, "setup.resource") == notes(tmp_path, "teardown.resource") == {
        os.getpid(): 1
    }


# -- set-up failures -----------------------------------------------------------------------------
def flaky(marker_dir):
    """Fails its first set-up in each process, then works."""
    marker_dir = str(marker_dir)

    @corral.fixture
    def resource():
        note(marker_dir, "setup.resource")
        first = Path(marker_dir) / f"failed-{os.getpid()}"
        if not first.exists():
            first.touch()
            raise ConnectionRefusedError("server not up yet")
        return ("resource", os.getpid(), {})

    return resource


@pytest.mark.parametrize("backend", ["process", "serial"])
def test_failed_set_up_fails_the_task_with_fixture_error_and_is_retried_next_task(
    tmp_path, backend
):
    report = corral.run(
        [corral.Task(use, (x,)) for x in range(6)],
        workers=2,
        backend=backend,
        chunksize=1,
        errors="return",
        fixtures=[flaky(tmp_path)],
    )
    failed = report.failures
    processes = {o.pid for o in report.outcomes}
    assert len(failed) == len(processes)  # the first set-up in each process
    for outcome in failed:
        error = outcome.error
        assert isinstance(error, corral.FixtureError)
        assert error.fixture == "resource"
        assert isinstance(error.cause, ConnectionRefusedError)
        assert "server not up yet" in str(error)
        assert "ConnectionRefusedError" in outcome.traceback
    assert [o.value[0] for o in report.outcomes if o.ok] == [
        x for x in range(6) if report.outcomes[x].ok
    ]
    # per process: the failed set-up, then one that worked and was kept
    assert all(n <= 2 for n in notes(tmp_path, "setup.resource").values())


def test_fixture_error_is_retried_like_any_failure(tmp_path):
    results = corral.map(
        use, range(4), workers=2, chunksize=1, retries=1, backoff=0, fixtures=[flaky(tmp_path)]
    )
    assert [r[0] for r in results] == [0, 1, 2, 3]


@pytest.mark.parametrize("chunksize", [1, "auto"])
def test_a_fixture_that_keeps_failing_stops_being_tried(tmp_path, chunksize):
    broken = tracked(tmp_path, fail=True)
    report = corral.run(
        [corral.Task(use, (x,)) for x in range(60)],
        workers=2,
        chunksize=chunksize,
        errors="return",
        fixture_failures=3,
        fixtures=[broken],
    )
    assert all(isinstance(o.error, corral.FixtureError) for o in report.outcomes)
    attempts = sum(notes(tmp_path, "setup.resource").values())
    assert 3 <= attempts <= 2 * 3  # at most fixture_failures per worker, never one per task
    refused = [o for o in report.outcomes if "was not run" in str(o.error)]
    assert refused
    assert all(isinstance(o.error.cause, ValueError) for o in refused)


def test_tasks_that_do_not_need_a_broken_fixture_still_run(tmp_path):
    broken = tracked(tmp_path, fail=True)
    tasks = [corral.Task(use, (x,)) for x in range(10)]
    tasks += [corral.Task(abs, (-x,)) for x in range(5)]
    report = corral.run(
        tasks, workers=2, chunksize=1, errors="return", fixture_failures=2, fixtures=[broken]
    )
    assert [o.ok for o in report.outcomes] == [False] * 10 + [True] * 5


def test_a_failing_dependency_is_the_fixture_named(tmp_path):
    base = tracked(tmp_path, "other", fail=True)
    top = tracked(tmp_path, "resource", requests=("other",))
    report = corral.run(
        [corral.Task(use, (1,))], workers=2, errors="return", fixtures=[top, base]
    )
    assert report.outcomes[0].error.fixture == "other"
    assert not notes(tmp_path, "setup.resource")


def test_failing_task_fixture_teardown_fails_the_task(tmp_path):
    @corral.fixture(scope="task")
    def resource():
        yield ("r", os.getpid(), {})
        raise OSError("cannot clean up")

    report = corral.run([corral.Task(use, (1,))], backend="serial", errors="return",
                        fixtures=[resource])  # fmt: skip
    error = report.outcomes[0].error
    assert isinstance(error, corral.FixtureError) and "tear down" in str(error)
    assert isinstance(error.cause, OSError)


def test_unpicklable_set_up_error_travels_as_remote_error():
    class Local(Exception):
        def __reduce__(self):
            raise TypeError("no pickling")

    @corral.fixture
    def resource():
        raise Local("odd")

    report = corral.run([corral.Task(use, (1,))], workers=2, errors="return", fixtures=[resource])
    error = report.outcomes[0].error
    assert isinstance(error, corral.FixtureError)
    assert isinstance(error.cause, corral.RemoteError) and "odd" in str(error.cause)


def test_batch_error_names_the_fixture_error(tmp_path):
    with pytest.raises(corral.BatchError, match="FixtureError"):
        corral.map(use, range(2), workers=2, fixtures=[tracked(tmp_path, fail=True)])


# -- validation, before any work -----------------------------------------------------------------
def needs_missing(x, *, solver):
    return x


def test_keyword_only_parameter_nobody_provides_is_an_error_naming_it(tmp_path):
    fx = tracked(tmp_path)
    with pytest.raises(corral.ConfigError, match=r"'solver'.*resource"):
        corral.map(needs_missing, range(3), workers=2, fixtures=[fx])
    with pytest.raises(corral.ConfigError, match="'solver'"):
        corral.run([corral.Task(needs_missing, (1,))], workers=2)
    with pytest.raises(corral.ConfigError, match="'solver'"):
        list(corral.imap(needs_missing, range(3), workers=2))
    with corral.Executor(max_workers=1) as executor, pytest.raises(corral.ConfigError):
        executor.submit(needs_missing, 1)
    assert not notes(tmp_path, "setup.resource")


def positional_resource(x, resource):
    return x


def test_a_positional_parameter_named_like_a_fixture_is_an_error_saying_to_use_a_star(tmp_path):
    with pytest.raises(corral.ConfigError, match=r"put it after a \*"):
        corral.map(positional_resource, [1], workers=2, fixtures=[tracked(tmp_path)])
    given = corral.Task(positional_resource, (1, "mine"))  # passed by the task itself: fine
    assert corral.run([given], workers=2, fixtures=[tracked(tmp_path)]).results == [1]


@corral.fixture(name="resource")
def module_level_resource():
    yield ("module", os.getpid(), {})


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_a_module_level_fixture_reaches_workers_under_every_start_method(start_method):
    results = corral.map(use, range(4), workers=2, start_method=start_method,
                         fixtures=[module_level_resource])  # fmt: skip
    assert [r[0] for r in results] == [0, 1, 2, 3]
    assert all(r[1] == r[2] for r in results)


def test_a_task_argument_can_supply_a_keyword_only_parameter():
    report = corral.run([corral.Task(needs_missing, (1,), {"solver": None})], workers=2)
    assert report.results == [1]


def test_fixture_cycle_is_an_error_naming_the_cycle():
    @corral.fixture
    def a(b):
        return 1

    @corral.fixture
    def b(c):
        return 2

    @corral.fixture
    def c(a):
        return 3

    with pytest.raises(corral.ConfigError, match="cycle: a -> b -> c -> a"):
        corral.map(abs, [1], fixtures=[a, b, c])


def test_fixture_requesting_an_unknown_name_is_an_error():
    @corral.fixture
    def a(missing_one):
        return 1

    with pytest.raises(corral.ConfigError, match="'a' requests 'missing_one'"):
        corral.Pool(2, fixtures=[a])


def test_worker_fixture_cannot_use_a_task_fixture(tmp_path):
    short = tracked(tmp_path, "other", scope="task")
    long = tracked(tmp_path, "resource", requests=("other",))
    with pytest.raises(corral.ConfigError, match="outlive"):
        corral.map(abs, [1], fixtures=[long, short])


def test_fixtures_must_be_decorated_and_uniquely_named(tmp_path):
    def plain():
        return 1

    with pytest.raises(corral.ConfigError, match=r"@corral\.fixture"):
        corral.map(abs, [1], fixtures=[plain])
    with pytest.raises(corral.ConfigError, match="two fixtures"):
        corral.map(abs, [1], fixtures=[tracked(tmp_path), tracked(tmp_path)])
    with pytest.raises(corral.ConfigError, match="scope"):
        corral.fixture(plain, scope="session")
    with pytest.raises(corral.ConfigError, match="fixture_failures"):
        corral.map(abs, [1], fixture_failures=0)


def test_fixtures_belong_to_the_pool(tmp_path):
    with corral.Pool(backend="serial") as pool, pytest.raises(corral.ConfigError, match="Pool"):
        pool.map(abs, [1], fixtures=[tracked(tmp_path)])


def test_fixture_name_can_be_given():
    @corral.fixture(name="resource")
    def make_it():
        return ("named", 0, {})

    assert corral.map(use, [1], backend="serial", fixtures=[make_it])[0][1] == 0
    assert repr(make_it) == "<corral fixture 'resource' (worker scope)>"


# -- with scheduled tasks (locks) ----------------------------------------------------------------
def test_fixtures_with_locked_tasks_and_a_broken_fixture_releases_its_locks(tmp_path):
    broken = tracked(tmp_path, "other", fail=True)
    tasks = [corral.Task(use_two, (x,), locks=["shared"]) for x in range(6)]
    tasks += [corral.Task(use, (x,), locks=["shared"]) for x in range(6)]
    report = corral.run(tasks, workers=2, errors="return", fixture_failures=2,
                        fixtures=[tracked(tmp_path), broken])  # fmt: skip
    assert all(isinstance(o.error, corral.FixtureError) for o in report.outcomes[:6])
    assert [o.value[0] for o in report.outcomes[6:]] == list(range(6))


# -- timeouts -------------------------------------------------------------------------------
def slow_start(seconds):
    """A worker fixture whose set-up takes ``seconds`` (a server that is slow to come up)."""

    def server():
        import time

        time.sleep(seconds)
        return "up"

    return corral.fixture(server)


def nap(seconds, *, server):
    import time

    time.sleep(seconds)
    return server


def test_a_worker_fixture_set_up_does_not_count_against_the_task_timeout():
    # Set-up 1.4 s, then the task 1.2 s: 2.6 s in all, but each within the 2 s timeout.
    tasks = [corral.Task(nap, (1.2,)) for _ in range(2)]
    report = corral.run(tasks, workers=2, timeout=2.0, fixtures=[slow_start(1.4)])
    assert report.results == ["up", "up"]


def test_a_hung_worker_fixture_set_up_still_times_out():
    tasks = [corral.Task(nap, (0.0,)) for _ in range(2)]
    report = corral.run(
        tasks, workers=2, timeout=1.0, errors="return", fixtures=[slow_start(1000)]
    )
    assert [o.status for o in report.outcomes] == [corral.Status.TIMEOUT] * 2
