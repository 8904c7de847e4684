"""The dask backend on a real ``distributed.LocalCluster(processes=True, n_workers=2)``.

One cluster for the module (starting one costs seconds). Its nannies, Dask workers and their
multiprocessing helpers live across tests, so this module replaces the process leak guard
with one that allows them and nothing else: after every test no corral worker process (a
child of a Dask worker, titled ``corral worker``) is left, and once the cluster is closed
nothing at all.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from _deps import require_module
from _procs import alive, fail_on_corral_processes, still_alive_after
from conftest import leftover_processes

import corral
from corral import ConfigError, Task, TaskTimeout, WorkerCrashed

distributed = require_module("distributed")

LEAK_WAIT = 15.0


@pytest.fixture(scope="module")
def cluster():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()
    left = leftover_processes()
    _gone, alive_ = psutil.wait_procs(left, timeout=LEAK_WAIT)
    assert not alive_, f"processes left after the cluster closed: {alive_}"


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Replaces conftest's guard: the cluster stays, corral's children must not."""
    yield
    fail_on_corral_processes(LEAK_WAIT)


def square(x):
    return x * x


def pid_of(_x):
    return os.getpid()


def sleep_on(x):
    directory, n, hang = x
    if n == hang:
        Path(directory, "pid").write_text(str(os.getpid()))
        time.sleep(300)
    return n


def crash_on(x):
    n, how = x
    if n == 2:
        if how == "exit":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)
    return n


def test_map_and_imap_equal_serial_in_input_order(cluster):
    items = list(range(50))
    expected = [square(x) for x in items]
    with distributed.get_task_stream(cluster) as stream:
        assert corral.map(square, items, backend="dask", dask_client=cluster) == expected
    keys = [task["key"] for task in stream.data]
    assert keys and all(k.startswith("corral-square-") for k in keys)  # named for the dashboard
    assert len(set(keys)) == len(keys)  # pure=False: every Call its own key
    got = list(corral.imap(square, items, backend="dask", dask_client=cluster, chunksize=3))
    assert got == expected


def test_a_pool_takes_an_address_and_runs_in_processes_under_the_dask_workers(cluster):
    dask_workers = set(cluster.run(os.getpid).values())
    with corral.Pool(backend="dask", dask_client=cluster.scheduler.address) as pool:
        pids = set(pool.map(pid_of, range(8), chunksize=1))
        assert pool.map(square, [3]) == [9]
        under = {c.pid for w in dask_workers for c in psutil.Process(w).children(recursive=True)}
        assert pids <= under and not pids & dask_workers
    assert not still_alive_after(pids, LEAK_WAIT)  # the Pool's close stops them
    assert set(cluster.run(coordinator_modules).values()) == {()}  # Dask workers stay lean


def coordinator_modules():
    import sys

    return tuple(m for m in ("rich", "corral._engine", "corral._pool") if m in sys.modules)


def timed_square(directory, i):
    start = time.time()
    time.sleep(0.2)
    Path(directory, f"t{i}").write_text(f"{start} {time.time()}")
    return i * i


def test_run_with_tasks_dependencies_and_locks_equals_serial(cluster, tmp_path):
    d = str(tmp_path)
    tasks = [Task(timed_square, args=(d, i), key=f"t{i}", locks=["db"]) for i in range(4)]
    tasks.append(Task(timed_square, args=(d, 10), key="last", after=["t0", "t3"]))
    report = corral.run(tasks, backend="dask", dask_client=cluster)
    assert report.results == [0, 1, 4, 9, 100]
    spans = {p.name: tuple(map(float, p.read_text().split())) for p in tmp_path.iterdir()}
    locked = sorted(spans[f"t{i}"] for i in range(4))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(locked))  # one at a time
    assert spans["t10"][0] >= max(spans["t0"][1], spans["t3"][1])


def test_a_timeout_kills_its_task_and_the_others_finish(cluster, tmp_path):
    items = [(str(tmp_path), n, 3) for n in range(6)]
    out = corral.map(
        sleep_on, items, backend="dask", dask_client=cluster, timeout=3, errors="return"
    )
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5]
    assert out[3].status == "timeout" and isinstance(out[3].error, TaskTimeout)
    pid = int(Path(tmp_path, "pid").read_text())
    assert not still_alive_after([pid], LEAK_WAIT)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_crashing_task_fails_alone(cluster, how):
    out = corral.map(
        crash_on, [(n, how) for n in range(5)], backend="dask", dask_client=cluster,
        errors="return", chunksize=1,
    )  # fmt: skip
    assert out[:2] == [0, 1] and out[3:] == [3, 4]
    error = out[2].error
    assert out[2].status == "crashed" and isinstance(error, WorkerCrashed)
    assert error.exitcode == (3 if how == "exit" else -signal.SIGKILL)


@corral.fixture
def child_pid():
    return os.getpid()


def with_fixture(x, *, child_pid):
    return child_pid, os.getpid()


