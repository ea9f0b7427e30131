#!/usr/bin/env bash
# dns-serve vs dnsmasq, same run, same 1,000,000 names, same dnsperf load.
#
# 1. Runs ../shared/peers/dns.sh (dnsmasq with --addn-hosts, its own
#    namespaces) and reads its figures.
# 2. Serves the same names (same generator, same query file) with the
#    dns-serve example (release build) in two namespaces joined by a veth pair,
#    and measures the same figures the same way:
#      - load: wall time from exec until the LAST name answers (dig)
#      - RSS after load and after the dnsperf run
#      - dnsperf, $DUR s unpaced (qps, mean latency), then 5 s at 2000 qps
# 3. Prints both and the ratios.
#
# Usage (root, from the project root):  dns-virt/benches/vs-dnsmasq.sh
# Env: N=1000000 Q=100000 DUR=20 CLIENTS=1 THREADS=(cores) SKIP_PEER=1 (ours only)
# Needs: iproute2 dnsmasq dnsperf dig (bind9-dnsutils), cargo. Takes a few minutes.
set -eu

N=${N:-1000000} Q=${Q:-100000} DUR=${DUR:-20} CLIENTS=${CLIENTS:-1}
THREADS=${THREADS:-$(nproc)}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/peers}
RES=${RESULTS_DIR:-/tmp/wow-peer-results}
mkdir -p "$RES"
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in ip dnsperf dig awk cargo; do command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }; done

echo "building dns-serve (release)..." >&2
(cd "$ROOT" && cargo build -q --release -p dns-virt --example dns-serve)
BIN=$ROOT/target/release/examples/dns-serve

# --- peer: dnsmasq ------------------------------------------------------------
PEER_LINE=
if [ -z "${SKIP_PEER:-}" ]; then
  echo "=== dnsmasq (../shared/peers/dns.sh) ===" >&2
  PEER_LINE=$(N=$N Q=$Q DUR=$DUR CLIENTS=$CLIENTS RESULTS_DIR=$RES bash "$PEERS/dns.sh" | tail -1) || true
  case "$PEER_LINE" in
    *dnsmasq*names=*) ;;
    *) echo "dnsmasq measurement failed (dns.sh gives dnsmasq DUR+300 s to load; on a busy machine raise DUR)" >&2
       PEER_LINE= ;;
  esac
fi
field() { printf '%s\n' "$1" | tr '\t' '\n' | awk -v k="$2" 'index($0, k)==1 {sub(k, ""); print; exit}'; }

# --- ours: dns-serve ----------------------------------------------------------
echo "=== dns-serve ===" >&2
WORK=$(mktemp -d /tmp/wow-dns-bench.XXXXXX)
S=$$
NS=wdnS$S NC=wdnC$S VS=wS$S VC=wC$S
SRV=10.95.2.1 CLI=10.95.2.2
PID=
cleanup() {
  set +e
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  sleep 0.5
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
  ip netns del "$NS" 2>/dev/null; ip netns del "$NC" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$NS"; ip netns add "$NC"
ip -n "$NS" link set lo up; ip -n "$NC" link set lo up
ip link add "$VS" netns "$NS" type veth peer name "$VC" netns "$NC"
ip -n "$NS" addr add $SRV/24 dev "$VS"; ip -n "$NS" link set "$VS" up
ip -n "$NC" addr add $CLI/24 dev "$VC"; ip -n "$NC" link set "$VC" up

# Same generators as dns.sh: identical names, addresses and queries.
awk -v n="$N" 'BEGIN{for(i=1;i<=n;i++) printf "10.%d.%d.%d h%07d.wow\n", 128+int(i/65536), int(i/256)%256, i%256, i}' >"$WORK/hosts"
awk -v n="$N" -v q="$Q" 'BEGIN{srand(42); for(k=0;k<q;k++){
  if (rand() < 0.9) printf "h%07d.wow A\n", 1+int(rand()*n);
  else printf "m%07d.wow A\n", int(rand()*10000000) }}' >"$WORK/queries"
LAST=$(printf 'h%07d.wow' "$N")
LASTIP=$(tail -1 "$WORK/hosts" | cut -d' ' -f1)
sync

t0=$(date +%s%N)
ip netns exec "$NS" "$BIN" --listen $SRV:53 --zone wow --network 10.128.0.0/12 \
  --names "$WORK/hosts" --threads "$THREADS" >"$WORK/serve.log" 2>&1 &
