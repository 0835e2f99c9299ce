#!/bin/sh
# Start a throwaway OpenLDAP slapd on loopback for the end-to-end suite, from a
# slapd.conf in $SLAPD_DIR: not the Debian service (/etc/ldap/slapd.d, the
# init script and the system instance are never used). Loads the same
# deploy/seed.ldif as start-389ds.sh, with mailrecipient.schema, and gives the
# lookup user uid=postfix-ldap,ou=system,<suffix> the same read-only rights as
# acl-389ds.ldif does on 389-DS ("access to" rules below). Prints eval-able
# KEY='value' lines (first: SLAPD_URL) once an LDAP search answers.
# Idempotent: if the instance in $SLAPD_DIR runs, it only prints; if it exists
# but is stopped (stop-slapd.sh with SLAPD_KEEP=1, or killed), it is started
# again with its data.
#
#   eval "$(e2e/scripts/start-slapd.sh)" && ldapsearch -x -H "$SLAPD_URL" ...
#   SLAPD_KEEP=1 e2e/scripts/stop-slapd.sh   # stop, keep the data for a later start
#   e2e/scripts/stop-slapd.sh                # stop and delete $SLAPD_DIR
#
# Environment (defaults):
#   SLAPD_DIR=/tmp/mailfwd-slapd    everything lives here (slapd.conf, schema, db, log, TLS)
#   SLAPD_PORT=3890  SLAPD_TLS_PORT=3891 (0 = no TLS)   listen on 127.0.0.1 only (+ ldapi in $SLAPD_DIR)
#   SLAPD_SUFFIX=dc=example,dc=net  SLAPD_ROOT_PW=mailfwd-dm-secret (root DN cn=admin,<suffix>)
#   SLAPD_SEED=<repo>/deploy/seed.ldif ("none" = empty database)
#   SLAPD_EXTRA_LDIF=   space-separated LDIF files loaded after the seed with
#                       "ldapmodify -a" as the root DN (plain entries, or changetype:
#                       records). Each file is loaded once per instance (by content
#                       hash), also when it is named only on a later start.
#   SLAPD_START_TIMEOUT=30
#   SLAPD_SYNC=1   the syncprov overlay (RFC 4533, what mailfwd's directory replica
#                  uses); 0: a server without sync
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
D=${SLAPD_DIR:-/tmp/mailfwd-slapd}
PORT=${SLAPD_PORT:-3890}
TLS_PORT=${SLAPD_TLS_PORT:-3891}
SUFFIX=${SLAPD_SUFFIX:-dc=example,dc=net}
ROOT_PW=${SLAPD_ROOT_PW:-mailfwd-dm-secret}
SEED=${SLAPD_SEED:-$HERE/../../deploy/seed.ldif}
EXTRA=${SLAPD_EXTRA_LDIF:-}
TIMEOUT=${SLAPD_START_TIMEOUT:-30}
MARK=$D/.mailfwd-slapd              # marks a tree this script may delete

die() { echo "start-slapd: $*" >&2; exit 1; }
show() { for _s in "$@"; do [ ! -s "$_s" ] || { echo "--- $_s" >&2; tail -n 15 "$_s" >&2; }; done; return 0; }
for b in /usr/sbin/slapd slapadd slappasswd ldapsearch ldapmodify openssl setsid sha256sum; do
    command -v "$b" >/dev/null 2>&1 ||
        die "missing $b (run e2e/scripts/install-deps.sh: slapd ldap-utils openssl)"
