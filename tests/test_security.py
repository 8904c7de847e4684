"""Security: what corral opens during a run is private to its user and its machine.

- Every socket corral or its services open binds 127.0.0.1 (or is a Unix socket): checked
  with psutil on every process of a run whose workers each run a Service (the ZeroMQ
  simserver of examples/simulation_sweep), while its tasks are running.
- Shared-memory segments and port lock files are created owner-only (0600, folders 0700).
- The sweep of dead owners' segments never removes another user's segment (as root, which
  may unlink anyone's file in /dev/shm).
- Service tokens come from ``secrets`` (a fresh 128-bit hex token per start).
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from _deps import require_module
from _procs import wait_until

import corral
from corral._services import ports as _ports
from corral._services import service as _service
from corral._sharing import segments as _shm

ROOT = Path(__file__).resolve().parent.parent
SIMSERVER = ROOT / "examples" / "simulation_sweep" / "simserver.py"
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

pytestmark = pytest.mark.timeout(120)


def sim_fixture() -> object:
    @corral.fixture
    def sim():  # type: ignore[no-untyped-def]
        argv = [sys.executable, str(SIMSERVER), "--interactive=zmq",
                "--interactivePort={port}", "-z={token}"]  # fmt: skip
        with corral.Service(argv) as service:
            yield service

    return sim


def hold_service(x: int, marker_dir: str, *, sim: corral.Service) -> int:
    """Note ``running-<x>``, then wait for ``release``: the test reads the sockets meanwhile."""
    markers = Path(marker_dir)
    (markers / f"running-{x}").touch()
    with socket.create_connection(sim.address, timeout=30):  # a client socket, too
        while not (markers / "release").exists():
            time.sleep(0.02)  # polling a file the test creates
    return x


def inet_sockets() -> list[tuple[int, str, object]]:
    """(pid, status, local address) of every inet socket of this process and its descendants."""
    found = []
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                found.append((proc.pid, conn.status, conn.laddr))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.slow
def test_every_socket_of_a_service_run_binds_loopback(tmp_path: Path) -> None:
    require_module("zmq")
    result: list[list[int]] = []
    with corral.Pool(workers=2, fixtures=[sim_fixture()]) as pool:
        runner = threading.Thread(
            target=lambda: result.append(pool.map(hold_service_item(tmp_path), range(2)))
        )
        runner.start()
        try:
            wait_until(lambda: len(list(tmp_path.glob("running-*"))) == 2, "2 tasks running")
            sockets = inet_sockets()
        finally:
            (tmp_path / "release").touch()
            runner.join(60)
    assert result == [[0, 1]]
    listening = [s for s in sockets if s[1] == psutil.CONN_LISTEN]
    assert len(listening) >= 2, sockets  # one service per worker
    beyond = [s for s in sockets if s[2] and s[2].ip not in LOOPBACK]
    assert not beyond, f"sockets beyond loopback: {beyond}"


class hold_service_item:  # a picklable partial, named like the function it calls
    def __init__(self, tmp_path: Path) -> None:
        self.marker_dir = str(tmp_path)

    def __call__(self, x: int, *, sim: corral.Service) -> int:
        return hold_service(x, self.marker_dir, sim=sim)


def mode_of(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_shared_memory_segments_are_owner_only() -> None:
    handle = corral.share({"secret": list(range(1000))})  # a container: copied at once
    try:
        assert mode_of(handle.path) == 0o600
    finally:
        handle.release()


def test_port_lock_files_and_their_folder_are_owner_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_RUNTIME_DIR", str(tmp_path / "runtime"))
    reservation = _ports.reserve("127.0.0.1", avoid=frozenset())
    try:
        folder = _ports.ports_dir()
        assert mode_of(folder) == 0o700
        (lock,) = list(folder.iterdir())
        assert mode_of(lock) == 0o600
    finally:
        reservation.release()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create another user's file")
def test_the_sweep_never_removes_another_users_segment(tmp_path: Path) -> None:
    """A segment of a dead owner pid, but owned by another uid: left alone (as root, which
    could unlink it)."""
    proc = psutil.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    theirs = tmp_path / f"corral-{proc.pid}-0-abc"
    ours = tmp_path / f"corral-{proc.pid}-0-def"
    for path in (theirs, ours):
        path.write_bytes(b"x")
    os.chown(theirs, 4242, 4242)
    removed = _shm.sweep((str(tmp_path),))
    assert removed == [str(ours)]
    assert theirs.exists()


def test_service_tokens_come_from_secrets(monkeypatch) -> None:
    """A started Service's token is what ``secrets.token_hex`` gave (fresh per start)."""
    require_module("zmq")
    given: list[str] = []
    real = _service.secrets.token_hex

    def token_hex(n: int) -> str:
        given.append(real(n))
        return given[-1]

    monkeypatch.setattr(_service.secrets, "token_hex", token_hex)
    argv = [sys.executable, str(SIMSERVER), "--interactive=zmq",
            "--interactivePort={port}", "-z={token}"]  # fmt: skip
    with corral.Service(argv) as first, corral.Service(argv) as second:
        tokens = (first.token, second.token)
    assert set(tokens) <= set(given) and tokens[0] != tokens[1]
    assert all(len(t) == 32 for t in tokens)  # token_hex(16): 128 bits
