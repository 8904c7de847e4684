"""Which heavy modules a fresh coordinator and its workers load for a first ``corral.map``
of a function pickled by name (``tests/test_startup.py``); prints JSON."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from startup_probe import loaded

import corral

HEAVY = json.loads(sys.argv[1])
method = sys.argv[2] if len(sys.argv) > 2 else None

if __name__ == "__main__":
    (worker,) = corral.map(loaded, [HEAVY], workers=2, start_method=method)
    print(json.dumps({"coordinator": loaded(HEAVY), "worker": worker}))