done
case $D in /*) ;; *) die "SLAPD_DIR must be absolute: $D" ;; esac
[ "$SEED" = none ] || [ -r "$SEED" ] || die "seed LDIF not readable: $SEED (SLAPD_SEED)"
for f in $EXTRA; do [ -r "$f" ] || die "extra LDIF not readable: $f (SLAPD_EXTRA_LDIF)"; done

. "$HERE/lib.sh"
tree_pids() { procs slapd " -f $D/slapd.conf "; }   # live slapd processes using $D/slapd.conf
answers() { ldap_answers "$PORT"; }
check_ports() {
    for p in "$PORT" "$TLS_PORT"; do
        [ "$p" = 0 ] || ! busy "$p" || die "port $p is already in use (SLAPD_PORT / SLAPD_TLS_PORT)"
    done
}
set_names() {
    ROOT_DN="cn=admin,$SUFFIX"      # a slapd.conf rootdn must be inside the suffix
    BIND_DN="uid=postfix-ldap,ou=system,$SUFFIX"
    LDAPI_URL="ldapi://$(printf %s "$D/ldapi" | sed 's|/|%2F|g')"
}

print_env() {
    echo "SLAPD_URL='ldap://127.0.0.1:$PORT'"
    if [ "$TLS_PORT" != 0 ]; then
        echo "SLAPD_LDAPS_URL='ldaps://127.0.0.1:$TLS_PORT'"
        echo "SLAPD_CA_CERT='$D/tls/ca.crt'"
    fi
    echo "SLAPD_LDAPI_URL='$LDAPI_URL'"
    echo "SLAPD_BASE='$SUFFIX'"
    echo "SLAPD_ROOT_DN='$ROOT_DN'"
    echo "SLAPD_ROOT_PW='$ROOT_PW'"
    echo "SLAPD_PID='$(tree_pids | head -n 1)'"
    echo "SLAPD_DIR='$D'"
    echo "SLAPD_LOG='$D/slapd.log'"
}

STARTED=0
trap on_exit EXIT   # lib.sh: a failed run stops the server it started

start_server() {
    urls="ldap://127.0.0.1:$PORT/ $LDAPI_URL"
    [ "$TLS_PORT" = 0 ] || urls="$urls ldaps://127.0.0.1:$TLS_PORT/"
    rm -f "$D/slapd.pid" "$D/slapd.args"
    # slapd 2.5 sends "loglevel stats" to syslog only (there is none); -d keeps
    # it in the foreground and prints that log on stderr -> $D/slapd.log. setsid
    # and full redirection: it outlives us and does not hold a caller's $(...) pipe.
    setsid /usr/sbin/slapd -d stats -f "$D/slapd.conf" -h "$urls" >>"$D/slapd.log" 2>&1 </dev/null &
    STARTED=1
    i=0
    until answers; do
        i=$((i + 1))
        if [ -z "$(tree_pids)" ] && ! alive "$!"; then
            show "$D/slapd.log"; die "slapd exited (log: $D/slapd.log)"
        fi
        [ $i -gt $((TIMEOUT * 20)) ] && die "no answer on 127.0.0.1:$PORT after ${TIMEOUT}s"
        sleep 0.05
    done
}

# load_extra: every $SLAPD_EXTRA_LDIF file this instance has not loaded yet
# (remembered by content hash in $D/extra.loaded), online as the root DN.
load_extra() {
    for f in $EXTRA; do
        sum=$(sha256sum <"$f" | cut -d' ' -f1)
        ! grep -qx "$sum" "$D/extra.loaded" 2>/dev/null || continue
        ldapmodify -a -x -H "ldap://127.0.0.1:$PORT" -D "$ROOT_DN" -w "$ROOT_PW" -f "$f" \
            >"$D/extra.log" 2>&1 || { show "$D/extra.log"; die "loading $f failed (SLAPD_EXTRA_LDIF)"; }
        echo "$sum" >>"$D/extra.loaded"
    done
}

# ---- already built? ------------------------------------------------------
reuse_or_clear SLAPD_DIR set_names
check_ports
set_names
mkdir -p "$D/db" && : >"$MARK"
cp "$HERE/mailrecipient.schema" "$D/mailrecipient.schema"   # the tree stands on its own

tls_conf=
if [ "$TLS_PORT" != 0 ]; then   # PEM files (GnuTLS); EC keys are instant
    mkdir -p "$D/tls"
    (
        cd "$D/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=mailfwd test CA" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        # libldap checks "localhost" URLs against the machine's FQDN: list both names
        names=$( (hostname; hostname -f) 2>/dev/null | sort -u | grep -vx localhost | sed 's/^/DNS:/' | tr '\n' ,)
        printf 'subjectAltName=DNS:localhost,%sIP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' \
            "$names" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.crt 2>/dev/null
    ) || die "openssl failed to make the test certificates"
    tls_conf="TLSCACertificateFile $D/tls/ca.crt
TLSCertificateFile $D/tls/server.crt
TLSCertificateKeyFile $D/tls/server.key"
fi

# RFC 4533 sync (mailfwd's directory replica): the syncprov overlay, with a
# session log so that a consumer with a cookie gets only the changes.
sync_module= sync_overlay=
if [ "${SLAPD_SYNC:-1}" = 1 ]; then
    sync_module="moduleload syncprov"
    sync_overlay="overlay syncprov
syncprov-checkpoint 100 1
syncprov-sessionlog 10000"
fi

cat >"$D/slapd.conf" <<EOF
# generated by start-slapd.sh
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include $D/mailrecipient.schema
pidfile $D/slapd.pid
argsfile $D/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
$sync_module
$tls_conf

database mdb
maxsize 104857600
suffix "$SUFFIX"
rootdn "$ROOT_DN"
rootpw $(slappasswd -s "$ROOT_PW")
directory $D/db
index objectClass eq
index mail,mailAlternateAddress,uid eq
index cn eq,sub
index entryCSN,entryUUID eq
$sync_overlay
# same rights as acl-389ds.ldif: the lookup user reads the routing attributes only
access to attrs=userPassword
	by anonymous auth
	by * none
access to dn.subtree="$SUFFIX" attrs=entry,mail,mailAlternateAddress,mailForwardingAddress,uid,cn,objectClass,entryUUID,entryCSN,contextCSN
	by dn.exact="$BIND_DN" read
	by * none
access to *
	by * none
EOF
if [ "$SEED" != none ]; then
    # offline load before the start; slapadd checks the schema as ldapadd would
    slapadd -f "$D/slapd.conf" -l "$SEED" >"$D/slapadd.log" 2>&1 ||
        { show "$D/slapadd.log"; die "slapadd $SEED failed"; }
fi
start_server
load_extra
cat >"$D/instance.env" <<EOF
PORT='$PORT' TLS_PORT='$TLS_PORT' SUFFIX='$SUFFIX' ROOT_PW='$ROOT_PW'
EOF
STARTED=0
print_env
