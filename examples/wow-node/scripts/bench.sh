#!/usr/bin/env bash
# Data-plane benchmark, in one go: iperf3 TCP throughput (1 and 4 streams)
# and ping RTT between two network namespaces joined by one veth pair,
#   - over the raw veth (the limit) and the peers (wireguard-go, nebula, …)
#     through ../../../../shared/peers/dataplane.sh, in this same run;
#   - over wow-node (release build, encrypted with ipsec-sa: both nodes are
#     certified by a throw-away CA), guest addresses from dhclient.
# Prints every figure, the ratio of wow-node to the best peer, each node's
# idle RSS and the nodes' CPU per Gbit/s.
#
# Usage (root): examples/wow-node/scripts/bench.sh [modes...]
#   default modes: raw wg nebula   (peers, see dataplane.sh; missing peers are skipped;
#     without dataplane.sh, raw is measured over this script's own veth pair)
#   host: also measure wow-node in host mode (the node outside the machine it
#     serves: each node's TAP bridged by host-mode.sh to a veth into a separate
#     guest namespace), after the usual in-guest run with the same nodes' configs
#   fw: after the usual run (no rules), run again with FIREWALL rules (default
#     50) in both nodes; ROUNDS=N (default 1) alternates N such pairs; prints
#     each round's ratios with/without (throughput, and the nodes' CPU per
#     Gbit/s, which moves less with the machine's load) and their medians
# Each wow-node line also gives the machine's busy share during the run (all
# cores): what is left idle bounds what more threads could add.
# Env: DUR=10 (seconds per iperf3 run), INSECURE=1 (wow-node without SAs),
#      SHORT=1 (DUR=2: a quick check that the script works),
#      PEERS_DIR=path (where dataplane.sh is; default ../shared/peers),
#      WOW_BIN=path (use this wow-node binary instead of building one),
#      MTU=N (guest MTU override, e.g. 8192: datagrams are IP-fragmented on the
#      1500-byte veth; default: derived from the underlay, 1384),
#      FIREWALL=N (N >= 2 [[firewall.inbound]] rules in both nodes' configs:
#      N-2 that match nothing here, then icmp and tcp/5201, so every new flow
#      walks them all; compare with FIREWALL unset for the firewall's cost)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PEERS=${PEERS_DIR:-$ROOT/../shared/peers}
if [ -n "${SHORT:-}" ]; then DUR=${DUR:-2}; fi
DUR=${DUR:-10}
MODES=("$@"); [ ${#MODES[@]} -gt 0 ] || MODES=(raw wg nebula)
WOW_MODES=(guest) PEER_MODES=()
for m in "${MODES[@]}"; do
  case $m in
    host|fw) WOW_MODES+=("$m") ;;
    *) PEER_MODES+=("$m") ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in ip iperf3 jq dhclient ping; do command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }; done

if [ -n "${WOW_BIN:-}" ]; then
  BIN=$WOW_BIN   # a prebuilt binary, e.g. an earlier revision for a before/after run
  echo "== wow-node: $BIN"
else
  echo "== building wow-node (release)"
  (cd "$ROOT" && cargo build --release -p wow-node 2>&1 | tail -1)
  BIN=$ROOT/target/release/wow-node
fi
# shellcheck source=lib.sh
. "$HERE/lib.sh"

RES=$(mktemp -d /tmp/wow-bench.XXXXXX)
S=$$
NA=wbA$S NB=wbB$S VA=wvA$S VB=wvB$S GA=wgA$S GB=wgB$S
UA=10.99.0.1 UB=10.99.0.2
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for n in "$NA" "$NB" "$GA" "$GB"; do ip netns del "$n" 2>/dev/null; rm -rf "/etc/netns/$n"; done
  rm -rf "$RES"
}
trap cleanup EXIT INT TERM

