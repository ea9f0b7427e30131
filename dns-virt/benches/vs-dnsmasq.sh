#!/usr/bin/env bash
# dns-serve vs dnsmasq, same run, same namespaces, same names, same dnsperf load.
#
# Two namespaces joined by a veth pair; the server runs in one, dnsperf in the
# other. dnsmasq (configured as ../shared/peers/dns.sh does: --addn-hosts,
# cache-size=10000) serves the N names first, then the dns-serve example
# (release build) serves the same names, and each is measured the same way:
#   - load: wall time from exec until the LAST name answers (dig)
#   - RSS after load and after the dnsperf run
#   - dnsperf, $DUR s unpaced (qps, mean latency), then 5 s at 2000 qps
#   - server CPU seconds during the unpaced run (utime+stime of the whole
#     process from /proc/PID/stat, before and after) and answers (dnsperf's
#     "queries completed") per server CPU-second. On a small machine dnsperf
#     takes a core, so qps is bound by the client; answers per CPU-second say
#     what each answer costs the server, and depend less on other load.
# Prints both servers' lines, a table and the ratios, with the load average
# before and after.
#
# Usage (root, from the project root):  dns-virt/benches/vs-dnsmasq.sh
# Env: N=1000000 Q=100000 DUR=20 CLIENTS=1 THREADS=(cores) READERS=1 (dns-serve's
#      --threads/--readers) SKIP_PEER=1 (ours only) DNS_SERVE=path (a
#      dns-serve binary to measure instead of building this tree's)
#      DNS_SERVE_ARGS (more dns-serve flags, such as --no-gso)
#      SHORT=1: N=10000 Q=10000 DUR=3, no paced run (a quick check that the
#      script and both servers work).
# Needs: iproute2 dnsmasq dnsperf dig (bind9-dnsutils), cargo. Takes a few
# minutes (dnsmasq needs one to four of them to load 1M names).
set -eu

if [ -n "${SHORT:-}" ]; then N=${N:-10000} Q=${Q:-10000} DUR=${DUR:-3}; fi
N=${N:-1000000} Q=${Q:-100000} DUR=${DUR:-20} CLIENTS=${CLIENTS:-1}
THREADS=${THREADS:-$(nproc)} READERS=${READERS:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RES=${RESULTS_DIR:-/tmp/wow-peer-results}
mkdir -p "$RES"
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in ip dnsperf dig awk ${DNS_SERVE:-cargo}; do command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }; done
[ -n "${SKIP_PEER:-}" ] || command -v dnsmasq >/dev/null || { echo "missing dnsmasq" >&2; exit 1; }
TCK=$(getconf CLK_TCK)

if [ -n "${DNS_SERVE:-}" ]; then
  BIN=$DNS_SERVE
else
  echo "building dns-serve (release)..." >&2
  (cd "$ROOT" && cargo build -q --release -p dns-virt --example dns-serve)
  BIN=$ROOT/target/release/examples/dns-serve
fi

WORK=$(mktemp -d /tmp/wow-dns-bench.XXXXXX); chmod 755 "$WORK"   # dnsmasq drops to user dnsmasq
S=$$
NS=wdnS$S NC=wdnC$S VS=wS$S VC=wC$S
SRV=10.95.2.1 CLI=10.95.2.2
PID=
stop() {
  [ -n "$PID" ] || return 0
  kill "$PID" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}
cleanup() {
  set +e
  stop
  ip netns del "$NS" 2>/dev/null; ip netns del "$NC" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$NS"; ip netns add "$NC"
ip -n "$NS" link set lo up; ip -n "$NC" link set lo up
ip link add "$VS" netns "$NS" type veth peer name "$VC" netns "$NC"
ip -n "$NS" addr add $SRV/24 dev "$VS"; ip -n "$NS" link set "$VS" up
ip -n "$NC" addr add $CLI/24 dev "$VC"; ip -n "$NC" link set "$VC" up

# Same generators as ../shared/peers/dns.sh: identical names, addresses and
# queries (90 % present, 10 % missing: NXDOMAIN).
echo "generating $N hosts and $Q queries..." >&2
awk -v n="$N" 'BEGIN{for(i=1;i<=n;i++) printf "10.%d.%d.%d h%07d.wow\n", 128+int(i/65536), int(i/256)%256, i%256, i}' >"$WORK/hosts"
chmod 644 "$WORK/hosts"
awk -v n="$N" -v q="$Q" 'BEGIN{srand(42); for(k=0;k<q;k++){
  if (rand() < 0.9) printf "h%07d.wow A\n", 1+int(rand()*n);
  else printf "m%07d.wow A\n", int(rand()*10000000) }}' >"$WORK/queries"
