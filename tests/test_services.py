"""Services: real servers on unique ports, one per worker, that never outlive their worker.

The servers are Debian's ``redis-server`` and ``examples/simulation_sweep/simserver.py``, a
ZeroMQ request/reply server started like a modelling compiler in interactive mode
(``--interactivePort={port} -z={token}``) that refuses requests carrying another token.
Under CI a missing redis-server or pyzmq fails these tests (``tests/_deps.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest
from _deps import require_module, require_program
from _procs import alive, still_alive_after, wait_until

import corral
from corral._services.ports import reserve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
SIMSERVER = ROOT / "examples" / "simulation_sweep" / "simserver.py"
SCRIPT = Path(__file__).parent / "scripts" / "service_batch.py"
GONE_WAIT = 10.0


# -- clients ---------------------------------------------------------------------------------------
class Sim:
    """A REQ client of one simserver; every request carries ``token``."""

    def __init__(self, port, token, pid=None):
        import zmq

        self.port, self.token, self.pid = port, token, pid
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.REQ)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVTIMEO, 30_000)
        self._socket.connect(f"tcp://127.0.0.1:{port}")

    def ask(self, cmd, *, token=None, **fields):
        self._socket.send_json({"token": token or self.token, "cmd": cmd, **fields})
        return self._socket.recv_json()

    def close(self):
        self._socket.close()
        self._context.term()


class Resp:
    """Just enough of the redis protocol (RESP) for the tests; a closed connection is a
    ConnectionError (test_reliability_service kills the server under it)."""

    def __init__(self, port, timeout=30):
        self.port = port
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._file = self._sock.makefile("rb")

    def cmd(self, *args):
        parts = [str(a).encode() for a in args]
        message = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self._sock.sendall(message)
        line = self._file.readline().rstrip(b"\r\n")
        if not line:
            raise ConnectionError(f"redis on port {self.port} closed the connection")
        kind, rest = line[:1], line[1:].decode()
        if kind == b"-":
            raise RuntimeError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if int(rest) < 0 else self._file.read(int(rest) + 2)[:-2].decode()
        return rest

    def close(self):
        self._file.close()
        self._sock.close()


def sim_argv():
    return [sys.executable, str(SIMSERVER), "--interactive=zmq", "--interactivePort={port}",
            "-z={token}"]  # fmt: skip


@pytest.fixture
def zmq():
    return require_module("zmq")


@pytest.fixture
def redis_server():
    return require_program("redis-server")


def gone_within(pids, seconds=GONE_WAIT):
    """The pids among ``pids`` still alive after ``seconds`` (polled)."""
    return still_alive_after(pids, seconds)


def note(marker_dir, name):
    tmp = Path(marker_dir) / f".{name}.tmp"
    tmp.touch()
    os.rename(tmp, Path(marker_dir) / name)


def pids_noted(marker_dir, prefix):
    return {int(p.name.split("-")[1]) for p in Path(marker_dir).glob(f"{prefix}-*")}


# -- one Service -----------------------------------------------------------------------------------
def test_service_gets_a_free_port_and_a_fresh_token_and_stops(zmq):
    with corral.Service(sim_argv()) as first, corral.Service(sim_argv()) as second:
        assert first.port != second.port and first.token != second.token
        assert first.address == ("127.0.0.1", first.port)
        client = Sim(first.port, first.token)
        try:
            assert client.ask("ping") == {"ok": True, "pid": first.pid, "port": first.port}
            assert not client.ask("ping", token=second.token)["ok"]
        finally:
            client.close()
        pids = {first.pid, second.pid}
        assert first.running
    assert not first.running
    assert not gone_within(pids, 0)


def test_service_ready_on_a_line_of_output(zmq):
    with corral.Service(sim_argv(), ready=r"Started the ZeroMQ server on port \d+") as service:
        assert f"port {service.port}" in service.output[-1]


def test_service_ready_by_a_callable(zmq):
    calls = []

    def answers(service):
        calls.append(service.port)
        client = Sim(service.port, service.token)
        try:
            return client.ask("ping")["ok"]
        finally:
            client.close()

    with corral.Service(sim_argv(), ready=answers) as service:
        assert calls and set(calls) == {service.port}


def test_a_ready_callable_that_raises_means_not_ready_yet(zmq):
    calls = []

    def answers(service):
        calls.append(service.port)
        if len(calls) < 3:
            raise ConnectionRefusedError("not listening yet")
        return True

    with corral.Service(sim_argv(), ready=answers):
        assert len(calls) == 3
    never = corral.Service(["sleep", "1000"], port=None, ready=lambda s: 1 / 0,
                           startup_timeout=0.2, retries=0)  # fmt: skip
    with pytest.raises(corral.ServiceError, match="last check: ZeroDivisionError"):
        never.start()


def test_program_that_keeps_exiting_raises_service_error_with_its_output():
    service = corral.Service(["sh", "-c", "echo cannot bind port {port} >&2; exit 3"], retries=2)
    with pytest.raises(corral.ServiceError) as info:
        service.start()
    error = info.value
    assert len(error.attempts) == 3
    assert all("exited with code 3" in a for a in error.attempts)
    ports = {a.split("(port ")[1].split(")")[0] for a in error.attempts}
    assert len(ports) == 3  # each attempt on another port
    assert any(line.startswith("cannot bind port") for line in error.output)
    assert "cannot bind port" in str(error)


def test_program_never_ready_is_stopped_and_retried():
    service = corral.Service(["sleep", "1000"], startup_timeout=0.3, retries=1, grace=0.5)
    with pytest.raises(corral.ServiceError, match=r"not ready after 0\.3 s"):
        service.start()
    assert not service.running


def test_missing_program_is_an_error_at_once():
    with pytest.raises(corral.ServiceError, match="cannot run"):
        corral.Service(["/nonexistent/program", "{port}"]).start()


def test_a_start_that_fails_is_retried_on_another_port(tmp_path, zmq):
    script = tmp_path / "flaky.py"
    script.write_text(
        "import os, sys\n"
        "count = Path = __import__('pathlib').Path(sys.argv[1])\n"
        "n = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(n + 1))\n"
        "if n < 2:\n"
        "    print('Error: address already in use', flush=True)\n"
        "    sys.exit(1)\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
    )
    argv = [sys.executable, str(script), str(tmp_path / "count"), *sim_argv()[1:]]
    with corral.Service(argv, retries=3) as service:
        client = Sim(service.port, service.token)
        try:
            assert client.ask("ping")["port"] == service.port
        finally:
            client.close()
    assert (tmp_path / "count").read_text() == "3"


def test_ports_squatted_by_foreign_listeners_are_skipped(zmq):
    squatters, base = squat(3)
    try:
        with corral.Service(sim_argv(), port=base) as service:
            assert service.port >= base + 3
            client = Sim(service.port, service.token)
            try:
                assert client.ask("ping")["pid"] == service.pid
            finally:
                client.close()
    finally:
        for sock in squatters:
            sock.close()


def squat(n):
    """Listening sockets on ``n`` consecutive ports (a foreign server on each); and the first."""
    for _ in range(50):
        base = corral.free_port()
        socks = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
                sock.listen()
            return socks, base
        except OSError:
            for sock in socks:
                sock.close()
    raise AssertionError("no run of free ports to squat")


def test_stop_ends_the_whole_process_group():
    argv = ["sh", "-c", "sleep 1000 & echo started; wait"]
    with corral.Service(argv, ready="started", port=None) as service:
        wait_until(lambda: psutil.Process(service.pid).children(), "the child of the service")
        group = {service.pid} | {p.pid for p in psutil.Process(service.pid).children()}
    assert not gone_within(group, 0)


def test_a_service_ignoring_sigterm_is_killed_after_the_grace_period():
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(1000)"  # noqa: E501
    with corral.Service([sys.executable, "-c", code], ready="up", port=None, grace=0.3) as service:
        pid = service.pid
    assert not alive(pid)


def test_log_receives_the_programs_output(tmp_path):
    log = tmp_path / "service.log"
    with corral.Service(["sh", "-c", "echo hello {token}; sleep 1000"], ready="hello",
                        port=None, log=log) as service:  # fmt: skip
        token = service.token
    text = log.read_text()
    assert "hello <token>" in text and token not in text  # the token is masked in the log


def test_env_and_cwd_are_given_to_the_program_with_substitutions(tmp_path):
    argv = ["sh", "-c", 'echo "in $(pwd) with $SERVICE_PORT/$SERVICE_TOKEN"; sleep 1000']
    env = {"SERVICE_PORT": "{port}", "SERVICE_TOKEN": "{token}"}
    with corral.Service(argv, ready="with", env=env, cwd=tmp_path) as service:
        line = service.output[0]
    assert line == f"in {tmp_path} with {service.port}/{service.token}"


def test_bad_arguments_are_config_errors():
    for kwargs in ({"port": 0}, {"port": "any"}, {"retries": -1}, {"startup_timeout": 0},
                   {"ready": 3}, {"ready": "tcp", "port": None}, {"ready": "("}):  # fmt: skip
        with pytest.raises(corral.ConfigError):
            corral.Service(["x"], **kwargs)
    with pytest.raises(corral.ConfigError):
        corral.Service("redis-server --port {port}")
    with pytest.raises(corral.ConfigError, match="port=None"):
        corral.Service(["server", "--port={port}"], port=None, ready="up")


# -- ports across processes ------------------------------------------------------------------------
HOLD_PORT = "import sys, corral; print(corral.free_port(), flush=True); sys.stdin.read()"


def test_free_port_never_gives_two_processes_the_same_port():
    command = [sys.executable, "-c", HOLD_PORT]
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    try:
        ports = [int(p.stdout.readline()) for p in procs]
        ports.append(corral.free_port())
        assert len(set(ports)) == len(ports)
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=30)


RESERVE_FROM = (
    "import sys; from corral._services.ports import reserve; sys.stdin.readline(); "
    "print(reserve(start=int(sys.argv[1])).port, flush=True); sys.stdin.read()"
)


def test_processes_asking_for_the_same_start_port_at_once_get_different_ports():
    start = corral.free_port() + 1  # any port; ports taken from it upward are skipped
    command = [sys.executable, "-c", RESERVE_FROM, str(start)]
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    try:
        for p in procs:  # all started: let them race for the same ports
            p.stdin.write("go\n")
            p.stdin.flush()
        ports = [int(p.stdout.readline()) for p in procs]
        assert len(set(ports)) == len(ports)
        assert all(port >= start for port in ports)
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=30)


def test_a_port_reserved_by_another_process_is_not_given(tmp_path):
    port = corral.free_port()
    code = (
        "import sys; from corral._services.ports import reserve; "
        f"r = reserve(start={port}); print(r.port, flush=True); sys.stdin.read()"
    )
    # This process holds ``port`` (free_port); the child must skip it, and we must skip the
    # one the child holds.
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        theirs = int(child.stdout.readline())
        assert theirs != port
        mine = reserve(start=theirs)
        assert mine.port != theirs
        mine.release()
    finally:
        child.stdin.close()
        child.wait(timeout=30)


# -- one server per worker -------------------------------------------------------------------------
def redis_fixture(server):
    @corral.fixture
    def redis():
        argv = [server, "--port", "{port}", "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"]  # fmt: skip
        with corral.Service(argv, ready="tcp") as service:
            client = Resp(service.port)
            yield client
            client.close()

    return redis


def redis_task(i, *, redis):
    redis.cmd("SET", f"key:{i}", f"value:{i}:{os.getpid()}")
    count = redis.cmd("INCR", "tasks")
    return i, os.getpid(), redis.port, redis.cmd("GET", f"key:{i}"), count


def test_one_redis_per_worker_with_no_cross_talk(redis_server):
    results = corral.map(redis_task, range(40), workers=4, chunksize=1,
                         fixtures=[redis_fixture(redis_server)])  # fmt: skip
    ports_of = defaultdict(set)
    counts_of = defaultdict(list)
    for i, pid, port, value, count in results:
        assert value == f"value:{i}:{pid}"
        ports_of[pid].add(port)
        counts_of[pid].append(count)
    assert all(len(ports) == 1 for ports in ports_of.values())  # one server per worker
    all_ports = [next(iter(ports)) for ports in ports_of.values()]
    assert len(set(all_ports)) == len(all_ports)  # and no two workers share one
    for counts in counts_of.values():  # only this worker's tasks wrote to its server
        assert sorted(counts) == list(range(1, len(counts) + 1))
    assert not redis_processes()


def redis_processes():
    return [p for p in psutil.Process().children(recursive=True) if "redis" in p.name()]


def sim_fixture(marker_dir=None, **service_kw):
    marker_dir = str(marker_dir) if marker_dir is not None else None

    @corral.fixture
    def sim():
        with corral.Service(sim_argv(), **service_kw) as service:
            if marker_dir is not None:
                note(marker_dir, f"service-{service.pid}-{os.getpid()}")
            client = Sim(service.port, service.token, service.pid)
            yield client
            client.close()

    return sim


def sim_task(i, *, sim):
    assert sim.ask("set", key="last", value=i)["ok"]
    mine = sim.ask("get", key="last")["value"]
    ping = sim.ask("ping")
    return i, os.getpid(), ping["port"], ping["pid"], mine


def test_one_zmq_server_per_worker_all_asking_for_the_same_default_port(zmq):
    # port=10000 for every worker, like a compiler's default: each gets its own.
    results = corral.map(sim_task, range(24), workers=4, chunksize=1,
                         fixtures=[sim_fixture(port=10000)])  # fmt: skip
    server_of = defaultdict(set)
    for i, pid, port, server_pid, mine in results:
        assert mine == i
        server_of[pid].add((port, server_pid))
    assert all(len(s) == 1 for s in server_of.values())
    servers = [next(iter(s)) for s in server_of.values()]
    assert len({port for port, _ in servers}) == len(servers)
    assert all(port >= 10000 for port, _ in servers)
    assert not gone_within({server_pid for _, server_pid in servers}, 0)


def test_a_service_that_cannot_start_fails_its_tasks_with_the_service_error(tmp_path):
    @corral.fixture
    def sim():
        argv = ["sh", "-c", "echo licence server unreachable; exit 2"]
        with corral.Service(argv, retries=1) as service:
            yield service

    report = corral.run([corral.Task(sim_task, (i,)) for i in range(4)], workers=2,
                        errors="return", fixtures=[sim])  # fmt: skip
    for outcome in report.outcomes:
        assert isinstance(outcome.error, corral.FixtureError)
        assert isinstance(outcome.error.cause, corral.ServiceError)
        assert "licence server unreachable" in outcome.error.cause.output
        assert len(outcome.error.cause.attempts) == 2


def server_pid(*, sim):
    return sim.pid


def die(*, sim):
    os.kill(os.getpid(), signal.SIGKILL)


def hang(marker_dir, *, sim):
    note(marker_dir, f"hung-{sim.pid}")
    time.sleep(1000)


def test_server_dies_with_a_worker_killed_by_sigkill(zmq):
    with corral.Executor(max_workers=1, fixtures=[sim_fixture()]) as executor:
        pid = executor.submit(server_pid).result(timeout=60)
        assert alive(pid)
        with pytest.raises(corral.WorkerCrashed):
            executor.submit(die).result(timeout=60)
        assert not gone_within({pid}), "the server outlived its SIGKILLed worker"
        assert executor.submit(server_pid).result(timeout=60) != pid  # a new worker, new server


def test_server_dies_with_a_worker_killed_by_a_timeout(tmp_path, zmq):
    with corral.Pool(2, fixtures=[sim_fixture()], kill_grace=0.2) as pool:
        report = pool.run([corral.Task(hang, (str(tmp_path),), timeout=1.0)], errors="return")
        assert report.outcomes[0].status == "timeout"
        pids = pids_noted(tmp_path, "hung")
        assert len(pids) == 1
        assert not gone_within(pids), "the server outlived its timed-out worker"


# -- the coordinator is SIGKILLed ------------------------------------------------------------------
@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_servers_die_when_the_coordinator_is_killed(tmp_path, zmq, start_method):
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), start_method],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    started: set[int] = set()
    services: set[int] = set()
    try:
        wait_until(lambda: len(pids_noted(tmp_path, "worker")) >= 2, "both workers' tasks",
                   timeout=60, proc=proc)  # fmt: skip
        services = pids_noted(tmp_path, "service")
        assert len(services) == 2 and all(alive(p) for p in services)
        started = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)} | services
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left = gone_within(started)
        assert not left, f"outlived the coordinator by {GONE_WAIT} s: {sorted(left)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in started | services:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()
