"""When the fork server starts (``tests/test_startup.py``): at the first access to a name that
makes a pool, before the coordinator's modules are imported; prints JSON.

argv[1]: "idle" (the load gate open, as on an idle machine) or "busy" (closed)."""

import json
import multiprocessing.forkserver as fs
import sys

import corral
import corral._forkserver as early

early.idle_core = lambda: sys.argv[1] == "idle"
seen = {}
started = early.start_early


def spy() -> None:
    seen["engine_imported_before"] = "corral._engine" in sys.modules
    started()
    seen["server_after"] = fs._forkserver._forkserver_pid


early.start_early = spy

if __name__ == "__main__":
    Pool = corral.Pool
    seen["engine_imported_after"] = "corral._engine" in sys.modules
    with Pool(workers=1) as pool:
        seen["result"] = pool.submit(abs, -1).result()
    seen["server_used"] = fs._forkserver._forkserver_pid
    print(json.dumps(seen))
