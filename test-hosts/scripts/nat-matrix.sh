#!/usr/bin/env bash
# The NAT matrix for nat-traversal's hole punching, in one command (root):
# builds the punch examples and the runner, then for every pair kind runs N
# trials on fresh nftables NATs in network namespaces and prints a table
# (pair kind, target, direct/trials, median and p90 time to direct, relayed,
# failed, target met).
#
#   test-hosts/scripts/nat-matrix.sh [--trials N] [--program punch|agent]
#   test-hosts/scripts/nat-matrix.sh --program node     # two wow-nodes + bootstrap
#                                    [--only TEXT]... [--timeout SECS] [--verbose] [--list]
#
# --program punch (default): examples/punch.rs, with the rendezvous relay as
# fallback; time_ms runs from the peer's offer to the first frame.
# --program agent: examples/punch_agent.rs (the library's Agent, no relay);
# time_ms runs from the process start. Exit 1 when a row misses its target.
set -euo pipefail
cd "$(dirname "$0")/../.."
program=punch
args=()
while (($#)); do
  case "$1" in
    --program) program=$2; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cargo build -q -p nat-traversal --example punch --example punch_agent
cargo build -q -p wow-test-hosts --bin nat-matrix
[ "$program" = node ] && cargo build -q -p wow-node
target=${CARGO_TARGET_DIR:-target}
case "$program" in
  punch) bin=$target/debug/examples/punch ;;
  agent) bin=$target/debug/examples/punch_agent ;;
  node) bin=$target/debug/wow-node ;;
  *) echo "--program: punch, agent or node" >&2; exit 2 ;;
esac
# The runner cleans up after itself; if it is killed, this removes what it
# left (namespaces, their processes, scratch files).
source test-hosts/scripts/cleanup.sh
run_and_clean "$target/debug/nat-matrix" --bin "$bin" "${args[@]}"
