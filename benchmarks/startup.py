"""Start-up as a user's script meets it (issue 15): fresh processes, imports included.

    python -m compileall -q src
    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python benchmarks/startup.py --reps 5

Rows, each timed in a fresh interpreter from before its first import to the first result of
one trivial task (``abs(-1)``), with the import measured separately too:

- ``import``: the import alone (corral: ``import corral`` plus every module a first
  ``corral.map`` imports, taken from a real run; ``concurrent.futures`` and
  ``multiprocessing.pool`` for reference);
- ``first``: import + ``Pool(2)`` + first result (``corral.Pool().submit``,
  ``mp.Pool.apply_async``);
- ``second``: a second pool in the same process (corral: the fork server is up), excluding import.

Repetitions are interleaved round-robin across rows, so the machine's drift spreads over all of
them; the table shows medians and ratios against rows of the same run. Bytecode caches must be
written (run ``compileall`` first and do not set ``PYTHONDONTWRITEBYTECODE``), as a user has them.
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
MARK = "@@STARTUP "

CHILD = r"""
import sys, time, json
t0, c0 = time.perf_counter(), time.process_time()
def imported():  # wall and CPU time since t0
    times = {"import": time.perf_counter() - t0, "import cpu": time.process_time() - c0}
    print("@@STARTUP " + json.dumps(times), flush=True)
kind, method = sys.argv[1], sys.argv[2]
if kind == "corral":
    import corral
    if method == "import":
        for m in sys.argv[3].split(","):
            __import__(m)
        imported()
        raise SystemExit
    pool = corral.Pool(workers=2, start_method=None if method == "default" else method)
    first = pool.submit(abs, -1).result()
    t1 = time.perf_counter()
    pool.close()
    t2 = time.perf_counter()
    pool2 = corral.Pool(workers=2, start_method=None if method == "default" else method)
    pool2.submit(abs, -1).result()
    t3 = time.perf_counter()
    pool2.close()
elif kind == "mp":
    import multiprocessing.pool, multiprocessing
    if method == "import":
        imported()
        raise SystemExit
    pool = multiprocessing.get_context(method).Pool(2)
    first = pool.apply_async(abs, (-1,)).get()
    t1 = time.perf_counter()
    pool.close(); pool.join()
    t2 = time.perf_counter()
    pool2 = multiprocessing.get_context(method).Pool(2)
    pool2.apply_async(abs, (-1,)).get()
    t3 = time.perf_counter()
    pool2.close(); pool2.join()
elif kind == "cf":
    import concurrent.futures
    imported()
    raise SystemExit
assert first == 1
print("@@STARTUP " + json.dumps({"first": t1 - t0, "second": t3 - t2}), flush=True)
"""

KEYS = ("import", "import cpu", "first", "second")
ROWS = {
    "base-import": ("corral", "import"),
    "base-default": ("corral", "default"),
    "base-fork": ("corral", "fork"),
    "corral-import": ("corral", "import"),
    "cf-import": ("cf", "import"),
    "mp-import": ("mp", "import"),
    "corral-default": ("corral", "default"),
    "corral-fork": ("corral", "fork"),
    "mp-fork": ("mp", "fork"),
    "mp-spawn": ("mp", "spawn"),
    "mp-forkserver": ("mp", "forkserver"),
}


def first_map_modules(src: Path) -> str:
    """The modules a first ``corral.map`` imports in a fresh coordinator."""
    code = (
        "import sys; b = set(sys.modules); import corral\n"
        "if __name__ == '__main__':\n"
        "    corral.map(abs, [-1, -2], workers=2)\n"
        "    print(','.join(m for m in sys.modules if m not in b\n"
        "                   and m.startswith(('corral', 'multiprocessing'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(src)
    )
    return out.stdout.strip().splitlines()[-1]


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rows", default=",".join(r for r in ROWS if not r.startswith("base")))
    ap.add_argument(
        "--base",
        type=Path,
        default=None,
        help="an older src/ folder: its rows (base-*) are measured in the same run",
    )
    args = ap.parse_args()  # fmt: skip
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("warning: PYTHONDONTWRITEBYTECODE is set: every run compiles", file=sys.stderr)
    here = HERE.parent / "src"
    rows = args.rows.split(",")
    if args.base is not None:
        rows = [r.replace("corral-", "base-") for r in rows if r.startswith("corral-")] + rows
    modules = {here: first_map_modules(here)}
    if args.base is not None:
        modules[args.base] = first_map_modules(args.base)
    data: dict[str, dict[str, list[float]]] = {r: {} for r in rows}
    for _ in range(args.reps):
        for row in rows:
            kind, method = ROWS[row]
            src = args.base if row.startswith("base-") else here
            cmd = [sys.executable, "-c", CHILD, kind, method, modules.get(src, "")]
            out = subprocess.run(cmd, capture_output=True, text=True, env=_env(src), timeout=120)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith(MARK)]
            if not line:
                print(row, "failed:", out.stderr[-500:], file=sys.stderr)
                continue
            for k, v in json.loads(line[-1][len(MARK) :]).items():
                data[row].setdefault(k, []).append(v)
    med = {r: {k: statistics.median(v) for k, v in d.items()} for r, d in data.items()}
    print(f"load average at end: {os.getloadavg()[0]:.2f}; reps {args.reps}; medians in ms")
    print("| row | import | import (CPU) | first result (incl. import) | second pool |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        cells = [
            f"{med[r][k] * 1e3:.1f} ({min(data[r][k]) * 1e3:.1f}–{max(data[r][k]) * 1e3:.1f})"  # noqa: RUF001
            if k in med[r]
            else "—"
            for k in KEYS
        ]
        print(f"| {r} | {' | '.join(cells)} |")

    def ratio(a: str, ka: str, b: str, kb: str) -> None:
        if a in med and b in med and ka in med[a] and kb in med[b]:
            print(f"- {a} {ka} / {b} {kb}: {med[a][ka] / med[b][kb]:.2f}×")  # noqa: RUF001

    ratio("base-import", "import", "cf-import", "import")
    ratio("corral-import", "import", "cf-import", "import")
    ratio("corral-import", "import", "base-import", "import")
    ratio("base-import", "import cpu", "cf-import", "import cpu")
    ratio("corral-import", "import cpu", "cf-import", "import cpu")
    ratio("corral-import", "import cpu", "base-import", "import cpu")
    ratio("base-default", "first", "mp-spawn", "first")
    ratio("base-default", "second", "mp-fork", "second")
    ratio("base-fork", "first", "mp-fork", "first")
    ratio("base-fork", "second", "mp-fork", "second")
    ratio("corral-default", "first", "mp-spawn", "first")
    ratio("corral-default", "second", "mp-fork", "second")
    ratio("corral-fork", "first", "mp-fork", "first")
    ratio("corral-fork", "second", "mp-fork", "second")
    print(json.dumps(data), file=sys.stderr)  # every repetition, for the record
    return 0


if __name__ == "__main__":
    sys.exit(main())
