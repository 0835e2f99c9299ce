#!/bin/sh
# Install the Debian packages the end-to-end suite needs (real 389-DS, OpenLDAP
# slapd and client tools, a throwaway Postfix with smtp-sink, swaks, NSS tools, openssl).
# Idempotent: when every package is already installed it exits at once.
# Needs root (or sudo without a password); never reads stdin.
set -eu

# procps: /bin/kill, which the systemd unit's ExecReload names (systemd-analyze
# verify checks it exists); a minimal Debian root does not have it.
PKGS="e2fsprogs qemu-system-x86 nbdkit busybox-static kmod 389-ds-base slapd ldap-utils postfix postfix-ldap swaks libnss3-tools openssl ca-certificates postsrsd faketime libmail-srs-perl docker-compose systemd procps haproxy python3-dkim python3-authres redis-server sqlite3 iproute2 dnsmasq-base opendkim opendmarc"

die() { echo "install-deps: $*" >&2; exit 1; }

missing=
for p in $PKGS; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$st" = "install ok installed" ] || missing="$missing $p"
done
# the simulated Internet's packages (knot, unbound, nginx) are its own script's
internet() { exec sh "$(dirname "$0")/../internet/install-deps.sh"; }
[ -n "$missing" ] || internet

SUDO=
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo; missing:$missing"
    SUDO="sudo -n"
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (Debian/Ubuntu only); missing:$missing"

echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix must not ask which mail setup to use: we never use the system instance.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
echo "postfix postfix/mailname string postfix.test" | $SUDO debconf-set-selections
# slapd: no system database and no /etc/ldap/slapd.d, so the Debian service has
# nothing to start (its init script only warns); start-slapd.sh runs its own.
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
$SUDO apt-get update >&2 </dev/null || die "apt-get update failed"
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $PKGS >&2 </dev/null ||
    die "apt-get install failed"
internet
