# A script without a main guard that also starts a process of its own with multiprocessing
# (spawn): that child imports this script again as __mp_main__ and so calls corral.map again.
# corral must refuse there with an error naming the fix, not run the batch a second time.
# Run by tests/test_main_module.py; MARK_DIR as in main_unguarded.py.
import multiprocessing
import os

import corral

MARK_DIR = os.environ["MARK_DIR"]


def task(x):
    open(os.path.join(MARK_DIR, f"task-{x}-{os.getpid()}"), "w").close()
    return x


if multiprocessing.current_process().name == "MainProcess":
    child = multiprocessing.get_context("spawn").Process(target=os.getpid)
    child.start()
    child.join()
    print("child exit code", child.exitcode, flush=True)
print("results", corral.map(task, range(6), workers=2), flush=True)
