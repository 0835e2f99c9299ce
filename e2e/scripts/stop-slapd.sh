#!/bin/sh
# Stop the throwaway slapd started by start-slapd.sh and delete $SLAPD_DIR.
# Idempotent: nothing running / nothing there is success.
#   SLAPD_DIR=/tmp/mailfwd-slapd
#   SLAPD_KEEP=1   stop only: keep the tree (data, log); start-slapd.sh brings it back
set -eu
D=${SLAPD_DIR:-/tmp/mailfwd-slapd}

# not a zombie: a container's PID 1 may reap late, kill -0 would still succeed
alive() { [ -n "$1" ] && [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
tree_pids() { # live slapd processes using $D/slapd.conf
    for c in /proc/[0-9]*/comm; do
        read -r comm 2>/dev/null <"$c" || continue
        [ "$comm" = slapd ] || continue
        p=${c#/proc/}; p=${p%/comm}
        alive "$p" && tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF " -f $D/slapd.conf " && echo "$p"
    done
    return 0
}

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
