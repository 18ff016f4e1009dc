#!/usr/bin/env bash
# Benchmark: ebb's built-in balancer vs HAProxy (mode tcp), same backends, same wrk load.
#
#   bench/lb/run.sh                       # from the workspace root; about 6 minutes
#   ROUNDS=3 DURATION=2s bench/lb/run.sh  # quicker, noisier
#   BACKEND=own bench/lb/run.sh           # ebb's own bench_backend instead of nginx
#   CELLS="keepalive:32:1 close:256:2" IDLE="" bench/lb/run.sh   # some cells, no memory part
#
# Backends: by default nginx (Debian's package; installed if missing), one nginx with
# NGINX_WORKERS worker processes listening on three ports that answer `return 200`; it
# runs from a temporary prefix with its own config. BACKEND=own uses
# crates/ebb-lb/examples/bench_backend.rs (a fixed 13-byte answer) on the same ports.
# ebb and HAProxy each have three members, one per port, round robin.
#
# Throughput: every cell (mode:connections:wrk threads) runs ROUNDS times for each
# balancer, interleaved (ebb then HAProxy in odd rounds, the other way round in even
# ones), because single runs vary by +-30% on a shared machine. The table shows the
# median req/s and p99 of each balancer, the median of the per-round ratios, and their
# range (lowest and highest round): a median near 1.05x with a wide range is noise-bound.
# Modes: keepalive (HTTP keep-alive) and close (`Connection: close`: one request per TCP
# connection, both hops).
#
# Memory: for each count in IDLE, idle_clients opens that many keep-alive connections
# through the balancer (one request answered on each), holds them, then closes them;
# the balancer's RSS before, with them open and after they closed, and KB per connection
# (with them open, over the RSS before the first count).
set -euo pipefail

DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-5}
CELLS=${CELLS:-"keepalive:32:1 keepalive:32:2 keepalive:256:1 keepalive:256:2 close:32:1 close:32:2 close:256:1 close:256:2"}
IDLE=${IDLE-"1000 4000 10000"}

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# Backends, balancers and their settings (BACKEND, NGINX_WORKERS, addresses and ports).
. bench/lb/lib.sh
lb_prepare

# Hold no more idle connections than the descriptor limit leaves room for.
MAX_IDLE=$(((FD_LIMIT - 300) / 2))
idle=
for n in $IDLE; do
    if [ "$n" -gt "$MAX_IDLE" ]; then
        echo "note: $n idle connections need about $((2 * n + 300)) descriptors, the limit here is $FD_LIMIT; measuring $MAX_IDLE instead" >&2
        n=$MAX_IDLE
    fi
    idle="$idle $n"
done
IDLE=$idle

lb_start_backends
lb_start_ebb "$EBB_IP" "$EBB_PORT" "$CTL_PORT"
lb_start_haproxy "$HAP_IP" "$HAP_PORT"

header="$(nproc) cores, $(uname -m), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"

# --- memory with idle connections ------------------------------------------------------
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
mem_results="$work/mem"
: >"$mem_results"
idle_phase() { # name pid addr
    local name=$1 pid=$2 addr=$3 n base start before with after ok
    base=$(fds "$pid")
    start=$(rss_kb "$pid")
    for n in $IDLE; do
        before=$(rss_kb "$pid")
        rm -f "$work/hold" "$work/idle.out"
        mkfifo "$work/hold"
        "$bin/idle_clients" "$addr" "$n" <"$work/hold" >"$work/idle.out" 2>"$work/idle.log" &
        local cpid=$!
        exec 7>"$work/hold"
        ok=
        for _ in $(seq 1200); do # 120 s
            if grep -q '^ready' "$work/idle.out" 2>/dev/null; then ok=1; break; fi
            kill -0 "$cpid" 2>/dev/null || break
            sleep 0.1
        done
        if [ -z "$ok" ]; then
            echo "idle_clients did not get $n connections through $name:" >&2
            cat "$work/idle.log" >&2
            exit 1
        fi
        sleep 1
        with=$(rss_kb "$pid")
        exec 7>&-
        wait "$cpid" || true
        # Bounded wait for the balancer to close its side of every connection.
        for _ in $(seq 100); do
            [ "$(fds "$pid")" -le $((base + 4)) ] && break
            sleep 0.1
        done
        sleep 1
        after=$(rss_kb "$pid")
        echo "$name $n $start $before $with $after" >>"$mem_results"
        awk -v b="$before" -v w="$with" -v a="$after" -v n="$n" -v name="$name" 'BEGIN {
            printf "  %-8s %6d idle: RSS %6.1f -> %6.1f MB, %6.1f MB after close\n", name, n, b/1024, w/1024, a/1024 }' >&2
    done
}
if [ -n "$IDLE" ]; then
    echo "memory: idle keep-alive connections ($IDLE) ..." >&2
    idle_phase ebb "$ebb_pid" "$EBB_IP:$EBB_PORT"
    idle_phase haproxy "$hap_pid" "$HAP_IP:$HAP_PORT"
