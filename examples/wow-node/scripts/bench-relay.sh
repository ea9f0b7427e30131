#!/usr/bin/env bash
# Relayed data path: guest A → node A → relay node R → node B → guest B.
# Three network namespaces: A and B each have a veth to R and no route to
# each other (R does not forward IP), so the overlay carries their traffic
# through R, as it does for hosts behind two symmetric NATs. Prints iperf3
# TCP throughput (1 and 4 streams), ping RTT and each node's CPU.
#
# With TURN=1, R also runs coturn and both nodes use it as their relay of
# last resort: their link goes through the TURN server (one overlay hop)
# instead of through the wow-node on R (two hops).
#
# Usage (root): examples/wow-node/scripts/bench-relay.sh
# Env: DUR=10 (seconds per iperf3 run), INSECURE=1 (no SAs), TURN=1,
#      PERF=FILE (record a perf profile of the relay node during the 1-stream run)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
DUR=${DUR:-10}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in ip iperf3 jq dhclient ping; do command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }; done

echo "== building wow-node (release)"
(cd "$ROOT" && cargo build --release -p wow-node 2>&1 | tail -1)
BIN=$ROOT/target/release/wow-node
# shellcheck source=lib.sh
. "$HERE/lib.sh"

RES=$(mktemp -d /tmp/wow-relay.XXXXXX)
S=$$
NA=wrA$S NR=wrR$S NB=wrB$S
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for n in "$NA" "$NR" "$NB"; do ip netns del "$n" 2>/dev/null; rm -rf "/etc/netns/$n"; done
  rm -rf "$RES"
}
trap cleanup EXIT INT TERM

for n in "$NA" "$NR" "$NB"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add ra$S netns "$NR" type veth peer name eth0 netns "$NA"
ip link add rb$S netns "$NR" type veth peer name eth0 netns "$NB"
ip -n "$NR" addr add 10.98.1.1/24 dev ra$S; ip -n "$NR" link set ra$S up
ip -n "$NR" addr add 10.98.2.1/24 dev rb$S; ip -n "$NR" link set rb$S up
ip -n "$NA" addr add 10.98.1.2/24 dev eth0; ip -n "$NA" link set eth0 up
ip -n "$NB" addr add 10.98.2.2/24 dev eth0; ip -n "$NB" link set eth0 up
ip netns exec "$NR" sysctl -qw net.ipv4.ip_forward=0

SEC=""
if [ "${INSECURE:-0}" != 1 ]; then
  "$BIN" ca init --dir "$RES/ca" >/dev/null
  "$BIN" ca issue --dir "$RES/ca" --ip 10.128.0.11 --out "$RES/a" >/dev/null
  "$BIN" ca issue --dir "$RES/ca" --ip 10.128.0.12 --out "$RES/b" >/dev/null
  SEC=$'[security]\nca_cert = "ca.pem"\ncert = "node.pem"\nkey = "node.key"\n'
fi
TURNCFG=""
if [ "${TURN:-0}" = 1 ]; then
  command -v turnserver >/dev/null || { echo "missing turnserver (coturn)" >&2; exit 1; }
  # B reaches R's other address (R's own; R still forwards nothing).
  ip -n "$NB" route add 10.98.1.0/24 via 10.98.2.1
  ip -n "$NA" route add 10.98.2.0/24 via 10.98.1.1
  ip netns exec "$NR" turnserver -n --listening-ip 10.98.1.1 --relay-ip 10.98.1.1 \
    --listening-port 3478 --min-port 50000 --max-port 50100 --lt-cred-mech --user wow:secret \
    --realm wow.test --no-tls --no-dtls --no-cli --log-file stdout --simple-log \
    --userdb "$RES/turndb" --pidfile "$RES/turnserver.pid" >"$RES/coturn.log" 2>&1 & PIDS+=($!); PT=$!
  TURNCFG=$'\n[turn]\nserver = "10.98.1.1:3478"\nusername = "wow"\npassword = "secret"\n'
  sleep 0.5
