#!/usr/bin/env bash
# A real Slurm cluster of several nodes on this machine, with accounting, for trying `make submit-*`
# and for the tests. Every node is a network namespace with its own address and hostname (n1, n2,
# ...) running its own slurmd; slurmctld, slurmdbd and a private MariaDB run beside them. Nodes share
# this machine's file system, as cluster nodes share theirs.
#   slurm/local-cluster.sh up [NODES]   start it (default 3 nodes; state under $SLURM_LOCAL_DIR)
#   slurm/local-cluster.sh down         stop everything it started, remove its namespaces and links
#   slurm/local-cluster.sh env          print the export line that points Slurm's tools at it
#   slurm/local-cluster.sh kill NODE    kill every process of a node, as a power loss would
#   slurm/local-cluster.sh cut NODE     take a node's network link down (its processes keep running)
#   slurm/local-cluster.sh revive NODE  bring a killed or cut node back (it rejoins in seconds)
#   slurm/local-cluster.sh pids NODE    the processes running on a node
# Each cluster has its own ports, munge socket, addresses and state directory, so clusters of
# several checkouts (or a real Slurm) run side by side. Needs root, Debian's slurm-wlm, slurmd,
# slurmctld, munge, and for accounting slurmdbd and mariadb-server (`make system-packages`).
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.slurm}
CONF=$DIR/slurm.conf
REGISTRY=/run/worldmodels-clusters   # which slot (addresses and ports) each running cluster holds
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 85 / 100 ))
DB_PASSWORD=slurm-local   # reachable only on 127.0.0.1 of this machine, by root

die() { echo "error: $*" >&2; exit 2; }

# slot: this cluster's number (1-99), kept in $DIR/slot; it fixes the subnet and the ports
slot() {
  if [ -s "$DIR/slot" ]; then cat "$DIR/slot"; return; fi
  mkdir -p "$REGISTRY"
  for i in $(seq 1 99); do
    if mkdir "$REGISTRY/$i" 2>/dev/null; then echo "$DIR" > "$REGISTRY/$i/dir"; echo "$i" > "$DIR/slot"; echo "$i"; return; fi
  done
  die "no free slot for a local cluster in $REGISTRY (99 clusters running?)"
}

settings() {  # the names, addresses and ports of slot $1
  SLOT=$1
  NET=10.77.$SLOT
  BRIDGE=wm${SLOT}br
  BASE=$(( 17000 + SLOT * 10 ))
  CTLD_PORT=$BASE; SLURMD_PORT=$((BASE + 1)); DBD_PORT=$((BASE + 2)); DB_PORT=$((BASE + 3))
  MUNGE_SOCKET=$DIR/munge/munge.sock
}
ns() { echo "wm$SLOT-$1"; }     # the network namespace of node $1
veth() { echo "wm${SLOT}$1"; }  # its link's end in the root namespace
nodes() { sed -n 's/^NodeName=\(n[0-9]*\) .*/\1/p' "$CONF" 2>/dev/null; }

wait_until() {  # wait_until TRIES COMMAND...: retry every 0.1 s
  local tries=$1; shift
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

start_munge() {
  mkdir -p "$DIR/munge"
  [ -s "$DIR/munge/munge.key" ] || dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge/munge.key" 2>/dev/null
  chown -R munge:munge "$DIR/munge"; chmod 0700 "$DIR/munge"; chmod 0400 "$DIR/munge/munge.key"
  su -s /bin/sh munge -c "test -w '$DIR/munge'" \
    || die "munged runs as user munge, which cannot reach $DIR/munge (a parent folder is private); choose a SLURM_LOCAL_DIR every user can traverse"
  if ! munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
    su -s /bin/sh munge -c "munged --force --socket=$MUNGE_SOCKET --key-file=$DIR/munge/munge.key \
      --pid-file=$DIR/munge/munged.pid --log-file=$DIR/munge/munged.log --seed-file=$DIR/munge/munged.seed"
    wait_until 50 sh -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'" || die "munged did not start; see $DIR/munge/munged.log"
  fi
}

start_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  for k in $(seq "$NODES"); do
    local node=n$k
    [ -e "/run/netns/$(ns $node)" ] && continue
    ip netns add "$(ns $node)"
    ip link add "$(veth $node)" type veth peer name "$(veth $node)p"
    ip link set "$(veth $node)p" netns "$(ns $node)"
    ip link set "$(veth $node)" master "$BRIDGE" up
    ip -n "$(ns $node)" link set "$(veth $node)p" name eth0
    ip -n "$(ns $node)" addr add "$NET.$((10 + k))/24" dev eth0
    ip -n "$(ns $node)" link set eth0 up
    ip -n "$(ns $node)" link set lo up
  done
}

