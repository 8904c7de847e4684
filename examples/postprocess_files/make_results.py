"""Synthetic mooring-analysis result files: what a batch of OrcaFlex runs leaves behind.

Each file is one simulation (a sea state, a heading, a seed): HDF5 with ``time``, the six
vessel motions (``motions``: surge, sway, heave, roll, pitch, yaw; wave-frequency response
plus slow drift) and the effective tension of each mooring line (``tensions``: pretension,
the line's share of the offset, snatch noise). Reproducible: file ``i`` is drawn from seed
``i``. Full size is 3 hours at 20 Hz (216,000 samples, ~31 MB a file); ``--small`` is
2,000 samples (~0.3 MB).

``--faults`` adds the three files every real batch has: one truncated by a full disk
(corrupt), one the simulator created and never wrote (empty), and one that never answers
(a named pipe: reading it blocks, like a file on a stale network mount).

    python make_results.py results/ --files 300            # ~9 GB
    python make_results.py results/ --files 8 --small --faults
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import h5py
import numpy as np

MOTIONS = ("surge", "sway", "heave", "roll", "pitch", "yaw")
LINES = 12
FULL_SAMPLES = 216_000  # 3 h at 20 Hz
SMALL_SAMPLES = 2_000
DT = 0.05


def simulate(index: int, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One run's time series: ``(time, motions[6, n], tensions[LINES, n], attrs)``."""
    rng = np.random.default_rng(index)
    hs = float(rng.uniform(1.5, 9.0))  # significant wave height, m
    tp = float(rng.uniform(6.0, 16.0))  # peak period, s
    heading = float(rng.choice([0.0, 45.0, 90.0, 135.0, 180.0]))
    t = np.arange(samples) * DT
    freqs = rng.uniform(0.6, 1.6, 24) / tp
    amps = hs / 4 * np.exp(-(((freqs * tp) - 1.0) ** 2) * 4) / np.sqrt(len(freqs))
    motions = np.empty((len(MOTIONS), samples))
    for k in range(len(MOTIONS)):
        phases = rng.uniform(0, 2 * np.pi, len(freqs))
        gain = (1.0, 0.8, 0.9, 2.0, 1.5, 0.6)[k]
        wave = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
        drift = hs * 0.6 * np.sin(2 * np.pi * t / rng.uniform(90, 200) + rng.uniform(0, 6.3))
        motions[k] = gain * wave + (drift if k < 2 else 0.0)
    angles = np.deg2rad(np.arange(LINES) * 360 / LINES + 15)
    offset = motions[0] * np.cos(np.deg2rad(heading)) + motions[1] * np.sin(np.deg2rad(heading))
    tensions = np.empty((LINES, samples))
    for line in range(LINES):
        share = np.cos(angles[line] - np.deg2rad(heading))
        snatch = rng.standard_normal(samples) * 8.0 * hs
        tensions[line] = 1500.0 + 120.0 * share * offset + 40.0 * motions[2] + snatch
    attrs = {"hs": hs, "tp": tp, "heading": heading, "seed": index, "program": "OrcaFlex 11.4"}
    return t, motions, tensions, attrs


def write_file(path: Path, index: int, samples: int) -> None:
    t, motions, tensions, attrs = simulate(index, samples)
    with h5py.File(path, "w") as f:
        f.create_dataset("time", data=t)
        f.create_dataset("motions", data=motions)
        f.create_dataset("tensions", data=tensions)
        f["motions"].attrs["names"] = list(MOTIONS)
        f.attrs.update(attrs)


def generate(folder: Path, files: int, samples: int, faults: bool = False) -> list[Path]:
    """Write the files (those already there are kept) and return their paths, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = folder / f"run_{i:04d}.h5"
        if not path.exists():
            write_file(path, i, samples)
        paths.append(path)
    if faults:
        corrupt = folder / "run_corrupt.h5"
        if not corrupt.exists():
            write_file(corrupt, files, samples)
            with open(corrupt, "r+b") as f:  # the disk filled up: a header, half a file
                f.truncate(corrupt.stat().st_size // 3)
        empty = folder / "run_empty.h5"
        empty.touch()
        hang = folder / "run_hang.h5"
        if not hang.exists():
            os.mkfifo(hang)
        paths += [corrupt, empty, hang]
    return sorted(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--small", action="store_true", help=f"{SMALL_SAMPLES} samples a file")
    parser.add_argument("--samples", type=int, help="samples a file (overrides --small)")
    parser.add_argument("--faults", action="store_true", help="add a corrupt, empty, hung file")
    args = parser.parse_args()
    samples = args.samples or (SMALL_SAMPLES if args.small else FULL_SAMPLES)
    paths = generate(args.folder, args.files, samples, args.faults)
    print(f"{len(paths)} files in {args.folder}")


if __name__ == "__main__":
    main()