fi
mkdir -p "$RES/r"
printf '[node]\nstate_dir = "%s"\nlisten = "0.0.0.0:4000"\nadvertise = ["10.98.1.1:4000", "10.98.2.1:4000"]\n\n[network]\ncidr = "10.128.0.0/16"\n' \
  "$RES/r" >"$RES/r/node.toml"
for n in a b; do
  mkdir -p "$RES/$n"
  i=1; [ $n = b ] && i=2
  printf '[node]\nstate_dir = "%s"\nlisten = "10.98.%s.2:4000"\nbootstrap = ["10.98.%s.1:4000"]\n\n[network]\ncidr = "10.128.0.0/16"\n\n%s%s' \
    "$RES/$n" $i $i "$SEC" "$TURNCFG" >"$RES/$n/node.toml"
  chmod 0640 "$RES/$n/node.toml"   # it may hold the TURN password: the node refuses o+r
done
ip netns exec "$NR" "$BIN" up --config "$RES/r/node.toml" >"$RES/r.log" 2>&1 & PIDS+=($!); PR=$!
sleep 0.3
ip netns exec "$NA" "$BIN" up --config "$RES/a/node.toml" >"$RES/a.log" 2>&1 & PIDS+=($!); PA=$!
ip netns exec "$NB" "$BIN" up --config "$RES/b/node.toml" >"$RES/b.log" 2>&1 & PIDS+=($!); PB=$!
sleep 1
lease_guest "$NA" "$RES/a"
lease_guest "$NB" "$RES/b"
BADDR=$(guest_addr "$NB")
wait_ping "$NA" "$BADDR" || echo "no echo reply from guest B yet"
if [ "${TURN:-0}" = 1 ]; then
  # The TURN link comes up after the first packets (punch exchange first).
  for _ in $(seq 40); do
    ip netns exec "$NA" ping -c1 -W1 "$BADDR" >/dev/null 2>&1 || true
    ip netns exec "$NA" "$BIN" status --state-dir "$RES/a" | grep -q "direct (1 hops)" && break
    sleep 0.5
  done
fi
RTT=$(ip netns exec "$NA" ping -c 20 -i 0.05 -q "$BADDR" | awk -F/ '/rtt/{print $5}')
PATHLINE=$(ip netns exec "$NA" "$BIN" status --state-dir "$RES/a" | grep -E "direct|relayed" | head -1)
echo "guest B at $BADDR; path from A: $PATHLINE"
echo "ping RTT through the relay: ${RTT} ms"

ip netns exec "$NB" iperf3 -s -B "$BADDR" >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5
for P in 1 4; do
  t0a=$(ticks $PA); t0r=$(ticks $PR); t0b=$(ticks $PB); t0t=$( [ -n "${PT:-}" ] && ticks $PT || echo 0)
  PERFPID=""
  if [ -n "${PERF:-}" ] && [ $P = 1 ]; then
    perf record -F 999 -g -p $PR -o "$PERF" -- sleep $((DUR - 1)) >/dev/null 2>&1 &
    PERFPID=$!
  fi
  ip netns exec "$NA" timeout $((DUR + 30)) iperf3 -c "$BADDR" -t "$DUR" -P $P -J >"$RES/wow-P$P.json"
  [ -n "$PERFPID" ] && wait "$PERFPID" 2>/dev/null || true
  ca=$(( ($(ticks $PA) - t0a) / DUR )); cr=$(( ($(ticks $PR) - t0r) / DUR )); cb=$(( ($(ticks $PB) - t0b) / DUR ))
  ct=""; [ -n "${PT:-}" ] && ct=" coturn $(( ($(ticks $PT) - t0t) / DUR ))%"

  bps=$(jq '.end.sum_received.bits_per_second' "$RES/wow-P$P.json")
  retr=$(jq '.end.sum_sent.retransmits' "$RES/wow-P$P.json")
  printf "wow-node relayed\tP=%s\t%.0f Mbit/s\tretr=%s\tcpu: A %s%% R %s%% B %s%%%s of 1 core\n" \
    $P "$(awk -v b="$bps" 'BEGIN{print b/1e6}')" "$retr" "$ca" "$cr" "$cb" "$ct"
done
