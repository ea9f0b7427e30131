#!/usr/bin/env bash
# Builds the wow-node Debian package: the one package a machine needs to
# join a WOW network. It holds the binary, a hardened systemd unit (a
# dedicated user, CAP_NET_ADMIN only; it starts once the node is
# configured), a default configuration (a conffile, root:wow-node 0640),
# and DHCP-client snippets that make the host's
# own network stack (ifupdown or systemd-networkd) take an address on the
# node's TAP as soon as it appears.
#
# Usage: examples/wow-node/scripts/package-deb.sh [OUT_DIR]   (default: target/debian)
# Env: BIN=path  use this wow-node binary instead of building a release one
#      ARCH=...  Debian architecture (default: dpkg --print-architecture)
#      COMPRESS=xz|gzip|zstd|none  member compression (default: xz)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
CRATE=$(cd "$HERE/.." && pwd)
ROOT=$(cd "$CRATE/../.." && pwd)
OUT=${1:-$ROOT/target/debian}
command -v dpkg-deb >/dev/null || { echo "missing dpkg-deb" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  echo "== building wow-node (release)"
  (cd "$ROOT" && cargo build --release -p wow-node 2>&1 | tail -1)
  BIN=$ROOT/target/release/wow-node
fi
VERSION=$(awk -F'"' '/^\[workspace.package\]/{w=1} w && /^version/{print $2; exit}' "$ROOT/Cargo.toml")
ARCH=${ARCH:-$(dpkg --print-architecture)}

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
P=$STAGE/wow-node
install -d "$P/DEBIAN" "$P/usr/bin" "$P/lib/systemd/system" "$P/etc/wow-node" \
  "$P/etc/network/interfaces.d" "$P/etc/systemd/network" "$P/usr/share/doc/wow-node"
install -m 0755 "$BIN" "$P/usr/bin/wow-node"
# Release builds keep debug info for profiling; the package does not need it.
strip --strip-debug "$P/usr/bin/wow-node" 2>/dev/null || true
install -m 0644 "$CRATE/dist/wow-node.service" "$P/lib/systemd/system/wow-node.service"
install -m 0644 "$CRATE/dist/wow-node-confine.service" "$P/lib/systemd/system/wow-node-confine.service"
# 0640: it may hold secrets (the TURN password). The postinst gives it to
# group wow-node (dpkg-statoverride, so upgrades keep root:wow-node 0640).
install -m 0640 "$CRATE/dist/node.toml" "$P/etc/wow-node/node.toml"
install -m 0644 "$CRATE/dist/wow0.ifupdown" "$P/etc/network/interfaces.d/wow0"
install -m 0644 "$CRATE/dist/wow0.network" "$P/etc/systemd/network/60-wow0.network"
install -m 0644 "$CRATE/README.md" "$P/usr/share/doc/wow-node/README.md"
{
  echo "Upstream-Name: wow"
  echo "License: MIT OR Apache-2.0"
  echo
  cat "$ROOT/LICENSE-MIT"
} >"$P/usr/share/doc/wow-node/copyright"
chmod 0644 "$P/usr/share/doc/wow-node/copyright"

cat >"$P/DEBIAN/control" <<CONTROL
Package: wow-node
Version: $VERSION
Architecture: $ARCH
Maintainer: wow maintainers <maintainers@wow.invalid>
Section: net
Priority: optional
Installed-Size: $(du -ks "$P" | cut -f1)
Depends: adduser | passwd
Recommends: nftables, isc-dhcp-client | systemd
Description: WOW virtual network node
 Joins this machine to a self-configuring peer-to-peer virtual IP network
 across NATs: a TAP device whose DHCP, ARP and DNS the node answers itself,
 a structured ring overlay with a DHT, NAT traversal, and end-to-end
 encryption with certificates bound to virtual addresses.
CONTROL
cat >"$P/DEBIAN/conffiles" <<'CONFFILES'
/etc/wow-node/node.toml
/etc/network/interfaces.d/wow0
/etc/systemd/network/60-wow0.network
CONFFILES
cat >"$P/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  # The node runs as its own system user, not root (the unit's User=).
  if ! getent passwd wow-node >/dev/null; then
    if command -v adduser >/dev/null; then
      adduser --system --group --quiet --home /var/lib/wow-node --no-create-home wow-node
    else
      useradd --system --user-group --home-dir /var/lib/wow-node --no-create-home \
        --shell /usr/sbin/nologin wow-node
    fi
  fi
  # The configuration may hold secrets: root:wow-node 0640, kept on upgrades.
  if ! dpkg-statoverride --list /etc/wow-node/node.toml >/dev/null 2>&1; then
    dpkg-statoverride --update --add root wow-node 0640 /etc/wow-node/node.toml
  fi
  # State written by an earlier, root-run version.
  if [ -d /var/lib/wow-node ]; then
    chown -R wow-node:wow-node /var/lib/wow-node
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    systemctl enable wow-node.service >/dev/null 2>&1 || true
    # (Re)starts only a configured node: the unit's ConditionPathExists=
    # skips the start until /var/lib/wow-node/node.pem or
    # /etc/wow-node/configured exists.
    systemctl restart wow-node.service >/dev/null 2>&1 || true
  fi
fi
exit 0
POSTINST
cat >"$P/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl disable --now wow-node.service >/dev/null 2>&1 || true
  # Its --confine rules stay (fail-closed) until `wow-node unconfine`.
  if [ "$1" = remove ]; then
    systemctl disable wow-node-confine.service >/dev/null 2>&1 || true
  fi
fi
exit 0
PRERM
cat >"$P/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  dpkg-statoverride --remove /etc/wow-node/node.toml >/dev/null 2>&1 || true
  rm -f /etc/wow-node/configured
fi
exit 0
POSTRM
chmod 0755 "$P/DEBIAN/postinst" "$P/DEBIAN/prerm" "$P/DEBIAN/postrm"

mkdir -p "$OUT"
DEB=$OUT/wow-node_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Z"${COMPRESS:-xz}" --build "$P" "$DEB" >/dev/null
echo "$DEB"
