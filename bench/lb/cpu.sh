#!/usr/bin/env bash
# Where a balancer's time goes: CPU time per request (user and system), context switches
# per request, and how busy each thread is, for ebb's built-in balancer and HAProxy under
# the same wrk load (the same backends and balancers as bench/lb/run.sh; see there).
#
#   bench/lb/cpu.sh                                   # 4 cells, 2 rounds of 5 s
#   CELLS="keepalive:32:1" ROUNDS=3 bench/lb/cpu.sh
#   PERF=1 bench/lb/cpu.sh                            # also perf record each balancer
#   EBB_VARIANTS="ebb w1:TOKIO_WORKER_THREADS=1" bench/lb/cpu.sh
#   EBB_VARIANTS="ebb new:EBB_BIN=/tmp/lb_serve" bench/lb/cpu.sh
#
# On a shared machine req/s moves with whatever else runs; CPU time per request moves far
# less (it is what the balancer itself spent), so it is the figure to compare builds and
# settings with. Per cell and balancer, from /proc before and after each wrk run:
#   user, sys    CPU time of the balancer's threads per request (µs; /proc/PID/task/*/stat,
#                in clock ticks, so ±10 ms over the run)
#   cpu          all of it per request (µs; /proc/PID/task/*/schedstat, in ns)
#   wait         time its threads were ready to run but waited for a core, per request
#                (µs; schedstat's run delay): the kernel's share of a request's latency
#   vcs, ivcs    voluntary (it waited) and involuntary (preempted) context switches per
#                request, all threads
#   threads      CPU use of each thread that used over 1% of the run, busiest first (%)
#   nginx, wrk   CPU per request of the backends (all processes) and of wrk (µs)
#   machine      busy time of all cores per request (µs): on a quiet machine, with every
#                core busy, this is what sets req/s (cores / machine µs per request)
#   idle         the machine's idle time during the run (% of all cores): above 0 on a
#                quiet machine, wake-up latency rather than CPU limits req/s
#   cs           context switches per request, the whole machine
#   syscalls, futex, epoll_wait, switches, wakings
#                per request, the balancer's threads, counted by `perf stat` (tracepoints
#                raw_syscalls:sys_enter, sched:sched_switch, sched:sched_waking: the
#                wake-ups it causes); EVENTS= (empty) leaves them out
#   segments     TCP segments sent on the whole machine per request (/proc/net/snmp
#                OutSegs): every hop, both directions, ACKs included; on loopback each
#                is also received once
# Rows are the median over ROUNDS (balancers interleaved, order reversed every round).
#
# EBB_VARIANTS: space-separated ebb instances, each `name` or `name:NAME=VALUE,...`:
# environment for that instance (EBB_BIN=PATH runs another build of lb_serve). Each
# instance and HAProxy get their own loopback address.
# PERF=1: for the first cell, `perf record -e cpu-clock -g` on each balancer during one
# more run, then the share of samples in the kernel and the top symbols.
# SCHED=1: for the first cell, `perf sched record` (the whole machine) during one more run
# per balancer, then `perf sched latency` for the balancer's, wrk's and nginx's threads:
# their run time, how often they were switched in, and how long they waited for a core
# each time (average and longest); wrk's waits are part of the latency it reports.
set -euo pipefail

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-2}
CELLS=${CELLS:-"keepalive:32:1 keepalive:256:2 close:32:1 close:256:2"}
EBB_VARIANTS=${EBB_VARIANTS:-ebb}
PERF=${PERF:-}
SCHED=${SCHED:-}
EVENTS=${EVENTS-1}

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

EBB_PORT=${EBB_PORT:-18180}
HAP_PORT=${HAP_PORT:-18190}
CTL_PORT=${CTL_PORT:-18199}
PORTS=${PORTS:-"18181 18182 18183"}
. bench/lb/lib.sh
lb_variant_addresses "$EBB_VARIANTS"
lb_prepare
lb_start_backends

pid_of=()
lb_start_haproxy "${ips[0]}" "$HAP_PORT"
pid_of+=("$hap_pid")
addr_of=("${ips[0]}:$HAP_PORT")
i=1
for v in $EBB_VARIANTS; do
    envs=()
    if [[ $v == *:* ]]; then IFS=, read -r -a envs <<<"${v#*:}"; fi
    lb_start_ebb "${ips[$i]}" "$EBB_PORT" $((CTL_PORT - i)) "${envs[@]}"
    pid_of+=("$ebb_pid")
    addr_of+=("${ips[$i]}:$EBB_PORT")
    i=$((i + 1))
done

