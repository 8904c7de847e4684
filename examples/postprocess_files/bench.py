"""Benchmark: the post-processing batch serially, by the hand-rolled ProcessPoolExecutor, and
by corral (analysis.yml), each in a fresh process; then the same with a leaking reader.

Prints one Markdown row per design (wall seconds, speedup vs serial and vs hand-rolled, peak
RSS of the largest process) and, with ``--results FILE``, appends them there. The bad files
are left out (the serial loop and the hand-rolled pool would hang on the hung one).

    python bench.py --files 24 --samples 216000 --leak 16
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(mode: str, folder: Path, leak: int) -> dict[str, object]:
    """Run one design in this process (called in a child) and return its figures."""
    sys.path.insert(0, str(HERE))
    import postprocess

    files = sorted(folder.glob("run_0*.h5"))
    start = time.perf_counter()
    if mode == "serial":
        results = [postprocess.reduce_file(str(f), leak) for f in files]
        recycled = 0
    elif mode == "handrolled":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=2) as executor:  # 2 licences
            results = list(
                executor.map(postprocess.reduce_file, map(str, files), [leak] * len(files))
            )
        recycled = 0
    else:
        report = postprocess.run_corral(files, leak, progress=False, max_worker_memory="256MiB")
        results = report.results
        recycled = sum(s.how == "recycled" for s in report.worker_spans)
    wall = time.perf_counter() - start
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )  # KiB on Linux: the largest single process
    digest = hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()
    return {"wall": wall, "peak_mib": peak / 1024, "recycled": recycled, "digest": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--samples", type=int, default=216_000)
    parser.add_argument("--leak", type=int, default=16, help="MB leaked per file, 2nd pass")
    parser.add_argument("--folder", type=Path, help="keep the generated files here")
    parser.add_argument("--results", type=Path, help="append the Markdown rows to this file")
    parser.add_argument("--_measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        mode, folder, leak = args._measure
        print(json.dumps(measure(mode, Path(folder), int(leak))))
        return
    sys.path.insert(0, str(HERE))
    import make_results as generate

    folder = args.folder or Path(tempfile.mkdtemp(prefix="postprocess-bench-"))
    generate.generate(folder, args.files, args.samples)
    size = sum(f.stat().st_size for f in folder.glob("run_0*.h5")) / 2**20
    rows = []
    for leak in (0, args.leak):
        figures = {}
        for mode in ("serial", "handrolled", "corral"):
            out = subprocess.run(
                [sys.executable, __file__, "--_measure", mode, str(folder), str(leak)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures[mode] = json.loads(out.stdout.splitlines()[-1])
        assert len({f["digest"] for f in figures.values()}) == 1, "results differ from serial"
        for mode, f in figures.items():
            rows.append(
                f"| postprocess_files | {args.files} x {size / args.files:.0f} MB | {leak} "
                f"| {mode} "
                f"| {f['wall']:.2f} | {figures['serial']['wall'] / f['wall']:.2f} "
                f"| {figures['handrolled']['wall'] / f['wall']:.2f} | {f['peak_mib']:.0f} "
                f"| {f['recycled']} |"
            )
    header = (
        f"\n{platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"Python {platform.python_version()}:"
        "\n\n| example | files | leak MB/file | design | wall s | vs serial | vs hand-rolled "
        "| peak RSS MiB (largest process) | workers recycled |\n"
        "|---|---|---:|---|---:|---:|---:|---:|---:|"
    )
    text = "\n".join([header, *rows]) + "\n"
    print(text)
    if args.results:
        with open(args.results, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
