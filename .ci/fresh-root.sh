#!/usr/bin/env bash
# The README's two commands on a fresh Debian 12 machine, made here: a new
# bookworm root (debootstrap), the repository's committed HEAD cloned into it,
# Go from /usr/local/go bind-mounted read-only, then, inside a chroot,
#   (1) go run ./cmd/mailfwd serve   -> a 220 banner on 127.0.0.1:2525 and one message queued
#   (2) make test                    -> the whole suite, which installs its own packages
# A green run on a developer's machine can hide a missing install step (a
# /etc/postfix/main.cf from earlier work once did); a root that holds only
# what debootstrap and the suite put there cannot.
#
# The root runs in its own PID and mount namespaces (unshare): mounts made in
# it (proc, the Go bind, the suite's tmpfs spools) vanish with it, nothing it
# starts outlives it, and after (2) any process still running in it is a
# leak the suite must not have (this run fails). The network is the host's
# (apt and the Go module proxy), so the suite's ports must be free here.
#
# Caches under FRESH_DIR (only downloads and the untouched debootstrap
# result; every run unpacks a fresh root from it):
#   base-*.tar.zst   debootstrap's root, keyed by suite, mirror and package list
#   apt/, gomod/     downloaded .debs and Go modules (FRESH_CACHE_DOWNLOADS=0: none)
# Knobs: FRESH_DIR (_build/fresh), FRESH_MIRROR (http://deb.debian.org/debian),
# FRESH_REBUILD=1 (debootstrap again), FRESH_KEEP=1 (keep the root after a pass;
# a failed run always keeps it). Needs root. Prints each phase's duration.
set -euo pipefail

SUITE=bookworm
# What a fresh machine of ours has besides Debian's minimal base: Go (bind-
# mounted), gcc for cgo, git, make, CA certificates. Nothing the suite needs.
BASE_PKGS=ca-certificates,git,make,gcc,libc6-dev
# Every fixed port the suite and command (1) use.
PORTS="2525 2526 3389 3636 3890 3891 10025 10026 10027 10028 10029 10030"

say() { echo "fresh-root: $*" >&2; }
die() { say "$*"; exit 1; }

busy() { awk -v p="$(printf %04X "$1")" 'FNR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == p) f = 1 }
    END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; }
busy_ports() { for p in $PORTS; do busy "$p" && printf ' %s' "$p"; done; return 0; }

# phase NAME START: one line of the timing table
phase() { printf '%-10s %5d s\n' "$1" $(($(date +%s) - $2)) >>"$TIMES"; say "phase $1: $(($(date +%s) - $2)) s"; }

# ---- inside the namespaces (PID 1 of the new PID namespace) --------------
if [ "${1:-}" = --inside ]; then
    ROOT=$2 LOGS=$3 TIMES=$4 CACHE=$5
    # the root a mount point, as a machine's / is (ip netns exec remounts
    # / as a slave, which fails on a plain directory); proc of this PID
    # namespace only; /sys and /dev as a machine has them
    mount --bind "$ROOT" "$ROOT"
    mount -t proc proc "$ROOT/proc"
    mount --rbind /sys "$ROOT/sys"
    mount --rbind /dev "$ROOT/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"
    mkdir -p "$ROOT/usr/local/go"
    mount --bind /usr/local/go "$ROOT/usr/local/go"
    mount -o remount,bind,ro "$ROOT/usr/local/go"
    if [ -n "$CACHE" ]; then
        mkdir -p "$CACHE/apt/partial" "$CACHE/gomod" "$ROOT/root/go/pkg/mod"
        mount --bind "$CACHE/apt" "$ROOT/var/cache/apt/archives"
        mount --bind "$CACHE/gomod" "$ROOT/root/go/pkg/mod"
    fi
    # what belongs to the machine, not to Debian: its resolvers and the site
    # CAs it trusts (an egress proxy's, here), as a fresh machine has them
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
        mkdir -p "$ROOT/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
        chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the root"
    fi

    # a login's environment on a fresh machine, nothing of this one's
    inroot() {
        chroot "$ROOT" /usr/bin/env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash \
            LANG=C.UTF-8 TERM=dumb PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            bash -c "cd /root/mailfwd && $1"
    }

    # (1) the relay on its embedded default
    t=$(date +%s)
    # its own session, so that go run and the relay it starts stop together
    inroot 'echo $$ >/tmp/serve.sid; exec setsid go run ./cmd/mailfwd serve' >"$LOGS/serve.log" 2>&1 &
    serve=$!
    up=
    for _ in $(seq 1200); do   # the first go run compiles: minutes on 2 cores
        if timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/2525 && IFS= read -r l <&3 && printf "QUIT\r\n" >&3 && case $l in 220*) exit 0;; esac; exit 1' 2>/dev/null; then
            up=1; break
        fi
        kill -0 "$serve" 2>/dev/null || break
        sleep 0.25
    done
    [ -n "$up" ] || { tail -30 "$LOGS/serve.log" >&2; die "(1) go run ./cmd/mailfwd serve: no 220 banner on 127.0.0.1:2525"; }
    inroot 'go run ./cmd/mailfwd send -to sales@company.com -to nobody@company.com' >"$LOGS/send.log" 2>&1 || true
    cat "$LOGS/send.log" >&2
    grep -q 'DATA: 250 .*queued as' "$LOGS/send.log" || die "(1) the relay on its embedded default did not queue a message"
    grep -q 'nobody@company.com>: SMTP error 550' "$LOGS/send.log" || die "(1) the embedded default accepted an unknown user"
    kill -TERM -- "-$(cat "$ROOT/tmp/serve.sid")" 2>/dev/null || true
    for _ in $(seq 200); do busy 2525 || break; sleep 0.1; done
    busy 2525 && die "(1) the relay still listens on 2525 after SIGTERM"
    wait "$serve" || true
    phase serve "$t"

    # (2) the tests
    t=$(date +%s)
    rc=0
    inroot 'make test' 2>&1 | tee "$LOGS/make-test.log" || rc=$?
    phase test "$t"

    # nothing may outlive the suite: in this PID namespace only we remain
    t=$(date +%s)
    sleep 1
    left=
    for d in "$ROOT"/proc/[0-9]*; do
        p=${d##*/}
        [ "$p" = 1 ] && continue   # this script
        [ -r "$d/status" ] || continue
        cmd=
        read -r -d '' cmd 2>/dev/null <"$d/cmdline" || true
        [ -n "$cmd" ] || continue  # our own subshells vanish as we look
        grep -q '^State:[[:space:]]*Z' "$d/status" 2>/dev/null && continue
        left="$left
    pid $p: $(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)"
    done
    ports=$(busy_ports)
    phase leftovers "$t"
    [ -z "$left" ] || { say "processes left running after make test:$left"; rc=1; }
    [ -z "$ports" ] || { say "ports still in use after make test:$ports"; rc=1; }
    exit "$rc"
fi

# ---- on the host ---------------------------------------------------------
cd "$(dirname "$0")/.."
REPO=$PWD
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts)"
[ -x /usr/local/go/bin/go ] || die "no Go at /usr/local/go (a fresh machine has it there)"
FRESH_DIR=${FRESH_DIR:-$REPO/_build/fresh}
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
ROOT=$FRESH_DIR/root LOGS=$FRESH_DIR/logs TIMES=$FRESH_DIR/logs/phases
start=$(date +%s)

