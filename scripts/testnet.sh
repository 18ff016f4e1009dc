#!/usr/bin/env bash
# testnet.sh: test hosts in network namespaces, for the network-fault tests and by hand.
#
#   testnet.sh up NET DIR [MEMBERS]   create net NET: a bridge, hosts "ebb" and "lb", and
#                                     members m1..mMEMBERS (default 3), each with its own
#                                     address, sshd and HTTP service; keys and logs in DIR
#   testnet.sh down NET               kill everything running in NET's hosts, delete them
#   testnet.sh cut NET HOST           take HOST's link down (on the host's side)
#   testnet.sh restore NET HOST       bring it back up
#   testnet.sh reboot NET HOST        kill every process of member HOST, give it a new boot
#                                     identity, start its sshd and HTTP service again
#   testnet.sh exec NET HOST CMD...   run CMD inside HOST
#   testnet.sh sweep                  delete nets left by test processes that died
#   testnet.sh check NET              assert traffic cannot leave the machine
#
# Every host lives in 10.231.77.0/24 (and nothing else does): ebb .2, lb .3, member K
# .(10+K). The bridge sits in a namespace of its own, so nets of different tests never
# see each other and may reuse the same addresses. Traffic never leaves the machine: the
# root namespace gets an `unreachable` route for the subnet before any host is created,
# and no host has a default route (with a link down, nothing falls back to a real
# gateway). Namespaces are named NET-HOST; tests use NET = ebbt<PID>n<N> so that `sweep`
# can delete the nets of test processes that no longer exist.
#
# Needs root, iproute2 and openssh-server. The HTTP service is ebb's own `demo-member`:
# set EBB to the ebb binary (default: target/debug/ebb beside this script). Its GET
# /stream answer lasts 20 s: a connection that keeps a drain waiting.
set -euo pipefail

SUBNET=10.231.77.0/24
NETPFX=10.231.77
here=$(cd "$(dirname "$0")/.." && pwd)
EBB=${EBB:-$here/target/debug/ebb}
SSHD=${SSHD:-/usr/sbin/sshd}

die() { echo "testnet.sh: $*" >&2; exit 1; }

addr_of() {
  case $1 in
    ebb) echo "$NETPFX.2" ;;
    lb) echo "$NETPFX.3" ;;
    m[0-9]*) echo "$NETPFX.$((10 + ${1#m}))" ;;
    *) die "unknown host \"$1\" (ebb, lb, m1, m2, ...)" ;;
  esac
}

ns() { echo "$1-$2"; }

# The net's directory, recorded by `up`.
dir_of() {
  local f=/run/ebb-testnet/$1.dir
  [ -f "$f" ] || die "no net \"$1\" ($f is missing; run up first)"
  cat "$f"
}

# Processes in namespace $1 other than this script.
ns_pids() {
  ip netns pids "$1" 2>/dev/null | grep -vx -e "$$" -e "${BASHPID:-$$}" || true
}

kill_ns() {
  local pids
  pids=$(ns_pids "$1")
  [ -z "$pids" ] && return 0
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(ns_pids "$1")" ] && return 0
    sleep 0.02
  done
}

start_services() {
  local net=$1 host=$2 d
  d=$(dir_of "$net")/$host
  ip netns exec "$(ns "$net" "$host")" setsid "$SSHD" -f "$d/sshd_config" -E "$d/sshd.log" \
    </dev/null >/dev/null 2>&1
  ip netns exec "$(ns "$net" "$host")" setsid "$EBB" demo-member --name "$host" \
    --listen "$(addr_of "$host"):8080" --dir "$d" --stream-time 20s </dev/null >>"$d/http.log" 2>&1 &
  # Up once both answer (the boot file appears when the HTTP service listens).
  for _ in $(seq 250); do
    if [ -s "$d/boot/$host" ] && ip netns exec "$(ns "$net" "$host")" \
      bash -c "exec 3<>/dev/tcp/$(addr_of "$host")/22" 2>/dev/null; then
      return 0
    fi
    sleep 0.02
  done
  die "$host did not start its services: $(cat "$d/sshd.log" "$d/http.log" 2>/dev/null)"
}

add_host() {
  local net=$1 host=$2 n
  n=$(ns "$net" "$host")
  ip netns add "$n"
  ip -n "$n" link set lo up
  ip -n "$(ns "$net" br)" link add "v$host" type veth peer name eth0 netns "$n"
  ip -n "$(ns "$net" br)" link set "v$host" master br0 up
  ip -n "$n" addr add "$(addr_of "$host")/24" dev eth0
  ip -n "$n" link set eth0 up
}

add_member() {
  local net=$1 dir=$2 host=$3 d
  d=$dir/$host
  mkdir -p "$d/home" "$d/boot"
  ssh-keygen -q -t ed25519 -N "" -C "$host" -f "$d/host_key"
  echo "$(addr_of "$host") $(cut -d' ' -f1,2 "$d/host_key.pub")" >>"$dir/known_hosts"
  cat >"$d/sshd_config" <<EOF
ListenAddress $(addr_of "$host")
Port 22
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
LogLevel ERROR
MaxSessions 50
MaxStartups 50
SetEnv HOME=$d/home
EOF
  add_host "$net" "$host"
  start_services "$net" "$host"
}

