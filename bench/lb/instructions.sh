#!/usr/bin/env bash
# User-space instructions per request of ebb's balancer, counted by valgrind's callgrind.
# Unlike req/s and CPU time, the count hardly moves with whatever else runs on the
# machine, so it compares two builds on a busy or noisy machine (issue 17's attempts 41
# and 42 in docs/benchmarks.md were measured with it). It counts user space only: the
# kernel's share (~85% of the balancer's CPU here) is not in it.
#
#   bench/lb/instructions.sh                                    # one request per connection
#   MODE=keepalive bench/lb/instructions.sh
#   BUILDS="old:/tmp/lb_old new:/tmp/lb_new" ROUNDS=3 bench/lb/instructions.sh
#   BUILDS="loop:target/release/examples/lb_serve tasks:target/release/examples/lb_serve,EBB_KEY=copy_loop=false" \
#       MODE=keepalive bench/lb/instructions.sh
#
# BUILDS: space-separated `name:PATH[,NAME=VALUE...]` of lb_serve builds (default: this
# tree's, release), with settings as in bench/lb/variants.sh (EBB_KEY=key=value sets a
# `[balancer]` key), measured in turn, ROUNDS times each. Per round: the balancer starts under callgrind
# (nginx backends as in bench/lb/run.sh), a 1 s warm-up, counters zeroed, then `wrk -t1
# -cCONNS -dDURATION` (with `Connection: close` unless MODE=keepalive), counters dumped.
# Prints each round and the median per build. Callgrind runs the balancer ~50x slower,
# so wrk's request count is small; what is compared is the count per request.
set -euo pipefail

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-8}
MODE=${MODE:-close}
case $MODE in close | keepalive) ;; *)
    echo "MODE must be close or keepalive, not $MODE" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

. bench/lb/lib.sh
lb_prepare
need valgrind valgrind
BUILDS=${BUILDS:-"ebb:$bin/lb_serve"}
lb_start_backends
for p in $PORTS; do
    for ip in $BACKEND_IPS; do lb_wait_listening "$ip/$p"; done
done

results="$work/instructions"
: >"$results"
echo "$ROUNDS round(s) of $DURATION per build, $MODE, wrk -t1 -c$CONNS, under callgrind ..." >&2
for round in $(seq "$ROUNDS"); do
    for b in $BUILDS; do
        name=${b%%:*} exe=${b#*:}
        IFS=, read -r -a settings <<<"${exe#*,}"
        [ "$exe" = "${exe#*,}" ] && settings=()
        exe=${exe%%,*}
        case $exe in /*) ;; *) exe=$root/$exe ;; esac
        [ -x "$exe" ] || { echo "no such build: $exe ($b)" >&2; exit 2; }
        # lb_start_ebb runs the wrapper, which becomes callgrind on the build (same pid).
        printf '#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file=%s %s "$@"\n' \
            "$work/cg.$name.$round" "$exe" >"$work/wrap"
        chmod +x "$work/wrap"
        lb_start_ebb "$EBB_IP" "$EBB_PORT" "$CTL_PORT" EBB_BIN="$work/wrap" ${settings[@]+"${settings[@]}"}
        DURATION=1s lb_wrk "$MODE:$CONNS:1" "$EBB_IP:$EBB_PORT" >/dev/null
        callgrind_control -z "$ebb_pid" >/dev/null 2>&1
        out=$(lb_wrk "$MODE:$CONNS:1" "$EBB_IP:$EBB_PORT")
        callgrind_control -d "$ebb_pid" >/dev/null 2>&1
        kill "$ebb_pid"
        wait "$ebb_pid" 2>/dev/null || true
        requests=$(echo "$out" | awk '/requests in/ {print $1}')
        total=$(callgrind_annotate "$work/cg.$name.$round".1 2>/dev/null |
            awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        if [ -z "$requests" ] || [ -z "$total" ] || [ "$requests" = 0 ]; then
            echo "round $round of $name: no count (wrk: ${requests:-none}, callgrind: ${total:-none})" >&2
            exit 1
        fi
        echo "$name $round $requests $total" >>"$results"
        printf '  %-10s round %s %8s requests %14s instructions %8s per request\n' \
            "$name" "$round" "$requests" "$total" "$((total / requests))" >&2
    done
done

echo
echo "ebb-lb user-space instructions per request (callgrind), $MODE, wrk -t1 -c$CONNS -d$DURATION x$ROUNDS; backend: $backend_desc"
echo
echo "| build | requests per round | instructions per request, each round | **median** |"
echo "|---|---|---|---:|"
awk "$AWK_MEDIAN"'
{ if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
  per = int($4 / $3); reqs[$1] = reqs[$1] " " $3; each[$1] = each[$1] " " per }
END { for (i = 1; i <= n; i++) { b = order[i]
  printf "| %s |%s |%s | **%d** |\n", b, reqs[b], each[b], median(each[b]) } }' "$results"