grep -qs " $ROOT[/ ]" /proc/self/mountinfo && die "something is mounted under $ROOT (an interrupted run outside its namespace?); unmount it first"
rm -rf "$ROOT" "$LOGS"
mkdir -p "$FRESH_DIR" "$LOGS"
: >"$TIMES"

b=$(busy_ports)
[ -z "$b" ] || die "ports the suite needs are in use on this machine:$b"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    say "note: uncommitted changes are not tested: the root gets a clone of HEAD ($(git rev-parse --short HEAD))"
fi

t=$(date +%s)
need=
for c in debootstrap:debootstrap zstd:zstd unshare:util-linux; do
    command -v "${c%%:*}" >/dev/null 2>&1 || need="$need ${c#*:}"
done
if [ -n "$need" ]; then
    say "installing on the host:$need"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2 && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need </dev/null >&2 ||
        die "apt-get install$need failed"
fi
phase host-tools "$t"

t=$(date +%s)
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$BASE_PKGS" minbase v1 | sha256sum | cut -c1-12)
BASE=$FRESH_DIR/base-$SUITE-$key.tar.zst
if [ "${FRESH_REBUILD:-0}" = 1 ] || [ ! -s "$BASE" ]; then
    say "debootstrap $SUITE from $MIRROR (cached as $(basename "$BASE"))"
    rm -rf "$FRESH_DIR/base.tmp"
    debootstrap --variant=minbase --include="$BASE_PKGS" "$SUITE" "$FRESH_DIR/base.tmp" "$MIRROR" \
        >"$LOGS/debootstrap.log" 2>&1 || { tail -20 "$LOGS/debootstrap.log" >&2; die "debootstrap failed"; }
    # as a Debian 12 install has them: updates and security, a hosts file
    cat >"$FRESH_DIR/base.tmp/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$FRESH_DIR/base.tmp/etc/hosts"
    rm -rf "$FRESH_DIR/base.tmp/var/cache/apt/archives/"*.deb
    tar -C "$FRESH_DIR/base.tmp" -cf - . | zstd -q -T0 -o "$BASE.tmp" && mv "$BASE.tmp" "$BASE"
    rm -rf "$FRESH_DIR/base.tmp"
    for old in "$FRESH_DIR"/base-*.tar.zst; do [ "$old" = "$BASE" ] || rm -f "$old"; done
fi
mkdir -p "$ROOT"
zstd -q -dc "$BASE" | tar -C "$ROOT" -xf - || die "unpacking $BASE failed"
phase base "$t"

t=$(date +%s)
git clone -q --no-hardlinks "$REPO" "$ROOT/root/mailfwd" || die "git clone failed"
phase clone "$t"

CACHE=
[ "${FRESH_CACHE_DOWNLOADS:-1}" = 0 ] || CACHE=$FRESH_DIR/cache
rc=0
unshare --mount --pid --fork --propagation private \
    bash "$REPO/.ci/fresh-root.sh" --inside "$ROOT" "$LOGS" "$TIMES" "$CACHE" || rc=$?

t=$(date +%s)
if [ "$rc" = 0 ] && [ "${FRESH_KEEP:-0}" != 1 ]; then
    grep -qs " $ROOT[/ ]" /proc/self/mountinfo && die "a mount under $ROOT escaped its namespace"
    rm -rf "$ROOT"
fi
phase teardown "$t"
printf '%-10s %5d s\n' total $(($(date +%s) - start)) >>"$TIMES"
echo "fresh-root: phases (logs in $LOGS):" >&2
sed 's/^/    /' "$TIMES" >&2
if [ "$rc" != 0 ]; then
    die "FAILED in a fresh $SUITE root (exit $rc); the root is kept in $ROOT"
fi
say "passed in a fresh $SUITE root"
