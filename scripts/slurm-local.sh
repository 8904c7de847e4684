#!/usr/bin/env bash
# A real single-node SLURM on this machine, for corral's SLURM tests and for trying the dask
# backend with dask_jobqueue.SLURMCluster (docs/dask.md). Needs root and Debian's slurm-wlm
# and munge packages (`make test-deps` installs them).
#
#   scripts/slurm-local.sh start    start munged (unless one runs), slurmctld and slurmd;
#                                   returns once `sinfo` shows the node idle
#   scripts/slurm-local.sh stop     stop, by pid, what `start` started
#   scripts/slurm-local.sh env      print the export line clients need (SLURM_CONF)
#
# Everything lives in $CORRAL_SLURM_DIR (default /tmp/corral-slurm): slurm.conf, state,
# spool, logs and pid files; nothing under /etc is changed (the munge key of the package
# is used). Clients (sinfo, sbatch, SLURMCluster) find the cluster through SLURM_CONF.
set -euo pipefail

DIR=${CORRAL_SLURM_DIR:-/tmp/corral-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)
export SLURM_CONF=$CONF

die() { echo "slurm-local: $*" >&2; exit 1; }

need() {
  [ "$(id -u)" = 0 ] || die "must run as root (slurmd and munged run as root here)"
  for prog in munged slurmctld slurmd sinfo; do
    command -v "$prog" >/dev/null || die "$prog is missing: apt-get install slurm-wlm munge"
  done
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
  local cpus mem_mib
  # not nproc: it honours OMP_NUM_THREADS, which a test run (or corral's thread limits) may
  # have set to 1, and a one-CPU node then runs one job at a time
  cpus=$(getconf _NPROCESSORS_ONLN)
  # RealMemory a little under the total, or slurmd declares the node invalid
  mem_mib=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  mkdir -p "$DIR/state" "$DIR/spool"
  cat >"$CONF" <<EOF
ClusterName=corral
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  need
  mkdir -p "$DIR"
  if ! pgrep -x munged >/dev/null; then
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$DIR/munged.pid"  # ours to stop
  fi
  write_conf
  # -c: a clean start, no jobs or node state recovered from an earlier run
  alive "$DIR/slurmctld.pid" || { slurmctld -D -c -i -f "$CONF" >>"$DIR/slurmctld.out" 2>&1 &
                                   echo $! >"$DIR/slurmctld.pid"; }
  alive "$DIR/slurmd.pid" || { slurmd -D -f "$CONF" >>"$DIR/slurmd.out" 2>&1 &
                               echo $! >"$DIR/slurmd.pid"; }
  for _ in $(seq 120); do  # bounded: the daemons log why they did not come up
    if sinfo -h -N -o '%t' 2>/dev/null | grep -qx 'idle'; then
      echo "slurm-local: node $HOST idle; export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.5
  done
  tail -n 20 "$DIR"/slurmctld.log "$DIR"/slurmd.log >&2 || true
  die "the node did not become idle (logs above)"
}

stop() {
  local pidfile pid jobs
  if alive "$DIR/slurmctld.pid"; then  # cancel the jobs first: their steps outlive slurmd
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  for name in slurmd slurmctld munged; do
    pidfile=$DIR/$name.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) die "usage: $0 start|stop|env" ;;
esac
