"""``examples/simulation_sweep``: one ZeroMQ simulation server per worker gives exactly the
table that a serial run (one server, in this process) gives."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from _deps import require_module

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SWEEP = Path(__file__).resolve().parent.parent / "examples" / "simulation_sweep" / "sweep.py"


def run_sweep(out: Path, *args: str) -> list[dict[str, str]]:
    done = subprocess.run([sys.executable, str(SWEEP), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with out.open(newline="") as f:
        return list(csv.DictReader(f))


def test_parallel_sweep_equals_serial_sweep(tmp_path):
    require_module("zmq")
    parallel = run_sweep(tmp_path / "parallel.csv", "--workers", "4")
    serial = run_sweep(tmp_path / "serial.csv", "--serial")
    assert len(parallel) == 32
    assert parallel == serial
    assert (tmp_path / "parallel.csv").read_bytes() == (tmp_path / "serial.csv").read_bytes()
