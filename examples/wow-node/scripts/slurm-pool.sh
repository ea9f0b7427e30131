#!/usr/bin/env bash
# A Slurm pool that builds itself over the virtual network (the WOW paper's
# Condor pool, with Debian's unmodified slurm-wlm and munge).
#
# Machines ctl, w1..wN (network namespaces on one underlay bridge), each
# running wow-node with its guest on wow0; each guest gets its address by
# DHCP and its name in DNS from its host name, nothing else. The
# controller's node registers `_slurmctld._tcp` (port 6817) from its
# `[[service]]`; each worker's slurmd, started with no configuration at all
# (`slurmd -Z`, configless), finds the controller by that SRV record
# through its node's DNS, fetches slurm.conf from it and joins as a
# dynamic node. One munge key, as an appliance image would carry it, is
# given to every machine.
#
# Each machine has its own mount and UTS namespaces (a private /run,
# /etc/slurm, /etc/munge, /var/lib/munge, /var/log/munge, /var/spool/slurm*,
# /var/log/slurm bound from its directory, its host name), so every munged
# and Slurm daemon keeps Debian's default paths; Debian's own services are
# never started. Slurm runs without cgroups (proctrack/linuxproc,
# task/none, no accounting).
#
# Checks: sinfo lists every worker by its wow name, idle; a 100-task job
# array and a 4-node `srun hostname` complete. Measures: the time from the
# last node start to every worker idle in sinfo, and the array's makespan
# over wow and, in the same run, over the plain veths (host names mapped
# to the underlay addresses in /etc/hosts, which glibc reads first).
#
# Usage (root): examples/wow-node/scripts/slurm-pool.sh
# Env: WORKERS=4, TASKS=100, WOW_BIN=path (default: target/debug/wow-node,
#      built if missing), KEEP=1 (keep the results directory).
# Exit status 0 only if every check passed; the last lines are the figures.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
WORKERS=${WORKERS:-4}
TASKS=${TASKS:-100}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in ip dhclient munged slurmctld slurmd sinfo sbatch srun squeue unshare; do
  command -v $c >/dev/null || { echo "missing $c (apt-get install slurmctld slurmd slurm-client munge isc-dhcp-client)" >&2; exit 2; }
done
BIN=${WOW_BIN:-$ROOT/target/debug/wow-node}
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build -p wow-node 2>&1 | tail -1)
fi
# shellcheck source=lib.sh
. "$HERE/lib.sh"

RES=$(mktemp -d /tmp/wow-slurm.XXXXXX)
S=$$
HUB=wsh$S
NAMES=(ctl)
for i in $(seq 1 "$WORKERS"); do NAMES+=("w$i"); done
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for n in "${NAMES[@]}"; do ip netns del "ws$n$S" 2>/dev/null; rm -rf "/etc/netns/ws$n$S"; done
  ip netns del "$HUB" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "results kept in $RES"; else rm -rf "$RES"; fi
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# m RUN NAME CMD...: CMD on machine NAME (its netns, its own mount and UTS
# namespaces: host name NAME, private directories from $RES/RUN/NAME, and
# its hosts file if it has one).
MACHINE='n=$1; d=$2; shift 2
hostname "$n"
for p in run etc/slurm etc/munge var/lib/munge var/log/munge var/spool/slurmd var/spool/slurmctld var/log/slurm; do
  mkdir -p "$d/$p" "/$p"; mount --bind "$d/$p" "/$p"
