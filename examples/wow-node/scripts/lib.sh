# Shared by bench.sh, bench-dns.sh and bench-relay.sh (sourced). Expects RES (results
# directory) and the PIDS array (processes to kill on exit).

# lease_guest NETNS DIR [IFACE]: runs ISC dhclient once on the namespace's
# IFACE (default wow0; leases and pid file in DIR) and keeps its pid for cleanup.
lease_guest() {
  local ns=$1 dir=$2 ifc=${3:-wow0}
  mkdir -p "/etc/netns/$ns"; : >"/etc/netns/$ns/resolv.conf"
  ip netns exec "$ns" timeout 30 dhclient -1 -4 -lf "$dir/dhclient.leases" -pf "$dir/dhclient.pid" "$ifc"
  for _ in $(seq 20); do [ -s "$dir/dhclient.pid" ] && break; sleep 0.1; done
  if [ -s "$dir/dhclient.pid" ]; then PIDS+=("$(cat "$dir/dhclient.pid")"); fi
}

# guest_addr NETNS [IFACE]: the IPv4 address on the namespace's IFACE (wow0).
guest_addr() {
  ip -n "$1" -4 -o addr show dev "${2:-wow0}" | awk '{print $4}' | cut -d/ -f1
}

# wait_ping NETNS ADDR: up to 15 s for a first echo reply.
wait_ping() {
  for _ in $(seq 30); do ip netns exec "$1" ping -c1 -W1 "$2" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}

# ticks PID: user+system CPU ticks of a process.
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# sysbusy: the whole machine's busy and total CPU ticks so far (/proc/stat,
# all cores; busy = user, nice, system, irq, softirq, steal).
sysbusy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat; }

# veth_pair NS_A NS_B VETH_A VETH_B ADDR_A ADDR_B: two new namespaces (lo up)
# joined by one veth pair, ADDR_A/24 and ADDR_B/24 on its ends.
veth_pair() {
  ip netns add "$1"; ip netns add "$2"
  ip -n "$1" link set lo up; ip -n "$2" link set lo up
  ip link add "$3" netns "$1" type veth peer name "$4" netns "$2"
  ip -n "$1" addr add "$5/24" dev "$3"; ip -n "$1" link set "$3" up
  ip -n "$2" addr add "$6/24" dev "$4"; ip -n "$2" link set "$4" up
}
