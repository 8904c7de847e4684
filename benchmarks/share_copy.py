"""S3's copy under forkserver (issue 15): ``corral.share(existing array)`` with a forkserver
pool, against copying into ``multiprocessing.shared_memory`` by hand (the peer that pays the
same one copy), in the same run.

    .venv/bin/python benchmarks/share_copy.py --mib 1024 --reps 3 [--base OLD_SRC]
    .venv/bin/python benchmarks/share_copy.py --variants --mib 1024 --reps 5

Each repetition is a fresh process: the array and a warm pool of 2 workers exist before the
clock; the clock covers sharing the array and one task per worker summing all of it (corral:
default forkserver pool, the segment is made when the handle first goes to a worker; by hand:
SharedMemory created and filled, mp.Pool fork workers attach by name; the third row shares a
``.npy`` file the process already has, ``np.load(path, mmap_mode="r")``, in place). Columns:
``share``, the clock until the data is in shared memory (corral: the handle pickled once
while the forkserver pool is open, which makes the segment); ``wall``, until both sums are
back; ``data``, the copies of the data held at the end (the original or the file's page
cache, plus what /dev/shm grew by, plus what the owner's peak RSS grew by). Medians, min and
max; ratios of ``share`` against "by hand".

``--variants`` times only the copy of the array into a new file in /dev/shm, one way per row
(each in a fresh process, rows interleaved), against the memory-bandwidth ceiling: a plain
``np.copyto`` of the array into a preallocated, already faulted-in array. This is how the way
``corral.share`` fills a segment (``_sharing.layout.write_file``: ``pwrite`` in 64 MiB steps)
was chosen. ``--dir`` fills files elsewhere: a tmpfs mounted with ``huge=within_size`` (as
root: ``mount -t tmpfs -o huge=within_size,size=3G none /mnt/huge``) shows what 2 MiB pages
change.
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
MARK = "@@SHARE "

CHILD = r"""
import json, os, pickle, resource, sys, tempfile, time
import numpy as np
kind, mib = sys.argv[1], int(sys.argv[2])
a = np.ones(mib * 2**20 // 8)
if kind == "npy":  # the file the user already has (written before the clock, page-cached)
    path = os.path.join(tempfile.mkdtemp(), "a.npy")
    np.save(path, a)
    del a
    a = np.load(path, mmap_mode="r")
    a.sum()  # its pages are in this process, as after the user's own reads

def total(h):
    return float(h.value.sum())

def total_by_name(name, n):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=name)
    s = float(np.ndarray((n,), np.float64, buffer=shm.buf).sum())
    shm.close()
    return s

def shm_bytes():
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize

def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

if __name__ == "__main__":
    if kind == "hand":
        import multiprocessing
        from multiprocessing import shared_memory
        with multiprocessing.get_context("fork").Pool(2) as pool:
            pool.map(abs, [1, 2])
            shm0, rss0 = shm_bytes(), peak_rss()
            t0 = time.perf_counter()
            shm = shared_memory.SharedMemory(create=True, size=a.nbytes)
            np.ndarray(a.shape, a.dtype, buffer=shm.buf)[:] = a
            t1 = time.perf_counter()
            sums = pool.starmap(total_by_name, [(shm.name, a.size)] * 2)
            wall = time.perf_counter() - t0
            shm1 = shm_bytes()
            shm.close(); shm.unlink()
    else:
        import corral
        with corral.Pool(workers=2) as pool:
            pool.map(abs, [1, 2])
            shm0, rss0 = shm_bytes(), peak_rss()
            t0 = time.perf_counter()
            with corral.share(a) as h:
                pickle.dumps(h)  # a forkserver pool is open: the segment is made now
                t1 = time.perf_counter()
                sums = pool.map(total, [h, h])
                wall = time.perf_counter() - t0
                shm1 = shm_bytes()
    assert sums == [float(a.size)] * 2
    # the copies of the data held at the end (the original, or the file's page cache, is one;
    # a segment in /dev/shm another) and what the owner's peak RSS grew by meanwhile
    grew = peak_rss() - rss0
    if kind == "hand":  # the owner maps the segment it filled: its RSS counts those pages
        grew = max(0, grew - (shm1 - shm0))
    held = a.nbytes + (shm1 - shm0) + grew
    out = {"wall": wall, "share": t1 - t0, "data": held / a.nbytes}
    if kind == "npy":
        os.unlink(path)
    print("@@SHARE " + json.dumps(out), flush=True)
