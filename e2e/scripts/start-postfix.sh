#!/bin/sh
# Start a throwaway Postfix (3.7) instance on loopback as mailfwd's next hop:
# own config, queue and data directories under $PF_DIR, started with
# "postfix -c $PF_DIR/etc start" (no systemd, /etc/postfix and the system
# instance untouched). It accepts mail from 127.0.0.0/8 for ANY domain and
# relays all of it, unchanged (no aliases, no canonical maps, no local
# delivery), to smtp-sink on 127.0.0.1:$SINK_PORT (start-sink.sh).
# Prints eval-able KEY='value' lines once port $PF_PORT answers with a 220
# banner. Idempotent: a running instance only prints; a built but stopped one
# (stop-postfix.sh with PF_KEEP=1, or killed) is started again with its queue.
#
#   eval "$(e2e/scripts/start-postfix.sh)"   # PF_SMTP PF_DIR PF_LOG PF_CONF ...
#   PF_KEEP=1 e2e/scripts/stop-postfix.sh    # stop, keep config and queue
#   e2e/scripts/stop-postfix.sh              # stop and delete $PF_DIR
#
# Environment (defaults):
#   PF_DIR=/tmp/mailfwd-postfix   etc/ (main.cf, master.cf), spool/ (queue), data/, maillog
#   PF_PORT=10025                 smtpd on $PF_ADDR only
#   PF_ADDR=127.0.0.1             its address (another for an instance in a
#                                 network namespace: ip netns exec NS start-postfix.sh)
#   SINK_PORT=10026               next hop for every domain: smtp:[127.0.0.1]:$SINK_PORT
#   PF_HOSTNAME=postfix.test      myhostname (no DNS needed)
#   PF_START_TIMEOUT=30
#   PF_MAIN_EXTRA=                main.cf settings applied last, one "name = value" per
#                                 line (set with "postconf -e", so they replace the
#                                 defaults above), e.g. for an alias-expanding oracle:
#       PF_DIR=/tmp/mailfwd-postfix-alias PF_PORT=10027 PF_MAIN_EXTRA='virtual_alias_maps = ldap:/abs/map.cf
#       recipient_delimiter = +' e2e/scripts/start-postfix.sh
#                                 Like the ports, they take effect when $PF_DIR is built;
#                                 a kept instance keeps its main.cf.
set -eu

D=${PF_DIR:-/tmp/mailfwd-postfix}
PORT=${PF_PORT:-10025}
ADDR=${PF_ADDR:-127.0.0.1}
IFACES=127.0.0.1
[ "$ADDR" = 127.0.0.1 ] || IFACES="127.0.0.1, $ADDR"
SINK=${SINK_PORT:-10026}
HOST=${PF_HOSTNAME:-postfix.test}
TIMEOUT=${PF_START_TIMEOUT:-30}
EXTRA=${PF_MAIN_EXTRA:-}
CONF=$D/etc SPOOL=$D/spool DATA=$D/data LOG=$D/maillog
MARK=$D/.mailfwd-postfix           # marks a tree this script may delete

die() { echo "start-postfix: $*" >&2; exit 1; }
show() { for _s in "$@"; do [ ! -s "$_s" ] || { echo "--- $_s" >&2; tail -n 20 "$_s" >&2; }; done; return 0; }
for b in postfix postconf bash timeout; do
    command -v "$b" >/dev/null 2>&1 || die "missing $b (run e2e/scripts/install-deps.sh: postfix)"