LAST=$(printf 'h%07d.wow' "$N")
LASTIP=$(tail -1 "$WORK/hosts" | cut -d' ' -f1)
cat >"$WORK/dnsmasq.conf" <<EOF
port=53
listen-address=$SRV
bind-interfaces
no-resolv
no-hosts
addn-hosts=$WORK/hosts
local=/wow/
domain-needed
cache-size=10000
log-facility=-
EOF
sync

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
rss() { awk '/^VmRSS|^VmHWM/{sub(":","",$1); printf "%s=%dMiB ", $1, $2/1024}' "/proc/$PID/status"; }

# measure NAME CMD... >FILE: starts CMD in the server namespace (it must exec
# the server itself, so that $! is the server's PID), measures it, stops it
# and prints one tab-separated line. Runs in this shell (not $(...)), so that
# the exit trap sees $PID.
measure() {
  local name=$1; shift
  echo "=== $name ===" >&2
  local t0 t1 ok= startup rss0 rss1 nx c0 c1 cpu perf perf2 qps lat lost rc done_ lat2 aps
  t0=$(date +%s%N)
  ip netns exec "$NS" "$@" >"$WORK/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 30000); do   # dnsmasq takes minutes for 1M names
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; echo "$name died" >&2; return 1; }
    if [ "$(ip netns exec "$NC" dig +short +time=1 +tries=1 @$SRV "$LAST" A 2>/dev/null)" = "$LASTIP" ]; then ok=1; break; fi
    sleep 0.01
  done
  t1=$(date +%s%N)
  [ -n "$ok" ] || { echo "$name never answered $LAST" >&2; return 1; }
  startup=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/1e9}')
  rss0=$(rss)
  nx=$(ip netns exec "$NC" dig +time=1 +tries=1 @$SRV m0000001.wow A | awk '/status:/{print $6}' | tr -d ,)
  echo "startup ${startup}s, $rss0, missing name -> $nx" >&2
  grep -iE "read $WORK/hosts|loaded" "$WORK/$name.log" >&2 || true

  perf="$RES/$name-dnsperf-$N.txt"
  c0=$(cpu_ticks)
  ip netns exec "$NC" timeout $((DUR + 30)) dnsperf -s $SRV -d "$WORK/queries" -l "$DUR" -c "$CLIENTS" >"$perf" 2>&1
  c1=$(cpu_ticks)
  rss1=$(rss)
  lat2=skipped
  if [ -z "${SHORT:-}" ]; then
    perf2="$RES/$name-dnsperf-$N-paced2000.txt"
    ip netns exec "$NC" timeout 40 dnsperf -s $SRV -d "$WORK/queries" -l 5 -Q 2000 >"$perf2" 2>&1
    lat2=$(awk '/Average Latency/{printf "%.3f ms", $4*1000}' "$perf2")
  fi
  stop
  cat "$perf" >&2
  qps=$(awk '/Queries per second:/{printf "%.0f", $4}' "$perf")
  lat=$(awk '/Average Latency/{printf "%.3f ms", $4*1000}' "$perf")
  lost=$(awk '/Queries lost:/{print $3, $4}' "$perf")
  done_=$(awk '/Queries completed:/{print $3}' "$perf")
  rc=$(awk -F': *' '/Response codes/{gsub(/ +/," ",$2); print $2; exit}' "$perf")
  cpu=$(awk -v a="$c0" -v b="$c1" -v t="$TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
  aps=$(awk -v n="$done_" -v c="$cpu" 'BEGIN{printf "%.0f", (c > 0 ? n / c : 0)}')
  printf "%s\t%s\tnames=%s\tstartup=%ss\tload: %s\tafter: %s\tqps=%s\tanswers=%s\tcpu=%ss\tanswers_per_cpu_s=%s\tmean_lat=%s\tlost=%s\t%s\tmean_lat_at_2000qps=%s\t%scores\n" \
    "$(date +%F)" "$name" "$N" "$startup" "$rss0" "$rss1" "$qps" "$done_" "$cpu" "$aps" "$lat" "$lost" "$rc" "$lat2" "$(nproc)"
}