: >"$RES/peers.txt"
RAW_HERE=0
if [ ${#PEER_MODES[@]} -gt 0 ]; then
  if [ -f "$PEERS/dataplane.sh" ]; then
    echo "== peers (dataplane.sh ${PEER_MODES[*]}, DUR=$DUR)"
    RESULTS_DIR=$RES DUR=$DUR bash "$PEERS/dataplane.sh" "${PEER_MODES[@]}" | tee "$RES/peers.txt" || true
  else
    echo "== no $PEERS/dataplane.sh: peers skipped; raw veth measured over this script's veth pair"
    [[ " ${PEER_MODES[*]} " == *" raw "* ]] && RAW_HERE=1
  fi
fi

echo "== wow-node"
veth_pair "$NA" "$NB" "$VA" "$VB" $UA $UB

# iperf_line LABEL MODE P JSON B0 T0: one line as dataplane.sh writes them
# (date, mode, P, Mbit/s, retransmits, machine busy %) from a finished run
# and the sysbusy figures taken before it.
iperf_line() {
  local b1 t1 bps
  read -r b1 t1 < <(sysbusy)
  bps=$(jq '.end.sum_received.bits_per_second' "$4")
  printf "%s\t%s\tP=%s\t%.0f Mbit/s\tretr=%s\tmachine_busy=%s%%\n" "$(date +%F)" "$2" "$3" \
    "$(awk -v b="$bps" 'BEGIN{print b/1e6}')" "$(jq '.end.sum_sent.retransmits // 0' "$4")" \
    "$(awk -v b=$((b1 - $5)) -v t=$((t1 - $6)) 'BEGIN{printf "%.0f", t ? 100*b/t : 0}')"
}
if [ $RAW_HERE = 1 ]; then
  ip netns exec "$NB" iperf3 -s -B $UB >/dev/null 2>&1 & PIDS+=($!); RAWSRV=$!
  sleep 0.5
  for P in 1 4; do
    read -r b0 t0 < <(sysbusy)
    ip netns exec "$NA" timeout $((DUR + 30)) iperf3 -c $UB -t "$DUR" -P $P -J >"$RES/raw-P$P.json"
    iperf_line raw raw $P "$RES/raw-P$P.json" "$b0" "$t0" | tee -a "$RES/peers.txt"
  done
  kill $RAWSRV 2>/dev/null || true
fi

SEC=""
if [ "${INSECURE:-0}" != 1 ]; then
  "$BIN" ca init --dir "$RES/ca" >/dev/null
  "$BIN" ca issue --dir "$RES/ca" --ip 10.128.0.11 --out "$RES/a" >/dev/null
  "$BIN" ca issue --dir "$RES/ca" --ip 10.128.0.12 --out "$RES/b" >/dev/null
  SEC=$'[security]\nca_cert = "ca.pem"\ncert = "node.pem"\nkey = "node.key"\n'
fi
TAP=""
[ -n "${MTU:-}" ] && TAP=$'[tap]\nmtu = '"$MTU"$'\n'
FW=""
FW_ONLY=0
if [[ " ${WOW_MODES[*]} " == *" fw "* ]]; then FIREWALL=${FIREWALL:-50} FW_ONLY=1; fi
if [ "${FIREWALL:-0}" -ge 2 ]; then
  for i in $(seq 1 $((FIREWALL - 2))); do
    FW+=$'[[firewall.inbound]]\nproto = "tcp"\nport = '"$((10000 + i))"$'\ngroups = ["g'"$i"$'"]\n'
  done
  FW+=$'[[firewall.inbound]]\nproto = "icmp"\n[[firewall.inbound]]\nproto = "tcp"\nport = 5201\n'
  echo "firewall: $FIREWALL inbound rules per node"
fi
for n in a b; do
  mkdir -p "$RES/$n"
  if [ $n = a ]; then listen=$UA:4000 boot='[]'; else listen=$UB:4000 boot="[\"$UA:4000\"]"; fi
  conf() {
    printf '[node]\nstate_dir = "%s"\nlisten = "%s"\nbootstrap = %s\n\n[network]\ncidr = "10.128.0.0/16"\n\n%s\n%s\n%s' \
      "$RES/$n" "$listen" "$boot" "$SEC" "$TAP" "$1"
  }
  # fw mode: the usual run has no rules, the fw run FIREWALL of them.
  if [ $FW_ONLY = 1 ]; then conf "" >"$RES/$n/node.toml"; else conf "$FW" >"$RES/$n/node.toml"; fi
  conf "$FW" >"$RES/$n/node-fw.toml"
done
rss() { awk '/VmRSS/{print $2}' /proc/$1/status; }
: >"$RES/wow.txt"

# measure_wow MODE: starts both nodes, leases the guests (guest: the node's
# own namespace on wow0; host: a separate namespace bridged to the TAP),
# measures ping and iperf3 P=1/4 into $RES/wow[-host]-P$P.json, stops them.
measure_wow() {
  local mode=$1 label=wow-node sa=$NA sb=$NB ifc=wow0 n pids_before=${#PIDS[@]} config=node.toml
  [ "$mode" = fw ] && label=wow-node-fw config=node-fw.toml
  # Another machine is the guest now: its node has no lease for it yet (the
  # in-guest run's lease, for the TAP's own MAC, would hold the address).
  [ "$mode" = host ] && rm -f "$RES/a/leases.json" "$RES/b/leases.json"
  ip netns exec "$NA" "$BIN" up --config "$RES/a/$config" >"$RES/a-$mode.log" 2>&1 & PIDS+=($!); PA=$!
  sleep 0.3
  ip netns exec "$NB" "$BIN" up --config "$RES/b/$config" >"$RES/b-$mode.log" 2>&1 & PIDS+=($!); PB=$!
  sleep 1
  if [ "$mode" = host ]; then
    label=wow-node-host sa=$GA sb=$GB ifc=eth0
    for n in A B; do
      local node=wb$n$S guest=wg$n$S
      ip netns add "$guest"; ip -n "$guest" link set lo up
      ip link add "gv$n$S" netns "$node" type veth peer name eth0 netns "$guest"
      ip netns exec "$node" bash "$HERE/host-mode.sh" up wow0 br0 "gv$n$S"
    done
  fi
  lease_guest "$sa" "$RES/a" "$ifc"
  lease_guest "$sb" "$RES/b" "$ifc"
  BADDR=$(guest_addr "$sb" "$ifc")
  echo "[$mode] guest B at $BADDR"
  wait_ping "$sa" "$BADDR" || echo "no echo reply from guest B yet"
  echo -e "[$mode] idle RSS: node A $(rss $PA) kB, node B $(rss $PB) kB" | tee -a "$RES/wow.txt"
  RTT=$(ip netns exec "$sa" ping -c 20 -i 0.05 -q "$BADDR" | awk -F/ '/rtt/{print $5}')
  RAWRTT=$(ip netns exec "$NA" ping -c 20 -i 0.05 -q "$UB" | awk -F/ '/rtt/{print $5}')
  echo -e "[$mode] ping RTT: veth ${RAWRTT} ms, $label ${RTT} ms" | tee -a "$RES/wow.txt"
  ip netns exec "$sb" iperf3 -s -B "$BADDR" >/dev/null 2>&1 & PIDS+=($!)
  local server=$!
  sleep 0.5
  for P in 1 4; do
    t0=$(( $(ticks $PA) + $(ticks $PB) ))
    read -r b0 bt0 < <(sysbusy)
    ip netns exec "$sa" timeout $((DUR + 30)) iperf3 -c "$BADDR" -t "$DUR" -P $P -J >"$RES/wow${label#wow-node}-P$P.json"
    read -r b1 bt1 < <(sysbusy)
    t1=$(( $(ticks $PA) + $(ticks $PB) ))
    bps=$(jq '.end.sum_received.bits_per_second' "$RES/wow${label#wow-node}-P$P.json")
    cpu=$(awk -v d=$((t1 - t0)) -v s="$DUR" 'BEGIN{printf "%.0f", d / s}')
    gbps=$(awk -v b="$bps" 'BEGIN{printf "%.3f", b/1e9}')
    per=$(awk -v c="$cpu" -v g="$gbps" 'BEGIN{ if (g > 0) printf "%.1f", c / g; else print "n/a"}')
    busy=$(awk -v b=$((b1 - b0)) -v t=$((bt1 - bt0)) 'BEGIN{printf "%.0f", t ? 100*b/t : 0}')
    line=$(printf "%s\tP=%s\t%.0f Mbit/s\tnodes_cpu=%s%%_of_1core\tcpu_per_Gbit/s=%s%%_of_1core\tmachine_busy=%s%%" \
      "$label" $P "$(awk -v b="$bps" 'BEGIN{print b/1e6}')" "$cpu" "$per" "$busy")
    echo "$line" | tee -a "$RES/wow.txt"
  done
  if [ "$mode" = fw ]; then
    echo "[fw] firewall of node B: $("$BIN" status --state-dir "$RES/b" --json | jq -c .firewall)" | tee -a "$RES/wow.txt"
    echo "FWRTT $RTT" >>"$RES/rtt.txt"
  elif [ "$mode" = guest ]; then
    echo "RTT $RTT" >>"$RES/rtt.txt"
  fi
  if [ "$mode" != host ]; then
    # The next mode starts the nodes afresh: stop these and their guests.
    for p in "${PIDS[@]:$pids_before}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:$pids_before}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
    sleep 0.5
  fi
}

for mode in "${WOW_MODES[@]}"; do
  if [ "$mode" = fw ]; then
    measure_wow fw
    for _ in $(seq 2 "${ROUNDS:-1}"); do measure_wow guest; measure_wow fw; done
  else
    measure_wow "$mode"
  fi
done
if [ -n "$FW" ] && [ $FW_ONLY = 0 ]; then
  echo "firewall of node B: $("$BIN" status --state-dir "$RES/b" --json | jq -c .firewall)" | tee -a "$RES/wow.txt"
fi

echo
echo "== summary (DUR=$DUR s, $(nproc) cores)"
grep -h "P=" "$RES/peers.txt" "$RES/wow.txt" | awk -F'\t' '{ w = $1 ~ /^wow-node/; n = w ? $1 : $2; p = w ? $2 : $3; r = w ? $3 : $4; printf "%-14s %-4s %s\n", n, p, r }'
for P in 1 4; do
  if [ -s "$RES/wow-fw-P$P.json" ]; then
    # Rounds in order: each wow-node line pairs with the wow-node-fw line after it.
    awk -F'\t' -v p="P=$P" -v n="$FIREWALL" '
      function median(a, k,   i, j, t) {
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
      }
      $2 != p { next }
      { split($3, m, " "); split($5, c, "="); sub("%.*", "", c[2]) }
      $1 == "wow-node" { g = m[1]; gc = c[2] }
      $1 == "wow-node-fw" && g > 0 {
        k++; tr[k] = m[1] / g; cr[k] = gc > 0 ? c[2] / gc : 0
        printf "%s round %d: without rules %.0f Mbit/s (%s%% core/Gbit/s), with %s rules %.0f Mbit/s (%s%%): throughput with/without %.3f, CPU per Gbit/s with/without %.3f\n", p, k, g, gc, n, m[1], c[2], tr[k], cr[k]
      }
      END { if (k > 1) printf "%s median of %d rounds: throughput with/without %.3f, CPU per Gbit/s with/without %.3f\n", p, k, median(tr, k), median(cr, k) }
    ' "$RES/wow.txt"
  fi
  if [ -s "$RES/wow-host-P$P.json" ]; then
    awk -v g="$(jq '.end.sum_received.bits_per_second' "$RES/wow-P$P.json")"         -v h="$(jq '.end.sum_received.bits_per_second' "$RES/wow-host-P$P.json")" -v p=$P       'BEGIN { printf "P=%s: wow-node in the guest %.0f Mbit/s, on the host (bridged) %.0f Mbit/s (host/guest = %.2f)\n", p, g / 1e6, h / 1e6, h / g }'
  fi
  wow=$(jq '.end.sum_received.bits_per_second' "$RES/wow-P$P.json")
  best=$(grep -h "P=$P" "$RES/peers.txt" | awk -F'\t' '$2 != "raw" { split($4, a, " "); if (a[1] > m) { m = a[1]; n = $2 } } END { print m + 0, n }')
  raw=$(grep -h "P=$P" "$RES/peers.txt" | awk -F'\t' '$2 == "raw" { split($4, a, " "); print a[1] + 0 }')
  set -- $best
  awk -v w="$wow" -v b="$1" -v n="${2:-none}" -v r="${raw:-0}" -v p=$P 'BEGIN {
    w /= 1e6
    printf "P=%s: wow-node %.0f Mbit/s", p, w
    if (b > 0) printf "; best peer %s %.0f Mbit/s; ratio wow/best = %.2f", n, b, w / b
    if (r > 0) printf "; raw veth %.0f Mbit/s (wow = %.1f%% of it)", r, 100 * w / r
    printf "\n" }'
done
if [ -s "$RES/rtt.txt" ] && grep -q FWRTT "$RES/rtt.txt"; then
  awk '$1 == "RTT" { r = r " " $2 } $1 == "FWRTT" { f = f " " $2 } END { printf "ping RTT (ms, each round): without rules%s; with rules%s\n", r, f }' "$RES/rtt.txt"
fi
