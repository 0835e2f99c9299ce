#!/bin/sh
# Start a throwaway 389 Directory Server on loopback for the end-to-end suite:
# no systemd, nothing written outside $DS_DIR. Prints eval-able KEY='value'
# lines (first: DS_URL) once an LDAP search answers. Idempotent: if the instance
# in $DS_DIR runs, it only prints; if it exists but is stopped (stop-389ds.sh
# with DS_KEEP=1, or killed), it is started again with its data.
#
#   eval "$(e2e/scripts/start-389ds.sh)" && ldapsearch -x -H "$DS_URL" ...
#   DS_KEEP=1 e2e/scripts/stop-389ds.sh   # stop, keep the data for a later start
#   e2e/scripts/stop-389ds.sh             # stop and delete $DS_DIR
#
# Environment (defaults):
#   DS_DIR=/tmp/mailfwd-389ds   everything lives here (config, db, logs, TLS)
#   DS_PORT=3389  DS_TLS_PORT=3636 (0 = no TLS)   listen on 127.0.0.1 only
#   DS_SUFFIX=dc=example,dc=net   DS_ROOT_PW=mailfwd-dm-secret
#   DS_SEED=<repo>/deploy/seed.ldif ("none" = empty suffix)
#   DS_ACL=<this dir>/acl-389ds.ldif
#   DS_EXTRA_LDIF=   space-separated LDIF files loaded after the seed and aci with
#                    "ldapmodify -a" as Directory Manager: plain entries are added,
#                    "changetype: modify" records (e.g. an aci) are applied. Each file
#                    is loaded once per instance (by content hash), also when it is
#                    named only on a later start of a kept instance.
#   DS_DB_LIB=bdb|mdb   bdb (default) stops in ~2 s, mdb in ~0.3 s; but 2.3.1 on mdb
#                    crashes (segfault in liblmdb) in seconds once the Retro
#                    Changelog and sync clients are busy: docs/directory.md
#   DS_SYNC=1        the Content Synchronization plugin (RFC 4533, what mailfwd's
#                    directory replica uses) and the Retro Changelog it needs;
#                    0: both off, a server without sync
#   DS_USER=<invoking user>  (as root, DS_USER=dirsrv works too: tree is chowned)
#   DS_START_TIMEOUT=60
#
# How: dse.ldif is made with sed from the packaged template-dse.ldif (as lib389
# does), ns-slapd is started directly, then the backend, seed and aci are
# added over LDAP as Directory Manager. ~1 s from nothing.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
D=${DS_DIR:-/tmp/mailfwd-389ds}
PORT=${DS_PORT:-3389}
TLS_PORT=${DS_TLS_PORT:-3636}
SUFFIX=${DS_SUFFIX:-dc=example,dc=net}
ROOT_DN='cn=Directory Manager'
ROOT_PW=${DS_ROOT_PW:-mailfwd-dm-secret}
SEED=${DS_SEED:-$HERE/../../deploy/seed.ldif}
ACL=${DS_ACL:-$HERE/acl-389ds.ldif}
EXTRA=${DS_EXTRA_LDIF:-}
DB_LIB=${DS_DB_LIB:-bdb}
RUN_AS=${DS_USER:-$(id -un)}
TIMEOUT=${DS_START_TIMEOUT:-60}
SYNC=${DS_SYNC:-1}
MARK=$D/.mailfwd-389ds             # marks a tree this script may delete

die() { echo "start-389ds: $*" >&2; exit 1; }
show() { for _s in "$@"; do [ ! -s "$_s" ] || { echo "--- $_s" >&2; tail -n 15 "$_s" >&2; }; done; return 0; }
for b in /usr/sbin/ns-slapd pwdhash certutil pk12util openssl ldapsearch ldapmodify sha256sum; do
    command -v "$b" >/dev/null 2>&1 ||
        die "missing $b (run e2e/scripts/install-deps.sh: 389-ds-base ldap-utils libnss3-tools openssl)"
