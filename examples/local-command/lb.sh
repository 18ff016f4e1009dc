#!/bin/sh
# A balancer made of files, for trying ebb on one machine with the `command` driver.
# Usage: lb.sh DIR OP MEMBER [STATE]. Each member has DIR/MEMBER.state (started, draining,
# stopped), DIR/MEMBER.initial and, optionally, DIR/MEMBER.conns (open connections: write a
# number there to watch a drain wait). Every transition is appended to DIR/transitions.log.
d=$1; op=$2; m=$3
mkdir -p "$d"
[ -f "$d/$m.state" ] || echo started > "$d/$m.state"
[ -f "$d/$m.initial" ] || echo started > "$d/$m.initial"
log() { echo "$(date +%H:%M:%S) $m $1" >> "$d/transitions.log"; }
conns() { if [ -f "$d/$m.conns" ]; then cat "$d/$m.conns"; else echo 0; fi; }
case $op in
  drainstop) echo draining > "$d/$m.state"; log drainstop ;;
  stop) echo stopped > "$d/$m.state"; rm -f "$d/$m.conns"; log stop ;;
  start) echo started > "$d/$m.state"; log start ;;
  state)
    s=$(cat "$d/$m.state")
    if [ "$s" = draining ] && [ "$(conns)" = 0 ]; then echo stopped > "$d/$m.state"; s=stopped; fi
    echo "$s" ;;
  connections) conns ;;
  initial) echo "$4" > "$d/$m.initial"; log "initial-state $4" ;;
  get-initial) cat "$d/$m.initial" ;;
  *) echo "lb.sh: unknown operation $op" >&2; exit 2 ;;
esac
