"""The field examples against serial and against the hand-rolled ProcessPoolExecutor design
each replaces (issue 16), all with 2 workers, in one run:

    .venv/bin/python benchmarks/examples.py           # writes benchmarks/EXAMPLES.md
    .venv/bin/python benchmarks/examples.py --quick   # a smoke run, prints only

- **sweep** (``examples/simulation_sweep``, 500 runs): serial (one server, in this process);
  corral (a ``corral.Service`` fixture per worker); hand-rolled: ``ProcessPoolExecutor`` whose
  initializer starts a server per worker on a port it picks (bind to port 0, then release it:
  the race corral's port locks close) and stops it at the worker's exit.
- **search** (``examples/model_search``, a 300,000-row table, 240 specs): serial; corral with
  the table shared once (``corral.share``, segments through one Pool; default forkserver
  workers, and fork workers that share the coordinator's imported modules as the
  executor's do); corral with the table in
  every task's arguments; hand-rolled: ``ProcessPoolExecutor.map`` with the table in every
  task's arguments (``chunksize=1``, as ``submit`` per spec does), and with the table given
  once per worker by the initializer (a copy per worker).

Each repetition runs in a fresh process (its own session; whatever it leaves is killed after).
Wall time covers the pool's start, the work and its end (not making the table). Peak memory is
the largest sum of the proportional set size (PSS: shared pages split between the processes
that map them) of the repetition's whole process tree, sampled every 20 ms: the machine's real
cost, which plain RSS over-counts for a shared table. Medians over repetitions, interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "simulation_sweep"))
sys.path.insert(0, str(ROOT / "examples" / "model_search"))
MARK = "@@EXAMPLE "
WORKERS = 2

# ---- the sweep ---------------------------------------------------------------------------

_client: Any = None


def _start_server() -> None:
    """The hand-rolled per-worker server: a port of its own (bind to 0, release, hope)."""
    import socket
    from multiprocessing.util import Finalize

    import sweep
    from client import SimClient

    global _client
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, str(sweep.SERVER), "--interactive=zmq",
            f"--interactivePort={port}", "-z=handrolled"]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().startswith("Started")
    _client = SimClient("127.0.0.1", port, "handrolled")

    def stop() -> None:
        _client.close()
        server.terminate()
        server.wait()

    Finalize(None, stop, exitpriority=10)


def _simulate_handrolled(case: dict[str, Any]) -> dict[str, Any]:
    return {**case, **_client.simulate(case)}


def sweep_run(kind: str, runs: int) -> tuple[float, Any]:
    import sweep

    t0 = time.perf_counter()
    if kind == "serial":
        rows = sweep.sweep(runs, serial=True).results
    elif kind == "corral":
        rows = sweep.sweep(runs, workers=WORKERS).results
    elif kind == "corral-fork":
        rows = sweep.sweep(runs, workers=WORKERS, start_method="fork").results
    elif kind == "ppe":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(WORKERS, initializer=_start_server) as ex:
            rows = list(ex.map(_simulate_handrolled, sweep.cases(runs)))
    else:
        raise ValueError(kind)
    return time.perf_counter() - t0, [r["energy_end"] for r in rows]


# ---- the search --------------------------------------------------------------------------

_table: Any = None


def _keep_table(table: Any) -> None:
    global _table
    _table = table


def _evaluate_kept(spec: Any) -> Any:
    import model_search

    return model_search.score(_table, spec)


def search_run(kind: str, rows: int, n_specs: int) -> tuple[float, Any]:
    import model_search as ms

    import corral

    table = ms.make_table(rows)
    specs = ms.all_specs()[:: max(1, len(ms.all_specs()) // n_specs)][:n_specs]
    t0 = time.perf_counter()
    if kind == "serial":
        passed = ms.search_serial(table, specs)
    elif kind == "corral-shared":
        passed = ms.search_segments(table, ms.segments(specs), workers=WORKERS).passed
    elif kind == "corral-shared-fork":
        parts = ms.segments(specs)
        passed = ms.search_segments(table, parts, workers=WORKERS, start_method="fork").passed
    elif kind == "corral-pickled":
        passed = ms.merge(
            corral.map(ms.evaluate_copy, [(table, s) for s in specs], workers=WORKERS)
        )
    elif kind == "ppe-pickled":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(WORKERS) as ex:
            passed = ms.merge(list(ex.map(ms.evaluate_copy, [(table, s) for s in specs])))
    elif kind == "ppe-initializer":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(WORKERS, initializer=_keep_table, initargs=(table,)) as ex:
            passed = ms.merge(list(ex.map(_evaluate_kept, specs)))
    else:
        raise ValueError(kind)
    wall = time.perf_counter() - t0
    return wall, [[*p.spec.features, p.spec.alpha, p.spec.region, p.r2] for p in passed]


# ---- the harness -------------------------------------------------------------------------

SCENARIOS = {
    "sweep": ["serial", "corral", "corral-fork", "ppe"],
    "search": [
        "serial",
        "corral-shared",
        "corral-shared-fork",
        "corral-pickled",
        "ppe-pickled",
        "ppe-initializer",
    ],
}
LABELS = {
    ("sweep", "serial"): "serial (one server, in-process)",
    ("sweep", "corral"): "**corral: Service fixture per worker**",
    ("sweep", "corral-fork"): "**corral: the same, start_method='fork'**",
    ("sweep", "ppe"): "ProcessPoolExecutor + initializer server",
    ("search", "serial"): "serial",
    ("search", "corral-shared"): "**corral: share once, segments through one Pool**",
    ("search", "corral-shared-fork"): "**corral: the same, start_method='fork'**",
    ("search", "corral-pickled"): "corral: table pickled with every task",
    ("search", "ppe-pickled"): "ProcessPoolExecutor: table pickled with every task",
    ("search", "ppe-initializer"): "ProcessPoolExecutor: table copied per worker (initializer)",
}


def one(scenario: str, kind: str, size: dict[str, int]) -> None:
    if scenario == "sweep":
        wall, check = sweep_run(kind, size["runs"])
    else:
        wall, check = search_run(kind, size["rows"], size["specs"])
    import hashlib

    # JSON, not pickle: a pickle's bytes depend on which equal objects happen to be shared
    digest = hashlib.sha256(json.dumps(check).encode()).hexdigest()[:12]
    print(MARK + json.dumps({"wall": wall, "digest": digest}), flush=True)


def tree_pss(root: psutil.Process) -> int:
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_full_info().pss
    return total


def measure(scenario: str, kind: str, size: dict[str, int]) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--one", scenario, kind, json.dumps(size)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, tree_pss(root))
            except psutil.NoSuchProcess:
                return
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything the repetition left behind
    if proc.returncode != 0:
        raise RuntimeError(f"{scenario} {kind} failed ({proc.returncode})")
    line = next(x for x in out.splitlines() if x.startswith(MARK))
    return {**json.loads(line[len(MARK) :]), "peak_pss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("SCENARIO", "KIND", "SIZE"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scenarios", default="sweep,search")
    args = parser.parse_args()
    if args.one:
        one(args.one[0], args.one[1], json.loads(args.one[2]))
        return
    size = {"runs": 500, "rows": 300_000, "specs": 240}
    if args.quick:
        size, args.reps = {"runs": 40, "rows": 30_000, "specs": 60}, 1
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    load0 = os.getloadavg()[0]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(args.reps):
        for scenario in args.scenarios.split(","):
            for kind in SCENARIOS[scenario]:
                r = measure(scenario, kind, size)
                results.setdefault((scenario, kind), []).append(r)
                print(f"rep {rep} {scenario} {kind}: {r['wall']:.2f} s, "
                      f"{r['peak_pss'] / 2**20:.0f} MiB, {r['digest']}", flush=True)  # fmt: skip
    lines = [
        "# The field examples: speed and memory",
        "",
        f"Run {started}; `benchmarks/examples.py` (reps {args.reps}, interleaved; 2 workers; "
        f"1-min load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
        f"on {os.cpu_count()} cores). The machine is shared and loaded: compare the ratios "
        "within a table, not the absolute times.",
        "",
    ]
    for scenario in args.scenarios.split(","):
        what = (f"{size['runs']} runs" if scenario == "sweep"
                else f"{size['rows']:,} rows, {size['specs']} specs")  # fmt: skip
        lines += [
            f"## {scenario} ({what})",
            "",
            "| design | wall (median) | speed vs serial | speed vs hand-rolled "
            "| peak PSS, whole tree (median) | result |",
            "|---|---:|---:|---:|---:|---|",
        ]
        med = {k: statistics.median(r["wall"] for r in results[(scenario, k)])
               for k in SCENARIOS[scenario]}  # fmt: skip
        hand = "ppe" if scenario == "sweep" else "ppe-pickled"
        serial_digest = results[(scenario, "serial")][0]["digest"]
        for kind in SCENARIOS[scenario]:
            rs = results[(scenario, kind)]
            pss = statistics.median(r["peak_pss"] for r in rs) / 2**20
            same = all(r["digest"] == serial_digest for r in rs)
            lines.append(
                f"| {LABELS[(scenario, kind)]} | {med[kind]:.2f} s | "
                f"{med['serial'] / med[kind]:.2f} | {med[hand] / med[kind]:.2f} | "
                f"{pss:.0f} MiB | {'= serial' if same else 'DIFFERS'} |"
            )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        (ROOT / "benchmarks" / "EXAMPLES.md").write_text(text)


if __name__ == "__main__":
    main()
