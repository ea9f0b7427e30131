#!/usr/bin/env bash
# A hundred real wow-node processes under churn, in one command (root):
# builds the node (debug; WOW_RELEASE=1 for release) and the runner, then
# runs test-hosts/src/bin/crowd.rs: N namespaces on one bridge, each with a
# node, its TAP and a dhclient guest; nodes started in waves; the ring
# judged from every node's `status --json`; churn (SIGKILL and restart of a
# random share every PERIOD s for DURATION s), optionally a partition;
# pings by address and by name and DNS/DHT lookups between random guests;
# CPU and peak RSS of every node. Progress on stderr, a table on stdout.
#
#   test-hosts/scripts/hundred.sh [--nodes 100] [--wave 10] [--churn 0.1]
#        [--period 20] [--duration 300] [--partition SECS] [--probes 4]
#        [--final-probes 60] [--grace 10] [--seed N] [--log RUST_LOG]
#        [--churn-bootstrap] [--advertise] [--out DIR] [--json]
#
# Exit 1 when the ring did not converge (after joining, churn or partition).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
if [[ "${WOW_RELEASE:-0}" == 1 ]]; then
  cargo build -q --release -p wow-node
  bin=$target/release/wow-node
else
  cargo build -q -p wow-node
  bin=$target/debug/wow-node
fi
cargo build -q -p wow-test-hosts --bin crowd
# The runner cleans up after itself; if it is killed, this removes what it
# left (namespaces, their processes, scratch files).
source test-hosts/scripts/cleanup.sh
run_and_clean "$target/debug/crowd" --bin "$bin" "$@"
