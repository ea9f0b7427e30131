#!/usr/bin/env bash
# Simulator speed at scale: 10,000 nodes joined and 100,000 routes, then
# (optionally) 100,000 nodes. Prints the example's JSON figures.
# Usage: overlay-core/scripts/sim-speed.sh [NODES...]   (default: 10000)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p overlay-core --example overlay-sim
for n in "${@:-10000}"; do
  echo "--- $n nodes"
  /usr/bin/time -f "max RSS %M KiB, %e s wall, %U s user" \
    target/release/examples/overlay-sim --nodes "$n" --seed 1 --duration 10 --settle 30 \
    --routes 100000 --keys 1000 --json
done
