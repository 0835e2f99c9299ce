#!/bin/sh
# Install the Debian packages of the simulated Internet (package
# mailfwd/e2e/internet): knot (authoritative DNS, DNSSEC signing), unbound
# (validating resolver), nginx-light (MTA-STS policy hosts), postfix
# (receiving MTAs and posttls-finger), swaks with Net::SSLeay (its --tls),
# kdig (knot-dnsutils), ldns tools, openssl, iproute2 (ip netns), curl.
# Idempotent: when every package is already installed it exits at once.
# Needs root (or sudo without a password); never reads stdin.
#
# The packages' own system services (knot, unbound, nginx) must not start:
# the suite runs its own instances inside network namespaces. Where the
# machine has no /usr/sbin/policy-rc.d, one that forbids service starts is put
# in place for the install and removed after it.
set -eu

PKGS="knot knot-dnsutils unbound nginx-light postfix swaks libnet-ssleay-perl openssl ca-certificates iproute2 curl ldnsutils"

die() { echo "internet/install-deps: $*" >&2; exit 1; }

missing=
for p in $PKGS; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$st" = "install ok installed" ] || missing="$missing $p"
done
[ -n "$missing" ] || exit 0

SUDO=
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo; missing:$missing"
    SUDO="sudo -n"
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (Debian/Ubuntu only); missing:$missing"

echo "internet/install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
echo "postfix postfix/mailname string postfix.test" | $SUDO debconf-set-selections

POLICY=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary: e2e/internet/install-deps.sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    ours=1
fi
cleanup() { [ "$ours" = 0 ] || $SUDO rm -f "$POLICY"; }
trap cleanup EXIT

$SUDO apt-get update >&2 </dev/null || die "apt-get update failed"
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $PKGS >&2 </dev/null ||
    die "apt-get install failed"
