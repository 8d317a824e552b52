#!/usr/bin/env python3
"""Plots siprelay-bench results: daemon CPU per call-second and latency p99
against the number of calls, for each connection layout.

    python3 scripts/plot_bench.py DIR OUT.png

DIR holds {per-call,shared}-{N}.json as written by scripts/bench-sweep.sh,
and floor.txt (the output of `siprelay-bench --floor`) if the floor is to be drawn.
Needs matplotlib (installed with pip when missing)."""
import glob
import json
import os
import re
import subprocess
import sys

try:
    import matplotlib
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "matplotlib"])
    import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, out = sys.argv[1], sys.argv[2]
runs = {}
for path in glob.glob(os.path.join(src, "*.json")):
    layout, calls = os.path.basename(path)[:-5].rsplit("-", 1)
    with open(path) as f:
        runs.setdefault(layout, []).append((int(calls), json.load(f)))

fig, (cpu, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
labels = {"per-call": "one WebSocket per call", "shared": "50 WebSockets shared"}
for layout, points in sorted(runs.items()):
    points.sort()
    n = [c for c, _ in points]
    cpu.plot(n, [r["daemon"]["cpu_us_per_call_second"] for _, r in points], "o-", label=labels.get(layout, layout))
    lat.plot(n, [r["rtp_to_ws"]["latency"]["p99_ms"] for _, r in points], "o-", label=f"RTP→WS p99, {labels.get(layout, layout)}")
    lat.plot(n, [r["ws_to_rtp"]["latency"]["p99_ms"] for _, r in points], "s--", label=f"WS→RTP p99, {labels.get(layout, layout)}")
cpu.axhline(250, color="grey", linestyle=":", label="target 250 µs")
# The kernel's own cost of the daemon's messages, from `siprelay-bench --floor`.
floor_path = os.path.join(src, "floor.txt")
if os.path.exists(floor_path):
    with open(floor_path) as f:
        found = re.search(r"falls to the daemon: (\d+) µs", f.read())
    if found:
        cpu.axhline(int(found.group(1)), color="black", linestyle="--",
                    label=f"system-call floor, daemon's share ({found.group(1)} µs)")
cpu.set_xlabel("concurrent calls")
cpu.set_ylabel("daemon CPU, µs per call-second")
cpu.set_title("CPU per call")
cpu.legend(fontsize=8)
lat.set_xlabel("concurrent calls")
lat.set_ylabel("latency p99, ms (log)")
lat.set_yscale("log")
lat.set_title("Latency")
lat.legend(fontsize=7)
fig.suptitle("siprelay-bench on 2 cores, bench and daemon on the same machine")
fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"wrote {out}")
