#!/usr/bin/env bash
# The engine's overhead with the etcd state backend: one local etcd (Debian's etcd-server)
# in a temp dir, a pool of 1,000 members on a nop balancer and transport; then the same
# pool on SQLite for comparison. Prints two tables.
#
#   bench/engine/run-etcd.sh            # about a minute
#   MEMBERS=200 bench/engine/run-etcd.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MEMBERS=${MEMBERS:-1000}
cargo build --release -q -p ebb-engine --example engine_overhead
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd --name bench --data-dir "$dir/data" \
  --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "bench=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  etcdctl --endpoints "http://127.0.0.1:$port" --command-timeout=1s put /probe 1 >/dev/null 2>&1 && break
  sleep 0.1
done
# etcd's own count of the KV requests it handled (Range, Txn, ...), from its /metrics.
kv() {
  python3 - "http://127.0.0.1:$port/metrics" <<'PY'
import re, sys, urllib.request
n = {}
for line in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines():
    m = re.match(r'grpc_server_handled_total\{.*grpc_method="(\w+)".*grpc_service="etcdserverpb.KV".*\} (\S+)', line)
    if m:
        n[m.group(1)] = n.get(m.group(1), 0) + int(float(m.group(2)))
print(" ".join(f"{k}={v}" for k, v in sorted(n.items()) if v))
PY
}
echo "etcd $(etcd --version | head -n 1 | awk '{print $3}'), data dir on $(df --output=fstype "$dir" | tail -n 1)"
echo "etcd KV requests before: $(kv)"
EBB_BENCH_ETCD="http://127.0.0.1:$port" ./target/release/examples/engine_overhead "$MEMBERS"
echo "etcd KV requests after:  $(kv)   (the difference, divided by the transitions: requests per transition)"
echo "sqlite:"
./target/release/examples/engine_overhead "$MEMBERS" | tail -n 1
