#!/bin/sh
# Stop the throwaway Postfix started by start-postfix.sh and delete $PF_DIR.
# Idempotent: nothing running / nothing there is success.
#   PF_DIR=/tmp/mailfwd-postfix
#   PF_KEEP=1   stop only: keep config, queue and log; start-postfix.sh starts it again
set -eu
D=${PF_DIR:-/tmp/mailfwd-postfix}
SPOOL=$D/spool

. "$(dirname "$0")/lib.sh"
tree_pids() { procs_in "$SPOOL"; }   # master and children of this instance (their cwd is its queue dir)

[ -e "$D" ] || exit 0
[ -f "$D/.mailfwd-postfix" ] || { echo "stop-postfix: $D was not made by start-postfix.sh; not touching it" >&2; exit 1; }

master=$(sed -n '1s/[^0-9]//gp' "$SPOOL/pid/master.pid" 2>/dev/null || true)
if alive "$master" && [ "$(cat "/proc/$master/comm" 2>/dev/null)" = master ] && [ -z "$(tree_pids)" ]; then
    # its cwd did not match (another mount namespace): stop it by its pid file
    kill -TERM "$master" 2>/dev/null || true
    i=0
    while alive "$master" && [ $i -lt 200 ]; do i=$((i + 1)); sleep 0.05; done
    alive "$master" && kill -KILL "$master" 2>/dev/null
fi
if [ -n "$(tree_pids)" ]; then
    # master gets SIGTERM and stops its children; fall back to SIGKILL
    master=$(sed -n '1s/[^0-9]//gp' "$SPOOL/pid/master.pid" 2>/dev/null || true)
    if alive "$master"; then kill -TERM "$master" 2>/dev/null || true; fi
    i=0
    while [ -n "$(tree_pids)" ]; do
        i=$((i + 1))
        if [ $i -ge 200 ]; then     # 10 s
            echo "stop-postfix: still running after 10 s, killing" >&2
            for p in $(tree_pids); do kill -KILL "$p" 2>/dev/null || true; done
        fi
        [ $i -lt 300 ] || { echo "stop-postfix: cannot stop $(tree_pids | tr '\n' ' ')" >&2; exit 1; }
        sleep 0.05
    done
fi
rm -f "$SPOOL/pid/master.pid"
[ "${PF_KEEP:-0}" = 1 ] || rm -rf "$D"
