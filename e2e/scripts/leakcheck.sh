#!/usr/bin/env bash
# Proves that a failed or interrupted end-to-end run leaves no process and no
# listening port behind when it runs under e2e/reaper, as `make e2e` runs it.
#
# It runs the suite's deliberate failure (e2e/leakcheck_test.go, build tag
# leakcheck: TestMain starts every server and the shared relay, the test
# starts a relay and a Postfix of its own and fails without cleanup) four
# times, each with its own E2E_ROOT:
#   control-fail       plain go test binary, the test fails     -> must find leftovers
#   control-interrupt  plain, SIGINT while the test runs        -> must find leftovers
#   reaped-fail        under the reaper, the test fails         -> nothing may be left
#   reaped-interrupt   under the reaper, SIGINT mid-test        -> nothing may be left
# The controls show the check can see a leak (today's failure mode: a failing
# run left `mailfwd serve` running); whatever they leave is stopped here.
# A process belongs to a run if its command line, working directory,
# executable or environment names that run's E2E_ROOT. Ports: every fixed
# port the suite's servers use must be free before and after.
# Needs what the suite needs (root, install-deps.sh). ~1-2 minutes.
set -uo pipefail
cd "$(dirname "$0")/../.."
. e2e/scripts/lib.sh
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
PORTS="3389 3636 3890 3891 10025 10026 10027 10028 10029 10030"

die() { echo "leakcheck: $*" >&2; exit 1; }
say() { echo "leakcheck: $*" >&2; }

WORK=$(mktemp -d /tmp/mailfwd-leakcheck-XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"   # Postfix's and 389-DS's own users must reach the trees

busy_ports() { for p in $PORTS; do busy "$p" && printf ' %s' "$p"; done; return 0; }

# run_procs ROOT: live processes of the run under ROOT (builtins only, so
# this script's own subprocesses never match).
run_procs() {
    local d p arg hit
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] && continue
        alive "$p" || continue
        hit=
        while IFS= read -r -d '' arg; do
            case $arg in *"$1"*) hit=1; break ;; esac
        done 2>/dev/null <"$d/cmdline"
        if [ -z "$hit" ]; then
            while IFS= read -r -d '' arg; do
                [ "$arg" = "E2E_ROOT=$1" ] && { hit=1; break; }
            done 2>/dev/null <"$d/environ"
        fi
        if [ -z "$hit" ]; then
            case "$(readlink "$d/cwd" 2>/dev/null) $(readlink "$d/exe" 2>/dev/null)" in
            *"$1"*) hit=1 ;;
            esac
        fi
        [ -n "$hit" ] && echo "$p"
    done
    return 0
}

describe() { for p in "$@"; do printf '    pid %s: %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; done; }

stop_pids() {
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null
    for _ in $(seq 100); do
        local live=
        for p in "$@"; do alive "$p" && live=1; done
        [ -z "$live" ] && return 0
        sleep 0.1
    done
    kill -KILL "$@" 2>/dev/null
    sleep 0.5
}

b=$(busy_ports)
[ -z "$b" ] || die "ports in use before the check:$b (a server from another run?); stop it first"

say "building the reaper and the test binary with the leakcheck tag"
$GO build -o "$WORK/reaper" ./e2e/reaper || die "building e2e/reaper failed"
$GO test -c -tags 'e2e leakcheck' -o "$WORK/e2e.test" ./e2e/ || die "building the e2e test binary failed"

failures=0
# one NAME REAPED(0|1) MODE(fail|interrupt)
one() {
    local name=$1 reaped=$2 mode=$3 root="$WORK/$1" pid rc t0 left ports
    t0=$(date +%s)
    local cmd=("$WORK/e2e.test" -test.run '^TestLeakcheckFailure$' -test.v -test.timeout 5m)
    [ "$reaped" = 1 ] && cmd=("$WORK/reaper" -grace 15s -- "${cmd[@]}")
    (cd e2e && E2E_ROOT=$root LEAKCHECK_MODE=$mode exec "${cmd[@]}") >"$WORK/$name.log" 2>&1 &
    pid=$!
    if [ "$mode" = interrupt ]; then
        for _ in $(seq 1200); do [ -e "$root/hanging" ] && break; alive "$pid" || break; sleep 0.1; done
        [ -e "$root/hanging" ] || { say "$name: the test never reached its hang"; tail -30 "$WORK/$name.log" >&2; }
        kill -INT "$pid"
    fi
    wait "$pid"; rc=$?
    sleep 0.5   # a SIGINTed process's children see their parent go
    left=$(run_procs "$root"); ports=$(busy_ports)
    if [ "$rc" = 0 ]; then
        say "$name: FAIL: the deliberately failing run exited 0"; failures=$((failures + 1))
    fi
    if [ "$reaped" = 1 ]; then
        if [ -n "$left" ] || [ -n "$ports" ]; then
            say "$name: FAIL: left behind (ports:${ports:- none}):"; describe $left >&2
            failures=$((failures + 1))
        else
            say "$name: ok: exit $rc, no process and no port left ($(($(date +%s) - t0)) s)"
        fi
        grep '^reaper:' "$WORK/$name.log" | head -3 | sed 's/^/    /' >&2
    else
        if [ -z "$left" ]; then
            say "$name: FAIL: the control left nothing, so the check cannot see a leak"; failures=$((failures + 1))
        else
            say "$name: ok: without the reaper the run left $(echo $left | wc -w) processes (ports:${ports:- none}), e.g.:"
            describe $(echo $left | tr ' ' '\n' | head -4) >&2
        fi
        stop_pids $left
        left=$(run_procs "$root")
        [ -z "$left" ] || { say "$name: could not stop:"; describe $left >&2; exit 1; }
    fi
    if ! grep -q 'deliberate failure\|TestLeakcheckFailure' "$WORK/$name.log"; then
        say "$name: FAIL: the run never got to the test:"; tail -30 "$WORK/$name.log" >&2
        failures=$((failures + 1))
    fi
}

one control-fail 0 fail
one control-interrupt 0 interrupt
one reaped-fail 1 fail
one reaped-interrupt 1 interrupt

b=$(busy_ports)
[ -z "$b" ] || { say "FAIL: ports still in use at the end:$b"; failures=$((failures + 1)); }
[ "$failures" = 0 ] || die "$failures check(s) failed (logs in $WORK)"
rm -rf "$WORK"
say "ok: a failed or interrupted run under the reaper leaves nothing running"
