# A script without `if __name__ == "__main__":`, as a new user writes it. Run by
# tests/test_main_module.py as a file, from stdin (`python -`) and through runpy.
#
# Environment: MARK_DIR (where each run of the body and of each task leaves a file),
# START_METHOD. Prints one JSON line: the results, and what came back from __main__ objects.
import json
import os
import traceback

import corral

MARK_DIR = os.environ["MARK_DIR"]
open(os.path.join(MARK_DIR, f"body-{os.getpid()}"), "w").close()


class Point:
    def __init__(self, x):
        self.x = x


class Odd(Exception):
    pass


def remember(value):  # the initializer, from __main__
    open(os.path.join(MARK_DIR, f"init-{value}-{os.getpid()}"), "w").close()


@corral.fixture
def offset():  # a worker fixture, from __main__
    return 100


def task(point, *, offset):
    open(os.path.join(MARK_DIR, f"task-{point.x}-{os.getpid()}"), "w").close()
    if point.x == 7:
        raise Odd(f"odd {point.x}")
    return Point(point.x * 10 + offset)


method = os.environ["START_METHOD"]
with corral.Pool(
    2, start_method=method, initializer=remember, initargs=(1,), fixtures=[offset]
) as pool:
    results = pool.map(task, [Point(i) for i in range(10)], errors="return")
error = results[7].error
print(
    json.dumps(
        {
            "values": [r.x if isinstance(r, Point) else None for r in results],
            "point_class_kept": all(type(r) is Point for i, r in enumerate(results) if i != 7),
            "error_class_kept": type(error) is Odd,
            "traceback": "".join(traceback.format_exception(error)),
            "pids": sorted(
                {int(n.split("-")[2]) for n in os.listdir(MARK_DIR) if n.startswith("task-")}
            ),
            "me": os.getpid(),
        }
    ),
    flush=True,
)
