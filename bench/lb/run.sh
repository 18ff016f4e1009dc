#!/usr/bin/env bash
# Benchmark: ebb's built-in balancer vs HAProxy (mode tcp), same backends, same wrk load.
#
#   bench/lb/run.sh            # from the workspace root; ~2.5 minutes
#   DURATION=5s ROUNDS=1 CONNS=50 bench/lb/run.sh
#
# Two modes: HTTP keep-alive, and one request per connection (Connection: close).
# Each (mode, balancer) pair runs ROUNDS times, interleaved (runs vary by +-30% on a
# shared 2-core machine); the table shows the median of the rounds.
# Prints requests/s, p50 and p99 latency and the ratio ebb/haproxy.
set -euo pipefail

DURATION=${DURATION:-6s}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
# Each balancer gets its own loopback address (the backends listen on both), so the
# TIME_WAIT sockets one-request-per-connection runs leave behind (tens of thousands; they
# slow down port allocation in connect()) do not land on the other balancer's runs.
EBB_IP=${EBB_IP:-127.0.0.2}
HAP_IP=${HAP_IP:-127.0.0.3}
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

"$bin/bench_backend" "$EBB_IP:$B1" "$EBB_IP:$B2" "$HAP_IP:$B1" "$HAP_IP:$B2" 2>"$work/backend.log" &
pids+=($!)

cat >"$work/pool.toml" <<TOML
[pool]
name = "bench"

[balancer]
driver = "builtin"
listen = "$EBB_IP:$EBB_PORT"
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
address = "$EBB_IP:$B1"

[[member]]
name = "b2"
address = "$EBB_IP:$B2"
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
    bind $HAP_IP:$HAP_PORT
    default_backend be
backend be
    balance roundrobin
    server b1 $HAP_IP:$B1 check inter 1s
    server b2 $HAP_IP:$B2 check inter 1s
CFG
"$HAPROXY" -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

# Wait for all three to listen.
for addr in $EBB_IP/$B1 $EBB_IP/$B2 $HAP_IP/$B1 $EBB_IP/$EBB_PORT $HAP_IP/$HAP_PORT; do
    ok=
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/$addr") 2>/dev/null; then ok=1; break; fi
        sleep 0.1
    done
    if [ -z "$ok" ]; then
        echo "nothing listens on $addr; logs:" >&2
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
    local mode=$1 name=$2 addr=$3 hdr=()
    [ "$mode" = close ] && hdr=(-H "Connection: close")
    local out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${hdr[@]}" "http://$addr/")
    local rps p50 p99 errs
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
    p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
    errs=$(echo "$out" | awk '/Socket errors|Non-2xx/ {printf "%s ", $0}')
    echo "$mode $name $rps $p50 $p99" >>"$results"
    printf '  %-10s %-8s %10s req/s  p50 %7s ms  p99 %7s ms %s\n' "$mode" "$name" "$rps" "$p50" "$p99" "$errs" >&2
}

# Warm up both (connection pools, page cache, CPU frequency).
wrk -t1 -c10 -d2s "http://$EBB_IP:$EBB_PORT/" >/dev/null
wrk -t1 -c10 -d2s "http://$HAP_IP:$HAP_PORT/" >/dev/null

echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS round(s), $(nproc) cores" >&2
# Alternate who goes first, so neither always runs on a warmer (or more loaded) machine.
for round in $(seq "$ROUNDS"); do
    for mode in keepalive close; do
        if [ $((round % 2)) = 1 ]; then
            run "$mode" ebb "$EBB_IP:$EBB_PORT"
            run "$mode" haproxy "$HAP_IP:$HAP_PORT"
        else
            run "$mode" haproxy "$HAP_IP:$HAP_PORT"
            run "$mode" ebb "$EBB_IP:$EBB_PORT"
        fi
    done
done

echo
echo "ebb-lb vs HAProxy $("$HAPROXY" -v | awk 'NR==1 {print $3}') (mode tcp), wrk -t$THREADS -c$CONNS -d$DURATION x$ROUNDS, $(nproc) cores, $(uname -m)"
awk '
function median(list,   a, n, i, j, t) {
  n = split(list, a, " ")
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }
  return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
{ k=$1" "$2; rps[k]=rps[k]" "$3; p50[k]=p50[k]" "$4; p99[k]=p99[k]" "$5 }
END {
  printf "| mode | balancer | req/s | p50 ms | p99 ms |\n|---|---|---:|---:|---:|\n"
  split("keepalive close", modes, " ")
  for (i=1; i<=2; i++) {
    m=modes[i]; e=m" ebb"; h=m" haproxy"
    er=median(rps[e]); e5=median(p50[e]); e9=median(p99[e])
    hr=median(rps[h]); h5=median(p50[h]); h9=median(p99[h])
    printf "| %s | ebb | %.0f | %.3f | %.3f |\n", m, er, e5, e9
    printf "| %s | haproxy | %.0f | %.3f | %.3f |\n", m, hr, h5, h9
    printf "| %s | **ebb/haproxy** | **%.2fx** | %.2fx | **%.2fx** |\n", m, er/hr, e5/h5, e9/h9
  }
}' "$results"
echo "targets: req/s >= 0.90x, p99 <= 1.20x"
