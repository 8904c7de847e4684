"""A parameter sweep of an ODE model, solved by one simulation server per worker.

    python examples/simulation_sweep/sweep.py --workers 4 --out results.csv
    python examples/simulation_sweep/sweep.py --serial --out serial.csv   # same numbers

Each worker starts its own ``simserver.py`` (a stand-in for a modelling compiler in interactive
ZeroMQ mode) on a port of its own, with a fresh token, the first time one of its tasks needs
it; every later task of that worker reuses it; the server is stopped when the worker retires.
No two servers ever share a port, even with several sweeps running on one machine.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the client module, here and in the worker processes

from client import SimClient  # noqa: E402

import corral  # noqa: E402

SERVER = HERE / "simserver.py"
FIELDS = ["case", "zeta", "omega", "force", "x_end", "v_end", "peak", "energy_end"]


@corral.fixture
def simulator():
    argv = [sys.executable, str(SERVER), "--interactive=zmq", "--interactivePort={port}",
            "-z={token}"]  # fmt: skip
    with (
        corral.Service(argv, ready="tcp", port=10000) as service,
        SimClient(service.host, service.port, service.token) as client,
    ):
        yield client


def simulate(case: dict[str, Any], *, simulator: SimClient) -> dict[str, Any]:
    return {**case, **simulator.simulate(case)}


def cases() -> list[dict[str, Any]]:
    grid = itertools.product([0.05, 0.1, 0.2, 0.5], [0.5, 1.0, 2.0, 4.0], [0.0, 0.5])
    return [
        {"case": i, "zeta": zeta, "omega": omega, "force": force, "t_end": 20.0}
        for i, (zeta, omega, force) in enumerate(grid)
    ]


def sweep(*, workers: int | str = "auto", serial: bool = False) -> list[dict[str, Any]]:
    return corral.map(
        simulate,
        cases(),
        workers=workers,
        backend="serial" if serial else "process",
        fixtures=[simulator],
    )


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ODE parameter sweep, one server per worker")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--serial", action="store_true", help="run in this process")
    parser.add_argument("--out", type=Path, default=Path("results.csv"))
    args = parser.parse_args(argv)
    workers = args.workers if args.workers == "auto" else int(args.workers)
    rows = sweep(workers=workers, serial=args.serial)
    write_table(rows, args.out)
    print(f"{len(rows)} cases written to {args.out}")


if __name__ == "__main__":
    main()
