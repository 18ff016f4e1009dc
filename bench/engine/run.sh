#!/usr/bin/env bash
# The engine's own overhead: 1,000, 10,000 and 50,000 members on a balancer and transport
# that do nothing; time per step transition (journal included), CPU time per transition
# (what a loaded machine does not inflate) and peak memory. Prints a table.
#
#   bench/engine/run.sh                 # about 2 minutes
#   MEMBERS="1000 10000" bench/engine/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MEMBERS=${MEMBERS:-"1000 10000 50000"}
cargo build --release -q -p ebb-engine --example engine_overhead
first=1
for n in $MEMBERS; do
  if [ -n "$first" ]; then
    ./target/release/examples/engine_overhead "$n"
    first=
  else
    ./target/release/examples/engine_overhead "$n" | tail -n 1
  fi
done
