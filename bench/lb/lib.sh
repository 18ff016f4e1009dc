# Shared by bench/lb/run.sh and bench/lb/cpu.sh (sourced, not run): builds the examples,
# starts the backends, ebb's balancer and HAProxy on loopback, and stops them all on exit.
#
# Before sourcing, a script may set (defaults below): BACKEND (nginx|own), NGINX_WORKERS,
# EBB_IP, HAP_IP, EBB_PORT, HAP_PORT, CTL_PORT, PORTS, and BACKEND_IPS (every loopback
# address the backends listen on; each balancer connects to them on its own address, so
# the TIME_WAIT sockets of one balancer's runs do not slow down the other's connects).
# After `lb_prepare`: FD_LIMIT, HAPROXY, NGINX, bin (the release examples), work (a
# temporary directory), pids (killed on exit).

BACKEND=${BACKEND:-nginx}
NGINX_WORKERS=${NGINX_WORKERS:-2}
EBB_IP=${EBB_IP:-127.0.0.2}
HAP_IP=${HAP_IP:-127.0.0.3}
EBB_PORT=${EBB_PORT:-18080}
HAP_PORT=${HAP_PORT:-18090}
CTL_PORT=${CTL_PORT:-18099}
PORTS=${PORTS:-"18081 18082 18083"}
BACKEND_IPS=${BACKEND_IPS:-"$EBB_IP $HAP_IP"}

need() { # command, Debian package
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
        echo "installing $2 ..." >&2
        local sudo=
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get -o DPkg::Lock::Timeout=600 install -y "$2" >&2
    fi
}

# Raises the descriptor limit, checks the tools, builds the examples, makes $work.
lb_prepare() {
    # 10,000 idle connections are 20,000 descriptors in the balancer.
    ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    FD_LIMIT=$(ulimit -n)
    need wrk wrk
    need haproxy haproxy
    HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
    if [ "$BACKEND" = nginx ]; then
        need nginx nginx
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    elif [ "$BACKEND" != own ]; then
        echo "BACKEND must be nginx or own, not $BACKEND" >&2
        exit 2
    fi
    echo "building (release) ..." >&2
    cargo build --release -q -p ebb-lb --example lb_serve --example bench_backend --example idle_clients
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    bin="${target_dir:-$root/target}/release/examples"
    work=$(mktemp -d)
    pids=()
    trap lb_cleanup EXIT
}

