#!/bin/sh
# Stop the throwaway 389-DS started by start-389ds.sh and delete $DS_DIR.
# Idempotent: nothing running / nothing there is success.
#   DS_DIR=/tmp/mailfwd-389ds
#   DS_KEEP=1   stop only: keep the tree (data, logs); start-389ds.sh brings it back
set -eu
D=${DS_DIR:-/tmp/mailfwd-389ds}

. "$(dirname "$0")/lib.sh"
tree_pids() { procs ns-slapd " -D $D/"; }   # live ns-slapd processes running from $D

[ -e "$D" ] || exit 0
[ -f "$D/.mailfwd-389ds" ] || { echo "stop-389ds: $D was not made by start-389ds.sh; not touching it" >&2; exit 1; }

for pid in $(tree_pids); do
    kill -TERM "$pid" 2>/dev/null || continue
    i=0
    while alive "$pid"; do       # clean shutdown: ~0.3 s (mdb) to ~2 s (bdb)
        i=$((i + 1))
        [ $i -ne 600 ] || kill -KILL "$pid" 2>/dev/null || true   # after 30 s
        sleep 0.05
    done
done
[ "${DS_KEEP:-0}" = 1 ] || rm -rf "$D"
