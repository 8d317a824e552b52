#!/usr/bin/env bash
# The torture run: every attack siprelay is hardened against, on loopback,
# against the release build with 20 victim calls driven by siprelay-bench.
# Prints a table (attack, load, outcome, the victims' send-interval p99 and
# WS→RTP p99 before and during, RSS before and after, frames lost, what the
# metrics counted) and exits non-zero when a target is missed.
#
#   bash scripts/torture.sh                  # every attack, about 8 minutes
#   bash scripts/torture.sh "INVITE flood"   # the baseline and that attack
#
# Needs python3 (standard library only). Traces stay in the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin siprelay --bin siprelay-bench
WORK=$(mktemp -d "${TMPDIR:-/tmp}/siprelay-torture.XXXXXX")
echo "torture: traces in $WORK"
# The idle-client attack opens over a thousand sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
python3 scripts/torture/torture.py target/release "$WORK" "$@"
