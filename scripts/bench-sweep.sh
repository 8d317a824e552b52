#!/usr/bin/env bash
# Runs siprelay-bench at 100, 500, 1,000 and 2,000 calls, once with one
# WebSocket connection per call and once with 50 connections sharing the
# calls, writes each run's JSON and table to DIR (default bench-results/),
# and the system-call floor (--floor), then plots CPU per call and latency
# against calls (scripts/plot_bench.py).
#
#   bash scripts/bench-sweep.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
mkdir -p "$out"
cargo build --release --bins
target/release/siprelay-bench --floor | tee "$out/floor.txt"
for calls in 100 500 1000 2000; do
    seconds=30
    [ "$calls" -eq 100 ] && seconds=20
    [ "$calls" -eq 2000 ] && seconds=60
    for layout in per-call shared; do
        args=(--calls "$calls" --seconds "$seconds" --json "$out/$layout-$calls.json")
        [ "$layout" = shared ] && args+=(--clients 50)
        echo "== $layout, $calls calls, $seconds s"
        timeout 900 target/release/siprelay-bench "${args[@]}" >"$out/$layout-$calls.txt" 2>"$out/$layout-$calls.log" || true
        grep -E "daemon CPU|daemon RSS|RTP→WS latency|WS→RTP latency|far-end" "$out/$layout-$calls.txt" || true
    done
done
python3 scripts/plot_bench.py "$out" "$out/bench.png"
