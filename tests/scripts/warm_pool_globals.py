"""Run by tests/test_function_cache.py as ``python warm_pool_globals.py START_METHOD``.

A ``__main__`` function reads a module global that the script changes between two batches
of one warm Pool. Prints one JSON line: what each way of running gave before and after the
change; the test checks that they agree.
"""

from __future__ import annotations

import json
import sys

import corral

CONFIG = {"scale": 1}


def scaled(x):
    return x * CONFIG["scale"]


def main(start_method: str) -> None:
    items = list(range(6))
    options = {"workers": 2, "start_method": start_method, "chunksize": 1}
    out: dict[str, list[list[int]]] = {"pool": [], "map": [], "serial": [], "loop": []}
    with corral.Pool(**options) as pool:
        for scale in (1, 10, 10, 3):
            CONFIG["scale"] = scale
            out["pool"].append(pool.map(scaled, items))
            out["map"].append(corral.map(scaled, items, **options))
            out["serial"].append(corral.map(scaled, items, backend="serial"))
            out["loop"].append([scaled(x) for x in items])
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
