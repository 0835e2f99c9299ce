# Sourced by the start-*.sh and stop-*.sh scripts: how they find their
# processes and ports in /proc (no pid file is trusted, no ss/netstat
# needed), and the reuse-or-rebuild step of the directory servers.

# OpenLDAP's clients must not read /etc/ldap/ldap.conf, ~/.ldaprc or LDAP*
# variables: a machine's BASE, URI or TLS_REQCERT would change what the
# scripts see.
export LDAPNOINIT=1

# alive PID: exists and is not a zombie. PID 1 of a container may reap
# orphans late or never, and kill -0 (and ns-slapd's own lock check) see
# zombies as alive.
alive() { [ -n "$1" ] && [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

# procs COMM TEXT: live processes named COMM whose command line holds TEXT.
procs() {
    for c in /proc/[0-9]*/comm; do
        read -r comm 2>/dev/null <"$c" || continue
        [ "$comm" = "$1" ] || continue
        p=${c#/proc/}; p=${p%/comm}
        alive "$p" && tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$2" && echo "$p"
    done
    return 0
}

# procs_in DIR: live processes whose working directory is DIR (Postfix's
# master and children all chdir to their queue directory). A process in
# another mount namespace (ip netns exec) may show its cwd with the path of
# a chroot before it, hence the suffix match.
procs_in() {
    for c in /proc/[0-9]*/cwd; do
        p=${c#/proc/}; p=${p%/cwd}
        case $(readlink "$c" 2>/dev/null) in
        "$1" | *"$1") alive "$p" && echo "$p" ;;
        esac
    done
    return 0
}

# busy PORT: something listens on it.
busy() { awk -v p="$(printf %04X "$1")" 'FNR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == p) f = 1 }
    END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; }

# smtp_answers PORT [ADDR]: an SMTP server greets with 220 on ADDR:PORT
# (ADDR 127.0.0.1 by default).
smtp_answers() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$2/$1" || exit 1
        IFS= read -r l <&3 || exit 1; printf "QUIT\r\n" >&3
        case $l in 220*) exit 0 ;; *) exit 1 ;; esac' sh "$1" "${2:-127.0.0.1}" 2>/dev/null
}

# ldap_answers PORT: an anonymous root DSE search answers on 127.0.0.1:PORT.
ldap_answers() { timeout 5 ldapsearch -x -o nettimeout=2 -H "ldap://127.0.0.1:$1" -b '' -s base -LLL 1.1 >/dev/null 2>&1; }

# reuse_or_clear DIRVAR SETUP: a directory server built in $D before is
# made to run (started again with its data if stopped) and its variables
# printed, and the script exits; a half-built tree of ours is removed. The
# script defines SETUP (names derived from instance.env), tree_pids,
# answers, check_ports, start_server, load_extra and print_env, and sets
# MARK; STARTED=0 keeps its exit trap from stopping a server it reused.
reuse_or_clear() {
    if [ -f "$D/instance.env" ]; then
        . "$D/instance.env"       # the ports, suffix and password it was built with
        "$2"
        if [ -n "$(tree_pids)" ]; then
            i=0
            until answers; do
                i=$((i + 1)); [ $i -gt $((TIMEOUT * 20)) ] && die "running but no answer on port $PORT"
                sleep 0.05
            done
        else
            check_ports
            start_server          # stopped or killed: start again, data kept
        fi
        STARTED=0                 # it is up: a later failure (e.g. SIGPIPE) must not stop it
        load_extra
        print_env
        exit 0
    fi
    if [ -e "$D" ]; then          # half-built tree (interrupted run) or someone else's dir
        [ -f "$MARK" ] || [ -z "$(ls -A "$D")" ] ||
            die "$D exists and was not made by this script; set $1 or remove it"
        for p in $(tree_pids); do kill "$p"; while alive "$p"; do sleep 0.05; done; done
        rm -rf "$D"
    fi
}

# on_exit (trap on_exit EXIT): a failed run stops the server it started
# (STARTED=1); the tree stays for its logs.
on_exit() {
    rc=$?
    if [ $rc -ne 0 ] && [ "${STARTED:-0}" = 1 ]; then
        for p in $(tree_pids); do kill "$p" 2>/dev/null || true; done
    fi
    exit $rc
}
