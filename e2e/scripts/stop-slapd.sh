#!/bin/sh
# Stop the throwaway slapd started by start-slapd.sh and delete $SLAPD_DIR.
# Idempotent: nothing running / nothing there is success.
#   SLAPD_DIR=/tmp/mailfwd-slapd
#   SLAPD_KEEP=1   stop only: keep the tree (data, log); start-slapd.sh brings it back
set -eu
D=${SLAPD_DIR:-/tmp/mailfwd-slapd}

. "$(dirname "$0")/lib.sh"
tree_pids() { procs slapd " -f $D/slapd.conf "; }   # live slapd processes using $D/slapd.conf

[ -e "$D" ] || exit 0
[ -f "$D/.mailfwd-slapd" ] || { echo "stop-slapd: $D was not made by start-slapd.sh; not touching it" >&2; exit 1; }

for pid in $(tree_pids); do
    kill -TERM "$pid" 2>/dev/null || continue
    i=0
    while alive "$pid"; do      # clean shutdown: ~0.05 s
        i=$((i + 1))
        [ $i -ne 600 ] || kill -KILL "$pid" 2>/dev/null || true   # after 30 s
        sleep 0.05
    done
done
rm -f "$D/slapd.pid" "$D/slapd.args"
[ "${SLAPD_KEEP:-0}" = 1 ] || rm -rf "$D"