lb_cleanup() {
    exec 7>&- 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# Starts the backends on every address in BACKEND_IPS and port in PORTS; sets backend_desc
# and backend_pid.
lb_start_backends() {
    local ip p
    if [ "$BACKEND" = nginx ]; then
        mkdir -p "$work/nginx/logs"
        {
            echo "worker_processes $NGINX_WORKERS;"
            echo "pid $work/nginx/nginx.pid;"
            echo "error_log $work/nginx/logs/error.log warn;"
            echo "events { worker_connections $((FD_LIMIT - 100)); }"
            echo "http {"
            echo "  access_log off;"
            echo "  keepalive_requests 100000000;"
            echo "  keepalive_timeout 600s;"
            echo "  client_body_temp_path $work/nginx/tmp;"
            echo "  server {"
            for p in $PORTS; do
                printf '   '
                for ip in $BACKEND_IPS; do printf ' listen %s:%s;' "$ip" "$p"; done
                echo
            done
            echo "    default_type text/plain;"
            echo "    location / { return 200 \"hello, world\\n\"; }"
            echo "  }"
            echo "}"
        } >"$work/nginx/nginx.conf"
        "$NGINX" -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" \
            -g 'daemon off;' 2>"$work/backend.log" &
        backend_pid=$!
        backend_desc="nginx $("$NGINX" -v 2>&1 | sed 's,.*nginx/,,'), $NGINX_WORKERS workers, return 200"
    else
        local addrs=()
        for p in $PORTS; do
            for ip in $BACKEND_IPS; do addrs+=("$ip:$p"); done
        done
        "$bin/bench_backend" "${addrs[@]}" 2>"$work/backend.log" &
        backend_pid=$!
        backend_desc="ebb's bench_backend"
    fi
    pids+=("$backend_pid")
    for p in $PORTS; do
        for ip in $BACKEND_IPS; do lb_wait_listening "$ip/$p"; done
    done
}

# Starts ebb's balancer (lb_serve, or $EBB_BIN) listening on IP:PORT, control on CTL, with
# the three backends on IP as members; extra arguments are environment settings for it
# (NAME=VALUE; EBB_BIN=PATH among them runs that binary, and EBB_KEY=key=value adds
# `key = value` to the pool file's [balancer], e.g. EBB_KEY=copy_loop=false). Sets ebb_pid.
lb_start_ebb() { # ip port ctl [NAME=VALUE...]
    local ip=$1 port=$2 ctl=$3 i=0 p e
    shift 3
    {
        cat <<TOML
[pool]
name = "bench"

[balancer]
driver = "builtin"
listen = "$ip:$port"
control = "http://127.0.0.1:$ctl"
state_file = "lb-state-$ctl.json"
balance = "round-robin"
connect_timeout = "2s"
idle_timeout = "10m"
TOML
        for e in "$@"; do
            case $e in EBB_KEY=*=*)
                e=${e#EBB_KEY=}
                printf '%s = %s\n' "${e%%=*}" "${e#*=}"
                ;;
            esac
        done
        cat <<TOML

[balancer.health]
kind = "tcp"
interval = "1s"
TOML
        for p in $PORTS; do
            i=$((i + 1))
            printf '\n[[member]]\nname = "b%s"\naddress = "%s:%s"\n' "$i" "$ip" "$p"
        done
    } >"$work/pool-$ctl.toml"
    local exe=${EBB_BIN:-$bin/lb_serve}
    for e in "$@"; do
        case $e in EBB_BIN=*) exe=${e#EBB_BIN=} ;; esac
    done
    (cd "$work" && exec env EBB_LOG=warn "$@" "$exe" "$work/pool-$ctl.toml" \
        >"$work/ebb-$ctl.out" 2>"$work/ebb-$ctl.log") &
    ebb_pid=$!
    pids+=("$ebb_pid")
    lb_wait_listening "$ip/$port"
}

# Starts HAProxy (mode tcp, nbthread 2, round robin) on IP:PORT with the three backends
# on IP. Sets hap_pid.
lb_start_haproxy() { # ip port
    local ip=$1 port=$2 i=0 p
    {
        cat <<CFG
global
    maxconn $(((FD_LIMIT - 100) / 2))
    nbthread 2
defaults
    mode tcp
    timeout connect 2s
    timeout client 10m
    timeout server 10m
frontend fe
    bind $ip:$port
    default_backend be
backend be
    balance roundrobin
CFG
        for p in $PORTS; do
            i=$((i + 1))
            echo "    server b$i $ip:$p check inter 1s"
        done
    } >"$work/haproxy-$port.cfg"
    "$HAPROXY" -f "$work/haproxy-$port.cfg" -db >"$work/haproxy-$port.log" 2>&1 &
    hap_pid=$!
    pids+=("$hap_pid")
    lb_wait_listening "$ip/$port"
}

# Waits (10 s at most) until something listens on IP/PORT; on failure prints the logs
# and exits.
lb_wait_listening() { # ip/port
    local _
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1; logs:" >&2
    tail -n 20 "$work"/*.log "$work"/nginx/logs/*.log >&2 || true
    exit 1
}

# wrk for one cell (mode:connections:threads) against ADDR for DURATION; prints wrk's output.
lb_wrk() { # cell addr
    local mode conns threads hdr=()
    IFS=: read -r mode conns threads <<<"$1"
    [ "$mode" = close ] && hdr=(-H "Connection: close")
    wrk -t"$threads" -c"$conns" -d"$DURATION" --latency "${hdr[@]}" "http://$2/"
}

# One loopback address per balancer for the scripts that run several ebb instances:
# HAProxy on 127.0.0.3, the instances from 127.0.0.4 (.2 is run.sh's ebb, so the scripts can
# run at the same time without sharing TIME_WAITs). VARIANTS: space-separated `name` or
# `name:NAME=VALUE,...`. Sets names and ips (HAProxy first) and BACKEND_IPS.
lb_variant_addresses() { # variants
    local v n=4
    names=(haproxy)
    ips=(127.0.0.3)
    for v in $1; do
        names+=("${v%%:*}")
        ips+=("127.0.0.$n")
        n=$((n + 1))
    done
    BACKEND_IPS="${ips[*]}"
}

haproxy_version() { "$HAPROXY" -v | awk 'NR==1 {print $3}'; }

# awk functions for the scripts' tables: the median, lowest and highest of a
# space-separated list.
AWK_MEDIAN='
function sorted(list, a,   n, i, j, t) {
  n = split(list, a, " ")
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j+1] = a[j]; a[j+1] = t }
  return n
}
function median(list,   a, n) {
  n = sorted(list, a)
  return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
function lowest(list,   a) { sorted(list, a); return a[1] }
function highest(list,   a) { return a[sorted(list, a)] }
'