# One line per thread: tid utime stime run_ns vcs ivcs wait_ns (ticks, ticks, ns, counts, ns).
snap_threads() { # pid
    local t
    for t in /proc/"$1"/task/*; do
        {
            read -r _ s <"$t/stat" && s=${s##*) } && set -- $s
            local ut=${12} st=${13}
            local run wait
            read -r run wait _ <"$t/schedstat"
            local v iv
            v=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")
            iv=$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")
            echo "${t##*/} $ut $st $run $v $iv $wait"
        } 2>/dev/null || true
    done
}
# Total CPU ticks of the backend's worker processes.
snap_backend() {
    local c total=0 s
    for c in $(pgrep -P "$backend_pid") "$backend_pid"; do
        s=$(cut -d')' -f2- "/proc/$c/stat" 2>/dev/null) || continue
        set -- $s
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}
# The machine: idle ticks, all ticks (all cores), context switches, TCP segments sent.
snap_machine() {
    awk '/^cpu / {i = $5 + $6; t = $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9} /^ctxt/ {c = $2}
        /^Tcp:/ {if (++tcp == 1) for (f = 2; f <= NF; f++) {if ($f == "OutSegs") col = f} else s = $col}
        END {print i, t, c, s}' /proc/stat /proc/net/snmp
}

hz=$(getconf CLK_TCK)
results="$work/cpu"
: >"$results"
measure() { # cell round index
    local cell=$1 round=$2 i=$3 pid=${pid_of[$3]} name=${names[$3]} out reqs secs
    snap_threads "$pid" >"$work/before"
    local nb mb
    nb=$(snap_backend)
    mb=$(snap_machine)
    # Event counts of the balancer's threads (counts do not depend on how loaded the
    # machine is as much as times do).
    local perf_pid=
    if [ -n "$EVENTS" ]; then
        perf stat -x, -o "$work/events" -p "$pid" \
            -e raw_syscalls:sys_enter \
            -e raw_syscalls:sys_enter --filter 'id == 202' \
            -e raw_syscalls:sys_enter --filter 'id == 232 || id == 281' \
            -e sched:sched_switch -e sched:sched_waking 2>/dev/null &
        perf_pid=$!
    fi
    local TIMEFORMAT='%U %S' wt
    wt=$({ time lb_wrk "$cell" "${addr_of[$i]}" >"$work/wrk.out"; } 2>&1)
    local ev="0 0 0 0 0"
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        ev=$(awk -F, '$1 ~ /^[0-9]+$/ {printf "%s ", $1}' "$work/events")
    fi
    out=$(cat "$work/wrk.out")
    snap_threads "$pid" >"$work/after"
    local na ma
    na=$(snap_backend)
    ma=$(snap_machine)
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    secs=$(echo "$out" | awk '/requests in/ {sub(/s,$/, "", $4); print $4}')
    # thread deltas -> one result line
    awk -v cell="$cell" -v round="$round" -v name="$name" -v reqs="$reqs" -v secs="$secs" \
        -v hz="$hz" -v nb="$nb" -v na="$na" -v mb="$mb" -v ma="$ma" -v wt="$wt" -v ev="$ev" '
        FNR == NR { b[$1] = $0; next }
        {
          split(($1 in b) ? b[$1] : $1 " 0 0 0 0 0 0", o, " ")
          ut += $2 - o[2]; st += $3 - o[3]; run = $4 - o[4]; rt += run; v += $5 - o[5]; iv += $6 - o[6]; wq += $7 - o[7]
          pct = 100 * run / 1e9 / secs
          if (pct >= 1) busy[++nt] = pct
        }
        END {
          # busiest first
          for (x = 1; x <= nt; x++) for (y = x + 1; y <= nt; y++) if (busy[y] > busy[x]) { t = busy[x]; busy[x] = busy[y]; busy[y] = t }
          th = ""; for (x = 1; x <= nt; x++) th = th (x > 1 ? "/" : "") sprintf("%.0f", busy[x])
          split(mb, m0, " "); split(ma, m1, " ")
          idle = 100 * (m1[1] - m0[1]) / (m1[2] - m0[2])
          mbusy = 1e6 * ((m1[2] - m0[2]) - (m1[1] - m0[1])) / hz / reqs
          split(wt, w, " ")
          split(ev, e, " ")
          printf "%s %s %s %.0f %.2f %.2f %.2f %.3f %.3f %s %.2f %.0f %.2f %.2f %.2f %.2f %.3f %.3f %.3f %.3f %.2f %.3f\n", cell, round, name, reqs / secs,
            1e6 * ut / hz / reqs, 1e6 * st / hz / reqs, rt / 1e3 / reqs, v / reqs, iv / reqs,
            (th == "" ? "-" : th), 1e6 * (na - nb) / hz / reqs, idle, 1e6 * (w[1] + w[2]) / reqs, mbusy,
            (m1[3] - m0[3]) / reqs, e[1] / reqs, e[2] / reqs, e[3] / reqs, e[4] / reqs, e[5] / reqs, wq / 1e3 / reqs,
            (m1[4] - m0[4]) / reqs
        }' "$work/before" "$work/after" >>"$results"
    tail -n 1 "$results" | awk '{ printf "  %-16s round %s %-10s %8s req/s  user %6s sys %6s cpu %6s wait %6s us/req  vcs %s ivcs %s  threads %s  nginx %s  wrk %s  machine %s us/req, idle %s%%, %s cs/req  syscalls %s futex %s epoll_wait %s switches %s wakings %s  segments %s\n", $1, $2, $3, $4, $5, $6, $7, $21, $8, $9, $10, $11, $13, $14, $12, $15, $16, $17, $18, $19, $20, $22 }' >&2
}

