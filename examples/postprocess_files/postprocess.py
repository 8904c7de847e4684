"""Post-process a batch of simulation result files into one table, with corral.

Each file is reduced to statistics per channel, range graphs (histograms of the ranges
between successive turning points) and a summary row; the rows come back in input order,
the same as a serial loop's. The run is driven by the team's own `parallel_processing`
block in analysis.yml; the OrcaFlex licence pool (2 seats) caps how many files are open at
once; a bad file costs one row, an error report and at most `timeout_per_file`.

    python make_results.py results/ --files 40 --faults
    python postprocess.py results/ --out table.csv --journal postprocess.corral
    python postprocess.py results/ --serial --out serial.csv       # the loop it replaces
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import corral

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "analysis.yml"
TENSION_BINS = np.arange(0.0, 2050.0, 50.0)  # kN: the range graph's bins
MOTION_BINS = np.arange(0.0, 20.25, 0.25)  # m or deg
MOTIONS = ("surge", "sway", "heave", "roll", "pitch", "yaw")

_leaked: list[np.ndarray] = []  # --leak: what a leaky reader library keeps per file


def range_graph(series: np.ndarray, bins: np.ndarray) -> list[int]:
    """Counts of the ranges between successive turning points (half cycles), per bin."""
    slope = np.diff(series)
    turning = np.flatnonzero(slope[1:] * slope[:-1] < 0) + 1
    peaks = series[np.concatenate(([0], turning, [len(series) - 1]))]
    counts, _ = np.histogram(np.abs(np.diff(peaks)), bins=bins)
    return [int(c) for c in counts]


def stats(series: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(series.mean()),
        "std": float(series.std()),
        "min": float(series.min()),
        "max": float(series.max()),
    }


def reduce_file(path: str, leak_mb: int = 0) -> dict[str, Any]:
    """One result file -> {"summary": row, "stats": per channel, "range_graphs": per channel}.

    ``leak_mb``: the reader keeps that many MB per file, never freed (the leak to survive).
    """
    with h5py.File(path, "r") as f:
        motions = f["motions"][()]
        tensions = f["tensions"][()]
        attrs = {k: f.attrs[k] for k in ("hs", "tp", "heading")}
    if leak_mb:  # a reader that never frees its buffers (as some vendor readers do)
        _leaked.append(np.ones(leak_mb * 2**17))  # touched pages: they count in the RSS
    channels = {name: motions[i] for i, name in enumerate(MOTIONS)}
    channels.update({f"line{j + 1:02d}": tensions[j] for j in range(len(tensions))})
    line_max = tensions.max(axis=1)
    worst = int(line_max.argmax())
    summary = {
        "file": Path(path).name,
        "hs": float(attrs["hs"]),
        "tp": float(attrs["tp"]),
        "heading": float(attrs["heading"]),
        "samples": int(tensions.shape[1]),
        "max_tension": float(line_max[worst]),
        "max_tension_line": f"line{worst + 1:02d}",
        "min_tension": float(tensions.min()),
        "max_offset": float(np.hypot(motions[0], motions[1]).max()),
        "heave_std": float(motions[2].std()),
    }
    return {
        "summary": summary,
        "stats": {name: stats(series) for name, series in channels.items()},
        "range_graphs": {
            name: range_graph(series, TENSION_BINS if name.startswith("line") else MOTION_BINS)
            for name, series in channels.items()
        },
    }


# --- corral: the lines that replace the hand-rolled pool below ---------------------------
def run_corral(files: Sequence[str | Path], leak_mb: int = 0, **options: Any) -> corral.Report:
    """Every file reduced on worker processes, driven by analysis.yml; outcomes in file order."""
    leak = {"leak_mb": leak_mb} if leak_mb else {}
    tasks = [
        corral.Task(reduce_file, (str(f),), leak, key=Path(f).name, uses={"orcaflex": 1})
        for f in files
    ]
    options.setdefault("config", (CONFIG, "parallel_processing"))
    return corral.run(tasks, errors="return", **options)


def table(report: corral.Report) -> list[dict[str, Any]]:
    """One row per file, in input order: the summary, or why there is none."""
    rows = []
    for outcome in report.outcomes:
        if outcome.ok:
            rows.append({**outcome.value["summary"], "status": "ok", "error": ""})
        else:
            error = f"{type(outcome.error).__name__}: {outcome.error}".splitlines()[0]
            rows.append({"file": outcome.key, "status": str(outcome.status), "error": error})
    return rows


# --- what it replaces ---------------------------------------------------------------------
def run_serial(files: Sequence[str | Path]) -> list[dict[str, Any] | Exception]:
    """The original loop: one file after the other (a hung file hangs it)."""
    results: list[dict[str, Any] | Exception] = []
    for f in files:
        try:
            results.append(reduce_file(str(f)))
        except Exception as error:
            results.append(error)
    return results


def run_handrolled(files: Sequence[str | Path], workers: int = 2) -> list[Any]:
    """The hand-rolled ProcessPoolExecutor version: 2 workers because there are 2 licences,
    results put back in order by hand. A hung file blocks it forever (a future cannot be
    killed), a leaking reader grows every worker until the machine swaps, and nothing is
    written down about a failure but the exception's text."""
    results: list[Any] = [None] * len(files)
    with ProcessPoolExecutor(max_workers=workers) as executor:
        futures = {executor.submit(reduce_file, str(f)): i for i, f in enumerate(files)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as error:
                print(f"{files[i]}: {error!r}", file=sys.stderr)
                results[i] = error
    return results


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, default=Path("table.csv"))
    parser.add_argument("--journal", help="record outcomes; a second run redoes nothing")
    parser.add_argument("--serial", action="store_true", help="the plain loop, for comparison")
    parser.add_argument("--leak", type=int, default=0, help="the reader leaks MB per file")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the settings file")
    args = parser.parse_args(argv)
    files = sorted(args.folder.glob("*.h5"))
    if args.serial:  # without the hung file, which would hang it
        results = run_serial([f for f in files if not f.is_fifo()])
        rows = [r["summary"] for r in results if isinstance(r, dict)]
        write_table(rows, args.out)
        return 0
    config = (args.config, "parallel_processing")
    report = run_corral(files, args.leak, config=config, journal=args.journal)
    write_table(table(report), args.out)
    print(report.summary(), file=sys.stderr)
    recycled = sum(span.how == "recycled" for span in report.worker_spans)
    peak = max((o.max_rss or 0 for o in report.outcomes), default=0)
    counts = ", ".join(f"{n} {status.value}" for status, n in report.counts().items() if n)
    print(
        f"{len(files)} files -> {args.out}: {counts}; "
        f"peak worker RSS {peak / 2**20:.0f} MiB; workers recycled: {recycled}",
        file=sys.stderr,
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