cmd_up() {
  local net=$1 dir=$2 members=${3:-3}
  [ "$(id -u)" = 0 ] || die "creating network namespaces needs root (ip netns add)"
  command -v ip >/dev/null || die "ip is missing: install iproute2"
  [ -x "$SSHD" ] || die "$SSHD is missing: install openssh-server"
  [ -x "$EBB" ] || die "$EBB is missing: build ebb (cargo build -p ebb) or set EBB"
  [ -e "/run/netns/$(ns "$net" br)" ] && die "net \"$net\" exists already (testnet.sh down $net)"
  mkdir -p "$dir" /run/ebb-testnet /run/sshd
  dir=$(cd "$dir" && pwd)
  echo "$dir" >"/run/ebb-testnet/$net.dir"
  # Before any host exists: nothing for the test subnet may leave through the root
  # namespace's default route.
  ip route replace unreachable "$SUBNET"
  ip netns add "$(ns "$net" br)"
  ip -n "$(ns "$net" br)" link add br0 type bridge
  ip -n "$(ns "$net" br)" link set br0 up
  ip -n "$(ns "$net" br)" link set lo up
  add_host "$net" ebb
  add_host "$net" lb
  : >"$dir/known_hosts"
  ssh-keygen -q -t ed25519 -N "" -C ebb-test -f "$dir/user_key"
  cp "$dir/user_key.pub" "$dir/authorized_keys"
  for k in $(seq "$members"); do add_member "$net" "$dir" "m$k"; done
  cat >"$dir/net.env" <<EOF
NET=$net
EBB_NS=$(ns "$net" ebb)
LB_NS=$(ns "$net" lb)
EBB_ADDR=$(addr_of ebb)
LB_ADDR=$(addr_of lb)
MEMBERS=$members
USER_KEY=$dir/user_key
KNOWN_HOSTS=$dir/known_hosts
EOF
  cmd_check "$net"
  echo "net $net up: $dir/net.env"
}

cmd_check() {
  local net=$1 r
  r=$(ip route show "$SUBNET")
  case $r in unreachable*) ;; *) die "the root namespace has no unreachable route for $SUBNET (has: ${r:-none})" ;; esac
  for n in $(ip netns list | awk '{print $1}' | grep "^$net-"); do
    [ -z "$(ip -n "$n" route show default)" ] || die "$n has a default route"
  done
}

cmd_down() {
  local net=$1 n
  for n in $(ip netns list | awk '{print $1}' | grep "^$net-" || true); do
    kill_ns "$n"
    ip netns del "$n" 2>/dev/null || true
  done
  rm -f "/run/ebb-testnet/$net.dir"
}

cmd_reboot() {
  local net=$1 host=$2 d
  d=$(dir_of "$net")/$host
  case $host in m[0-9]*) ;; *) die "only members reboot" ;; esac
  kill_ns "$(ns "$net" "$host")"
  rm -f "$d/boot/$host" "$d/sshd.pid"
  echo "$(date +%s%N) reboot" >>"$d/reboots.log"
  start_services "$net" "$host"
}

cmd_sweep() {
  local n owner
  for n in $(ip netns list | awk '{print $1}' | grep -E '^ebbt[0-9]+n[0-9]+-' || true); do
    owner=${n#ebbt}
    owner=${owner%%n*}
    if [ ! -d "/proc/$owner" ]; then
      kill_ns "$n"
      ip netns del "$n" 2>/dev/null || true
      rm -f "/run/ebb-testnet/${n%-*}.dir"
    fi
  done
}

op=${1:-}
case $op in
  up) [ $# -ge 3 ] || die "usage: testnet.sh up NET DIR [MEMBERS]"; cmd_up "$2" "$3" "${4:-3}" ;;
  down) [ $# -eq 2 ] || die "usage: testnet.sh down NET"; cmd_down "$2" ;;
  cut) [ $# -eq 3 ] || die "usage: testnet.sh cut NET HOST"; ip -n "$(ns "$2" "$3")" link set eth0 down ;;
  restore) [ $# -eq 3 ] || die "usage: testnet.sh restore NET HOST"; ip -n "$(ns "$2" "$3")" link set eth0 up ;;
  reboot) [ $# -eq 3 ] || die "usage: testnet.sh reboot NET HOST"; cmd_reboot "$2" "$3" ;;
  exec) [ $# -ge 4 ] || die "usage: testnet.sh exec NET HOST CMD..."; n=$(ns "$2" "$3"); shift 3; exec ip netns exec "$n" "$@" ;;
  sweep) cmd_sweep ;;
  check) [ $# -eq 2 ] || die "usage: testnet.sh check NET"; cmd_check "$2" ;;
  *) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
