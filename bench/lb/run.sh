#!/usr/bin/env bash
# Benchmark: ebb's built-in balancer vs HAProxy (mode tcp), same backends, same wrk load.
#
#   bench/lb/run.sh            # from the workspace root; ~2 minutes
#   DURATION=5s ROUNDS=1 CONNS=50 bench/lb/run.sh
#
# Two modes: HTTP keep-alive, and one request per connection (Connection: close).
# Each (mode, balancer) pair runs ROUNDS times, interleaved (runs vary by +-30% on a
# shared 2-core machine); the table shows the mean.
# Prints requests/s, p50 and p99 latency and the ratio ebb/haproxy.
set -euo pipefail

DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
EBB_PORT=${EBB_PORT:-18080}
HAP_PORT=${HAP_PORT:-18090}
CTL_PORT=${CTL_PORT:-18099}
B1=${B1:-18081}
B2=${B2:-18082}

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

need() { # command, Debian package
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
        echo "installing $2 ..." >&2
        if [ "$(id -u)" = 0 ]; then apt-get install -y "$2" >&2; else sudo apt-get install -y "$2" >&2; fi
    fi
}
need wrk wrk
need haproxy haproxy
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

echo "building (release) ..." >&2
cargo build --release -q -p ebb-lb --example lb_serve --example bench_backend
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-$root/target}/release/examples"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin/bench_backend" "127.0.0.1:$B1" "127.0.0.1:$B2" 2>"$work/backend.log" &
pids+=($!)

cat >"$work/pool.toml" <<TOML
[pool]
name = "bench"

[balancer]
driver = "builtin"
listen = "127.0.0.1:$EBB_PORT"
control = "http://127.0.0.1:$CTL_PORT"
state_file = "lb-state.json"
balance = "round-robin"
connect_timeout = "2s"
idle_timeout = "5m"

[balancer.health]
kind = "tcp"
interval = "1s"

[[member]]
name = "b1"
address = "127.0.0.1:$B1"

[[member]]
name = "b2"
address = "127.0.0.1:$B2"
TOML
EBB_LOG=warn "$bin/lb_serve" "$work/pool.toml" >"$work/ebb.out" 2>"$work/ebb.log" &
pids+=($!)

cat >"$work/haproxy.cfg" <<CFG
global
    maxconn 4000
    nbthread 2
defaults
    mode tcp
    timeout connect 2s
    timeout client 5m
    timeout server 5m
frontend fe
    bind 127.0.0.1:$HAP_PORT
    default_backend be
backend be
    balance roundrobin
    server b1 127.0.0.1:$B1 check inter 1s
    server b2 127.0.0.1:$B2 check inter 1s
CFG
"$HAPROXY" -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

# Wait for all three to listen.
for port in $B1 $B2 $EBB_PORT $HAP_PORT; do
    ok=
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ok=1; break; fi
        sleep 0.1
    done
    if [ -z "$ok" ]; then
        echo "nothing listens on 127.0.0.1:$port; logs:" >&2
        tail -n 20 "$work"/*.log >&2
        exit 1
    fi
done

# wrk latency to milliseconds.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f", v}'; }

# run MODE NAME PORT -> appends "mode name rps p50 p99 errors" to results
results="$work/results"
: >"$results"
run() {
    local mode=$1 name=$2 port=$3 hdr=()
    [ "$mode" = close ] && hdr=(-H "Connection: close")
    local out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${hdr[@]}" "http://127.0.0.1:$port/")
    local rps p50 p99 errs
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
    p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
    errs=$(echo "$out" | awk '/Socket errors|Non-2xx/ {printf "%s ", $0}')
    echo "$mode $name $rps $p50 $p99" >>"$results"
    printf '  %-10s %-8s %10s req/s  p50 %7s ms  p99 %7s ms %s\n' "$mode" "$name" "$rps" "$p50" "$p99" "$errs" >&2
}

# Warm up both (connection pools, page cache, CPU frequency).
wrk -t1 -c10 -d2s "http://127.0.0.1:$EBB_PORT/" >/dev/null
wrk -t1 -c10 -d2s "http://127.0.0.1:$HAP_PORT/" >/dev/null

echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS round(s), $(nproc) cores" >&2
for round in $(seq "$ROUNDS"); do
    for mode in keepalive close; do
        run "$mode" ebb "$EBB_PORT"
        run "$mode" haproxy "$HAP_PORT"
    done
done

echo
echo "ebb-lb vs HAProxy $("$HAPROXY" -v | awk 'NR==1 {print $3}') (mode tcp), wrk -t$THREADS -c$CONNS -d$DURATION x$ROUNDS, $(nproc) cores, $(uname -m)"
awk '
{ k=$1" "$2; rps[k]+=$3; p50[k]+=$4; p99[k]+=$5; n[k]++ }
END {
  printf "| mode | balancer | req/s | p50 ms | p99 ms |\n|---|---|---:|---:|---:|\n"
  split("keepalive close", modes, " ")
  for (i=1; i<=2; i++) {
    m=modes[i]; e=m" ebb"; h=m" haproxy"
    printf "| %s | ebb | %.0f | %.3f | %.3f |\n", m, rps[e]/n[e], p50[e]/n[e], p99[e]/n[e]
    printf "| %s | haproxy | %.0f | %.3f | %.3f |\n", m, rps[h]/n[h], p50[h]/n[h], p99[h]/n[h]
    printf "| %s | **ebb/haproxy** | **%.2fx** | %.2fx | **%.2fx** |\n", m, (rps[e]/n[e])/(rps[h]/n[h]), (p50[e]/n[e])/(p50[h]/n[h]), (p99[e]/n[e])/(p99[h]/n[h])
  }
}' "$results"
echo "targets: req/s >= 0.90x, p99 <= 1.20x"