done
case $D in /*) ;; *) die "PF_DIR must be absolute: $D" ;; esac
id postfix >/dev/null 2>&1 || die "no 'postfix' user (apt-get install postfix)"
getent group postdrop >/dev/null 2>&1 || die "no 'postdrop' group (apt-get install postfix)"
[ "$(id -u)" = 0 ] || die "must run as root (Postfix's master needs it)"

. "$(dirname "$0")/lib.sh"
# live Postfix processes of this instance: master and its children all
# chdir to the queue directory, which no other instance shares
tree_pids() { procs_in "$SPOOL"; }
master_pid() {
    p=$(sed -n '1s/[^0-9]//gp' "$SPOOL/pid/master.pid" 2>/dev/null || true)
    alive "$p" && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = master ] && echo "$p"
    return 0
}
answers() { smtp_answers "$1" "$ADDR"; }

print_env() {
    echo "PF_SMTP='$ADDR:$PORT'"
    echo "PF_DIR='$D'"
    echo "PF_CONF='$CONF'"
    echo "PF_LOG='$LOG'"
    echo "PF_PID='$(master_pid)'"
}

start_server() {
    busy "$PORT" && die "port $PORT is already in use (PF_PORT)"
    # a killed master leaves children (or a stale pid file) behind: clear them
    for p in $(tree_pids); do kill -KILL "$p" 2>/dev/null || true; done
    rm -f "$SPOOL/pid/master.pid"
    # "postfix start" runs its integrity checks (creates missing queue dirs),
    # then master -w, which returns once the master daemon is initialized.
    postfix -c "$CONF" start >"$D/start.log" 2>&1 </dev/null ||
        { show "$D/start.log" "$LOG"; die "postfix start failed (log: $LOG)"; }
    STARTED=1
    i=0
    until answers "$PORT"; do
        i=$((i + 1))
        [ -n "$(master_pid)" ] || { show "$D/start.log" "$LOG"; die "postfix master exited (log: $LOG)"; }
        [ $i -gt $((TIMEOUT * 20)) ] && { show "$LOG"; die "no SMTP banner on $ADDR:$PORT after ${TIMEOUT}s"; }
        sleep 0.05
    done
}

write_config() {
    mkdir -p "$CONF" "$SPOOL" "$DATA"
    chmod 755 "$D" "$CONF" "$SPOOL"
    chown postfix:postfix "$DATA" && chmod 700 "$DATA"
    # Queue directories as $meta_directory/postfix-files wants them. "postfix
    # start" would create missing ones itself (post-install create-missing),
    # but that costs ~1.5 s; made here, its check finds nothing to do.
    for q in active bounce corrupt defer deferred flush hold incoming private saved trace; do
        mkdir -p "$SPOOL/$q" && chown postfix:root "$SPOOL/$q" && chmod 700 "$SPOOL/$q"
    done
    mkdir -p "$SPOOL/maildrop" "$SPOOL/public" "$SPOOL/pid"
    chown postfix:postdrop "$SPOOL/maildrop" "$SPOOL/public"
    chmod 730 "$SPOOL/maildrop" && chmod 710 "$SPOOL/public" && chmod 755 "$SPOOL/pid"
    cat >"$CONF/main.cf" <<EOF
# Throwaway Postfix for mailfwd's end-to-end tests (start-postfix.sh).
compatibility_level = 3.6
config_directory = $CONF
queue_directory = $SPOOL
data_directory = $DATA
mail_owner = postfix
setgid_group = postdrop
maillog_file = $LOG
maillog_file_prefixes = $D
# Logging goes through postlogd (master.cf "postlog"): there is no syslog.

# Identity: no DNS needed, IPv4 loopback only, port $PORT only (master.cf)
myhostname = $HOST
mydomain = test
myorigin = \$myhostname
inet_interfaces = $IFACES
inet_protocols = ipv4
smtp_bind_address = 127.0.0.1
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native

# Nothing is local: relay every domain to smtp-sink
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled
relay_domains =
relayhost =
default_transport = smtp:[127.0.0.1]:$SINK
relay_transport = smtp:[127.0.0.1]:$SINK
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8

# Deliver recipients exactly as received: no rewriting of any kind
alias_maps =
alias_database =
virtual_alias_maps =
virtual_alias_domains =
canonical_maps =
sender_canonical_maps =
recipient_canonical_maps =
masquerade_domains =
append_dot_mydomain = no
swap_bangpath = no
allow_percent_hack = no
recipient_delimiter =
local_header_rewrite_clients =
remote_header_rewrite_domain =
biff = no

# Quick retries for tests
queue_run_delay = 1s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
smtp_connect_timeout = 5s
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
delay_warning_time = 0
EOF
    if [ -n "$EXTRA" ]; then   # PF_MAIN_EXTRA: replace or add, one setting a line
        printf '\n# PF_MAIN_EXTRA (start-postfix.sh)\n' >>"$CONF/main.cf"
        printf '%s\n' "$EXTRA" | while IFS= read -r l; do
            case $l in '' | '#'*) continue ;; esac
            postconf -c "$CONF" -e "$l" || exit 1
        done || die "PF_MAIN_EXTRA: postconf -e failed"
    fi
    # Only what a relay needs; nothing chrooted (no copies of /etc needed).
    cat >"$CONF/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command + args
$ADDR:$PORT inet n   -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
EOF
    # Postfix re-reads a main.cf whose mtime is this very second (it may be
    # mid-edit) for ~2 s; date the files back so postconf/postfix read at once.
    touch -d '-1 minute' "$CONF/main.cf" "$CONF/master.cf"
    postconf -c "$CONF" -n >/dev/null 2>"$D/postconf.err" ||
        { show "$D/postconf.err"; die "bad main.cf"; }
    if [ -s "$D/postconf.err" ]; then show "$D/postconf.err"; die "postconf warns about main.cf"; fi
    rm -f "$D/postconf.err"
}

STARTED=0
on_exit() { # a failed run stops the instance it started; the tree stays for its logs
    rc=$?
    if [ $rc -ne 0 ] && [ "$STARTED" = 1 ]; then
        postfix -c "$CONF" abort >/dev/null 2>&1 </dev/null || true
        for p in $(tree_pids); do kill -KILL "$p" 2>/dev/null || true; done
    fi
    exit $rc
}
trap on_exit EXIT

# ---- already built? ------------------------------------------------------
if [ -f "$D/instance.env" ]; then
    . "$D/instance.env"       # the ports it was built with
    if [ -n "$(master_pid)" ]; then
        i=0
        until answers "$PORT"; do
            i=$((i + 1)); [ $i -gt $((TIMEOUT * 20)) ] && die "running but no banner on port $PORT"
            sleep 0.05
        done
    else
        start_server   # stopped or killed: start again, queue kept
    fi
    STARTED=0
    print_env
    exit 0
fi
if [ -e "$D" ]; then   # half-built tree (interrupted run) or someone else's dir
    [ -f "$MARK" ] || [ -z "$(ls -A "$D")" ] ||
        die "$D exists and was not made by this script; set PF_DIR or remove it"
    for p in $(tree_pids); do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$D"
fi

mkdir -p "$D" && : >"$MARK"
write_config
start_server
cat >"$D/instance.env" <<EOF
PORT='$PORT' SINK='$SINK' HOST='$HOST' ADDR='$ADDR'
EOF
STARTED=0
print_env
