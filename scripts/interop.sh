#!/usr/bin/env bash
# Interop with real SIP software from Debian's packages: SIPp (sip-tester)
# calls the real daemon and answers its calls, while a scripted WebSocket
# client (scripts/interop/interop.py, Python standard library only) drives the
# other side and checks every event and the audio. SIPp's scenarios are in
# scripts/interop/sipp/. Loopback only.
#
#   bash scripts/interop.sh             all scenarios
#   bash scripts/interop.sh NAME...     only those (names: interop.py list)
#
# Then the PBX scenarios of scripts/interop/pbx.py: Kamailio as registrar
# and proxy (and dispatcher) with baresip as a softphone, each scenario with
# its own siprelay instances.
#
# Installs what it needs (sip-tester, sox, chromium, chromium-driver,
# kamailio, kamailio-tls-modules, baresip-core, openssl) with apt-get and
# selenium with pip when missing, schemathesis into a virtualenv of its own, builds
# the release binary, runs each scenario with a time limit, then stops the
# daemon with SIGTERM and expects a clean exit. Ends with
# "interop: N passed, M failed" and a non-zero status on any failure. Run as
# root (as CI does): one scenario captures RTP on lo and SIPp's pcap player
# needs a raw socket; without root it is skipped and the RTP header checks
# of the others are left out.
set -euo pipefail
cd "$(dirname "$0")/.."

HERE=scripts/interop
DRIVER=$HERE/interop.py
SCENARIO_LIMIT=${INTEROP_SCENARIO_LIMIT:-90}  # seconds per scenario, SIPp included
BUILD_LIMIT=900        # seconds for cargo build --release
APT_LIMIT=300          # seconds for each apt-get step
STARTED=$SECONDS

WORK=$(mktemp -d "${TMPDIR:-/tmp}/siprelay-interop.XXXXXX")
PIDS_FILE=$WORK/sipp.pids
DAEMON_LOG=$WORK/daemon.log
: >"$PIDS_FILE"
DAEMON_PID=""
APT_PID=""
CHILD_PID=""   # the build or the scenario running now (in the background, so that
               # a signal reaches the trap at once instead of after it ends)

