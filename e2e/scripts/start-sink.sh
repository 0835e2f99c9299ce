#!/bin/sh
# Start Postfix's smtp-sink on 127.0.0.1:$SINK_PORT as the final stop of the
# end-to-end chain (mailfwd -> Postfix -> smtp-sink). Every mail transaction it
# accepts is dumped to its own file under $SINK_DIR (smtp-sink -d), envelope
# first (X-Mail-Args / X-Rcpt-Args lines), then the message; see README.md and
# e2e/sinkdump.go (ReadSinkDumps). Unlimited messages and sessions, up to
# $SINK_MAX_CONN at once. Prints eval-able KEY='value' lines once the port
# answers with a 220 banner. Idempotent: a running sink only prints.
#
#   eval "$(e2e/scripts/start-sink.sh)"   # SINK_ADDR SINK_DIR SINK_LOG SINK_PID
#   e2e/scripts/stop-sink.sh              # stop, delete the dumps (SINK_KEEP=1 keeps them)
#
# Environment (defaults):
#   SINK_ROOT=/tmp/mailfwd-sink   pid file, log
#   SINK_DIR=$SINK_ROOT/dump      one file per message: <YYYYmmddHHMMSS>.<8 hex>
#   SINK_PORT=10026   SINK_MAX_CONN=256 (-m)   SINK_BACKLOG=256
#   SINK_HOSTNAME=smtp-sink.test  (greeting, and "by" in its Received: line)
#   SINK_START_TIMEOUT=10
set -eu

R=${SINK_ROOT:-/tmp/mailfwd-sink}
DUMP=${SINK_DIR:-$R/dump}
PORT=${SINK_PORT:-10026}
MAXCONN=${SINK_MAX_CONN:-256}
BACKLOG=${SINK_BACKLOG:-256}
HOST=${SINK_HOSTNAME:-smtp-sink.test}
TIMEOUT=${SINK_START_TIMEOUT:-10}
PIDFILE=$R/smtp-sink.pid LOG=$R/smtp-sink.log
SINK=/usr/sbin/smtp-sink

die() { echo "start-sink: $*" >&2; exit 1; }
[ -x $SINK ] || die "missing $SINK (run e2e/scripts/install-deps.sh: postfix)"
command -v bash >/dev/null 2>&1 || die "missing bash"
case $R in /*) ;; *) die "SINK_ROOT must be absolute: $R" ;; esac
case $DUMP in /*) ;; *) die "SINK_DIR must be absolute: $DUMP" ;; esac

. "$(dirname "$0")/lib.sh"
sink_pid() { # the live smtp-sink of our pid file
    p=$(cat "$PIDFILE" 2>/dev/null || true)
    alive "$p" && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = smtp-sink ] && echo "$p"
    return 0
}
answers() { smtp_answers "$1"; }
print_env() {
    echo "SINK_ADDR='127.0.0.1:$PORT'"
    echo "SINK_DIR='$DUMP'"
    echo "SINK_LOG='$LOG'"
    echo "SINK_PID='$(sink_pid)'"
}

if [ -f "$R/instance.env" ] && [ -n "$(sink_pid)" ]; then
    . "$R/instance.env"     # port and dump dir it was started with
    answers "$PORT" || die "smtp-sink $(sink_pid) runs but does not answer on 127.0.0.1:$PORT"
    print_env
    exit 0
fi
if [ -e "$R" ] && [ ! -f "$R/.mailfwd-sink" ] && [ -n "$(ls -A "$R")" ]; then
    die "$R exists and was not made by this script; set SINK_ROOT or remove it"
fi
busy "$PORT" && die "port $PORT is already in use (SINK_PORT)"
mkdir -p "$R" "$DUMP" && : >"$R/.mailfwd-sink"
rm -f "$PIDFILE"

# As root, smtp-sink insists on -u (the user to run as): keep the caller's
# user so the dumps (mode 0644) are the caller's. -d: one file per message,
# "<template><8 hex digits>", created at MAIL FROM and closed at the final "."
# before the 250 reply (an aborted transaction's file is deleted).
set -- -4 -h "$HOST" -m "$MAXCONN" -d "$DUMP/%Y%m%d%H%M%S."
[ "$(id -u)" != 0 ] || set -- -u "$(id -un)" "$@"
# setsid + all stdio redirected: it must not hold a caller's $(...) open.
setsid "$SINK" "$@" "127.0.0.1:$PORT" "$BACKLOG" >>"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
cat >"$R/instance.env" <<EOF
PORT='$PORT' DUMP='$DUMP'
EOF
i=0
until answers "$PORT"; do
    i=$((i + 1))
    [ -n "$(sink_pid)" ] || { tail -n 20 "$LOG" >&2; die "smtp-sink exited (log: $LOG)"; }
    [ $i -gt $((TIMEOUT * 20)) ] && { kill "$(sink_pid)" 2>/dev/null || true; die "no banner on 127.0.0.1:$PORT after ${TIMEOUT}s"; }
    sleep 0.05
done
print_env
