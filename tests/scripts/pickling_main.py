"""Run by tests/test_pickling.py as ``python pickling_main.py START_METHOD``.

Everything the tasks use is defined in ``__main__``: a lambda, a closure, a named function and
a class used as argument and as result. Prints one line per check; the test compares them.
"""

from __future__ import annotations

import os
import sys

import corral


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


def shift(point):
    return Point(point.x + 1, point.y + 1)


def make_scaler(factor):
    def scale(x):
        return x * factor

    return scale


def main(start_method: str) -> None:
    options = {"workers": 2, "start_method": start_method, "chunksize": 1}
    print("lambda", corral.map(lambda x: x + 100, range(4), **options))
    print("closure", corral.map(make_scaler(3), range(4), **options))
    print("main-function", corral.map(shift, [Point(0, 0), Point(5, 7)], **options))
    results = corral.map(lambda p: Point(p.y, p.x), [Point(1, 2), Point(3, 4)], **options)
    print("class-result", results, all(isinstance(r, Point) for r in results))
    offset = 10
    tasks = [corral.Task(lambda a, b=0: a + b + offset, (a,), {"b": 2}) for a in (1, 2)]
    print("task-lambda", corral.run(tasks, **options).results)
    pids = corral.map(lambda _: os.getpid(), range(4), **options)
    print("in-workers", os.getpid() not in pids)


if __name__ == "__main__":
    main(sys.argv[1])