done
if [ -f "$d/hosts" ]; then mount --bind "$d/hosts" /etc/hosts; fi
# ip netns exec mounts a fresh /sys, without the cgroup hierarchies, and
# slurmd 22.05 always loads a cgroup plugin: give it a v1 root (a tmpfs)
# and the hierarchies it looks at (none is used: no cgroup plugins).
mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
for c in freezer cpuset memory devices none,name=systemd; do
  h=${c#none,name=}; mkdir -p /sys/fs/cgroup/$h
  mount -t cgroup -o $c cgroup /sys/fs/cgroup/$h 2>/dev/null || true
done
exec "$@"'
m() {
  local run=$1 n=$2; shift 2
  ip netns exec "ws$n$S" unshare -m -u --propagation private sh -c "$MACHINE" sh "$n" "$RES/$run/$n" "$@"
}

# bg RUN NAME LOG CMD...: m in the background (the pid is the daemon's).
bg() {
  local run=$1 n=$2 log=$3; shift 3
  (exec ip netns exec "ws$n$S" unshare -m -u --propagation private sh -c "$MACHINE" sh "$n" "$RES/$run/$n" "$@") >"$log" 2>&1 &
  PIDS+=($!)
}

echo "== $((WORKERS + 1)) machines on one underlay bridge"
ip netns add "$HUB"
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
i=0
for n in "${NAMES[@]}"; do
  i=$((i + 1))
  ns=ws$n$S
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "u$n$S" netns "$ns" type veth peer name "p$n" netns "$HUB"
  ip -n "$HUB" link set "p$n" master br0 up
  ip -n "$ns" link set "u$n$S" name eth0
  ip -n "$ns" addr add "192.168.70.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
done

# The munge key every machine image carries.
dd if=/dev/urandom of="$RES/munge.key" bs=1024 count=1 status=none
chmod 0400 "$RES/munge.key"

# prepare RUN: every machine's directories, the key, the controller's
# slurm.conf (workers have none).
prepare() {
  local run=$1
  for n in "${NAMES[@]}"; do
    local d=$RES/$run/$n
    mkdir -p "$d/etc/munge" "$d/var/lib/munge" "$d/run/munge" "$d/etc/slurm"
    chmod 0700 "$d/etc/munge"; chmod 0711 "$d/var/lib/munge"; chmod 0755 "$d/run/munge"
    install -m 0400 "$RES/munge.key" "$d/etc/munge/munge.key"
  done
  cat >"$RES/$run/ctl/etc/slurm/slurm.conf" <<EOF
ClusterName=wow
SlurmctldHost=ctl
SlurmctldParameters=enable_configless
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MaxNodeCount=64
TreeWidth=65533
ReturnToService=2
MinJobAge=600
PartitionName=pool Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# start_slurm RUN: munged everywhere, slurmctld on ctl, slurmd -Z (no
# configuration, no server named) on each worker.
start_slurm() {
  local run=$1
  for n in "${NAMES[@]}"; do
    bg "$run" "$n" "$RES/$run/$n.munged.log" munged -F --force
  done
  for n in "${NAMES[@]}"; do
    for _ in $(seq 50); do [ -S "$RES/$run/$n/run/munge/munge.socket.2" ] && break; sleep 0.1; done
  done
  bg "$run" ctl "$RES/$run/slurmctld.out" slurmctld -D -i
  for _ in $(seq 100); do m "$run" ctl scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
  for n in "${NAMES[@]:1}"; do
    bg "$run" "$n" "$RES/$run/$n.slurmd.out" env -u SLURM_CONF slurmd -D -Z
  done
}

# wait_idle RUN: until sinfo shows every worker idle (120 s at most).
wait_idle() {
  local run=$1 want got
  want=$(printf '%s idle\n' "${NAMES[@]:1}" | sort)
  for _ in $(seq 600); do
    got=$(m "$run" ctl sinfo -h -N -o '%N %t' 2>/dev/null | sort -u)
    [ "$got" = "$want" ] && return 0
    sleep 0.2
  done
  echo "sinfo: $got" >&2
  return 1
}

# array RUN: submits the job array from the controller's guest, waits
# for it, checks every task's output; prints the makespan.
array() {
  local run=$1 out job t0 done_ok
  out=$RES/$run/out
  mkdir -p "$out"
  t0=$(now)
  job=$(m "$run" ctl sbatch --parsable --array=1-"$TASKS" -o "$out/%A_%a.out" -D "$out" \
    --wrap 'echo "$(hostname) task $SLURM_ARRAY_TASK_ID ok"')
  for _ in $(seq 1500); do
    [ -z "$(m "$run" ctl squeue -h -j "$job" 2>/dev/null)" ] && break
    sleep 0.2
  done
  MAKESPAN=$(since "$t0")
  done_ok=$(cat "$out"/"${job}"_*.out 2>/dev/null | grep -c ' ok$' || true)
  [ "$done_ok" = "$TASKS" ] || fail "$run: $done_ok of $TASKS tasks completed"
  echo "$run: $TASKS tasks on $(cat "$out"/"${job}"_*.out | awk '{print $1}' | sort -u | tr '\n' ' ')in ${MAKESPAN} s"
}

# srun_all RUN: a 4-node step from the controller's guest.
srun_all() {
  local run=$1 got want
  got=$(m "$run" ctl timeout 60 srun -N "$WORKERS" hostname | sort | tr '\n' ' ')
  want=$(printf '%s\n' "${NAMES[@]:1}" | sort | tr '\n' ' ')
  [ "$got" = "$want" ] || fail "$run: srun -N$WORKERS hostname gave '$got', want '$want'"
  echo "$run: srun -N$WORKERS hostname: $got"
}

stop_slurm() {
  local run=$1
  m "$run" ctl scontrol shutdown >/dev/null 2>&1 || true
  sleep 2
}

echo "== over wow: nodes, leases, names"
prepare wow
SERVICE=$'[[service]]\nname = "_slurmctld._tcp"\nport = 6817\n'
for n in "${NAMES[@]}"; do
  d=$RES/wow/$n/node
  mkdir -p "$d"
  extra=""
  [ "$n" = ctl ] && extra=$SERVICE
  boot='["192.168.70.1:4000"]'
  [ "$n" = ctl ] && boot='[]'
  cat >"$d/node.toml" <<EOF
[node]
state_dir = "$d"
listen = "0.0.0.0:4000"
bootstrap = $boot
lan_discovery = false
[network]
cidr = "10.128.0.0/16"
$extra
EOF
  chmod 0640 "$d/node.toml"
  RUST_LOG=info ip netns exec "ws$n$S" "$BIN" up --config "$d/node.toml" >"$d/node.log" 2>&1 &
  PIDS+=($!)
done
T_NODES=$(now)
for n in "${NAMES[@]}"; do
  for _ in $(seq 100); do ip -n "ws$n$S" link show wow0 2>/dev/null | grep -q UP && break; sleep 0.1; done
  d=$RES/wow/$n/node
  printf 'send host-name "%s";\nrequest subnet-mask, routers, domain-name, domain-name-servers, domain-search, interface-mtu;\n' "$n" >"$d/dhclient.conf"
  mkdir -p "/etc/netns/ws$n$S"; : >"/etc/netns/ws$n$S/resolv.conf"
  ip netns exec "ws$n$S" timeout 30 dhclient -1 -4 -cf "$d/dhclient.conf" -lf "$d/dhclient.leases" -pf "$d/dhclient.pid" wow0 >/dev/null 2>&1 \
    || fail "$n: no lease"
  [ -s "$d/dhclient.pid" ] && PIDS+=("$(cat "$d/dhclient.pid")")
  echo "  $n: $(guest_addr "ws$n$S") ($(grep -m1 search "/etc/netns/ws$n$S/resolv.conf"))"
done
# What a worker's resolver finds, as slurmd will ask.
ip netns exec "wsw1$S" dig +short +search +ndots=3 _slurmctld._tcp SRV | sed 's/^/  w1: _slurmctld._tcp SRV /'

echo "== over wow: munged, slurmctld, slurmd -Z on every worker (configless, by SRV)"
T_SLURMD=$(now)
start_slurm wow
wait_idle wow || { tail -n 20 "$RES"/wow/*.slurmd.out "$RES/wow/ctl/var/log/slurm/slurmctld.log" >&2; fail "wow: workers not idle"; }
JOIN=$(since "$T_NODES")
JOIN_SLURM=$(since "$T_SLURMD")
m wow ctl sinfo -N -o '%N %t %c %o'
srun_all wow
array wow
WOW_MAKESPAN=$MAKESPAN
stop_slurm wow

echo "== the same pool on the plain veths"
prepare plain
for n in "${NAMES[@]}"; do
  {
    echo "127.0.0.1 localhost"
    j=0
    for h in "${NAMES[@]}"; do j=$((j + 1)); echo "192.168.70.$j $h.wow.internal $h"; done
  } >"$RES/plain/$n/hosts"
done
start_slurm plain
wait_idle plain || fail "plain: workers not idle"
m plain ctl sinfo -N -o '%N %t %c %o'
srun_all plain
array plain
PLAIN_MAKESPAN=$MAKESPAN
stop_slurm plain

echo "== figures ($WORKERS workers, $TASKS-task array, wow-node $(basename "$BIN") $("$BIN" --version | awk '{print $2}'))"
echo "join: last node start to every worker idle in sinfo: ${JOIN} s (from the Slurm daemons' start: ${JOIN_SLURM} s)"
echo "array makespan: wow ${WOW_MAKESPAN} s, plain veth ${PLAIN_MAKESPAN} s"