PID=$!
ok=
for i in $(seq 1200); do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; echo "dns-serve died" >&2; exit 1; }
  if [ "$(ip netns exec "$NC" dig +short +time=1 +tries=1 @$SRV "$LAST" A 2>/dev/null)" = "$LASTIP" ]; then ok=1; break; fi
  sleep 0.01
done
t1=$(date +%s%N)
[ -n "$ok" ] || { echo "dns-serve never answered $LAST" >&2; exit 1; }
STARTUP=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/1e9}')
rss() { awk '/^VmRSS|^VmHWM/{sub(":","",$1); printf "%s=%dMiB ", $1, $2/1024}' /proc/$PID/status; }
rss_kib() { awk '/^VmRSS/{print $2}' /proc/$PID/status; }
RSS0=$(rss); RSS0K=$(rss_kib)
NX=$(ip netns exec "$NC" dig +time=1 +tries=1 @$SRV m0000001.wow A | awk '/status:/{print $6}' | tr -d ,)
echo "startup ${STARTUP}s, $RSS0, missing name -> $NX" >&2
cat "$WORK/serve.log" >&2

PERF="$RES/dns-virt-dnsperf-$N.txt"
ip netns exec "$NC" timeout $((DUR + 30)) dnsperf -s $SRV -d "$WORK/queries" -l "$DUR" -c "$CLIENTS" >"$PERF" 2>&1
RSS1=$(rss); RSS1K=$(rss_kib)
PERF2="$RES/dns-virt-dnsperf-$N-paced2000.txt"
ip netns exec "$NC" timeout 40 dnsperf -s $SRV -d "$WORK/queries" -l 5 -Q 2000 >"$PERF2" 2>&1
LAT2=$(awk '/Average Latency/{printf "%.3f ms", $4*1000}' "$PERF2")
QPS=$(awk '/Queries per second:/{printf "%.0f", $4}' "$PERF")
LAT=$(awk '/Average Latency/{printf "%.3f ms", $4*1000}' "$PERF")
LOST=$(awk '/Queries lost:/{print $3, $4}' "$PERF")
RC=$(awk -F': *' '/Response codes/{gsub(/ +/," ",$2); print $2; exit}' "$PERF")
cat "$PERF" >&2
OURS=$(printf "%s\tdns-serve\tnames=%s\tstartup=%ss\tload: %s\tafter: %s\tqps=%s\tmean_lat=%s\tlost=%s\t%s\tmean_lat_at_2000qps=%s\t%scores\tthreads=%s" \
  "$(date +%F)" "$N" "$STARTUP" "$RSS0" "$RSS1" "$QPS" "$LAT" "$LOST" "$RC" "$LAT2" "$(nproc)" "$THREADS")
echo "$OURS" >>"$RES/dns.tsv"

# --- report -------------------------------------------------------------------
echo
[ -n "$PEER_LINE" ] && echo "$PEER_LINE"
echo "$OURS"
if [ -n "$PEER_LINE" ]; then
  P_ST=$(field "$PEER_LINE" "startup="); P_ST=${P_ST%s}
  P_QPS=$(field "$PEER_LINE" "qps=")
  P_RSS=$(field "$PEER_LINE" "after: " | sed 's/.*VmRSS=\([0-9]*\)MiB.*/\1/')
  P_LAT2=$(field "$PEER_LINE" "mean_lat_at_2000qps=" | cut -d' ' -f1)
  O_LAT2=${LAT2%% *}
  awk -v pst="$P_ST" -v ost="$STARTUP" -v pq="$P_QPS" -v oq="$QPS" -v pr="$P_RSS" -v orr="$((RSS1K / 1024))" \
      -v pl="$P_LAT2" -v ol="$O_LAT2" 'BEGIN{
    printf "\n%-28s %12s %12s %10s\n", "", "dnsmasq", "dns-serve", "ratio";
    printf "%-28s %11.2fs %11.2fs %9.1fx faster\n", "load until last name answers", pst, ost, pst/ost;
    printf "%-28s %12d %12d %9.2fx\n", "qps (unpaced dnsperf)", pq, oq, oq/pq;
    printf "%-28s %9d MiB %8d MiB %9.2fx\n", "RSS after dnsperf", pr, orr, orr/pr;
    printf "%-28s %9.3f ms %9.3f ms %9.2fx\n", "mean latency at 2000 qps", pl, ol, ol/pl;
  }'
fi
