#!/usr/bin/env bash
# The node's own DNS as its guest sees it (queries into the TAP, answers out
# of it), beside dnsmasq answering the same name over a veth, in one run with
# the same dnsperf load: queries per second, the server's CPU seconds and
# answers per server CPU-second (dnsperf takes a core of its own on a small
# machine, so qps is bound by the client; answers per CPU-second say what
# each answer costs the server). Prints both lines and the ratio.
#
# Usage (root, from anywhere): examples/wow-node/scripts/bench-dns.sh
# Env: DUR=10 (seconds of dnsperf per server), ROUNDS=1 (alternating pairs),
#      WOW_BIN=path (a wow-node binary instead of building one),
#      SHORT=1 (DUR=2: a quick check that the script and both servers work)
# Needs: ip, dhclient, dnsperf, dnsmasq, dig, jq.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
if [ -n "${SHORT:-}" ]; then DUR=${DUR:-2}; fi
DUR=${DUR:-10} ROUNDS=${ROUNDS:-1}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in ip dhclient dnsperf dnsmasq dig jq awk; do command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }; done
TCK=$(getconf CLK_TCK)

if [ -n "${WOW_BIN:-}" ]; then
  BIN=$WOW_BIN
else
  echo "== building wow-node (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p wow-node)
  BIN=$ROOT/target/release/wow-node
fi
# shellcheck source=lib.sh
. "$HERE/lib.sh"

RES=$(mktemp -d /tmp/wow-bench-dns.XXXXXX); chmod 755 "$RES"   # dnsmasq drops to its own user
S=$$
NA=wdA$S NB=wdB$S VA=wdvA$S VB=wdvB$S
UA=10.93.0.1 UB=10.93.0.2 GW=10.128.0.1
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for n in "$NA" "$NB"; do ip netns del "$n" 2>/dev/null; rm -rf "/etc/netns/$n"; done
  rm -rf "$RES"
}
trap cleanup EXIT INT TERM

veth_pair "$NA" "$NB" "$VA" "$VB" $UA $UB

# One node, a ring of its own; its guest (the namespace's own stack on wow0)
# takes a lease, and with it a name in the node's zone.
mkdir -p "$RES/a"
printf '[node]\nstate_dir = "%s"\nlisten = "%s:4000"\nbootstrap = []\nlan_discovery = false\nport_mapping = false\n\n[network]\ncidr = "10.128.0.0/16"\n' \
  "$RES/a" "$UA" >"$RES/a/node.toml"
ip netns exec "$NA" "$BIN" up --config "$RES/a/node.toml" >"$RES/node.log" 2>&1 & PIDS+=($!); NODE=$!
sleep 1
lease_guest "$NA" "$RES/a" wow0
status=$("$BIN" status --state-dir "$RES/a" --json)
NAME=$(jq -r .guest.name <<<"$status") ADDR=$(jq -r .guest.address <<<"$status")
[ -n "$NAME" ] && [ "$NAME" != null ] || { echo "the guest has no name: $status" >&2; exit 1; }
got=$(ip netns exec "$NA" dig +short +time=2 +tries=2 @$GW "$NAME" A)
[ "$got" = "$ADDR" ] || { echo "the node answers $NAME with '$got', not $ADDR" >&2; exit 1; }

# dnsmasq with the same name (as ../shared/peers/dns.sh runs it).
echo "$ADDR $NAME" >"$RES/hosts"
ip netns exec "$NB" dnsmasq --keep-in-foreground --no-daemon --no-resolv --no-hosts \
  --addn-hosts="$RES/hosts" --cache-size=10000 --listen-address=$UB --bind-interfaces \
  --pid-file="$RES/dnsmasq.pid" >"$RES/dnsmasq.log" 2>&1 & PIDS+=($!); DNSMASQ=$!
for _ in $(seq 50); do
  [ "$(ip netns exec "$NA" dig +short +time=1 +tries=1 @$UB "$NAME" A 2>/dev/null)" = "$ADDR" ] && break
  sleep 0.2
done
[ "$(ip netns exec "$NA" dig +short +time=1 +tries=1 @$UB "$NAME" A)" = "$ADDR" ] || { echo "dnsmasq does not answer" >&2; exit 1; }

echo "$NAME A" >"$RES/queries"
# measure LABEL SERVER PID: DUR s of dnsperf (one client socket) from the
# guest's namespace; one tab-separated line: label, qps, answers, CPU s,
# answers per CPU-second, mean latency (ms), queries lost (unanswered).
measure() {
  local label=$1 server=$2 pid=$3 t0 t1 out
  t0=$(ticks "$pid")
  out=$(ip netns exec "$NA" timeout $((DUR + 30)) dnsperf -s "$server" -d "$RES/queries" -l "$DUR" -c 1 2>&1)
  t1=$(ticks "$pid")
  awk -v l="$label" -v t=$((t1 - t0)) -v hz="$TCK" '
    /Queries completed:/ { done = $3 }
    /Queries lost:/ { lost = $3 }
    /Queries per second:/ { qps = $4 }
    /Average Latency/ { lat = $4 * 1000 }
    END {
      cpu = t / hz
      printf "%s\t%.0f qps\t%d answers\t%.2f CPU-s\t%.0f answers/CPU-s\t%.3f ms\t%d lost\n", l, qps, done, cpu, (cpu > 0 ? done / cpu : 0), lat, lost
    }' <<<"$out"
}

echo "== $NAME ($ADDR): DUR=$DUR s per server, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$RES/lines"
for round in $(seq 1 "$ROUNDS"); do
  measure "wow-node(TAP)" $GW $NODE | tee -a "$RES/lines"
  measure "dnsmasq(veth)" $UB $DNSMASQ | tee -a "$RES/lines"
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg); node's counters: $("$BIN" status --state-dir "$RES/a" --json | jq -c '{dns_queries, dns_forwards}')"
awk -F'\t' '
  { split($5, a, " "); split($2, q, " ") }
  $1 ~ /^wow/ { w[++nw] = a[1]; wq[nw] = q[1] }
  $1 ~ /^dnsmasq/ { d[++nd] = a[1]; dq[nd] = q[1] }
  END {
    for (i = 1; i <= nw && i <= nd; i++)
      printf "round %d: answers per server CPU-second wow-node/dnsmasq = %.2f, qps wow-node/dnsmasq = %.2f\n", i, (d[i] > 0 ? w[i] / d[i] : 0), (dq[i] > 0 ? wq[i] / dq[i] : 0)
  }' "$RES/lines"