done
case $D in /*) ;; *) die "DS_DIR must be absolute: $D" ;; esac
case $DB_LIB in bdb|mdb) ;; *) die "DS_DB_LIB must be bdb or mdb" ;; esac
[ "$SEED" = none ] || [ -r "$SEED" ] || die "seed LDIF not readable: $SEED (DS_SEED)"
for f in $EXTRA; do [ -r "$f" ] || die "extra LDIF not readable: $f (DS_EXTRA_LDIF)"; done

. "$HERE/lib.sh"
tree_pids() { procs ns-slapd " -D $D/"; }   # live ns-slapd processes running from $D
answers() { ldap_answers "$PORT"; }
check_ports() {
    for p in "$PORT" "$TLS_PORT"; do
        [ "$p" = 0 ] || ! busy "$p" || die "port $p is already in use (DS_PORT / DS_TLS_PORT)"
    done
}

print_env() {
    echo "DS_URL='ldap://127.0.0.1:$PORT'"
    if [ "$TLS_PORT" != 0 ]; then
        echo "DS_LDAPS_URL='ldaps://127.0.0.1:$TLS_PORT'"
        echo "DS_CA_CERT='$D/tls/ca.crt'"
    fi
    echo "DS_LDAPI_URL='ldapi://$(printf %s "$LDAPI" | sed 's|/|%2F|g')'"
    echo "DS_BASE='$SUFFIX'"
    echo "DS_ROOT_DN='$ROOT_DN'"
    echo "DS_ROOT_PW='$ROOT_PW'"
    echo "DS_PID='$(tree_pids | head -n 1)'"
    echo "DS_DIR='$D'"
    echo "DS_LOG='$LOG_DIR'"
}

start_server() {
    rm -f "$PIDFILE"
    # locks of a killed server (its zombie still "runs" for ns-slapd's check)
    rm -f "$LOCK_DIR"/server/* "$LOCK_DIR"/exports/* "$LOCK_DIR"/imports/* 2>/dev/null || true
    # ns-slapd daemonizes itself. Redirect all its stdio: early messages go to
    # startup.log, and it must not hold a caller's $(...) pipe open.
    /usr/sbin/ns-slapd -D "$CONFIG_DIR" -i "$PIDFILE" >"$LOG_DIR/startup.log" 2>&1 </dev/null ||
        { show "$LOG_DIR/startup.log"; die "ns-slapd failed to start (log: $LOG_DIR/errors)"; }
    STARTED=1
    i=0
    until answers; do      # the launcher returns before the port is open: poll
        i=$((i + 1))
        if [ -z "$(tree_pids)" ]; then
            show "$LOG_DIR/errors"; die "ns-slapd exited (log: $LOG_DIR/errors)"
        fi
        [ $i -gt $((TIMEOUT * 20)) ] && die "no answer on 127.0.0.1:$PORT after ${TIMEOUT}s"
        sleep 0.05
    done
}

ldapdm() { # ldapadd/ldapmodify as Directory Manager over loopback
    "$@" -x -H "ldap://127.0.0.1:$PORT" -D "$ROOT_DN" -w "$ROOT_PW" >/dev/null ||
        { show "$LOG_DIR/errors"; die "$1 failed (log: $LOG_DIR/errors)"; }
}

# load_extra: every $DS_EXTRA_LDIF file this instance has not loaded yet
# (remembered by content hash in $D/extra.loaded).
load_extra() {
    for f in $EXTRA; do
        sum=$(sha256sum <"$f" | cut -d' ' -f1)
        ! grep -qx "$sum" "$D/extra.loaded" 2>/dev/null || continue
        ldapdm ldapmodify -a -f "$f"
        echo "$sum" >>"$D/extra.loaded"
    done
}

make_tls() {
    # CA key EC (instant); server key RSA: 389-DS wraps its attribute-encryption
    # keys with it (an EC server key logs "attrcrypt_wrap_key - Failed to wrap").
    mkdir -p "$D/tls"
    (
        cd "$D/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=mailfwd test CA" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        # libldap checks "localhost" URLs against the machine's FQDN: list both names
        names=$( (hostname; hostname -f) 2>/dev/null | sort -u | grep -vx localhost | sed 's/^/DNS:/' | tr '\n' ,)
        printf 'subjectAltName=DNS:localhost,%sIP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' \
            "$names" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.crt 2>/dev/null
        openssl pkcs12 -export -in server.crt -inkey server.key -name Server-Cert \
            -out server.p12 -passout pass:p12
    ) || die "openssl failed to make the test certificates"
    # 389-DS reads only an NSS db (nsslapd-certdir = config dir), nickname Server-Cert
    certutil -N -d "sql:$CERT_DIR" --empty-password
    pk12util -i "$D/tls/server.p12" -d "sql:$CERT_DIR" -W p12 -K '' >/dev/null
    certutil -A -d "sql:$CERT_DIR" -n mailfwd-test-CA -t CT,, -a -i "$D/tls/ca.crt"
}

cfg_lines() { # our cn=config attributes: loopback only, TLS, unbuffered access log
    echo "nsslapd-listenhost: 127.0.0.1"
    echo "nsslapd-accesslog-logbuffering: off"
    if [ "$TLS_PORT" != 0 ]; then
        echo "nsslapd-securelistenhost: 127.0.0.1"
        echo "nsslapd-secureport: $TLS_PORT"
        echo "nsslapd-security: on"
    else
        echo "nsslapd-security: off"
    fi
}

set_paths() {
    CONFIG_DIR=$D/etc CERT_DIR=$D/etc LOG_DIR=$D/log LOCK_DIR=$D/lock
    PIDFILE=$D/run/slapd.pid LDAPI=$D/run/ldapi
}

build() {
    mkdir -p "$D/etc/schema" "$D/db" "$D/log" "$D/run" "$D/lock" "$D/bak" "$D/ldif" "$D/tmp"
    hash=$(pwdhash -s SSHA512 "$ROOT_PW")
    # db home = db dir (bdb region files __db.00*); dscreate's default is /dev/shm
    sed -e "s|%schema_dir%|$D/etc/schema|; s|%lock_dir%|$LOCK_DIR|; s|%tmp_dir%|$D/tmp|" \
        -e "s|%cert_dir%|$CERT_DIR|; s|%ldif_dir%|$D/ldif|; s|%bak_dir%|$D/bak|" \
        -e "s|%run_dir%|$D/run|; s|%inst_dir%|$D|; s|%log_dir%|$LOG_DIR|g; s|%fqdn%|localhost|" \
        -e "s|%ds_port%|$PORT|; s|%ds_user%|$RUN_AS|; s|%rootdn%|$ROOT_DN|g; s|%ds_passwd%|$hash|" \
        -e "s|%ldapi_enabled%|on|; s|%ldapi%|$LDAPI|; s|%ldapi_autobind%|on|" \
        -e "s|%ds_suffix%|$SUFFIX|; s|%config_dir%|$CONFIG_DIR|; s|%db_dir%|$D/db|" \
        -e "s|%db_home_dir%|$D/db|; s|%db_lib%|$DB_LIB|" \
        /usr/share/dirsrv/data/template-dse.ldif >"$D/etc/dse.ldif.new"
    cfg_lines >"$D/etc/cfg.tmp"
    sed -i "/^dn: cn=config\$/r $D/etc/cfg.tmp" "$D/etc/dse.ldif.new" && rm -f "$D/etc/cfg.tmp"
    # small fixed caches instead of autotuning to a share of host RAM
    sed -i "/^nsslapd-backend-implement:/a nsslapd-cache-autosize: 0\nnsslapd-dbcachesize: 16777216" \
        "$D/etc/dse.ldif.new"
    if [ "$SYNC" = 1 ]; then
        # RFC 4533 sync: the plugin reads changes from the retro changelog,
        # which must record each entry's nsuniqueid (the sync's entryUUID).
        sed -i -e '/^dn: cn=Retro Changelog Plugin,cn=plugins,cn=config$/,/^$/{s/^nsslapd-pluginenabled: off$/nsslapd-pluginenabled: on\nnsslapd-attribute: nsuniqueid:targetUniqueId\nnsslapd-exclude-suffix: cn=config/}' \
            -e '/^dn: cn=Content Synchronization,cn=plugins,cn=config$/,/^$/s/^nsslapd-pluginenabled: off$/nsslapd-pluginenabled: on/' \
            "$D/etc/dse.ldif.new"
    fi
    ! grep -q '%[a-z_]*%' "$D/etc/dse.ldif.new" || die "unknown %key% left in template-dse.ldif"
    mv "$D/etc/dse.ldif.new" "$D/etc/dse.ldif"
    cp /etc/dirsrv/schema/*.ldif "$D/etc/schema/"
    cp /etc/dirsrv/config/slapd-collations.conf /etc/dirsrv/config/certmap.conf "$D/etc/"
    [ "$TLS_PORT" = 0 ] || make_tls
    [ "$RUN_AS" = "$(id -un)" ] || chown -R "$RUN_AS:" "$D"
    start_server
    # backend + mapping tree, added online as lib389 does (copies the default indexes)
    ldapdm ldapadd <<EOT
dn: cn=userroot,cn=ldbm database,cn=plugins,cn=config
objectClass: top
objectClass: extensibleObject
objectClass: nsBackendInstance
cn: userroot
nsslapd-suffix: $SUFFIX
nsslapd-cachememsize: 16777216
nsslapd-dncachememsize: 4194304

dn: cn="$SUFFIX",cn=mapping tree,cn=config
objectClass: top
objectClass: extensibleObject
objectClass: nsMappingTree
cn: $SUFFIX
nsslapd-state: backend
nsslapd-backend: userroot
EOT
}

STARTED=0
trap on_exit EXIT   # lib.sh: a failed run stops the server it started

# ---- already built? ------------------------------------------------------
reuse_or_clear DS_DIR set_paths
check_ports

mkdir -p "$D" && : >"$MARK"
set_paths
build
if [ "$SEED" != none ]; then
    ldapdm ldapadd -f "$SEED"
    [ ! -f "$ACL" ] || ldapdm ldapmodify -f "$ACL"
fi
load_extra
cat >"$D/instance.env" <<EOF
PORT='$PORT' TLS_PORT='$TLS_PORT' SUFFIX='$SUFFIX' ROOT_PW='$ROOT_PW'
EOF
STARTED=0
print_env