say() { echo "interop: $*"; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$CHILD_PID" ] && kill -0 "$CHILD_PID" 2>/dev/null; then
        # A scenario: timeout passes SIGTERM on to interop.py, which stops its SIPp.
        kill -TERM "$CHILD_PID" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$CHILD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$CHILD_PID" 2>/dev/null
    fi
    if [ -n "$APT_PID" ] && kill -0 "$APT_PID" 2>/dev/null; then
        kill -- "-$APT_PID" 2>/dev/null || kill "$APT_PID" 2>/dev/null
    fi
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -KILL "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    # SIPp runs in its own process group (started by interop.py); kill each
    # group that is still there, by its id.
    while read -r pid; do
        [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
    done <"$PIDS_FILE"
    if [ "$rc" -eq 0 ]; then
        rm -rf "$WORK"
    else
        echo "interop: traces kept in $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

die() {
    say "FAILED: $*"
    exit 1
}

# Runs a command in the background and waits for it: its status.
run_child() {
    "$@" &
    CHILD_PID=$!
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

# ------------------------------------------------------------ 1. tools
# apt-get runs in the background while cargo builds.
packages=()
command -v sipp >/dev/null 2>&1 || packages+=(sip-tester)
command -v sox >/dev/null 2>&1 || packages+=(sox)
# The recordings review page is checked in Debian's headless Chromium.
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
# The PBX scenarios (scripts/interop/pbx.py): Kamailio as registrar and
# proxy, baresip as the softphone, openssl for their certificate.
command -v kamailio >/dev/null 2>&1 || packages+=(kamailio)
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || packages+=(kamailio-tls-modules)
command -v baresip >/dev/null 2>&1 || packages+=(baresip-core)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
if [ "${#packages[@]}" -gt 0 ]; then
    say "installing ${packages[*]} with apt-get (log: $WORK/apt.log)"
    # In its own process group (setsid), so that cleanup can stop all of it.
    DEBIAN_FRONTEND=noninteractive setsid bash -c '
        timeout "$0" apt-get update -q &&
            timeout "$0" apt-get install -y -q --no-install-recommends "$@"
    ' "$APT_LIMIT" "${packages[@]}" >"$WORK/apt.log" 2>&1 &
    APT_PID=$!
fi

# ------------------------------------------------------------ 2. daemon binary
say "cargo build --release"
if ! run_child timeout "$BUILD_LIMIT" cargo build --release --quiet; then
    die "cargo build --release failed"
fi
BIN=target/release/siprelay
[ -x "$BIN" ] || die "$BIN missing after the build"

if [ -n "$APT_PID" ]; then
    if ! wait "$APT_PID"; then
        APT_PID=""
        tail -n 40 "$WORK/apt.log"
        die "apt-get install ${packages[*]} failed"
    fi
    APT_PID=""
fi
command -v sipp >/dev/null 2>&1 || die "sipp not found after installing sip-tester"
command -v sox >/dev/null 2>&1 || die "sox not found after installing it"
if ! python3 -c "import selenium" 2>/dev/null; then
    say "installing selenium (PyPI) for the review page check"
    timeout "$APT_LIMIT" python3 -m pip install --quiet --disable-pip-version-check selenium \
        >"$WORK/pip.log" 2>&1 || { tail -n 20 "$WORK/pip.log"; die "pip install selenium failed"; }
fi
# schemathesis checks the OpenAPI document against the live daemon; in its
# own virtualenv (it brings many packages), pinned so that runs compare.
SCHEMATHESIS_VERSION=4.32.5
say "installing schemathesis $SCHEMATHESIS_VERSION (PyPI) into $WORK/schemathesis"
if ! { timeout "$APT_LIMIT" python3 -m venv "$WORK/schemathesis" &&
    timeout "$APT_LIMIT" "$WORK/schemathesis/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"; } >"$WORK/pip-schemathesis.log" 2>&1; then
    tail -n 20 "$WORK/pip-schemathesis.log"
    die "could not install schemathesis"
fi
export SCHEMATHESIS=$WORK/schemathesis/bin/schemathesis
SIPP_VERSION=$(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -n 1 || true)
case "$SIPP_VERSION" in
    *RTPSTREAM*) ;;
    *) die "this SIPp ($SIPP_VERSION) lacks rtp_stream support, which the audio scenarios use" ;;
esac
say "using $SIPP_VERSION, $(sox --version 2>&1 | head -n 1), $(python3 --version)"

# ------------------------------------------------------------ 3. media, ports
timeout 60 python3 "$DRIVER" media "$WORK" || die "could not make the tone files with sox"
mapfile -t ports < <(timeout 30 python3 "$DRIVER" ports 3)
[ "${#ports[@]}" -eq 3 ] || die "could not find free loopback ports"
SIP_PORT=${ports[0]}
HTTP_PORT=${ports[1]}
SERVER_PORT=${ports[2]}

# ------------------------------------------------------------ 4. the daemon
# One device, for the siprelay-device scenario (values in interop.py).
cat >"$WORK/siprelay.toml" <<'TOML'
[[devices]]
id = "door"
token = "interop-door-token-0123456789"
extension = "2999"
format = "pcma"
TOML

say "starting siprelay: SIP 127.0.0.1:$SIP_PORT, HTTP 127.0.0.1:$HTTP_PORT, --sip-server 127.0.0.1:$SERVER_PORT"
NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$BIN" \
    --sip-listen "127.0.0.1:$SIP_PORT" \
    --http-listen "127.0.0.1:$HTTP_PORT" \
    --rtp-ports 40000-40999 \
    --sip-server "127.0.0.1:$SERVER_PORT" \
    --recordings-dir "$WORK/recordings" \
    --assets-dir "$WORK/assets" \
    --config "$WORK/siprelay.toml" \
    >"$DAEMON_LOG" 2>&1 &
DAEMON_PID=$!

print_daemon_log() { # [first line]
    local from=${1:-1}
    local total
    total=$(wc -l <"$DAEMON_LOG")
    if [ $((total - from + 1)) -gt 300 ]; then
        from=$((total - 299))
    fi
    echo "---- daemon log (lines $from..$total of $DAEMON_LOG):"
    tail -n "+$from" "$DAEMON_LOG" | sed 's/^/     /'
}

if ! timeout 20 python3 - "$HTTP_PORT" "$DAEMON_PID" <<'EOF'; then
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("siprelay exited during startup")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("GET /healthz did not answer 200 within 15 s")
EOF
    print_daemon_log
    die "siprelay did not become ready"
fi
say "siprelay ready (pid $DAEMON_PID) after $((SECONDS - STARTED))s"

# ------------------------------------------------------------ 5. scenarios
PBX=$HERE/pbx.py
scenarios=()
pbx_scenarios=()
if [ "$#" -gt 0 ]; then
    for name in "$@"; do
        case "$name" in
            pbx-*) pbx_scenarios+=("$name") ;;
            *) scenarios+=("$name") ;;
        esac
    done