@pytest.mark.slow
def test_fixtures_are_set_up_in_each_child_under_the_dask_workers(cluster):
    out = corral.map(
        with_fixture, range(10), backend="dask", dask_client=cluster, fixtures=[child_pid],
        chunksize=1,
    )  # fmt: skip
    assert all(fixture == pid for fixture, pid in out)


def test_options_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="dask_client"):
        corral.map(square, [1], backend="dask")
    with pytest.raises(ConfigError, match="only with backend='dask'"):
        corral.map(square, [1], dask_client="tcp://127.0.0.1:1")
    with pytest.raises(ConfigError, match="dask_client must be"):
        corral.map(square, [1], backend="dask", dask_client=42)
    with pytest.raises(ConfigError, match="max_tasks_per_worker"):
        corral.map(square, [1], backend="dask", dask_client="tcp://x:1", max_tasks_per_worker=2)


def _kill_the_dask_worker_of(cluster, directory):
    deadline = time.monotonic() + 60
    while not list(Path(directory).glob("started-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (marker,) = Path(directory).glob("started-*")
    child = int(marker.name.split("-")[1])
    for worker in cluster.run(os.getpid).values():
        if child in {c.pid for c in psutil.Process(worker).children(recursive=True)}:
            os.kill(worker, signal.SIGKILL)
            return child
    raise AssertionError("no Dask worker runs the task")


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
def test_a_dask_worker_killed_mid_task_fails_or_retries_that_task(cluster, tmp_path, retries):
    import threading

    killed: list[int] = []
    items = [(str(tmp_path), n) for n in range(6)]
    # A retry would hang again: the marker says which attempt this is.
    killer = threading.Thread(
        target=lambda: killed.append(_kill_the_dask_worker_of(cluster, tmp_path))
    )
    killer.start()
    try:
        out = corral.map(
            hang_and_report_once, items, backend="dask", dask_client=cluster, chunksize=1,
            errors="return", retries=retries, backoff=0,
        )  # fmt: skip
    finally:
        killer.join()
    assert out[1:] == [1, 2, 3, 4, 5]
    if retries:
        assert out[0] == 0
    else:
        assert out[0].status == "crashed" and isinstance(out[0].error, WorkerCrashed)
    assert not still_alive_after(killed, LEAK_WAIT)  # its corral child died with it
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts it, for the next tests
    assert alive(os.getpid())


def hang_and_report_once(x):
    directory, n = x
    if n == 0 and not list(Path(directory).glob("started-*")):
        Path(directory, f"started-{os.getpid()}").write_text("")
        time.sleep(300)
    return n


def total_of(handle):
    return float(handle.value.sum())


@pytest.mark.slow
def test_a_share_reaches_the_children_of_dask_workers_on_this_host(cluster):
    np = require_module("numpy")
    data = np.arange(100_000, dtype="float64")
    with corral.share(data) as handle:
        out = corral.map(total_of, [handle] * 4, backend="dask", dask_client=cluster, chunksize=1)
    assert out == [float(data.sum())] * 4


def test_a_share_read_on_another_host_says_how_to_share_across_nodes():
    import pickle

    from corral._sharing import share as share_module

    handle = share_module._rebuild_handle("/dev/shm/corral-nowhere", 64, "bytes", "node-a")
    handle = pickle.loads(pickle.dumps(handle))  # travels on with its host
    with pytest.raises(corral.CorralError, match=r"host 'node-a'.*backing='file', dir="):
        _ = handle.value


def hang_on_three(x, directory):
    if x % 5 == 3:
        Path(directory, f"running-{x}").write_text("")
        time.sleep(300)
    return x * x


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_items_of_running_chunks(cluster, tmp_path):
    import functools
    import threading

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("running-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C: in the main thread

    fn = functools.partial(hang_on_three, directory=str(tmp_path))
    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt) as caught:
        corral.map(fn, range(10), backend="dask", dask_client=cluster, chunksize=5)
    statuses = [o.status for o in caught.value.report.outcomes]
    assert statuses == (["ok"] * 3 + ["cancelled"] * 2) * 2
    ok = [o.value for o in caught.value.report.outcomes if o.status == "ok"]
    assert ok == [0, 1, 4, 25, 36, 49]  # handed over by the children (_worker.handover)


@corral.fixture
def echo_server():
    argv = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    with corral.Service(argv, ready="tcp", port="auto") as service:
        yield service.port


def fetch_port(x, *, echo_server):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{echo_server}/", timeout=30) as answer:
        return echo_server, answer.status


@pytest.mark.slow
def test_a_service_runs_beside_each_child_on_its_node_and_stops_with_the_pool(cluster):
    with corral.Pool(backend="dask", dask_client=cluster, fixtures=[echo_server]) as pool:
        out = pool.map(fetch_port, range(6), chunksize=1)
        servers = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "http.server" in (p.info["cmdline"] or [])
        ]
        assert servers
    assert all(status == 200 for _, status in out)
    assert not still_alive_after([p.pid for p in servers], LEAK_WAIT)
