#!/usr/bin/env python3
"""siprelay's torture run: every attack of the hardening work against the
release daemon on loopback, with 20 victim calls driven by siprelay-bench,
and a table of what each did to the victims.

    python3 scripts/torture/torture.py BIN_DIR WORK_DIR

BIN_DIR holds siprelay and siprelay-bench (target/release). Python standard
library only. Every packet goes to 127.0.0.1; attackers send from other
loopback addresses (127.0.0.2 and up), which the daemon does not trust,
while the victims' SIP comes from 127.0.0.1, as a PBX's would from a
trusted address. Each attack is bounded in count and time.
"""

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request

LOOPBACK = "127.0.0.1"
VICTIMS = 20
STEADY_S = 12.0
WARMUP_S = 2.0
ATTACK_S = 10.0
RTP_PORTS = (40000, 40999)


def free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def http(addr, method, path, headers=None, body=b""):
    """One HTTP/1.1 request over a raw socket; (status, body text)."""
    host, port = addr
    with socket.create_connection((host, port), timeout=5) as s:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, rest.decode(errors="replace")


def metrics(addr):
    _, text = http(addr, "GET", "/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def refused_total(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


# ----- the attacks -----

def sip_request(method, src, n, body="", extra=""):
    ip, port = src
    return (
        f"{method} sip:{1000 + n % 9000}@{LOOPBACK} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK-t{n}-{random.getrandbits(32)};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:scan@{ip}>;tag=t{n}\r\nTo: <sip:{1000 + n % 9000}@{LOOPBACK}>\r\n"
        f"Call-ID: torture-{n}-{random.getrandbits(40)}\r\nCSeq: 1 {method}\r\n"
        f"Contact: <sip:scan@{ip}:{port}>\r\n{extra}"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def sdp(ip, port):
    return (f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def sip_flood(ctx, total, sources):
    """`total` mixed SIP requests over ATTACK_S from `sources` loopback
    addresses: garbage, OPTIONS, REGISTER, bad SDP, INVITEs never ACKed."""
    socks = []
    for i in range(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.{1 + i // 250}.{2 + i % 250}", 0))
        s.setblocking(False)
        socks.append(s)
    target = ctx["sip"]
    kinds = ["garbage", "OPTIONS", "REGISTER", "badsdp", "INVITE"]
    start = time.monotonic()
    sent = 0
    while sent < total and time.monotonic() - start < ATTACK_S + 5:
        due = int(total * min(1.0, (time.monotonic() - start) / ATTACK_S))
        while sent < due:
            s = socks[sent % len(socks)]
            src = s.getsockname()
            kind = kinds[sent % len(kinds)]
            if kind == "garbage":
                msg = os.urandom(200)
            elif kind == "badsdp":
                msg = sip_request("INVITE", src, sent, body="v=0\r\nm=audio x\r\n")
            elif kind == "INVITE":
                msg = sip_request("INVITE", src, sent, body=sdp(src[0], 9))
            else:
                msg = sip_request(kind, src, sent)
            try:
                s.sendto(msg, target)
            except BlockingIOError:
                pass
            sent += 1
        time.sleep(0.002)
    for s in socks:
        s.close()
    return f"{sent} requests from {sources} source{'s' if sources > 1 else ''}"


def ws_client(ctx, path="/ws"):
    """A WebSocket client that connects and never reads or answers."""
    s = socket.create_connection(ctx["http"], timeout=5)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{ctx['http'][1]}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    head = s.recv(4096)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        s.close()
        return None
    return s


def invite_flood(ctx, total, sources):
    """INVITEs never ACKed (nor CANCELled), each asking for a port pair. A
    client that takes every offer and never answers lets them ring (until
    the ring timeout), as an application's would."""
    ringer = ws_client(ctx)
    socks = []
    for i in range(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.3.{2 + i}", 0))
        socks.append(s)
    start = time.monotonic()
    for n in range(total):
        s = socks[n % sources]
        src = s.getsockname()
        s.sendto(sip_request("INVITE", src, n, body=sdp(src[0], 9)), ctx["sip"])
        time.sleep(max(0.0, start + ATTACK_S * (n + 1) / total - time.monotonic()))
    _, ready = http(ctx["http"], "GET", "/readyz")
    free = json.loads(ready).get("rtp_port_pairs_free")
    for s in socks:
        s.close()
    if ringer:
        ringer.close()
    return f"{total} INVITEs from {sources} sources, never ACKed; {free} port pairs still free"


def rtp_spray(ctx, rate_pps):
    """A stranger sprays PCMU RTP at every port of the range (the "RTP
    bleed" probe) and counts what siprelay sends back to it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.4.2", 0))
    s.setblocking(False)
    low, high = RTP_PORTS
    got = 0
    sent = 0
    start = time.monotonic()
    port = low
    while time.monotonic() - start < ATTACK_S:
        due = int(rate_pps * (time.monotonic() - start))
        while sent < due:
            header = bytes([0x80, 0, (sent >> 8) & 0xFF, sent & 0xFF]) + (sent * 160).to_bytes(4, "big") + b"\x13\x37\xbe\xef"
            try:
                s.sendto(header + b"\xff" * 160, (LOOPBACK, port))
            except BlockingIOError:
                pass
            sent += 1
            port = low if port + 2 > high else port + 2
        try:
            while True:
                s.recv(2048)
                got += 1
        except BlockingIOError:
            pass
        time.sleep(0.002)
    s.close()
    ctx["hijacked_packets"] = got
    return f"{sent} RTP packets to every port, {got} came back"


def cross_site(ctx):
    """What a hostile page in the user's browser would send; every one must be refused."""
    h = ctx["http"]
    tries = [
        ("POST", "/calls", {"Origin": "http://evil.example", "Content-Type": "text/plain"},
         b'{"to":"1002"}'),
        ("POST", "/calls", {"Origin": "http://evil.example", "Content-Type": "application/json"},
         b'{"to":"1002"}'),
        ("POST", "/calls", {"Content-Type": "text/plain"}, b'{"to":"1002"}'),
        ("GET", "/recordings", {"Host": "evil.example"}, b""),
        ("GET", "/ws", {"Origin": "http://evil.example", "Upgrade": "websocket",
                        "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, b""),
    ]
    ok = 0
    n = 0
    start = time.monotonic()
    while time.monotonic() - start < ATTACK_S:
        for method, path, headers, body in tries:
            host, port = h
            with socket.create_connection(h, timeout=5) as s:
                hdrs = dict(headers)
                lines = [f"{method} {path} HTTP/1.1", f"Host: {hdrs.pop('Host', f'{host}:{port}')}",
                         "Connection: close"]
                lines += [f"{k}: {v}" for k, v in hdrs.items()]
                if body:
                    lines.append(f"Content-Length: {len(body)}")
                s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
                status = int(s.recv(4096).split(b" ", 2)[1])
            n += 1
            if status < 400:
                ok += 1
        time.sleep(0.05)
    ctx["cross_site_successes"] = ok
    return f"{n} requests, {ok} succeeded"


def slowloris(ctx, count):
    """Half-open HTTP connections sending a header line now and then."""
    conns = []
    for _ in range(count):
        try:
            s = socket.create_connection(ctx["http"], timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            conns.append(s)
        except OSError:
            break
    start = time.monotonic()
    while time.monotonic() - start < ATTACK_S:
        for s in conns:
            try:
                s.sendall(b"X-a: b\r\n")
            except OSError:
                pass
        time.sleep(1)
    closed = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    ctx["slowloris_closed"] = closed
    return f"{len(conns)} connections, {closed} closed by siprelay"


def idle_websockets(ctx, count):
    """`count` idle /ws clients (each offered every call), held for the run."""
    conns = []
    refused = 0
    start = time.monotonic()
    for _ in range(count):
        try:
            s = ws_client(ctx)
        except OSError:
            s = None
        if s:
            conns.append(s)
        else:
            refused += 1
    time.sleep(max(0.0, ATTACK_S - (time.monotonic() - start)))
    for s in conns:
        s.close()
    return f"{count} idle clients, {len(conns)} held, {refused} refused (max_clients)"


# ----- the run -----

def bench(ctx, name):
    out = os.path.join(ctx["work"], f"bench-{name}.json")
    cmd = [os.path.join(ctx["bin"], "siprelay-bench"), "--calls", str(VICTIMS), "--rate", "50",
           "--seconds", str(STEADY_S), "--warmup", str(WARMUP_S),
           "--daemon-sip", f"{LOOPBACK}:{ctx['sip'][1]}",
           "--daemon-http", f"{LOOPBACK}:{ctx['http'][1]}",
           "--daemon-pid", str(ctx["pid"]), "--json", out]
    log = open(os.path.join(ctx["work"], f"bench-{name}.log"), "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), out


def victims(path):
    with open(path) as f:
        r = json.load(f)
    lost = (r["rtp_at_bench"]["lost"] + r["rtp_to_ws"]["missing"] + r["ws_to_rtp"]["missing"]
            + r["calls"]["dropped_by_daemon"] + r["calls"]["failed"])
    return {
        "interval_p99": r["far_end_send_interval_deviation"]["p99_ms"],
        "ws_rtp_p99": r["ws_to_rtp"]["latency"]["p99_ms"],
        "lost": lost,
        "foreign": r["rtp_at_bench"]["foreign"],
        "set_up": r["calls"]["set_up"],
    }


def settle_rss(pid, start_kib, limit_s=75):
    """RSS once it is back within 10 % of `start_kib`, or after `limit_s`."""
    deadline = time.monotonic() + limit_s
    now = rss_kib(pid)
    while now > start_kib * 1.10 and time.monotonic() < deadline:
        time.sleep(1)
        now = rss_kib(pid)
    return now


def run_attack(ctx, name, load, attack):
    if ctx["only"] and name not in ctx["only"] and name not in ("warm-up", "none (baseline)"):
        return None
    m0 = metrics(ctx["http"])
    rss0 = rss_kib(ctx["pid"])
    result = {}

    def go():
        result["outcome"] = attack()

    t = threading.Thread(target=go)
    proc, out = bench(ctx, name)
    time.sleep(WARMUP_S + 1.0)  # the victims are up and in their window
    t.start()
    t.join(ATTACK_S + WARMUP_S + STEADY_S + 30)
    proc.wait(timeout=120)
    m1 = metrics(ctx["http"])
    rss1 = settle_rss(ctx["pid"], rss0)
    v = victims(out)
    v.update(name=name, load=load, outcome=result.get("outcome", "did not finish"),
             rss_before=rss0, rss_after=rss1,
             sip_refused=refused_total(m1, "siprelay_sip_refused_total") - refused_total(m0, "siprelay_sip_refused_total"),
             http_refused=refused_total(m1, "siprelay_http_refused_total") - refused_total(m0, "siprelay_http_refused_total"),
             rtp_ignored=m1.get("siprelay_rtp_packets_ignored_total", 0) - m0.get("siprelay_rtp_packets_ignored_total", 0))
    return v


def main():
    bin_dir, work = sys.argv[1], sys.argv[2]
    only = sys.argv[3:]  # attack names to run (default: all)
    sip_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    daemon_log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen(
        [os.path.join(bin_dir, "siprelay"), "--sip-listen", f"{LOOPBACK}:{sip_port}",
         "--http-listen", f"{LOOPBACK}:{http_port}", "--rtp-ports", f"{RTP_PORTS[0]}-{RTP_PORTS[1]}",
         "--no-record", "--greeting", "none"],
        stdout=daemon_log, stderr=subprocess.STDOUT, env=dict(os.environ, NO_COLOR="1"))
    ctx = {"bin": bin_dir, "work": work, "pid": daemon.pid,
           "sip": (LOOPBACK, sip_port), "http": (LOOPBACK, http_port), "only": only}
    try:
        for _ in range(100):
            try:
                if http(ctx["http"], "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        # The allocator's and the runtime's first use, not measured.
        run_attack(ctx, "warm-up", "-", lambda: "victims alone")
        rows = []
        rows.append(run_attack(ctx, "none (baseline)", "-", lambda: "victims alone"))
        rows.append(run_attack(ctx, "SIP flood, one source", "50k requests in 10 s",
                               lambda: sip_flood(ctx, 50_000, 1)))
        rows.append(run_attack(ctx, "SIP flood, 500 sources", "100k requests in 10 s",
                               lambda: sip_flood(ctx, 100_000, 500)))
        rows.append(run_attack(ctx, "INVITE flood", "1,000 INVITEs, 50 sources",
                               lambda: invite_flood(ctx, 1000, 50)))
        rows.append(run_attack(ctx, "RTP bleed probe", "2,000 packets/s to every port",
                               lambda: rtp_spray(ctx, 2000)))
        rows.append(run_attack(ctx, "cross-site requests", "POST /calls, /ws, rebinding",
                               lambda: cross_site(ctx)))
        rows.append(run_attack(ctx, "slowloris", "500 half-open HTTP connections",
                               lambda: slowloris(ctx, 500)))
        rows.append(run_attack(ctx, "idle WebSockets", "1,100 idle /ws clients",
                               lambda: idle_websockets(ctx, 1100)))
        rows = [r for r in rows if r]
        alive = daemon.poll() is None
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
    base = rows[0]
    print()
    print("| attack | load | outcome | victims' interval p99 ms (before → during) | WS→RTP p99 ms (before → during) | RSS KiB (before → after) | victim frames lost | refused (SIP / HTTP / RTP) |")
    print("|---|---|---|---|---|---|---|---|")
    failures = []
    for r in rows:
        print(f"| {r['name']} | {r['load']} | {r['outcome']} | {base['interval_p99']:.1f} → {r['interval_p99']:.1f} "
              f"| {base['ws_rtp_p99']:.1f} → {r['ws_rtp_p99']:.1f} | {r['rss_before']} → {r['rss_after']} "
              f"| {r['lost']} | {int(r['sip_refused'])} / {int(r['http_refused'])} / {int(r['rtp_ignored'])} |")
        if r["lost"]:
            failures.append(f"{r['name']}: {r['lost']} victim frames lost")
        if r["set_up"] < VICTIMS:
            failures.append(f"{r['name']}: {r['set_up']} of {VICTIMS} victim calls set up")
        if r["interval_p99"] - base["interval_p99"] > 1.0:
            failures.append(f"{r['name']}: interval p99 moved by {r['interval_p99'] - base['interval_p99']:.1f} ms")
        if r["rss_after"] > r["rss_before"] * 1.10:
            failures.append(f"{r['name']}: RSS {r['rss_before']} → {r['rss_after']} KiB")
    if ctx.get("hijacked_packets"):
        failures.append(f"RTP bleed: {ctx['hijacked_packets']} packets reached the stranger")
    if ctx.get("cross_site_successes"):
        failures.append(f"cross-site: {ctx['cross_site_successes']} requests succeeded")
    if not alive:
        failures.append("siprelay died during the run")
    print()
    for f in failures:
        print(f"torture: MISSED: {f}")
    print(f"torture: {len(rows)} runs, {len(failures)} targets missed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
