#!/usr/bin/env bash
# The node outside the machine it serves (the WOW paper's Fig. 2): wow-node
# runs on the host, and its TAP is bridged to the guest's interface (a VM's
# tap/vnet, or a container's veth), so that root inside the guest holds no
# route, no address and no firewall of the host that it could change.
#
# Usage (root, on the host, after `wow-node up` created the TAP):
#   host-mode.sh up   TAP BRIDGE PORT...   # bridge the TAP with the guest's port(s)
#   host-mode.sh down BRIDGE               # remove the bridge and its guard
#
# What `up` does:
#   - BRIDGE (created if missing) holds the TAP and the guests' ports and
#     nothing else; it and its ports carry no address and no IPv6;
#   - the host neither forwards what arrives on BRIDGE nor delivers it to
#     its own stack: sysctl net.ipv4.conf.BRIDGE.forwarding=0, and an
#     nftables table `inet wow_host_BRIDGE` dropping BRIDGE's input and any
#     forwarding out of it, even with ip_forward on for other reasons and
#     even for a guest that learnt the bridge's MAC address.
# The guest's only way out is the node: DHCP, DNS, ARP and the overlay.
set -eu

usage() { sed -n '7,9p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1; shift

no_ipv6() { sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1" 2>/dev/null || true; }

case $cmd in
up)
  [ $# -ge 3 ] || usage
  tap=$1 br=$2; shift 2
  ip link show "$br" >/dev/null 2>&1 || ip link add "$br" type bridge
  no_ipv6 "$br"
  ip addr flush dev "$br"
  sysctl -qw "net.ipv4.conf.$br.forwarding=0"
  nft -f - <<EOF
table inet wow_host_$br
delete table inet wow_host_$br
table inet wow_host_$br {
  chain input {
    type filter hook input priority -300; policy accept;
    iifname "$br" drop
  }
  chain forward {
    type filter hook forward priority -300; policy accept;
    iifname "$br" oifname != "$br" drop
    oifname "$br" iifname != "$br" drop
  }
}
EOF
  for port in "$tap" "$@"; do
    no_ipv6 "$port"
    ip addr flush dev "$port"
    ip link set "$port" master "$br"
    ip link set "$port" up
  done
  ip link set "$br" up
  ;;
down)
  br=$1
  nft delete table inet "wow_host_$br" 2>/dev/null || true
  ip link del "$br" 2>/dev/null || true
  ;;
*) usage ;;
esac
