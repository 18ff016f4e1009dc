#!/usr/bin/env bash
# The engine's own overhead: 1,000 and 10,000 members on a balancer and transport that do
# nothing; time per step transition (journal included) and peak memory. Prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p ebb-engine --example engine_overhead
for n in 1000 10000; do
  ./target/release/examples/engine_overhead "$n" | { [ "$n" = 1000 ] && cat || tail -n 1; }
done
