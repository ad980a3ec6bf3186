#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for `make test-slurm`: munged, slurmctld and slurmd started
# by hand (no systemd) with every file under one state folder, and stopped by PID.
#
#   scripts/slurm-local.sh start DIR    start; prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm-local.sh stop DIR     stop what DIR's PID files name, leave the logs
#
# The cluster: one node named localhost at 127.0.0.1 with this machine's CPUs and memory, one
# partition, proctrack/linuxproc, task/none, no accounting, its own munge socket (so a munged the
# system runs is left alone) and ports 16817/16818. Needs root (slurmd starts jobs as their user)
# and the packages of `scripts/deps.sh --slurm`. Exit status 3 means "cannot start here", with the
# reason on stderr: the caller reports the test as skipped, never as passed.
set -u
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop() {
  for d in slurmd slurmctld munged; do
    f="$dir/$d.pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$f"
  done
}

case "$cmd" in
stop) stop; exit 0 ;;
start) ;;
*) echo "$0: unknown command '$cmd'" >&2; exit 2 ;;
esac

cant() { echo "slurm-local: cannot start SLURM here: $*" >&2; stop; exit 3; }
[ "$(id -u)" -eq 0 ] || cant "slurmd must run as root (this is uid $(id -u))"
for p in munged slurmctld slurmd sbatch squeue; do
  command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || cant "'$p' is not installed (scripts/deps.sh --slurm)"
done
PATH="$PATH:/usr/sbin"
[ -r /etc/munge/munge.key ] || cant "no /etc/munge/munge.key (the munge package makes it when installed)"
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
dir=$(cd "$dir" && pwd)
cpus=$(nproc)
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$dir/slurm.conf" <<CONF
ClusterName=loralabtest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CryptoType=crypto/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MaxArraySize=1001
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
munged --force --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
  --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed" 2>>"$dir/munged.log" \
  || cant "munged did not start: $(tail -n 2 "$dir/munged.log")"
slurmctld -f "$SLURM_CONF" 2>>"$dir/slurmctld.log" || cant "slurmctld did not start: $(tail -n 3 "$dir/slurmctld.log")"
slurmd -f "$SLURM_CONF" -N localhost 2>>"$dir/slurmd.log" || cant "slurmd did not start: $(tail -n 3 "$dir/slurmd.log")"
for _ in $(seq 100); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
cant "the node did not become idle in 20 s: $(sinfo 2>&1 | tail -n 2); $(tail -n 3 "$dir/slurmctld.log")"
