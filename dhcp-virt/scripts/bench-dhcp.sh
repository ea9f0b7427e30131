#!/usr/bin/env bash
# DISCOVER -> bound wall time of real DHCP clients, dhcp-tap vs dnsmasq, in
# the same run.
#
# Every server gets the same clients, invoked the same way as the peer
# script ../../../shared/peers/dhcp.sh does, with minimal hooks that only
# add the address:
#   dhclient -1 -v            timed until its parent exits (it forks to the
#                             background once bound)
#   busybox udhcpc -n -q -f   quits once bound
# Servers:
#   dnsmasq 2.90 (no-ping, as in anchors.md) on one end of a veth pair, the
#     client on the other end, each in its own namespace;
#   dhcp-tap (release build, state file on disk) attached to a TAP in a
#     namespace, the client on the TAP's kernel side; twice: as shipped
#     (durable: the lease is on disk before the ACK leaves; costs one journal
#     append and one fdatasync per DISCOVER->ACK) and with --deferred-write
#     (answers, then appends to the journal with fdatasync, as dnsmasq
#     answers before writing its lease file).
# Trials alternate between the two servers. Variants:
#   new   - fresh random MAC every trial
#   known - same MAC every trial, client lease file removed (full
#           DISCOVER/OFFER/REQUEST/ACK; the server remembers the client)
# Prints one line per server and variant (median and all trials) and the
# ratios dhcp-tap / dnsmasq (below 1 means dhcp-tap is faster).
#
# Usage (root, from anywhere): dhcp-virt/scripts/bench-dhcp.sh
# Env: TRIALS (default 7), CLIENTS (default "dhclient udhcpc"),
#      DHCP_TAP_BIN (a dhcp-tap binary to use instead of building one, e.g.
#      an older build to compare).
# Needs: iproute2 dnsmasq isc-dhcp-client busybox.
set -eu

TRIALS=${TRIALS:-7}
CLIENTS=${CLIENTS:-dhclient udhcpc}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for c in ip dnsmasq dhclient busybox; do
  command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }
done

if [ -n "${DHCP_TAP_BIN:-}" ]; then
  BIN=$DHCP_TAP_BIN
else
  (cd "$ROOT" && cargo build --release -q -p dhcp-virt --example dhcp-tap)
  BIN=$ROOT/target/release/examples/dhcp-tap
fi

WORK=$(mktemp -d /tmp/bench-dhcp.XXXXXX); chmod 755 "$WORK"
S=$$
NSD=bdhD$S NCD=bdhC$S NST=bdhT$S NSW=bdhW$S VS=bvS$S VC=bvC$S TAP=btap$S TAPW=btapw$S
PIDS=()

cleanup() {
  set +e
  [ -f "$WORK/dhclient.pid" ] && kill "$(cat "$WORK/dhclient.pid")" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  # Any client left behind (e.g. one that forked before its pid file
  # was read) lives in one of our namespaces.
  for n in "$NSD" "$NCD" "$NST" "$NSW"; do
    ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null
  done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for n in "$NSD" "$NCD" "$NST" "$NSW"; do ip netns del "$n" 2>/dev/null; rm -rf "/etc/netns/$n"; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

for n in "$NSD" "$NCD" "$NST" "$NSW"; do
  ip netns add "$n"; ip -n "$n" link set lo up
  # Whatever a client script does, it never writes the host's resolv.conf.
  mkdir -p "/etc/netns/$n"; echo "# bench" >"/etc/netns/$n/resolv.conf"
done

# dnsmasq side: veth pair between a server and a client namespace.
ip link add "$VS" netns "$NSD" type veth peer name "$VC" netns "$NCD"
ip -n "$NSD" addr add 10.95.2.1/24 dev "$VS"; ip -n "$NSD" link set "$VS" up
ip -n "$NCD" link set "$VC" up
cat >"$WORK/dnsmasq.conf" <<EOF
port=0
interface=$VS
bind-interfaces
dhcp-range=10.95.2.100,10.95.2.250,255.255.255.0,1h
dhcp-leasefile=$WORK/dnsmasq.leases
dhcp-authoritative
no-ping
log-facility=-
EOF
ip netns exec "$NSD" dnsmasq -k -C "$WORK/dnsmasq.conf" >"$WORK/dnsmasq.log" 2>&1 &
PIDS+=($!)

# dhcp-tap side: the TAP's kernel side is the client's interface.
start_tap() { # ns tap state extra...
  local ns=$1 tap=$2 state=$3; shift 3
  ip -n "$ns" tuntap add dev "$tap" mode tap
  ip netns exec "$ns" "$BIN" --tap "$tap" --network 10.96.2.0/24 --gateway 10.96.2.1 \
    --dns 10.96.2.1 --lease-secs 3600 --pool 10.96.2.100-10.96.2.250 \
    --state "$WORK/$state" "$@" >"$WORK/$state.log" 2>&1 &
  PIDS+=($!)
  sleep 0.5
  grep -q serving "$WORK/$state.log" || { cat "$WORK/$state.log" >&2; exit 1; }
}
start_tap "$NST" "$TAP" dhcp-tap.json --deferred-write
start_tap "$NSW" "$TAPW" dhcp-tap-wt.json

cat >"$WORK/hook" <<'EOF'
#!/bin/sh
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT) ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
esac
exit 0
EOF
cat >"$WORK/udhcpc-hook" <<'EOF'
#!/bin/sh
case "$1" in
  bound|renew) ip addr add "$ip/${mask:-24}" dev "$interface" ;;