LOAD0=$(uptime)
PEER_LINE=
if [ -z "${SKIP_PEER:-}" ]; then
  if measure dnsmasq dnsmasq -k -C "$WORK/dnsmasq.conf" >"$WORK/dnsmasq.line"; then
    PEER_LINE=$(cat "$WORK/dnsmasq.line")
  else
    stop; echo "dnsmasq measurement failed" >&2
  fi
fi
measure dns-serve "$BIN" --listen $SRV:53 --zone wow --network 10.128.0.0/12 \
  --names "$WORK/hosts" --threads "$THREADS" --readers "$READERS" ${DNS_SERVE_ARGS:-} >"$WORK/ours.line"
OURS="$(cat "$WORK/ours.line")	threads=$THREADS	readers=$READERS	args=${DNS_SERVE_ARGS:-}"
LOAD1=$(uptime)
[ -n "$PEER_LINE" ] && echo "$PEER_LINE" >>"$RES/dns.tsv"
echo "$OURS" >>"$RES/dns.tsv"

# --- report -------------------------------------------------------------------
field() { printf '%s\n' "$1" | tr '\t' '\n' | awk -v k="$2" 'index($0, k)==1 {sub(k, ""); print; exit}'; }
echo
echo "load before: $LOAD0"
echo "load after:  $LOAD1"
[ -n "$PEER_LINE" ] && echo "$PEER_LINE"
echo "$OURS"
if [ -n "$PEER_LINE" ]; then
  row() {
    local line=$1
    local st qps cpu aps rss lat2
    st=$(field "$line" "startup="); st=${st%s}
    qps=$(field "$line" "qps=")
    cpu=$(field "$line" "cpu="); cpu=${cpu%s}
    aps=$(field "$line" "answers_per_cpu_s=")
    rss=$(field "$line" "after: " | sed 's/.*VmRSS=\([0-9]*\)MiB.*/\1/')
    lat2=$(field "$line" "mean_lat_at_2000qps=" | cut -d' ' -f1)
    echo "$st $qps $cpu $aps $rss ${lat2:-0}"
  }
  read -r pst pq pc pa pr pl <<<"$(row "$PEER_LINE")"
  read -r ost oq oc oa orr ol <<<"$(row "$OURS")"
  awk -v pst="$pst" -v ost="$ost" -v pq="$pq" -v oq="$oq" -v pc="$pc" -v oc="$oc" \
      -v pa="$pa" -v oa="$oa" -v pr="$pr" -v orr="$orr" -v pl="$pl" -v ol="$ol" -v dur="$DUR" 'BEGIN{
    printf "\n%-32s %12s %12s %10s\n", "", "dnsmasq", "dns-serve", "ratio";
    printf "%-32s %11.2fs %11.2fs %9.1fx faster\n", "load until last name answers", pst, ost, (ost > 0 ? pst/ost : 0);
    printf "%-32s %12d %12d %9.2fx\n", "qps (unpaced dnsperf)", pq, oq, (pq > 0 ? oq/pq : 0);
    printf "%-32s %11.2fs %11.2fs %9.2fx less\n", "server CPU in " dur " s of dnsperf", pc, oc, (oc > 0 ? pc/oc : 0);
    printf "%-32s %12d %12d %9.2fx\n", "answers per server CPU-second", pa, oa, (pa > 0 ? oa/pa : 0);
    printf "%-32s %9d MiB %8d MiB %9.2fx\n", "RSS after dnsperf", pr, orr, (pr > 0 ? orr/pr : 0);
    if (pl + 0 > 0) printf "%-32s %9.3f ms %9.3f ms %9.2fx\n", "mean latency at 2000 qps", pl, ol, ol/pl;
  }'
fi
