#!/usr/bin/env bash
# Builds or settings of ebb's balancer against each other and HAProxy: req/s and p99 per
# cell, interleaved rounds (the order rotates every round), each as a median and as the
# median of the per-round ratios to HAProxy. For trying a change before it is kept; the
# issue-17 attempts in docs/benchmarks.md were measured with it.
#
#   VARIANTS="old:EBB_BIN=/tmp/lb_old new:EBB_BIN=/tmp/lb_new" bench/lb/variants.sh
#   VARIANTS="ebb x:EBB_BIN=/tmp/lb_x,SOME_SETTING=1" CELLS="close:256:2" bench/lb/variants.sh
#   VARIANTS="ebb tasks:EBB_KEY=copy_loop=false" bench/lb/variants.sh
#   WRK_OUT=/tmp/wrk bench/lb/variants.sh      # also keep every wrk output (latency spread)
#
# VARIANTS: space-separated ebb instances, `name` or `name:NAME=VALUE,...` (environment for
# that instance; EBB_BIN=PATH runs another build of lb_serve, EBB_KEY=key=value sets a
# `[balancer]` key in its pool file). Same backends and balancer
# settings as bench/lb/run.sh; each instance and HAProxy get their own loopback address.
set -euo pipefail

DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-5}
CELLS=${CELLS:-"keepalive:32:1 keepalive:256:2 close:32:1 close:256:2"}
VARIANTS=${VARIANTS:-ebb}
WRK_OUT=${WRK_OUT:-}

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

. bench/lb/lib.sh
lb_variant_addresses "$VARIANTS"
lb_prepare
lb_start_backends
lb_start_haproxy 127.0.0.3 "$HAP_PORT"
addrs=("127.0.0.3:$HAP_PORT")
i=1
ctl=$CTL_PORT
for v in $VARIANTS; do
    envs=()
    [[ $v == *:* ]] && IFS=, read -ra envs <<<"${v#*:}"
    lb_start_ebb "${ips[$i]}" "$EBB_PORT" "$ctl" "${envs[@]}"
    addrs+=("${ips[$i]}:$EBB_PORT")
    i=$((i + 1))
    ctl=$((ctl + 1))
done
for a in "${addrs[@]}"; do wrk -t1 -c10 -d2s "http://$a/" >/dev/null; done
[ -z "$WRK_OUT" ] || mkdir -p "$WRK_OUT"

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f", v}'; }
results="$work/results"
: >"$results"
count=${#names[@]}
echo "$ROUNDS round(s) of $DURATION per cell and balancer ..." >&2
for round in $(seq "$ROUNDS"); do
    for cell in $CELLS; do
        for k in $(seq 0 $((count - 1))); do
            j=$(((k + round) % count))
            out=$(lb_wrk "$cell" "${addrs[$j]}")
            [ -z "$WRK_OUT" ] || echo "$out" >"$WRK_OUT/$cell.$round.${names[$j]}"
            rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
            p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
            echo "$cell $round ${names[$j]} $rps $p99" >>"$results"
            printf '  %-16s round %s %-10s %10s req/s  p99 %8s ms\n' "$cell" "$round" "${names[$j]}" "$rps" "$p99" >&2
        done
    done
done

echo
echo "ebb variants vs HAProxy $(haproxy_version), backend: $backend_desc"
echo "wrk -d$DURATION x$ROUNDS interleaved rounds; $(nproc) cores"
echo
awk "$AWK_MEDIAN"'
{
  cell = $1; key = cell " " $2
  if (!(cell in seen)) { seen[cell] = 1; order[++ncells] = cell }
  if (!($3 in vseen)) { vseen[$3] = 1; vorder[++nv] = $3 }
  rps[cell " " $3] = rps[cell " " $3] " " $4; p99[cell " " $3] = p99[cell " " $3] " " $5
  R[key " " $3] = $4; P[key " " $3] = $5
  if ($3 == "haproxy") rounds[cell] = rounds[cell] " " $2
}
END {
  printf "| cell |"; for (v = 1; v <= nv; v++) printf " %s req/s (ratio) | %s p99 ms (ratio) |", vorder[v], vorder[v]; print ""
  printf "|---|"; for (v = 1; v <= nv; v++) printf "---:|---:|"; print ""
  for (c = 1; c <= ncells; c++) {
    cell = order[c]; printf "| %s |", cell
    nr = split(rounds[cell], rs, " ")
    for (v = 1; v <= nv; v++) {
      x = vorder[v]; rr = ""; pp = ""
      for (q = 1; q <= nr; q++) { k = cell " " rs[q]; rr = rr " " R[k " " x] / R[k " haproxy"]; pp = pp " " P[k " " x] / P[k " haproxy"] }
      printf " %.0f (%.2fx) | %.2f (%.2fx) |", median(rps[cell " " x]), median(rr), median(p99[cell " " x]), median(pp)
    }
    print ""
  }
}' "$results"