else
    mapfile -t scenarios < <(python3 "$DRIVER" list)
    mapfile -t pbx_scenarios < <(python3 "$PBX" list)
fi
[ $((${#scenarios[@]} + ${#pbx_scenarios[@]})) -gt 0 ] || die "no scenarios"

export SIPRELAY_SIP=127.0.0.1:$SIP_PORT
export SIPRELAY_HTTP=127.0.0.1:$HTTP_PORT
export SIPP_SERVER_PORT=$SERVER_PORT
export INTEROP_WORK=$WORK
export INTEROP_PIDS=$PIDS_FILE

passed=0
failed=0
skipped=0
failures=()
daemon_dead=0

# Runs one scenario of a driver (interop.py or pbx.py) and counts it;
# fails when the scenario failed.
run_scenario() { # driver name
    echo "---- $2"
    local status=0
    run_child timeout -k 5 "$SCENARIO_LIMIT" python3 "$1" run "$2" || status=$?
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
    elif [ "$status" -eq 3 ]; then
        # The driver's "skip": the scenario needs something this machine lacks (root).
        skipped=$((skipped + 1))
    else
        failed=$((failed + 1))
        failures+=("$2")
        echo "FAIL $2"
        return 1
    fi
}
for name in "${scenarios[@]}"; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        daemon_dead=1
        failed=$((failed + 1))
        failures+=("$name (not run: siprelay is gone)")
        continue
    fi
    first=$(($(wc -l <"$DAEMON_LOG") + 1))
    run_scenario "$DRIVER" "$name" || print_daemon_log "$first"
done

# ------------------------------------------------------------ 6. shutdown
# SIGTERM must stop the daemon cleanly, and nothing may have panicked.
echo "---- shutdown"
if [ "$daemon_dead" -eq 1 ] || ! kill -0 "$DAEMON_PID" 2>/dev/null; then
    wait "$DAEMON_PID" 2>/dev/null && rc=0 || rc=$?
    DAEMON_PID=""
    echo "FAIL shutdown: siprelay died during the scenarios (exit status $rc)"
    print_daemon_log
    failed=$((failed + 1))
    failures+=("shutdown")
else
    kill -TERM "$DAEMON_PID"
    rc=""
    for _ in $(seq 1 100); do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            wait "$DAEMON_PID" 2>/dev/null && rc=0 || rc=$?
            break
        fi
        sleep 0.1
    done
    if [ -z "$rc" ]; then
        echo "FAIL shutdown: siprelay still running 10 s after SIGTERM"
        print_daemon_log
        failed=$((failed + 1))
        failures+=("shutdown")
    elif [ "$rc" -ne 0 ]; then
        echo "FAIL shutdown: siprelay exited with status $rc after SIGTERM"
        print_daemon_log
        failed=$((failed + 1))
        failures+=("shutdown")
    elif grep -n -E 'panicked|RUST_BACKTRACE' "$DAEMON_LOG"; then
        echo "FAIL shutdown: siprelay panicked during the run (see above)"
        failed=$((failed + 1))
        failures+=("shutdown (panic)")
    else
        echo "ok   shutdown (SIGTERM, exit 0, no panic in the log)"
        passed=$((passed + 1))
    fi
    DAEMON_PID=""
fi

# ------------------------------------------------------------ 7. PBX scenarios
# Each starts its own Kamailio, baresip and siprelay instances.
command -v kamailio >/dev/null 2>&1 || die "kamailio not found after installing it"
command -v baresip >/dev/null 2>&1 || die "baresip not found after installing baresip-core"
for name in "${pbx_scenarios[@]}"; do
    run_scenario "$PBX" "$name" || true
done

echo
say "took $((SECONDS - STARTED))s"
if [ "$failed" -gt 0 ]; then
    say "failed: ${failures[*]}"
fi
if [ "$skipped" -gt 0 ]; then
    echo "interop: $passed passed, $failed failed, $skipped skipped"
else
    echo "interop: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
