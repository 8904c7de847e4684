"""corral.Executor as Dask's local process pool: ``dask.config.set(pool=corral.Executor(...))``
with ``scheduler="processes"``. Real dask arrays and xarray, real worker processes: the
reduction must equal the one computed by Dask's default scheduler, and its chunks must have
run in corral's workers."""

from __future__ import annotations

import os

import pytest
from _deps import require_module

import corral

dask = require_module("dask")
da = require_module("dask.array")
np = require_module("numpy")
xr = require_module("xarray")

pytestmark = pytest.mark.slow


def pid_block(block):
    return np.full(block.shape, os.getpid(), dtype=np.int64)


def sample():
    return da.random.RandomState(0).random_sample((400, 300), chunks=(100, 100))


def test_dask_array_reduction_on_the_executor_equals_the_default():
    x = sample()
    expected = (x.sum(axis=0) + x.std(axis=1).mean()).compute()
    with corral.Executor(max_workers=2) as ex, dask.config.set(pool=ex, scheduler="processes"):
        got = (x.sum(axis=0) + x.std(axis=1).mean()).compute()
        pids = set(np.unique(x.map_blocks(pid_block, dtype=np.int64).compute()).tolist())
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert pids and os.getpid() not in pids


def test_xarray_reduction_on_the_executor_equals_the_default():
    data = xr.DataArray(sample(), dims=("time", "space"), name="t").to_dataset()
    expected = data.mean("time").t.values
    with corral.Executor(max_workers=2) as ex, dask.config.set(pool=ex, scheduler="processes"):
        got = data.mean("time").compute().t.values
    np.testing.assert_allclose(got, expected, rtol=1e-12)