fi

# --- throughput ------------------------------------------------------------------------
# wrk latency to milliseconds.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f", v}'; }

results="$work/results"
: >"$results"
run() { # cell round name addr
    local cell=$1 round=$2 name=$3 addr=$4 out rps p99 errs
    out=$(lb_wrk "$cell" "$addr")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
    # Socket errors (connect, read, write, timeout) and non-2xx answers.
    errs=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); e += $4 + $6 + $8 + $10} /Non-2xx/ {e += $NF} END {print e + 0}')
    echo "$cell $round $name $rps $p99 $errs" >>"$results"
    printf '  %-16s round %s %-8s %10s req/s  p99 %8s ms  errors %s\n' "$cell" "$round" "$name" "$rps" "$p99" "$errs" >&2
}

# Warm up both (connection pools, page cache, CPU frequency).
wrk -t1 -c10 -d2s "http://$EBB_IP:$EBB_PORT/" >/dev/null
wrk -t1 -c10 -d2s "http://$HAP_IP:$HAP_PORT/" >/dev/null

echo "throughput: $ROUNDS round(s) of $DURATION per cell and balancer ..." >&2
for round in $(seq "$ROUNDS"); do
    for cell in $CELLS; do
        if [ $((round % 2)) = 1 ]; then
            run "$cell" "$round" ebb "$EBB_IP:$EBB_PORT"
            run "$cell" "$round" haproxy "$HAP_IP:$HAP_PORT"
        else
            run "$cell" "$round" haproxy "$HAP_IP:$HAP_PORT"
            run "$cell" "$round" ebb "$EBB_IP:$EBB_PORT"
        fi
    done
done

echo
echo "ebb-lb vs HAProxy $(haproxy_version) (mode tcp, nbthread 2), backend: $backend_desc"
echo "wrk -d$DURATION x$ROUNDS interleaved rounds; $header"
echo
awk "$AWK_MEDIAN"'
{
  cell = $1; key = cell " " $2
  if (!(cell in seen)) { seen[cell] = 1; order[++ncells] = cell }
  if ($3 == "ebb") { erps[cell] = erps[cell] " " $4; ep99[cell] = ep99[cell] " " $5; eerr[cell] += $6; er[key] = $4; ep[key] = $5 }
  else             { hrps[cell] = hrps[cell] " " $4; hp99[cell] = hp99[cell] " " $5; herr[cell] += $6; hr[key] = $4; hp[key] = $5 }
  rounds[cell] = rounds[cell] " " $2
}
END {
  print "| mode | conns | wrk threads | ebb req/s | HAProxy req/s | **req/s ratio** | ratio range | ebb p99 ms | HAProxy p99 ms | **p99 ratio** | ratio range | errors ebb / HAProxy |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (c = 1; c <= ncells; c++) {
    cell = order[c]; split(cell, f, ":")
    n = split(rounds[cell], rs, " "); rr = ""; pr = ""; delete done
    for (i = 1; i <= n; i++) {
      k = cell " " rs[i]; if (k in done) continue; done[k] = 1
      if ((k in er) && (k in hr) && hr[k] > 0) rr = rr " " er[k] / hr[k]
      if ((k in ep) && (k in hp) && hp[k] > 0) pr = pr " " ep[k] / hp[k]
    }
    printf "| %s | %s | %s | %.0f | %.0f | **%.2fx** | %.2f–%.2f | %.3f | %.3f | **%.2fx** | %.2f–%.2f | %d / %d |\n", f[1], f[2], f[3], median(erps[cell]), median(hrps[cell]), median(rr), lowest(rr), highest(rr), median(ep99[cell]), median(hp99[cell]), median(pr), lowest(pr), highest(pr), eerr[cell], herr[cell]
  }
}' "$results"
echo
echo "ratios: median of the per-round ebb/HAProxy ratios (req/s: higher is better for ebb; p99: lower);"
echo "ratio range: the lowest and highest per-round ratio (how far single rounds spread)."
echo "targets: req/s ratio >= 1.05x and p99 ratio <= 1.00x in every cell"

if [ -s "$mem_results" ]; then
    echo
    echo "| balancer | idle connections | RSS before MB | RSS with them MB | RSS after close MB | KB per connection |"
    echo "|---|---:|---:|---:|---:|---:|"
    # Per connection: over the RSS the balancer had before the first count (memory a
    # balancer kept from an earlier count is part of what holding them costs).
    awk '{ printf "| %s | %d | %.1f | %.1f | %.1f | %.1f |\n", ($1 == "ebb" ? "ebb" : "HAProxy"), $2, $4/1024, $5/1024, $6/1024, ($5 - $3) / $2 }' "$mem_results"
fi
