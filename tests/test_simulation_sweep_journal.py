"""``examples/simulation_sweep`` at a small size: journaled (a second run redoes nothing), one
server start-up per worker in the trace, the compiler's default port squatted by a foreign
listener without harm, and the ``corral exec`` variant; every table equal to a serial run's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _deps import require_module

import corral

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "simulation_sweep"))

RUNS = 40


@pytest.fixture(scope="module")
def sweep():  # type: ignore[no-untyped-def]
    require_module("zmq")
    import sweep

    return sweep


@pytest.fixture(scope="module")
def serial(sweep):  # type: ignore[no-untyped-def]
    report = sweep.sweep(RUNS, serial=True)
    assert report.ok
    return report.results


def service_starts(trace: Path) -> list[dict[str, object]]:
    data = json.loads(trace.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if str(e.get("name", "")).startswith("ServiceStarted")]


def test_journaled_sweep_on_a_squatted_port_resumes_with_nothing_to_redo(
    sweep, serial, tmp_path: Path
) -> None:
    journal = tmp_path / "sweep.corral"
    with sweep.squatting() as ours:
        first = sweep.sweep(RUNS, workers=2, journal=journal)
    assert first.ok
    assert first.results == serial
    assert {o.status for o in first.outcomes} == {corral.Status.OK}

    first.to_trace(tmp_path / "trace.json")
    starts = service_starts(tmp_path / "trace.json")
    workers = {span.worker for span in first.worker_spans}
    ran_on = {o.worker for o in first.outcomes}
    assert ran_on <= workers
    # one server start-up per worker that ran tasks, on that worker's services track
    assert sorted(e["args"]["worker"] for e in starts) == sorted(ran_on)  # type: ignore[index]
    ports = [e["args"]["port"] for e in starts]  # type: ignore[index]
    assert len(set(ports)) == len(ports)
    if ours:  # the squatter held the default port: no server could have it
        assert sweep.DEFAULT_PORT not in ports
    assert all(e["dur"] > 0 for e in starts)  # the start-up seconds, as a slice

    again = sweep.sweep(RUNS, workers=2, journal=journal)
    assert again.results == serial
    assert {o.status for o in again.outcomes} == {corral.Status.CACHED}
    again.to_trace(tmp_path / "again.json")
    assert service_starts(tmp_path / "again.json") == []  # no server was needed


def test_the_corral_exec_variant_equals_the_serial_sweep(sweep, serial, tmp_path: Path) -> None:
    rows = sweep.sweep_exec(RUNS, workers=2, chunk=10, out=tmp_path / "runs.jsonl")
    assert rows == serial
    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == ["0:10", "10:20", "20:30", "30:40"]
    ports = {r["value"]["command"].split("--port ")[1].split()[0] for r in records}
    assert 1 <= len(ports) <= 2  # each worker's own port, reused by its programs
