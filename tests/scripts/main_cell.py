# A function defined as a notebook defines it: compiled from a cell whose source only this
# process's linecache holds (no file on disk). Run by tests/test_main_module.py: prints the
# traceback of the task's error, which must show the cell's source line.
import linecache
import sys
import traceback

import corral

SOURCE = "def from_cell(x):\n    y = x + 1\n    raise ValueError(f'cell {y}')\n"
CELL = "/nonexistent/ipykernel_1/cell-7.py"
linecache.cache[CELL] = (len(SOURCE), None, SOURCE.splitlines(True), CELL)
exec(compile(SOURCE, CELL, "exec"), globals())

if __name__ == "__main__":
    results = corral.map(from_cell, [1, 2], workers=2, start_method=sys.argv[1], errors="return")  # noqa: F821
    print("".join(traceback.format_exception(results[0].error)))
