"""corral benchmark harness: corral against the other process-pool libraries.

    .venv/bin/python benchmarks/run.py                      # S1, S2, S4; writes RESULTS.md
    .venv/bin/python benchmarks/run.py --scenarios S1 --reps 3
    .venv/bin/python benchmarks/run.py --quick              # smoke run, smaller sizes
    .venv/bin/python benchmarks/run.py --one S1 corral-auto # one repetition, JSON on stdout

Method: every repetition runs in a fresh process (``run.py --one SCENARIO CONTENDER``) under a
120 s limit; repetitions are interleaved round-robin across a scenario's contenders, so slow
drift of this machine's speed spreads over all of them; tables show medians, min-max and
ratios against a baseline row measured in the same run. Raw results go to benchmarks/raw/
(git-ignored); the markdown report is rendered from them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the helper modules next to this file
    sys.path.insert(0, str(HERE))

import bench_report  # noqa: E402
import bench_s3  # noqa: E402
from bench_contenders import BASELINE, REGISTRY, Contender  # noqa: E402
from bench_tasks import calibrate_burn  # noqa: E402

RAW = HERE / "raw"
SRC = HERE.parent / "src" / "corral"
RESULT_MARK = "@@BENCH-RESULT "
REP_TIMEOUT = 120.0
SCENARIOS = ("S1", "S2", "S3", "S4")
DEFAULT_SCENARIOS = ("S1", "S2", "S4")
"""S3 (1 GiB shared array, about 10 minutes) runs when asked: --scenarios S3."""
SLOW_REPS = 3
QUIET_SAMPLE = 0.25
QUIET_BUSY = 30.0
"""Before each repetition: % of the 2 CPUs busy with other work above which it waits."""

FULL = {
    "S1": {"n": 20_000}, "S2": {"tasks": 100, "target_s": 0.040}, "S3": {"nbytes": 1 << 30},
    "S4": {},
}  # fmt: skip
QUICK = {
    "S1": {"n": 5_000}, "S2": {"tasks": 30, "target_s": 0.020}, "S3": {"nbytes": 64 << 20},
    "S4": {},
}  # fmt: skip
bench_report.RENDER["S3"] = bench_s3.render_s3


# -- one repetition (child process) ------------------------------------------------------------


def run_one(scenario: str, key: str, params: dict[str, Any]) -> int:
    contender = REGISTRY[scenario][key]
    try:
        result = contender.fn(params)
    except BaseException as exc:  # reported to the driver, which records a failed repetition
        print(RESULT_MARK + json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    corral = sys.modules.get("corral")
    if corral is not None and corral.__file__:
        result["corral_from"] = str(Path(corral.__file__).resolve().parent)
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


def snapshot_src() -> tuple[Path, str]:
    """Copy src/corral under raw/ (others may edit src/ during a run); the folder to put first
    on the repetitions' PYTHONPATH, and the copy's content hash."""
    RAW.mkdir(exist_ok=True)
    tmp = RAW / f"src-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(SRC, tmp / "corral", ignore=shutil.ignore_patterns("__pycache__"))
    state = bench_report.tree_hash(tmp / "corral")
    dest = RAW / f"src-{state}"
    if dest.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(dest)
    return dest, state


# -- the driver --------------------------------------------------------------------------------


REP_ENV = "CORRAL_BENCH_REP"
"""Set to a unique value in each repetition's environment; every process it starts inherits
it, so what is left of a repetition after it ended (or was killed) can be found and killed even
when re-parented."""


def _marked(marker: str) -> list[Any]:
    import psutil

    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(REP_ENV) == marker:
                found.append(proc)
    return found


def reap(marker: str, grace: float) -> list[str]:
    """Kill the repetition's processes still alive ``grace`` s from now; their command lines."""
    import psutil

    procs = _marked(marker)
    if not procs:
        return []
    _, alive = psutil.wait_procs(procs, timeout=grace)
    left = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            left.append(" ".join(proc.cmdline())[:120])
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return left


