#!/usr/bin/env bash
# Fleet self-update: N wow-node nodes (default 10), each in a network
# namespace on one bridge, all following one release key (`[update]`,
# `check_secs` CHECK). Node 1 publishes the same binary as version 99.0.0
# (`wow-node release publish`: signed manifest in the DHT, the binary at an
# HTTP URL served on the bridge, since a binary of megabytes is above the
# DHT's per-writer share, see the README's "Updates"); the script prints
# when each node runs 99.0.0 again joined to the ring, and the time from
# publish to the last one: the fleet-update time.
#
# Usage (root): examples/wow-node/scripts/fleet-update.sh
# Env: N=10, CHECK=5 (check_secs), WOW_BIN=path (default: the debug build,
#      built if missing), DEBUG info (RUST_LOG of the nodes, default info),
#      OFFLOAD=false (`[tap] offload`: true keeps the TAP persistent
#      across the exec instead of handing its descriptor over).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
N=${N:-10}
CHECK=${CHECK:-5}
OFFLOAD=${OFFLOAD:-false}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in ip jq python3 strip; do command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }; done
if [ -z "${WOW_BIN:-}" ]; then
  (cd "$ROOT" && cargo build -p wow-node 2>&1 | tail -1)
  WOW_BIN=$ROOT/target/debug/wow-node
fi

TAG=wfu$$
RES=$(mktemp -d /tmp/wow-fleet-update.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for i in $(seq "$N"); do ip netns del "$TAG-$i" 2>/dev/null || true; done
  ip netns del "$TAG-hub" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$TAG-hub"
ip -n "$TAG-hub" link add br0 type bridge
ip -n "$TAG-hub" addr add 192.168.77.254/24 dev br0
ip -n "$TAG-hub" link set br0 up
ip -n "$TAG-hub" link set lo up

# One stripped binary per node: each node's update replaces its own.
strip --strip-debug -o "$RES/wow-node" "$WOW_BIN"
KEY=$RES/release.key
PUBLIC=$("$WOW_BIN" release keygen --out "$KEY")
mkdir -p "$RES/www"
cp "$RES/wow-node" "$RES/www/wow-node"
ip netns exec "$TAG-hub" python3 -m http.server 8080 --bind 192.168.77.254 \
  --directory "$RES/www" >"$RES/http.log" 2>&1 &
PIDS+=($!)

for i in $(seq "$N"); do
  ns=$TAG-$i dir=$RES/n$i
  mkdir -p "$dir"
  ip netns add "$ns"
  ip link add "v$TAG$i" type veth peer name eth0 netns "$ns"
  ip link set "v$TAG$i" netns "$TAG-hub"
  ip -n "$TAG-hub" link set "v$TAG$i" master br0 up
  ip -n "$ns" addr add "192.168.77.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  bootstrap='[]'
  [ "$i" = 1 ] || bootstrap='["192.168.77.1:4000"]'
  cat >"$dir/node.toml" <<EOF
[node]
state_dir = "$dir"
listen = "192.168.77.$i:4000"
bootstrap = $bootstrap
lan_discovery = false
port_mapping = false

[tap]
offload = $OFFLOAD

[update]
keys = ["$PUBLIC"]
check_secs = $CHECK
health_secs = 30
EOF
  chmod 0640 "$dir/node.toml"
  cp "$RES/wow-node" "$dir/wow-node"
  RUST_LOG=${DEBUG:-info} ip netns exec "$ns" "$dir/wow-node" up --config "$dir/node.toml" \
    >"$dir/log" 2>&1 &
  PIDS+=($!)
done

status() { ip netns exec "$TAG-$1" "$WOW_BIN" status --json --state-dir "$RES/n$1" 2>/dev/null; }
echo "== $N nodes starting (results in $RES)"
for _ in $(seq 120); do
  joined=0
  for i in $(seq "$N"); do
    [ "$(status "$i" | jq -r .joined)" = true ] && joined=$((joined + 1))
  done
  [ "$joined" = "$N" ] && break
  sleep 0.5
done
echo "   $joined of $N joined"

t0=$(date +%s.%N)
ip netns exec "$TAG-1" "$WOW_BIN" release publish --key "$KEY" --binary "$RES/wow-node" \
  --version 99.0.0 --url http://192.168.77.254:8080/wow-node --state-dir "$RES/n1"
declare -A done_at=()
while [ "${#done_at[@]}" -lt "$N" ]; do
  now=$(date +%s.%N)
  if awk -v a="$now" -v b="$t0" 'BEGIN { exit !(a - b > 120) }'; then break; fi
  for i in $(seq "$N"); do
    [ -n "${done_at[$i]:-}" ] && continue
    s=$(status "$i") || continue
    if [ "$(jq -r '.update.running + " " + (.joined | tostring)' <<<"$s")" = "99.0.0 true" ]; then
      done_at[$i]=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
      echo "   node $i running 99.0.0, joined: ${done_at[$i]} s after publish"
    fi
  done
  sleep 0.2
done
last=$(printf '%s\n' "${done_at[@]}" | sort -n | tail -1)
echo "== fleet update: ${#done_at[@]} of $N nodes on 99.0.0; publish to last updated: ${last:-never} s (check_secs $CHECK)"
[ "${#done_at[@]}" = "$N" ]