esac
exit 0
EOF
chmod +x "$WORK/hook" "$WORK/udhcpc-hook"

now() { date +%s%N; }

reset_client() { # ns dev variant
  [ -f "$WORK/dhclient.pid" ] && { kill "$(cat "$WORK/dhclient.pid")" 2>/dev/null || true; rm -f "$WORK/dhclient.pid"; sleep 0.2; }
  rm -f "$WORK/dhclient.leases"
  ip -n "$1" addr flush dev "$2"
  if [ "$3" = new ]; then
    ip -n "$1" link set "$2" down
    ip -n "$1" link set "$2" address "$(printf '02:00:%02x:%02x:%02x:%02x' $((RANDOM%256)) $((RANDOM%256)) $((RANDOM%256)) $((RANDOM%256)))"
  fi
  ip -n "$1" link set "$2" up
  sleep 0.5
}

trial() { # client ns dev variant -> seconds
  local t0 t1
  reset_client "$2" "$3" "$4"
  t0=$(now)
  case $1 in
    dhclient) ip netns exec "$2" timeout 60 dhclient -1 -v -sf "$WORK/hook" \
                -lf "$WORK/dhclient.leases" -pf "$WORK/dhclient.pid" "$3" >>"$WORK/client.log" 2>&1 ;;
    udhcpc)   ip netns exec "$2" timeout 60 busybox udhcpc -n -q -f -i "$3" \
                -s "$WORK/udhcpc-hook" >>"$WORK/client.log" 2>&1 ;;
  esac
  t1=$(now)
  ip -n "$2" -4 addr show dev "$3" | grep -q 'inet 10\.9[56]\.2\.' \
    || { echo "$1: no address on $3" >&2; tail -20 "$WORK/client.log" >&2; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f\n", (b-a)/1e9}'
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Warm-up, not counted.
for c in $CLIENTS; do
  trial "$c" "$NCD" "$VC" known >/dev/null; trial "$c" "$NST" "$TAP" known >/dev/null
  trial "$c" "$NSW" "$TAPW" known >/dev/null
done

printf 'client\tvariant\tserver\tmedian_s\ttrials_s\n'
for c in $CLIENTS; do
  for variant in new known; do
    d=(); t=(); w=()
    for _ in $(seq "$TRIALS"); do
      d+=("$(trial "$c" "$NCD" "$VC" "$variant")")
      t+=("$(trial "$c" "$NST" "$TAP" "$variant")")
      w+=("$(trial "$c" "$NSW" "$TAPW" "$variant")")
    done
    md=$(median "${d[@]}"); mt=$(median "${t[@]}"); mw=$(median "${w[@]}")
    printf '%s\t%s\tdnsmasq\t%s\t%s\n' "$c" "$variant" "$md" "${d[*]}"
    printf '%s\t%s\tdhcp-tap --deferred-write\t%s\t%s\n' "$c" "$variant" "$mt" "${t[*]}"
    printf '%s\t%s\tdhcp-tap (durable, default)\t%s\t%s\n' "$c" "$variant" "$mw" "${w[*]}"
    awk -v a="$mt" -v w="$mw" -v b="$md" -v c="$c" -v v="$variant" \
      'BEGIN{printf "ratio\t%s %s\tdeferred/dnsmasq %.2f\tdurable/dnsmasq %.2f\n", c, v, a/b, w/b}'
  done
done
