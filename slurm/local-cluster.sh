#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for trying `make submit-*` and for the tests.
#   slurm/local-cluster.sh up     start munge, slurmctld and slurmd (state under $SLURM_LOCAL_DIR)
#   slurm/local-cluster.sh down   stop them
#   slurm/local-cluster.sh env    print the export line that points Slurm's tools at it
# Needs root and Debian's slurm-wlm and munge (`make system-packages` installs them).
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 85 / 100 ))

up() {
  [ "$(id -u)" = 0 ] || { echo "error: the local cluster runs its daemons as root" >&2; exit 2; }
  for tool in munged slurmctld slurmd sinfo; do
    command -v $tool >/dev/null || { echo "error: $tool is missing (make system-packages installs slurm-wlm and munge)" >&2; exit 2; }
  done
  # One machine holds one local cluster (the daemons' ports are fixed): refuse another checkout's.
  other=""
  for pid in $(pgrep -x slurmctld || true); do
    conf=$(tr '\0' '\n' < /proc/$pid/cmdline | sed -n '/^-f$/{n;p}')
    [ -n "$conf" ] && [ "$conf" != "$CONF" ] && other=$conf
  done
  if [ -n "$other" ]; then
    echo "error: a local cluster from $(dirname "$(dirname "$other")") is already running; stop it there with slurm/local-cluster.sh down" >&2
    exit 2
  fi
  mkdir -p "$DIR"/{state,spool,log} /run/munge /var/log/munge /var/lib/munge /etc/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
    su -s /bin/sh munge -c munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  cat > "$CONF" <<CONF
ClusterName=local
SlurmctldHost=$HOST
AuthType=auth/munge
# requeued jobs wait cred_expire seconds before they may start again (default 120)
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
MaxArraySize=1001
KillWait=10
# keep finished jobs visible to scontrol (and so to the status command) for an hour
MinJobAge=3600
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
  if ! pgrep -f "slurmctld -f $CONF" >/dev/null; then slurmctld -f "$CONF"; fi
  if ! pgrep -f "slurmd -f $CONF" >/dev/null; then slurmd -f "$CONF"; fi
  export SLURM_CONF=$CONF
  for _ in $(seq 100); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -1)
    case "$state" in idle|mix|alloc) echo "local Slurm cluster up: $HOST, $CPUS CPUs (export SLURM_CONF=$CONF)"; return 0;; esac
    sleep 0.2
  done
  echo "error: the local Slurm node did not come up; see $DIR/log/" >&2; exit 1
}

down() {
  for daemon in slurmd slurmctld; do pkill -f "$daemon -f $CONF" 2>/dev/null || true; done
  for _ in $(seq 50); do pgrep -f "slurm(ctld|d) -f $CONF" >/dev/null || break; sleep 0.1; done
  echo "local Slurm cluster down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
