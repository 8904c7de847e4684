"""examples/climate_normals: per-file climatologies (locked on their file) then normals after
exactly their files; the NetCDF normals equal a serial run's, values and attributes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests._deps import require_module

EXAMPLE = Path(__file__).parents[1] / "examples" / "climate_normals"
sys.path.insert(0, str(EXAMPLE))
require_module("netCDF4")
require_module("xarray")

import make_data as generate  # noqa: E402
import normals  # noqa: E402

YEARS, WINDOW = generate.SMALL_YEARS, 10  # 3 normals per variable


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("climate") / "data"
    generate.generate(root, YEARS, generate.SMALL_GRID)
    return root


def test_the_file_layout_is_the_real_one(data: Path) -> None:
    path = generate.path_of(data, "tasmax", 1975)
    assert path.relative_to(data).as_posix() == (
        "tasmax/historical/tasmax_day_CorralESM1_historical_r1i1p1f1_gn_1975.nc"
    )
    assert path.exists()


def test_parallel_normals_equal_the_serial_ones(data: Path, tmp_path: Path) -> None:
    report = normals.run_corral(data, tmp_path / "par", YEARS, WINDOW, workers=2, progress=False)
    normals.run_serial(data, tmp_path / "ser", YEARS, WINDOW)
    assert len(normals.outputs(tmp_path / "par")) == 4 * (YEARS - WINDOW + 1)
    assert normals.same_outputs(tmp_path / "par", tmp_path / "ser")
    per_var = YEARS + YEARS - WINDOW + 1
    assert {g: c["ok"] for g, c in report.by_group().items()} == dict.fromkeys(
        generate.VARIABLES, per_var
    )
    # Each normal started only after its own files, and not after all the files of all variables.
    done = {o.key: o.finished for o in report.outcomes}
    for o in report.outcomes:
        if o.key[1] == "normal":
            target = o.key[2]
            firsts = [done[(o.key[0], y)] for y in range(target - WINDOW + 1, target + 1)]
            assert o.started is not None and o.started >= max(f for f in firsts if f)


@pytest.mark.slow
def test_a_normal_is_skipped_when_one_of_its_files_is_bad(data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    generate.path_of(broken, "pr", generate.FIRST_YEAR + YEARS - 1).write_bytes(b"not netcdf")
    report = normals.run_corral(
        broken, tmp_path / "out", YEARS, WINDOW, workers=2, progress=False, errors="return"
    )
    counts = report.by_group()
    assert counts["pr"]["failed"] == 1 and counts["pr"]["skipped"] == 1  # the last window
    assert counts["tas"]["ok"] == YEARS + YEARS - WINDOW + 1
