"""A parameter sweep of an ODE model, solved by one simulation server per worker.

    python examples/simulation_sweep/sweep.py --runs 500 --journal sweep.corral --trace trace.json
    python examples/simulation_sweep/sweep.py --runs 500 --serial --out serial.csv  # same numbers
    python examples/simulation_sweep/sweep.py --runs 40 --squat     # port 10000 taken first
    python examples/simulation_sweep/sweep.py --runs 40 --exec      # external programs

Each worker starts its own ``simserver.py`` (a stand-in for a modelling compiler in interactive
ZeroMQ mode) on a port of its own, with a fresh token, the first time one of its tasks needs
it; every later task of that worker reuses it; the server is stopped when the worker retires.
No two servers ever share a port, even with several sweeps running on one machine, nor with a
foreign program already listening on the compiler's default port (``--squat`` puts one there:
the hand-rolled version then failed with "did not become ready in time").

With ``--journal`` every finished run is recorded: the same command again (after a crash, a
Ctrl-C, or to add runs) redoes only what is not in the journal. ``--trace`` writes a Perfetto
trace: one track per worker, its server's start-up on the ``worker N services`` track.
``--exec`` runs the same cases as external programs (``run_cases.py``, which starts a server
on the ``{port}`` that ``corral exec`` gives each worker) instead of a fixture.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the client module, here and in the worker processes

from client import SimClient  # noqa: E402

import corral  # noqa: E402

SERVER = HERE / "simserver.py"
DEFAULT_PORT = 10000  # the compiler's default interactive port: every worker asks for it
FIELDS = ["case", "zeta", "omega", "force", "x_end", "v_end", "peak", "energy_end"]


@corral.fixture
def simulator():
    argv = [sys.executable, str(SERVER), "--interactive=zmq", "--interactivePort={port}",
            "-z={token}"]  # fmt: skip
    with (
        corral.Service(argv, ready="tcp", port=DEFAULT_PORT) as service,
        SimClient(service.host, service.port, service.token) as client,
    ):
        yield client


def simulate(case: dict[str, Any], *, simulator: SimClient) -> dict[str, Any]:
    return {**case, **simulator.simulate(case)}


def cases(runs: int = 32) -> list[dict[str, Any]]:
    """The first ``runs`` points of a 10 x 10 x 5 grid (500 at most), always in one order."""
    zetas = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9, 1.2]
    omegas = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0]
    forces = [0.0, 0.25, 0.5, 1.0, 2.0]
    grid = list(itertools.product(zetas, omegas, forces))
    if not 1 <= runs <= len(grid):
        raise ValueError(f"runs must be 1 to {len(grid)}, not {runs}")
    return [
        {"case": i, "zeta": zeta, "omega": omega, "force": force, "t_end": 20.0}
        for i, (zeta, omega, force) in enumerate(grid[:runs])
    ]


def sweep(
    runs: int = 32, *, workers: int | str = "auto", serial: bool = False, **options: Any
) -> corral.Report:
    """The sweep; ``options`` go to ``corral.run`` (``journal=``, ``timeout=``, ...)."""
    tasks = [corral.Task(simulate, (c,), key=f"case-{c['case']:03d}") for c in cases(runs)]
    return corral.run(
        tasks,
        workers=workers,
        backend="serial" if serial else "process",
        fixtures=[simulator],
        **options,
    )


def exec_command(runs: int, *, workers: int | str = "auto", chunk: int = 10) -> list[str]:
    """The ``corral exec`` command line that runs the sweep as external programs: one
    ``run_cases.py`` per chunk of cases, with the worker's own ``{port}`` and ``{token}``."""
    program = shlex.join([sys.executable, str(HERE / "run_cases.py")])
    chunks = [f"{start}:{min(start + chunk, runs)}" for start in range(0, runs, chunk)]
    return [sys.executable, "-m", "corral", "exec",
            f"{program} --port {{port}} --token {{token}} {{}}", *chunks,
            "--workers", str(workers), "--no-progress"]  # fmt: skip


def sweep_exec(
    runs: int = 32, *, workers: int | str = "auto", chunk: int = 10, out: Path
) -> list[dict[str, Any]]:
    """The sweep through ``corral exec``: the programs' JSON lines, in case order
    (``out``: the per-program records, JSON lines)."""
    command = [*exec_command(runs, workers=workers, chunk=chunk), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"corral exec failed ({done.returncode}):\n{done.stderr}")
    rows = []
    for line in out.read_text().splitlines():
        record = json.loads(line)
        rows += [json.loads(row) for row in record["value"]["stdout"].splitlines()]
    return rows


@contextmanager
def squatting(port: int = DEFAULT_PORT) -> Iterator[bool]:
    """A foreign listener on ``port`` for the duration (False: something else has it already,
    which squats it just as well)."""
    sock = socket.socket()
    try:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            yield False
            return
        yield True
    finally:
        sock.close()


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ODE parameter sweep, one server per worker")
    parser.add_argument("--runs", type=int, default=32, help="how many cases (at most 500)")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--serial", action="store_true", help="run in this process")
    parser.add_argument("--journal", type=Path, help="record runs; rerun to resume")
    parser.add_argument("--trace", type=Path, help="write a Perfetto trace here")
    parser.add_argument(
        "--squat", action="store_true", help=f"a foreign listener on port {DEFAULT_PORT} meanwhile"
    )
    parser.add_argument(
        "--exec", action="store_true", help="run the cases as programs through `corral exec`"
    )
    parser.add_argument("--out", type=Path, default=Path("results.csv"))
    args = parser.parse_args(argv)
    workers = args.workers if args.workers == "auto" else int(args.workers)
    if args.exec:
        rows = sweep_exec(args.runs, workers=workers, out=args.out.with_suffix(".jsonl"))
        write_table(rows, args.out)
        print(f"{len(rows)} cases written to {args.out} by `corral exec`")
        return
    options: dict[str, Any] = {"journal": args.journal} if args.journal else {}
    with squatting() if args.squat else _nothing():
        report = sweep(args.runs, workers=workers, serial=args.serial, **options)
    write_table(report.results, args.out)
    if args.trace:
        report.to_trace(args.trace)
    counts = report.counts()
    ran, cached = counts.get(corral.Status.OK, 0), counts.get(corral.Status.CACHED, 0)
    busy = f"; {report.utilisation:.0%} busy" if ran else ""
    print(f"{len(report.results)} cases written to {args.out}: {ran} run, {cached} from the "
          f"journal, {report.wall:.1f} s{busy}")  # fmt: skip


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
