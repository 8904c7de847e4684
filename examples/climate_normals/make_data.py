"""Synthetic daily CMIP-style fields as real NetCDF: one file per variable and year.

    ROOT/VAR/SCENARIO/VAR_day_CorralESM1_SCENARIO_r1i1p1f1_gn_YEAR.nc

for pr, tas, tasmax, tasmin over 65 years (1971-2035: ``historical`` to 2014, ``ssp245``
after), on a small regular grid, in the model's ``noleap`` calendar: a seasonal cycle by
latitude, a warming trend, weather noise (tasmax/tasmin about tas; pr gamma-distributed with
dry days). Reproducible: each file is drawn from a seed of its variable and year.

    python make_data.py data/                       # 65 years, 24 x 48 grid (~80 MB)
    python make_data.py data/ --small               # 12 years, 4 x 6 grid (tests)
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np
import xarray as xr

VARIABLES = ("pr", "tas", "tasmax", "tasmin")
MODEL = "CorralESM1"
MEMBER = "r1i1p1f1_gn"
FIRST_YEAR = 1971
YEARS = 65
SMALL_YEARS = 12
GRID = (24, 48)
SMALL_GRID = (4, 6)
DAYS = 365  # noleap

_TEMPERATURE = "Near-Surface Air Temperature"
ATTRS = {
    "pr": {"standard_name": "precipitation_flux", "long_name": "Precipitation"},
    "tas": {"standard_name": "air_temperature", "long_name": _TEMPERATURE},
    "tasmax": {"standard_name": "air_temperature", "long_name": "Daily Maximum " + _TEMPERATURE},
    "tasmin": {"standard_name": "air_temperature", "long_name": "Daily Minimum " + _TEMPERATURE},
}
UNITS = {"pr": "kg m-2 s-1", "tas": "K", "tasmax": "K", "tasmin": "K"}


def scenario(year: int) -> str:
    return "historical" if year <= 2014 else "ssp245"


def path_of(root: Path, var: str, year: int) -> Path:
    s = scenario(year)
    return root / var / s / f"{var}_day_{MODEL}_{s}_{MEMBER}_{year}.nc"


def field(var: str, year: int, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lat, lon, values[day, lat, lon])`` for one variable and year."""
    ny, nx = grid
    lat = np.linspace(-80, 80, ny)
    lon = np.linspace(0, 360, nx, endpoint=False)
    rng = np.random.default_rng(zlib.crc32(f"{var}:{year}".encode()))
    day = np.arange(DAYS)[:, None, None]
    season = np.cos(2 * np.pi * (day - 200) / DAYS) * np.sin(np.deg2rad(lat))[None, :, None]
    base = 288.0 - 30 * np.sin(np.deg2rad(lat)) ** 2
    trend = 0.025 * (year - FIRST_YEAR)
    tas = base[None, :, None] + 12 * season + trend + rng.normal(0, 3.0, (DAYS, ny, nx))
    if var == "tas":
        values = tas
    elif var == "tasmax":
        values = tas + 5 + rng.gamma(2.0, 1.5, (DAYS, ny, nx))
    elif var == "tasmin":
        values = tas - 5 - rng.gamma(2.0, 1.5, (DAYS, ny, nx))
    else:  # kg m-2 s-1: wet on ~40 % of days, ~3 mm on a wet day
        wet = rng.random((DAYS, ny, nx)) < 0.4 + 0.1 * season
        values = np.where(wet, rng.gamma(0.8, 4.0, (DAYS, ny, nx)), 0.0) / 86400.0
    return lat, lon, values.astype(np.float32)


def write_file(root: Path, var: str, year: int, grid: tuple[int, int]) -> Path:
    lat, lon, values = field(var, year, grid)
    path = path_of(root, var, year)
    path.parent.mkdir(parents=True, exist_ok=True)
    days_since = (year - 1850) * DAYS + np.arange(DAYS) + 0.5
    ds = xr.Dataset(
        {var: (("time", "lat", "lon"), values, {**ATTRS[var], "units": UNITS[var]})},
        coords={
            "time": ("time", days_since, {"units": "days since 1850-01-01", "calendar": "noleap"}),
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={
            "Conventions": "CF-1.7", "source_id": MODEL, "experiment_id": scenario(year),
            "variant_label": MEMBER.split("_")[0], "frequency": "day",
        },
    )  # fmt: skip
    ds.to_netcdf(path, engine="netcdf4", encoding={var: {"zlib": True, "complevel": 1}})
    return path


def generate(root: Path, years: int = YEARS, grid: tuple[int, int] = GRID) -> list[Path]:
    """Write every file (those already there are kept); their paths, variable by variable."""
    paths = []
    for var in VARIABLES:
        for year in range(FIRST_YEAR, FIRST_YEAR + years):
            path = path_of(root, var, year)
            paths.append(path if path.exists() else write_file(root, var, year, grid))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument(
        "--small", action="store_true", help=f"{SMALL_YEARS} years, {SMALL_GRID} grid"
    )
    parser.add_argument("--years", type=int)
    args = parser.parse_args()
    years = args.years or (SMALL_YEARS if args.small else YEARS)
    paths = generate(args.root, years, SMALL_GRID if args.small else GRID)
    print(f"{len(paths)} files under {args.root}")


if __name__ == "__main__":
    main()