# MariaDB in $DIR/db on 127.0.0.1:DB_PORT, then slurmdbd; false (and no accounting) without them
start_accounting() {
  command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null || return 1
  local sock=$DIR/db.sock
  if [ ! -d "$DIR/db/mysql" ]; then
    mkdir -p "$DIR/db"
    mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root --auth-root-authentication-method=socket \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
  fi
  if ! mariadb-admin --no-defaults --socket="$sock" ping >/dev/null 2>&1; then
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/db" --bind-address=127.0.0.1 --port="$DB_PORT" \
      --socket="$sock" --pid-file="$DIR/mariadb.pid" --skip-name-resolve --log-error="$DIR/log/mariadb.log" \
      </dev/null >/dev/null 2>&1 &
    wait_until 100 mariadb-admin --no-defaults --socket="$sock" ping || die "MariaDB did not start; see $DIR/log/mariadb.log"
    mariadb --no-defaults --socket="$sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  fi
  cat > "$DIR/slurmdbd.conf" <<DBD
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=$NET.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
DBD
  chmod 600 "$DIR/slurmdbd.conf"
  # slurmdbd reads the slurmdbd.conf beside $SLURM_CONF
  { [ -s "$DIR/slurmdbd.pid" ] && kill -0 "$(cat "$DIR/slurmdbd.pid")" 2>/dev/null; } || SLURM_CONF=$CONF slurmdbd
  wait_until 100 python3 -c "import socket; socket.create_connection(('$NET.1', $DBD_PORT), 1)" \
    || die "slurmdbd did not start; see $DIR/log/slurmdbd.log"
}

