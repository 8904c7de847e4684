"""The fault-matrix row "kill -9 of a service (the program itself)": Debian's real
``redis-server``, started by a ``corral.Service`` in a worker fixture, is SIGKILLed from
outside, while a task uses it and while none does.

What corral promises (``_worker.fixture_cache``, ``_services.service``): the task that was
using it fails with a ``FixtureError`` naming the fixture, whose ``cause`` is a
``ServiceError`` saying which program died and how (the task's own exception chained), and is
retried like any failure with ``retries=``; the fixture is torn down (its port lock and keeper
freed) and set up again for the next task that needs it, so later tasks get a working
server. Nothing is left: every redis-server that ran is gone once the Pool closes, and the
port lock folder is empty.

One worker, so that the tasks after a kill run where the server died (deterministically).
Every test points ``CORRAL_RUNTIME_DIR`` at its own folder, so its lock files are its own.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from _deps import require_program
from _procs import still_alive_after, wait_until
from test_services import Resp

import corral
from corral import FixtureError, ServiceError, Task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

GONE_WAIT = 10.0


class Redis(Resp):
    """test_services' RESP client, knowing the server's pid (the test kills it)."""

    def __init__(self, port: int, pid: int) -> None:
        super().__init__(port, timeout=60)
        self.pid = pid


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    directory = tmp_path / "runtime"
    monkeypatch.setenv("CORRAL_RUNTIME_DIR", str(directory))
    return directory


def redis_fixture(server: str):  # type: ignore[no-untyped-def]
    @corral.fixture
    def redis():  # type: ignore[no-untyped-def]
        argv = [server, "--port", "{port}", "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"]  # fmt: skip
        with corral.Service(argv, ready="tcp", grace=1.0) as service:
            client = Redis(service.port, service.pid)
            yield client
            client.close()

    return redis


def use_redis(n: int, directory: str, victim: bool, *, redis: Redis) -> tuple[int, int, int]:
    """A victim's first attempt says which server it uses (``victim-N-PID-PORT``) and blocks
    in a command that never returns, until that server is killed."""
    if victim and not list(Path(directory).glob(f"victim-{n}-*")):
        Path(directory, f"victim-{n}-{redis.pid}-{redis.port}").write_text("")
        redis.cmd("BLPOP", "never", 0)
    redis.cmd("SET", f"key:{n}", n)
    return n, int(redis.cmd("GET", f"key:{n}")), redis.pid


def server_pid(_x: int, *, redis: Redis) -> tuple[int, int]:
    return redis.pid, redis.port


def test_kill_9_of_a_service_fails_the_task_using_it_and_the_next_tasks_get_a_new_one(
    tmp_path, runtime
):
    redis = redis_fixture(require_program("redis-server"))
    victims = {2: 0, 5: 1}  # task → its retries: 2 fails, 5 is retried and succeeds
    killed: list[tuple[int, int]] = []  # (pid, port) of each server killed
    errors: list[BaseException] = []

    def kill_the_servers_of_the_victims() -> None:
        try:
            for n in victims:
                pattern = f"victim-{n}-*"
                wait_until(lambda p=pattern: list(tmp_path.glob(p)), f"victim {n}", timeout=60)
                _, _, pid, port = next(tmp_path.glob(pattern)).name.split("-")
                os.kill(int(pid), signal.SIGKILL)
                killed.append((int(pid), int(port)))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    tasks = [
        Task(use_redis, (n, str(tmp_path), n in victims), key=n, retries=victims.get(n))
        for n in range(8)
    ]
    thread = threading.Thread(target=kill_the_servers_of_the_victims)
    started = time.monotonic()
    with corral.Pool(workers=1, fixtures=[redis]) as pool:
        thread.start()
        try:
            report = pool.run(tasks, chunksize=1, backoff=0, errors="return")
        finally:
            thread.join()
        after = pool.map(server_pid, range(2))  # the pool goes on with a working server
    wall = time.monotonic() - started
    assert not errors, errors
    outcomes = report.outcomes

    failed = outcomes[2]
    assert failed.status == "failed" and isinstance(failed.error, FixtureError), failed
    assert failed.error.fixture == "redis" and failed.attempts == 1
    cause = failed.error.cause
    assert isinstance(cause, ServiceError)
    first_pid, first_port = killed[0]
    assert f"redis-server (pid {first_pid}, port {first_port}) was killed by SIGKILL" in str(cause)
    assert "closed the connection" in failed.traceback  # the task's own error, chained

    assert outcomes[5].ok and outcomes[5].attempts == 2  # retried on a new server
    values = {o.key: o.value for o in outcomes if o.ok}
    assert sorted(values) == [0, 1, 3, 4, 5, 6, 7]
    assert all(values[n][:2] == (n, n) for n in values)  # each task's own key, read back
    pids = {n: values[n][2] for n in values}
    second_pid = killed[1][0]
    assert pids[0] == pids[1] == first_pid
    assert pids[3] == pids[4] == second_pid  # set up again after the first kill
    assert pids[5] not in (first_pid, second_pid) and pids[6] == pids[7] == pids[5]
    assert {pid for pid, _port in after} == {pids[7]}

    every_server = {first_pid, second_pid, pids[7]}
    assert not still_alive_after(every_server, GONE_WAIT)
    assert not list((runtime / "ports").glob("*.lock")), "port locks left"
    print(
        f"FIGURE kill -9 of a service: 8 tasks, {len(killed)} redis-servers killed, "
        f"3 started, wall {wall:.1f} s, orphans 0, port locks left 0"
    )


def set_and_get(n: int, *, redis: Redis) -> tuple[int, int]:
    redis.cmd("SET", f"key:{n}", n)
    return int(redis.cmd("GET", f"key:{n}")), redis.pid


def test_a_service_killed_between_tasks_is_replaced_for_the_next_tasks(runtime):
    """Found before the next task once the program's output has ended (at once, normally:
    its reader thread is told); a task that starts first fails with the FixtureError and is
    retried, on a new server."""
    redis = redis_fixture(require_program("redis-server"))
    with corral.Pool(workers=1, fixtures=[redis]) as pool:
        ((first, _port),) = set(pool.map(server_pid, range(3)))
        os.kill(first, signal.SIGKILL)
        assert not still_alive_after({first}, GONE_WAIT)
        report = pool.run([Task(set_and_get, (n,), key=n) for n in range(4)], retries=1)
    assert report.results == [(n, report.results[0][1]) for n in range(4)]
    second = report.results[0][1]
    assert second != first
    assert all(o.attempts == 1 for o in report.outcomes[1:])
    assert not still_alive_after({second}, GONE_WAIT)
    assert not list((runtime / "ports").glob("*.lock")), "port locks left"
