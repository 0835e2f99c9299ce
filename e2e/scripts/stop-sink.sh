#!/bin/sh
# Stop the smtp-sink started by start-sink.sh and delete $SINK_ROOT with its
# dumps. Idempotent: nothing running / nothing there is success.
#   SINK_ROOT=/tmp/mailfwd-sink   SINK_DIR=$SINK_ROOT/dump
#   SINK_KEEP=1   stop only: keep the dumps (and the log)
set -eu
R=${SINK_ROOT:-/tmp/mailfwd-sink}
DUMP=${SINK_DIR:-$R/dump}

. "$(dirname "$0")/lib.sh"

[ -e "$R" ] || exit 0
[ -f "$R/.mailfwd-sink" ] || { echo "stop-sink: $R was not made by start-sink.sh; not touching it" >&2; exit 1; }
[ ! -f "$R/instance.env" ] || . "$R/instance.env"

pid=$(cat "$R/smtp-sink.pid" 2>/dev/null || true)
if alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = smtp-sink ]; then
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while alive "$pid"; do
        i=$((i + 1))
        [ $i -ne 100 ] || kill -KILL "$pid" 2>/dev/null || true   # after 5 s
        sleep 0.02
    done
fi
rm -f "$R/smtp-sink.pid"
if [ "${SINK_KEEP:-0}" != 1 ]; then
    # a SINK_DIR outside SINK_ROOT is removed too, but only its dump files
    case $DUMP in "$R"/*) ;; *) [ ! -d "$DUMP" ] || find "$DUMP" -mindepth 1 -delete ;; esac
    rm -rf "$R"
fi
