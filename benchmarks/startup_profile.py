"""Where a fresh process's first result goes (issue 15, S4): a timeline of one
``corral.Pool(2).submit(abs, -1).result()`` in a fresh interpreter, phases timed by wrapping
multiprocessing's and corral's own functions (no profiler overhead on the path).

    python -m compileall -q src
    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python benchmarks/startup_profile.py --reps 5 \
        [--method fork] [--src OLD_SRC]

Phases: ``import`` (``import corral`` and the coordinator's modules), ``pool set-up`` (options,
engine, until the first worker is asked for), ``resource tracker`` and ``fork server
start`` (multiprocessing's ``ensure_running``: launching both), ``first worker`` (until the
fork server answers with its pid: the fork server's interpreter start, its imports and
preload, the fork), ``other workers``, ``sweep`` (/dev/shm of dead coordinators), ``to first
result`` (engine thread start, Call out, the worker's own start-up: title, group, watchdog
fork, then the task and the answer). Medians over fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "@@PROFILE "

CHILD = r"""
import json, sys, time
T = {"t0": time.perf_counter()}
method = None if sys.argv[1] == "default" else sys.argv[1]
import corral
Pool = corral.Pool
T["imported"] = time.perf_counter()
import multiprocessing.popen_forkserver as pf, multiprocessing.popen_fork as pfk
import multiprocessing.resource_tracker as rt, multiprocessing.forkserver as fs
from corral._sharing import segments
T["probe"] = time.perf_counter()  # the modules above: a first Pool imports them anyway
def wrap(obj, name, key):
    orig = getattr(obj, name)
    def w(*a, **k):
        first = key + "<" not in T
        if first:
            T[key + "<"] = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            if first:  # the first call: the start; later ones return at once
                T[key + ">"] = time.perf_counter()
    setattr(obj, name, w)
wrap(pf.Popen, "_launch", "launch")
wrap(pfk.Popen, "_launch", "launch")
wrap(rt.ResourceTracker, "ensure_running", "tracker")
wrap(fs.ForkServer, "ensure_running", "forkserver")
wrap(segments, "sweep", "sweep")
launches = []
orig_launch = pf.Popen._launch if method in (None, "forkserver") else pfk.Popen._launch
def count(self, *a, **k):
    r = orig_launch(self, *a, **k); launches.append(time.perf_counter()); return r
if method in (None, "forkserver"):
    pf.Popen._launch = count
else:
    pfk.Popen._launch = count
T["start"] = time.perf_counter()
pool = Pool(workers=2, start_method=method)
T["pool"] = time.perf_counter()
pool.submit(abs, -1).result()
T["first"] = time.perf_counter()
pool.close()
T["workers"] = launches
print("@@PROFILE " + json.dumps(T), flush=True)
"""


def phases(t: dict[str, object]) -> dict[str, float]:
    def at(key: str) -> float:
        return float(t[key])  # type: ignore[arg-type]

    launches = [float(x) for x in t["workers"]]  # type: ignore[attr-defined]
    first_launch = at("launch<")
    out = {
        "import": at("imported") - at("t0") + at("probe") - at("imported"),
        "pool set-up": first_launch - at("start"),
        "first worker": launches[0] - first_launch,
        "other workers": launches[-1] - launches[0],
        "to first result": at("first") - launches[-1],
        "total": at("first") - at("t0") - (at("start") - at("probe")),
    }
    if "tracker>" in t:
        out["resource tracker start"] = at("tracker>") - at("tracker<")
    if "forkserver>" in t:
        out["fork server start (launch)"] = at("forkserver>") - at("forkserver<")
    if "sweep>" in t:
        out["sweep"] = at("sweep>") - at("sweep<")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--method", default="default")
    ap.add_argument(
        "--src",
        type=Path,
        action="append",
        help="src/ folders to compare, interleaved (default: this checkout's)",
    )
    args = ap.parse_args()  # fmt: skip
    srcs = args.src or [HERE.parent / "src"]
    runs: dict[Path, list[dict[str, float]]] = {src: [] for src in srcs}
    for _ in range(args.reps):
        for src in srcs:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
            out = subprocess.run([sys.executable, "-c", CHILD, args.method], capture_output=True,
                                 text=True, env=env, timeout=300)  # fmt: skip
            line = [ln for ln in out.stdout.splitlines() if ln.startswith(MARK)]
            if line:
                runs[src].append(phases(json.loads(line[-1][len(MARK) :])))
            else:
                print("failed:", out.stderr[-400:], file=sys.stderr)
    print(f"{args.method}: {args.reps} runs each, load at end {os.getloadavg()[0]:.2f}; medians")
    print("| phase | " + " | ".join(str(src) for src in srcs) + " |")
    print("|---|" + "---:|" * len(srcs))
    for key in runs[srcs[0]][0]:
        cells = []
        for src in srcs:
            total = statistics.median(r["total"] for r in runs[src])
            med = statistics.median(r[key] for r in runs[src])
            cells.append(f"{med * 1e3:.1f} ms ({med / total:.0%})")
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