"""

VARIANTS = r"""
import json, mmap, os, sys, time
import numpy as np
variant, mib, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
a = np.ones(mib * 2**20 // 8)
n = a.nbytes
path = os.path.join(folder, "corral-bench-%d" % os.getpid())
src = memoryview(a).cast("B")
STEP = 64 << 20

def pwrite_all(fd):
    done = 0
    while done < n:
        done += os.pwrite(fd, src[done:done + STEP], done)

def mapped(fd, flags=0, advice=()):
    m = mmap.mmap(fd, n, flags=mmap.MAP_SHARED | flags)
    for adv in advice:
        m.madvise(adv)
    return m

t0 = time.perf_counter()
if variant == "ceiling":
    dst = np.empty_like(a); dst[:] = 0  # pre-faulted
    t0 = time.perf_counter()
    np.copyto(dst, a)
else:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if variant == "pwrite":
            pwrite_all(fd)
        elif variant == "pwrite-2threads":  # page allocation on tmpfs is per CPU
            from concurrent.futures import ThreadPoolExecutor

            half = n // 2 // STEP * STEP or n
            parts = [(0, half), (half, n)]

            def part(lo_hi):
                lo, hi = lo_hi
                while lo < hi:
                    lo += os.pwrite(fd, src[lo : min(hi, lo + STEP)], lo)

            with ThreadPoolExecutor(2) as ex:
                list(ex.map(part, parts))
        elif variant == "write1":  # one write per 1 GiB max (Linux caps a call at 2 GiB - 4 KiB)
            done = 0
            while done < n:
                done += os.write(fd, src[done:done + (1 << 30)])
        elif variant == "ftruncate+pwrite":
            os.ftruncate(fd, n); pwrite_all(fd)
        elif variant == "fallocate+pwrite":
            os.posix_fallocate(fd, 0, n); pwrite_all(fd)
        elif variant == "ftruncate+mmap+copyto":  # page faults on the destination
            os.ftruncate(fd, n); m = mapped(fd)
            np.copyto(np.frombuffer(m, a.dtype), a); del m
        elif variant == "fallocate+populate+copyto":
            os.posix_fallocate(fd, 0, n); m = mapped(fd, mmap.MAP_POPULATE)
            np.copyto(np.frombuffer(m, a.dtype), a); del m
        elif variant == "ftruncate+populate+copyto":
            os.ftruncate(fd, n); m = mapped(fd, mmap.MAP_POPULATE)
            np.copyto(np.frombuffer(m, a.dtype), a); del m
        elif variant == "fallocate+willneed+hugepage+copyto":
            os.posix_fallocate(fd, 0, n)
            huge = getattr(mmap, "MADV_HUGEPAGE", mmap.MADV_WILLNEED)
            m = mapped(fd, 0, [mmap.MADV_WILLNEED, huge])
            np.copyto(np.frombuffer(m, a.dtype), a); del m
        else:
            raise SystemExit("unknown variant " + variant)
        t1 = time.perf_counter()
        back = np.fromfile(path, dtype=a.dtype, count=16)
        assert (back == 1).all() and os.fstat(fd).st_size == n
    finally:
        os.close(fd); os.unlink(path)
wall = (t1 if variant != "ceiling" else time.perf_counter()) - t0
print("@@SHARE " + json.dumps({"wall": wall}), flush=True)
"""

VARIANT_ROWS = (
    "ceiling",
    "pwrite",
    "pwrite-2threads",
    "write1",
    "ftruncate+pwrite",
    "fallocate+pwrite",
    "ftruncate+mmap+copyto",
    "ftruncate+populate+copyto",
    "fallocate+populate+copyto",
    "fallocate+willneed+hugepage+copyto",
)


def _run(script: str, argv: list[str], env: dict[str, str]) -> dict[str, float] | None:
    # the tasks live in the child's __main__ (read from stdin): they travel by value
    out = subprocess.run(
        [sys.executable, "-", *argv],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith(MARK)]
    if line:
        return dict(json.loads(line[-1][len(MARK) :]))
    print(argv, "failed:", out.stderr[-400:], file=sys.stderr)
    return None


def _report(
    runs: dict[str, list[dict[str, float]]], base_row: str, mib: int, reps: int, metric: str
) -> None:
    def median(row: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[row])

    base = median(base_row, metric) if runs[base_row] else None
    print(f"{mib} MiB, reps {reps}, load average at end {os.getloadavg()[0]:.2f}")
    for row, rs in runs.items():
        if not rs:
            continue
        cells = []
        for key in rs[0]:
            w = [r[key] for r in rs]
            med = statistics.median(w)
            unit = "x the array" if key == "data" else "s"
            cells.append(f"{key} {med:.3f} {unit} (min {min(w):.3f}, max {max(w):.3f})")
        ratio = f", {median(row, metric) / base:.2f}x {base_row}" if base else ""
        rate = f", {mib / 1024 / median(row, metric):.1f} GiB/s" if metric == "wall" else ""
        print(f"- {row}: " + "; ".join(cells) + rate + ratio)


def variants(mib: int, reps: int, only: str | None, folder: str) -> int:
    rows = ["ceiling", *(only.split(","))] if only else list(VARIANT_ROWS)
    runs: dict[str, list[dict[str, float]]] = {r: [] for r in rows}
    for _ in range(reps):
        for row in rows:
            got = _run(VARIANTS, [row, str(mib), folder], dict(os.environ))
            if got is not None:
                runs[row].append(got)
    _report(runs, "ceiling", mib, reps, "wall")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--base", type=Path, default=None, help="an older src/ folder, same run")
    ap.add_argument("--variants", action="store_true", help="time the ways to copy, alone")
    ap.add_argument("--rows", default=None, help="with --variants: these rows only (a,b,...)")
    ap.add_argument(
        "--dir", default="/dev/shm", help="with --variants: the folder to fill files in"
    )
    args = ap.parse_args()
    if args.variants:
        return variants(args.mib, args.reps, args.rows, args.dir)
    rows = {
        "by hand": ("hand", None),
        "corral.share": ("corral", HERE.parent / "src"),
        "corral.share(np.load(mmap_mode='r'))": ("npy", HERE.parent / "src"),
    }
    if args.base is not None:
        rows["corral.share (base)"] = ("corral", args.base)
    runs: dict[str, list[dict[str, float]]] = {r: [] for r in rows}
    for _ in range(args.reps):
        for row, (kind, src) in rows.items():
            env = dict(os.environ)
            if src is not None:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
            got = _run(CHILD, [kind, str(args.mib)], env)
            if got is not None:
                runs[row].append(got)
    _report(runs, "by hand", args.mib, args.reps, "share")
    return 0


if __name__ == "__main__":
    sys.exit(main())
