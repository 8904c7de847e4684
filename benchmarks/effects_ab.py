"""What unused effects (``corral.record``) cost: an interleaved A/B of two corral source trees.

    .venv/bin/python benchmarks/effects_ab.py BEFORE_SRC AFTER_SRC [REPS]

e.g. ``git worktree add /tmp/before <commit>`` and ``benchmarks/effects_ab.py /tmp/before/src
src``. Three measurements, each repetition in a fresh process, the two trees alternating:

- S1: a warm ``Pool.map`` of 20,000 ``x + 1`` (2 workers; best of 5 maps per process);
- the worker's side of one 20,000-item Call on the fast loop (``execute`` + pickling the
  Result, in-process, best of 40): what the per-item path costs;
- the same for a 1-item Call (best of 20,000): the fixed cost per Call, where the effect log
  is opened and closed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

S1 = r"""
import time, corral
def f(x): return x + 1
with corral.Pool(2) as pool:
    pool.map(f, range(100))
    best = []
    for _ in range(5):
        t = time.perf_counter(); r = pool.map(f, range(20000)); best.append(time.perf_counter() - t)
        assert r[-1] == 20000
print(min(best))
"""

EXECUTE = r"""
import pickle, sys, time
from array import array
from corral._messages import Call
from corral._worker.execute import execute
def f(x): return x + 1
class Watch:
    def __init__(self): self.b = array("d", [0.0, 0.0, 0.0])
    def start(self, c): pass
    def begin(self, i): pass
    def end(self): pass
    def index_buffer(self): return self.b
n, reps = int(sys.argv[1]), int(sys.argv[2])
items, watch, best = list(range(n)), Watch(), 1e9
for _ in range(reps):
    call = Call(1, {}, 0, items, False, [])
    t = time.perf_counter()
    pickle.dumps(execute(call, {0: f}.__getitem__, watch), 5)
    best = min(best, time.perf_counter() - t)
print(best)
"""


def measure(code: str, src: str, *args: str) -> float:
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, "-c", code, *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd="/")
    return float(out.stdout)


def main() -> None:
    before, after = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 9
    cases = {
        "S1 tasks/s": (S1, (), lambda t: 20000 / t),
        "20,000-item Call, ms": (EXECUTE, ("20000", "40"), lambda t: t * 1e3),
        "1-item Call, us": (EXECUTE, ("1", "20000"), lambda t: t * 1e6),
    }
    for name, (code, args, unit) in cases.items():
        got: dict[str, list[float]] = {"before": [], "after": []}
        for i in range(reps):
            order = [("before", before), ("after", after)]
            for side, src in order if i % 2 == 0 else order[::-1]:
                got[side].append(unit(measure(code, src, *args)))
        medians = {side: statistics.median(v) for side, v in got.items()}
        print(
            f"{name}: before {medians['before']:,.2f} (min-max {min(got['before']):,.2f}-"
            f"{max(got['before']):,.2f}), after {medians['after']:,.2f} (min-max "
            f"{min(got['after']):,.2f}-{max(got['after']):,.2f}); after/before "
            f"{medians['after'] / medians['before']:.3f}"
        )


if __name__ == "__main__":
    main()