write_conf() {  # write_conf ACCOUNTING(0|1)
  {
    cat <<CONF
ClusterName=local
SlurmctldHost=ctl($NET.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
# requeued jobs wait cred_expire seconds before they may start again (default 120)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.%n.log
# every node its own /tmp for job files: PMIx makes the same directory on every node of a step
TmpFS=$DIR/tmp/%n
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# a node that comes back after a failure takes jobs again by itself
ReturnToService=2
# a node silent this long is marked down and its jobs requeued (about 25-45 s from loss)
SlurmdTimeout=10
JobRequeue=1
# look for startable jobs every few seconds: a requeued job may start cred_expire seconds after its
# requeue, which wakes no scheduler by itself (the defaults wait 30-60 s)
SchedulerParameters=bf_interval=5,sched_interval=5
MpiDefault=none
MaxArraySize=1001
KillWait=10
# keep finished jobs visible to scontrol (status falls back to it without accounting) for an hour
MinJobAge=3600
CONF
    if [ "$1" = 1 ]; then
      cat <<CONF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NET.1
AccountingStoragePort=$DBD_PORT
# how clients reach this cluster's munged when they talk to slurmdbd
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=5
CONF
    else
      echo "JobAcctGatherType=jobacct_gather/none"
    fi
    for k in $(seq "$NODES"); do
      echo "NodeName=n$k NodeHostname=n$k NodeAddr=$NET.$((10 + k)) CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN"
    done
    # LLN: each job on the least loaded nodes, so that array tasks spread over the nodes
    echo "PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP LLN=YES"
  } > "$CONF"
}

start_node() {  # start_node NODE: slurmd inside the node's namespace, under the node's hostname
  local node=$1
  mkdir -p "$DIR/spool/$node" "$DIR/tmp/$node"
  pgrep -f "slurmd -f $CONF -N $node\$" >/dev/null && return 0
  nsenter --net="/run/netns/$(ns "$node")" unshare --uts sh -c "hostname $node; exec slurmd -f '$CONF' -N $node" \
    || die "slurmd of $node did not start; see $DIR/log/slurmd.$node.log"
}

up() {
  [ "$(id -u)" = 0 ] || die "the local cluster runs its daemons as root"
  for tool in munged slurmctld slurmd sinfo nsenter unshare ip; do
    command -v $tool >/dev/null || die "$tool is missing (make system-packages installs slurm-wlm, slurmd, munge)"
  done
  NODES=${1:-${NODES:-3}}
  [[ "$NODES" =~ ^[1-9][0-9]?$ ]] || die "NODES=$NODES: give a number of nodes from 1 to 99"
  if pgrep -f "slurmctld -f $CONF" >/dev/null && [ "$(nodes | wc -l)" != "$NODES" ]; then
    die "the cluster in $DIR runs $(nodes | wc -l) node(s); slurm/local-cluster.sh down first to start $NODES"
  fi
  mkdir -p "$DIR"/{state,spool,log,tmp}
  settings "$(slot)"
  start_munge
  start_network
  local accounting=0
  if start_accounting; then accounting=1; else echo "warning: no slurmdbd/mariadb-server: the cluster runs without accounting (sacct)" >&2; fi
  write_conf $accounting
  pgrep -f "slurmctld -f $CONF" >/dev/null || unshare --uts sh -c "hostname ctl; exec slurmctld -f '$CONF'" \
    || die "slurmctld did not start; see $DIR/log/slurmctld.log"
  for k in $(seq "$NODES"); do start_node "n$k"; done
  export SLURM_CONF=$CONF
  for _ in $(seq 300); do
    idle=$(sinfo -h -N -o %t 2>/dev/null | grep -c -E '^(idle|mix|alloc)$' || true)
    if [ "$idle" = "$NODES" ] && { [ $accounting = 0 ] || sacct -n -X -S now >/dev/null 2>&1; }; then
      echo "local Slurm cluster up: $NODES node(s) n[1-$NODES] of $CPUS CPUs on $NET.0/24$([ $accounting = 1 ] && echo ", accounting") (export SLURM_CONF=$CONF)"
      return 0
    fi
    sleep 0.2
  done
  die "the local Slurm nodes did not come up; see $DIR/log/"
}

stop_pid() {  # stop_pid PIDFILE: SIGTERM, then wait for the process to end
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

kill_node() {
  local pids
  pids=$(ip netns pids "$(ns "$1")" 2>/dev/null || true)
  if [ -n "$pids" ]; then
    kill -9 $pids 2>/dev/null || true
    for _ in $(seq 50); do ps -p "$(echo $pids | tr ' ' ,)" >/dev/null || break; sleep 0.1; done
  fi
  # killed MPI ranks leave their shared-memory segments (vader_segment.HOST.JOB.RANK) behind:
  # remove the node's that no process maps any more (another cluster may have a node of that name)
  for seg in /dev/shm/vader_segment."$1".*; do
    [ -e "$seg" ] || continue
    grep -qsF "$seg" /proc/[0-9]*/maps || rm -f "$seg"
  done
  return 0
}

down() {
  [ -s "$DIR/slot" ] || { echo "local Slurm cluster down"; return 0; }
  settings "$(cat "$DIR/slot")"
  for node in $(nodes); do kill_node "$node"; done
  stop_pid "$DIR/slurmctld.pid"
  stop_pid "$DIR/slurmdbd.pid"
  stop_pid "$DIR/mariadb.pid"
  munged --stop --socket="$MUNGE_SOCKET" >/dev/null 2>&1 || true
  for node in $(nodes); do
    ip link del "$(veth "$node")" 2>/dev/null || true
    ip netns del "$(ns "$node")" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf "$REGISTRY/$SLOT" "$DIR/slot"
  echo "local Slurm cluster down"
}

node_cmd() {  # node_cmd ACTION NODE
  [ -s "$DIR/slot" ] || die "no local cluster runs from $DIR"
  settings "$(cat "$DIR/slot")"
  nodes | grep -qx "${2:-}" || die "no node '${2:-}' in this cluster (nodes: $(nodes | tr '\n' ' '))"
  case "$1" in
    kill) kill_node "$2"; echo "$2: every process killed" ;;
    cut) ip link set "$(veth "$2")" down; echo "$2: link down" ;;
    revive) ip link set "$(veth "$2")" up; start_node "$2"; echo "$2: back" ;;
    pids) ip netns pids "$(ns "$2")" ;;
  esac
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  kill|cut|revive|pids) node_cmd "$1" "${2:-}" ;;
  *) echo "usage: $0 up [NODES]|down|env|kill NODE|cut NODE|revive NODE|pids NODE" >&2; exit 2 ;;
esac