class Quiet:
    """Waits, before each repetition, for other processes' CPU use to fall below
    ``QUIET_BUSY`` %: up to ``per_rep`` seconds each time and ``budget`` seconds in all (on a
    machine that stays busy, the run goes on and the report says so)."""

    def __init__(self, per_rep: float, budget: float) -> None:
        self.per_rep = per_rep
        self.budget = budget

    def wait(self) -> tuple[float, float]:
        """CPU busy % of the whole machine over ``QUIET_SAMPLE`` s while no repetition runs
        (so: other people's processes), and the seconds waited."""
        import psutil

        t0 = time.monotonic()
        limit = min(self.per_rep, self.budget)
        busy = psutil.cpu_percent(interval=QUIET_SAMPLE)
        while busy > QUIET_BUSY and time.monotonic() - t0 < limit:
            time.sleep(1.0)
            busy = psutil.cpu_percent(interval=QUIET_SAMPLE)
        waited = time.monotonic() - t0 - QUIET_SAMPLE
        self.budget = max(0.0, self.budget - waited)
        return busy, max(0.0, waited)


def run_rep(
    scenario: str,
    contender: Contender,
    params: dict[str, Any],
    quiet: Quiet | None = None,
    path: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one repetition in a fresh process; its record (result, or error)."""
    busy, waited = (quiet or Quiet(0.0, 0.0)).wait()
    marker = f"{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ, **{REP_ENV: marker})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), *path, env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(HERE / "run.py"), "--one", scenario, contender.key,
           "--params", json.dumps(params)]  # fmt: skip
    record: dict[str, Any] = {
        "load1": os.getloadavg()[0], "busy_before": busy, "waited": waited, "started": time.time()
    }
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE.parent
    )
    try:
        out, err = proc.communicate(timeout=REP_TIMEOUT)
        timed_out = False
    except subprocess.TimeoutExpired:
        reap(marker, grace=0.0)
        out, err = proc.communicate()
        timed_out = True
    record["elapsed"] = time.time() - record["started"]
    left = reap(marker, grace=1.0)
    if left:
        record["orphans"] = left
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
    if timed_out:
        what = "printed its result but did not exit" if lines else "no result"
        record["error"] = f"timeout after {REP_TIMEOUT:.0f} s ({what}); process tree killed"
        return record
    if not lines:
        tail = (err.strip().splitlines() or ["(no output)"])[-1]
        record["error"] = f"exit {proc.returncode}, no result: {tail[:300]}"
        return record
    result = json.loads(lines[-1][len(RESULT_MARK) :])
    if "corral_from" in result:
        record["corral_from"] = result.pop("corral_from")
    if "error" in result:
        record["error"] = result["error"]
    else:
        record["result"] = result
    return record


def scenario_params(scenario: str, quick: bool) -> dict[str, Any]:
    params = dict((QUICK if quick else FULL)[scenario])
    if scenario == "S2":
        n_turns, measured = calibrate_burn(params.pop("target_s"))
        params.update(n_turns=n_turns, calibrated_s=measured)
        print(f"S2: burn calibrated to {n_turns} turns = {measured * 1e3:.1f} ms", file=sys.stderr)
    return params


def run_scenario(
    scenario: str,
    reps: int,
    quick: bool,
    only: list[str] | None,
    quiet: Quiet,
    snapshot: Path | None,
) -> dict[str, Any]:
    contenders = [
        c for c in REGISTRY[scenario].values()
        if only is None or c.key in only or c.key == BASELINE[scenario]
    ]  # fmt: skip
    params = scenario_params(scenario, quick)
    path = (str(snapshot),) if snapshot is not None else ()
    planned = {c.key: (min(reps, SLOW_REPS) if c.slow else reps) for c in contenders}
    started = dt.datetime.now().isoformat(timespec="seconds")
    load_start = os.getloadavg()
    records: dict[str, list[dict[str, Any]]] = {c.key: [] for c in contenders}
    total = sum(planned.values())
    done = 0
    for rep in range(max(planned.values(), default=0)):
        for c in contenders:  # round-robin: one repetition of each contender in turn
            if rep >= planned[c.key]:
                continue
            record = run_rep(scenario, c, params, quiet, path)
            record["rep"] = rep
            records[c.key].append(record)
            done += 1
            what = record.get("error") or _short(scenario, record["result"])
            what += f" (other CPU use before: {record['busy_before']:.0f}%)"
            print(f"[{scenario} {done}/{total}] {c.key} #{rep + 1}: {what}", file=sys.stderr)
    return {
        "scenario": scenario,
        "started": started,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "params": params,
        "planned_reps": planned,
        "baseline": BASELINE[scenario],
        "corral_expected": str((snapshot or SRC.parent) / "corral"),
        "contenders": [
            {"key": c.key, "label": c.label, "kind": c.kind, "start_method": c.start_method,
             "note": c.note, "records": records[c.key]}
            for c in contenders
        ],
    }


def _short(scenario: str, result: dict[str, Any]) -> str:
    if scenario == "S4":
        down = result["shutdown"]
        return f"first {result['first'] * 1e3:.1f} ms" + (
            f", shutdown {down * 1e3:.1f} ms" if down is not None else ""
        )
    return f"wall {result['wall'] * 1e3:.1f} ms"


def latest_raw(scenario: str) -> dict[str, Any] | None:
    """The most recent stored result of ``scenario`` (for ``--merge``)."""
    for path in sorted(RAW.glob("run-*.json"), reverse=True):
        data = json.loads(path.read_text())
        if scenario in data["scenarios"] and not data.get("quick"):
            return dict(data["scenarios"][scenario], machine_at_run=data["machine"])
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help="comma-separated subset of S1,S2,S3,S4 (default: S1,S2,S4)")
    ap.add_argument("--reps", type=int, default=None,
                    help=f"repetitions per contender (default 5, {SLOW_REPS} for slow ones; "
                    "--quick: 2)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: smaller batches, 2 repetitions; report goes to raw/")
    ap.add_argument("--only", default=None,
                    help="comma-separated contender keys (the baseline row is always kept)")
    ap.add_argument("--merge", action="store_true",
                    help="fill scenarios not run now from the latest full raw result")
    ap.add_argument("--max-wait", type=float, default=20.0,
                    help="before each repetition, wait up to this many seconds for other "
                    f"processes' CPU use to fall below {QUIET_BUSY:.0f}%% (default 20)")
    ap.add_argument("--wait-budget", type=float, default=300.0,
                    help="total seconds the run may spend waiting for quiet (default 300)")
    ap.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                    help="import corral from src/ as it is at each repetition, not from a "
                    "copy taken at the start")
    ap.add_argument("--out", type=Path, default=None, help="markdown report path")
    ap.add_argument("--list", action="store_true", help="list the contenders and exit")
    ap.add_argument("--one", nargs=2, metavar=("SCENARIO", "CONTENDER"),
                    help="run one repetition here and print its JSON (used by the driver)")
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)  # fmt: skip

    if args.one:
        return run_one(args.one[0], args.one[1], json.loads(args.params))
    if args.list:
        for scenario, table in REGISTRY.items():
            for c in table.values():
                print(f"{scenario}  {c.key:18} {c.label}")
        return 0

    scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(unknown)}")
    reps = args.reps or (2 if args.quick else 5)
    only = args.only.split(",") if args.only else None
    out = args.out or (RAW / "RESULTS-quick.md" if args.quick else HERE / "RESULTS.md")

    machine = bench_report.describe_machine(HERE.parent)
    run_started = dt.datetime.now().isoformat(timespec="seconds")
    snapshot, machine["snapshot"] = snapshot_src() if args.snapshot else (None, None)
    quiet = Quiet(args.max_wait, args.wait_budget)
    results = {
        s: run_scenario(s, reps, args.quick, only, quiet, snapshot) for s in scenarios
    }
    data = {
        "started": run_started,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "max_wait": args.max_wait,
        "machine": machine,
        "scenarios": results,
    }
    data["machine"]["load_end"] = os.getloadavg()
    data["machine"]["src_hash_end"] = bench_report.tree_hash(SRC)
    RAW.mkdir(exist_ok=True)
    stamp = run_started.replace(":", "").replace("-", "")
    raw_path = RAW / f"run-{stamp}.json"
    raw_path.write_text(json.dumps(data, indent=1))

    shown = dict(results)
    if args.merge:
        for s in SCENARIOS:
            if s not in shown and (old := latest_raw(s)) is not None:
                shown[s] = old
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(bench_report.render(data, {s: shown[s] for s in SCENARIOS if s in shown}))
    print(f"raw results: {raw_path.relative_to(HERE.parent)}", file=sys.stderr)
    print(f"report: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