# Warm up every balancer.
for a in "${addr_of[@]}"; do wrk -t1 -c10 -d2s "http://$a/" >/dev/null; done

count=${#names[@]}
load="load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
for round in $(seq "$ROUNDS"); do
    for cell in $CELLS; do
        for k in $(seq 0 $((count - 1))); do
            if [ $((round % 2)) = 1 ]; then i=$k; else i=$((count - 1 - k)); fi
            measure "$cell" "$round" "$i"
        done
    done
done

echo
echo "CPU per request: ${names[*]} (HAProxy $(haproxy_version), mode tcp, nbthread 2), backend: $backend_desc"
echo "wrk -d$DURATION, median of $ROUNDS round(s); $(nproc) cores, $load"
echo
awk "$AWK_MEDIAN"'
{
  key = $1 " " $3
  if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
  for (f = 4; f <= 22; f++) if (f != 10) col[key, f] = col[key, f] " " $f
  th[key] = th[key] (th[key] == "" ? "" : " ") $10
}
END {
  print "| cell | balancer | req/s | user µs/req | sys µs/req | **CPU µs/req** | wait µs/req | vcs/req | ivcs/req | threads busy % (per round) | nginx µs/req | wrk µs/req | machine µs/req | machine idle % | machine cs/req | syscalls/req | futex/req | epoll_wait/req | switches/req | wakings/req | segments/req |"
  print "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (k = 1; k <= nk; k++) {
    key = order[k]; split(key, kk, " ")
    printf "| %s | %s | %.0f | %.2f | %.2f | **%.2f** | %.2f | %.3f | %.3f | %s | %.2f | %.2f | %.2f | %.0f | %.2f | %.2f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", kk[1], kk[2],
      median(col[key, 4]), median(col[key, 5]), median(col[key, 6]), median(col[key, 7]), median(col[key, 21]),
      median(col[key, 8]), median(col[key, 9]), th[key], median(col[key, 11]), median(col[key, 13]),
      median(col[key, 14]), median(col[key, 12]), median(col[key, 15]), median(col[key, 16]),
      median(col[key, 17]), median(col[key, 18]), median(col[key, 19]), median(col[key, 20]),
      median(col[key, 22])
  }
}' "$results"

# Runs wrk through balancer I in the first cell while COMMAND (a recorder, given `--
# sleep SECONDS` to bound it) runs in the background, then waits for it.
during_run() { # i command...
    local i=$1 rec
    shift
    "$@" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
    rec=$!
    lb_wrk "${CELLS%% *}" "${addr_of[$i]}" >/dev/null
    wait "$rec" || true
}
[ -z "$PERF$SCHED" ] || need perf linux-perf

if [ -n "$PERF" ]; then
    echo
    echo "perf record -e cpu-clock -g, ${CELLS%% *}, $DURATION per balancer:"
    for i in $(seq 0 $((count - 1))); do
        data="$work/perf-${names[$i]}.data"
        during_run "$i" perf record -q -e cpu-clock -g -p "${pid_of[$i]}" -o "$data"
        echo
        echo "${names[$i]}: samples per binary (the kernel is [kernel.kallsyms]), then the top symbols (self)"
        perf report -i "$data" --stdio --no-children --sort dso -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 6 || true
        perf report -i "$data" --stdio --no-children --sort dso,sym -g none --percent-limit 1.5 2>/dev/null |
            grep -E '^ +[0-9]' | head -n 25 || true
    done
fi

if [ -n "$SCHED" ]; then
    echo
    echo "perf sched latency, ${CELLS%% *}, $DURATION per balancer (times in ms; 'switches' = times switched in):"
    for i in $(seq 0 $((count - 1))); do
        data="$work/sched-${names[$i]}.data"
        during_run "$i" perf sched record -q -o "$data"
        echo
        echo "${names[$i]} (pid ${pid_of[$i]}):"
        # Only the threads of this balancer, wrk and the backends (others ran too).
        tids=$(ls /proc/"${pid_of[$i]}"/task | tr '\n' ' ')
        perf sched latency -i "$data" -p 2>/dev/null |
            awk -v tids="$tids" -F'|' 'BEGIN { n = split(tids, t, " "); for (k = 1; k <= n; k++) mine[t[k]] = 1 }
                { name = $1; gsub(/ /, "", name); tid = name; sub(/.*:/, "", tid) }
                (tid in mine) || name ~ /^(wrk|nginx|bench_backend):/ {
                gsub(/ +/, " "); printf "  %-28s run %s  switches %s  wait %s\n", $1, $2, $3, $4 " " $5 }' || true
    done
fi
