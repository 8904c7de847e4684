"""The dask backend through a real SLURM: ``dask_jobqueue.SLURMCluster`` on the single-node
SLURM that ``scripts/slurm-local.sh`` starts on this machine (as root, with Debian's
slurm-wlm and munge; ``make test-deps`` installs them). Tasks run in corral children of Dask
workers that are SLURM jobs; a timeout kills its task; results equal serial."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _deps import missing, require_module, require_program
from _procs import still_alive_after

import corral
from corral import TaskTimeout

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
STATE = Path(os.environ.get("CORRAL_SLURM_DIR", "/tmp/corral-slurm"))


@pytest.fixture(scope="module")
def slurm():
    for program in ("slurmctld", "slurmd", "munged", "sbatch"):
        require_program(program)
    if os.geteuid() != 0:
        missing("a local SLURM needs root (scripts/slurm-local.sh)")
    ours = not (STATE / "slurmctld.pid").exists()  # started by someone else: left running
    subprocess.run([str(SCRIPT), "start"], check=True, timeout=120)
    conf = str(STATE / "slurm.conf")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if old is None:
        del os.environ["SLURM_CONF"]
    else:
        os.environ["SLURM_CONF"] = old
    if ours:
        subprocess.run([str(SCRIPT), "stop"], check=True, timeout=60)


@pytest.fixture(scope="module")
def slurm_cluster(slurm, tmp_path_factory):
    jobqueue = require_module("dask_jobqueue")
    distributed = require_module("distributed")
    logs = tmp_path_factory.mktemp("slurm-logs")
    cluster = jobqueue.SLURMCluster(
        cores=1, processes=1, memory="1GiB", walltime="00:10:00", queue="debug",
        python=sys.executable, log_directory=str(logs),
        job_script_prologue=[f"export PYTHONPATH={ROOT / 'src'}:{ROOT / 'tests'}"],
        scheduler_options={"dashboard_address": None},
    )  # fmt: skip
    client = distributed.Client(cluster)
    try:
        cluster.scale(jobs=2)
        try:
            client.wait_for_workers(2, timeout=120)
        except Exception as exc:
            queue = subprocess.run(["squeue", "-o", "%i %T %r"], capture_output=True, text=True)
            raise AssertionError(f"the SLURM jobs did not start:\n{queue.stdout}") from exc
        yield cluster
    finally:
        client.close()
        cluster.close()
    deadline = time.monotonic() + 60  # the jobs end, and with them their corral children
    while _jobs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _jobs(), "SLURM jobs left running"


def _jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return out.stdout.split()


def in_a_job(x):
    return x * x, os.environ.get("SLURM_JOB_ID")


def hang_on_two(arg):
    directory, x = arg
    if x == 2:
        Path(directory, "pid").write_text(str(os.getpid()))
        time.sleep(300)
    return x


def test_a_batch_runs_in_slurm_jobs_equal_to_serial(slurm_cluster):
    out = corral.map(in_a_job, range(8), backend="dask", dask_client=slurm_cluster, chunksize=1)
    assert [value for value, _ in out] == [x * x for x in range(8)]
    assert all(job for _, job in out)  # every task ran inside a SLURM job


def test_a_timeout_kills_its_task_in_its_slurm_job(slurm_cluster, tmp_path):
    items = [(str(tmp_path), x) for x in range(5)]
    out = corral.map(
        hang_on_two, items, backend="dask", dask_client=slurm_cluster, timeout=5,
        errors="return",
    )  # fmt: skip
    assert out[:2] == [0, 1] and out[3:] == [3, 4]
    assert out[2].status == "timeout" and isinstance(out[2].error, TaskTimeout)
    pid = int(Path(tmp_path, "pid").read_text())
    assert not still_alive_after([pid], 15)
