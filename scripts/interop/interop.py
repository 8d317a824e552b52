#!/usr/bin/env python3
"""siprelay interop scenarios: SIPp (Debian's sip-tester) on the SIP side, a
scripted WebSocket client on the other, the real daemon in between.

scripts/interop.sh builds and starts the daemon, then calls

    interop.py ports N            N free loopback ports, one per line
    interop.py media DIR          make the tone files SIPp streams (needs sox)
    interop.py list               the scenario names, in run order
    interop.py run NAME           run one scenario; exit 0 when it passed

`run` reads the daemon's addresses from the environment:
    SIPRELAY_SIP     the daemon's SIP address, 127.0.0.1:PORT
    SIPRELAY_HTTP    the daemon's HTTP address, 127.0.0.1:PORT
    SIPP_SERVER_PORT the port the daemon's --sip-server names (SIPp UAS runs there)
    INTEROP_WORK     a directory for SIPp's traces and the tone files
    INTEROP_PIDS     a file to append the PIDs of started SIPp processes to
                     (the shell script kills them if this process is killed)

Only loopback is used: every SIPp gets -i 127.0.0.1 -mi 127.0.0.1.
"""

import array
import base64
import math
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ws import WebSocket  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS_DIR = os.path.join(HERE, "sipp")
LOOPBACK = "127.0.0.1"
RATE = 8000
FRAME_BYTES = 320  # 20 ms of 16-bit PCM at 8 kHz
ID = r"[0-9a-f]{16}"
# .ci/run sets CI=true and runs as root: there, no check may be left out.
IN_CI = os.environ.get("CI") == "true"

# The tone SIPp streams: 3 s of 440 Hz at -6 dBFS, made by sox (an encoder
# independent of siprelay's G.711 tables).
TONE_HZ = 440
TONE_SECONDS = 3
TONE_GAIN_DB = -6
# The tone the WebSocket client sends back.
BACK_HZ = 1000
# The file the REST scenario plays (in $INTEROP_WORK/assets, siprelay's --assets-dir).
PLAY_FILE = "beep1000.wav"
PLAY_SECONDS = 1.5
BACK_AMPLITUDE = 8000


class Fail(Exception):
    pass


def log(msg):
    print(f"    {msg}", flush=True)


# ---------------------------------------------------------------- audio


def samples_of(pcm):
    a = array.array("h")
    a.frombytes(pcm)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def tone_pcm(freq, seconds, amplitude):
    n = int(RATE * seconds)
    a = array.array("h", (int(round(amplitude * math.sin(2 * math.pi * freq * i / RATE))) for i in range(n)))
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def rms(samples):
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def zero_crossing_hz(samples):
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / RATE)


def goertzel_share(samples, freq):
    """Share of the signal's energy at freq (1.0 for a pure tone)."""
    n = len(samples)
    k = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    energy = sum(x * x for x in samples)
    return 2 * power / (n * energy) if energy else 0.0


def check_tone(frames, freq, expected_rms, min_frames, max_frames, what):
    """frames: 320-byte PCM frames in arrival order. The loud ones must be a
    pure tone of freq at about expected_rms; returns (how many, a summary)."""
    loud = [f for f in frames if rms(samples_of(f)) > 500]
    if not (min_frames <= len(loud) <= max_frames):
        raise Fail(f"{what}: {len(loud)} frames with audio (of {len(frames)}), "
                   f"expected {min_frames}..{max_frames}")
    samples = samples_of(b"".join(loud))
    hz = zero_crossing_hz(samples)
    share = goertzel_share(samples[: RATE], freq)
    level = rms(samples)
    summary = (f"{what}: {len(loud)} audio frames of {len(frames)}, {hz:.1f} Hz by zero crossings, "
               f"{share:.2f} of the energy at {freq} Hz, RMS {level:.0f} (expected {expected_rms:.0f})")
    if abs(hz - freq) > freq * 0.02:
        raise Fail(f"{summary}: wrong frequency")
    if share < 0.8:
        raise Fail(f"{summary}: not a pure {freq} Hz tone")
    if abs(level - expected_rms) > expected_rms * 0.15:
        raise Fail(f"{summary}: wrong level")
    return len(loud), summary


def ulaw_to_linear(byte):
    """G.711 mu-law to 16-bit linear, from the recommendation (not siprelay's tables)."""
    b = ~byte & 0xFF
    magnitude = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 7)) - 0x84
    return -magnitude if b & 0x80 else magnitude


def alaw_to_linear(byte):
    a = byte ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if a & 0x80 else -magnitude


G711 = {0: [ulaw_to_linear(b) for b in range(256)], 8: [alaw_to_linear(b) for b in range(256)]}


def make_media(directory):
    """The tone files rtp_stream plays: raw G.711, no header, made by sox."""
    for encoding, name in (("u-law", "tone440.ul"), ("a-law", "tone440.al")):
        path = os.path.join(directory, name)
        subprocess.run(
            ["sox", "-n", "-r", str(RATE), "-c", "1", "-e", encoding, "-t", "raw", path,
             "synth", str(TONE_SECONDS), "sine", str(TONE_HZ), "gain", str(TONE_GAIN_DB)],
            check=True, timeout=30)
        size = os.path.getsize(path)
        if size != RATE * TONE_SECONDS:
            raise SystemExit(f"sox made {size} bytes for {name}, expected {RATE * TONE_SECONDS}")
    # A file for POST /calls to play: 44.1 kHz stereo float, so that siprelay's
    # resampler and format handling meet a file made by other software.
    assets = os.path.join(directory, "assets")
    os.makedirs(assets, exist_ok=True)
    subprocess.run(
        ["sox", "-n", "-r", "44100", "-c", "2", "-e", "floating-point", "-b", "32",
         os.path.join(assets, PLAY_FILE), "synth", str(PLAY_SECONDS), "sine", str(BACK_HZ),
         "gain", str(TONE_GAIN_DB)],
        check=True, timeout=30)


# ---------------------------------------------------------------- ports


def _udp_sockets(port):
    """The inodes of the UDP sockets bound to 127.0.0.1:port (or any address), from /proc."""
    inodes = set()
    try:
        with open("/proc/net/udp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] in (f"0100007F:{port:04X}", f"00000000:{port:04X}"):
                    inodes.add(fields[9])
    except OSError:
        pass
    return inodes


def _owns_socket(pid, inodes):
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False


def _free(port):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _candidate_ports():
    """Ports the kernel never hands out as ephemeral ones, so that other
    programs on the machine cannot take them between our check and our use;
    clear of siprelay's --rtp-ports (40000-40999) and its default 20000-29999."""
    try:
        low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    avoid = [(low, high), (40000, 41001), (20000, 29999)]
    ports = [p for p in range(10000, 65001) if not any(a <= p <= b for a, b in avoid)]
    return ports or list(range(10000, 20000))


_taken = set()


def free_port(pair=False):
    """A port free for UDP and TCP on loopback (and port+2 too when pair)."""
    import random
    candidates = _candidate_ports()
    for _ in range(2000):
        port = random.choice(candidates)
        if pair:
            port &= ~1
        if port in _taken or (pair and port + 2 in _taken):
            continue
        if _free(port) and (not pair or _free(port + 2)):
            _taken.update((port, port + 2) if pair else (port,))
            return port
    raise Fail("no free loopback port")


# ---------------------------------------------------------------- RTP on the wire


class Skip(Exception):
    pass


class Sniffer:
    """Captures the UDP datagrams on the loopback interface to or from the
    given ports (an AF_PACKET socket: needs root or CAP_NET_RAW). This sees
    siprelay's RTP as SIPp gets it, independently of siprelay and SIPp."""

    PACKET_OUTGOING = 4

    def __init__(self, ports):
        self.ports = set(ports)
        self.packets = []  # (time, src port, dst port, UDP payload)
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._attach_filter(self.ports)
            self.sock.bind(("lo", 0))
        except (PermissionError, OSError, AttributeError) as e:
            raise Skip(f"cannot capture on lo ({e}); run as root")
        self.sock.settimeout(0.1)
        self.stopped = False
        self.drops = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _attach_filter(self, ports):
        """A classic BPF program, so that the kernel hands over only UDP
        datagrams from or to our ports (other loopback traffic may be heavy)."""
        import ctypes
        (port,) = ports
        program = [  # (code, jt, jf, k)
            (0x28, 0, 0, 12),        # 0  ldh [12]           ethertype
            (0x15, 0, 10, 0x0800),   # 1  jeq IPv4 else drop
            (0x30, 0, 0, 23),        # 2  ldb [23]           IP protocol
            (0x15, 0, 8, 17),        # 3  jeq UDP else drop
            (0x28, 0, 0, 20),        # 4  ldh [20]           fragment offset
            (0x45, 6, 0, 0x1FFF),    # 5  jset -> drop       (not a first fragment)
            (0xB1, 0, 0, 14),        # 6  ldxb 4*([14]&0xf)  IP header length
            (0x48, 0, 0, 14),        # 7  ldh [x+14]         source port
            (0x15, 2, 0, port),      # 8  jeq -> accept
            (0x48, 0, 0, 16),        # 9  ldh [x+16]         destination port
            (0x15, 0, 1, port),      # 10 jeq -> accept else drop
            (0x06, 0, 0, 0x40000),   # 11 accept
            (0x06, 0, 0, 0),         # 12 drop
        ]
        code = b"".join(struct.pack("HBBI", *insn) for insn in program)
        self._bpf = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(program), ctypes.addressof(self._bpf))
        self.sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER

    def _run(self):
        while not self.stopped:
            try:
                frame, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if addr[2] == self.PACKET_OUTGOING:
                continue  # loopback shows each datagram twice
            ip = frame[14:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            udp = ip[(ip[0] & 0x0F) * 4:]
            sport, dport = int.from_bytes(udp[0:2], "big"), int.from_bytes(udp[2:4], "big")
            if sport in self.ports or dport in self.ports:
                self.packets.append((time.monotonic(), sport, dport, bytes(udp[8:])))

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        self.thread.join(timeout=2)
        try:
            # struct tpacket_stats (SOL_PACKET 263, PACKET_STATISTICS 6): packets, drops.
            stats = self.sock.getsockopt(263, 6, 8)
            self.drops = int.from_bytes(stats[4:8], sys.byteorder)
        except OSError:
            self.drops = None
        self.sock.close()

    def rtp(self, dport=None, sport=None):
        """The RTP packets to dport / from sport: dicts of header fields and payload."""
        out = []
        for t, sp, dp, data in self.packets:
            if (dport is not None and dp != dport) or (sport is not None and sp != sport):
                continue
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            cc = data[0] & 0x0F
            out.append({
                "time": t, "sport": sp, "dport": dp,
                "marker": data[1] >> 7, "pt": data[1] & 0x7F,
                "seq": int.from_bytes(data[2:4], "big"),
                "ts": int.from_bytes(data[4:8], "big"),
                "ssrc": int.from_bytes(data[8:12], "big"),
                "payload": data[12 + 4 * cc:],
            })
        return out


def check_rtp_stream(packets, pt, freq, expected_rms, min_tone_packets, what, drops=0):
    """siprelay's RTP as captured: one SSRC, consecutive sequence numbers,
    timestamps 160 apart, 20 ms payloads every 20 ms, and the tone in it
    (decoded here, by the book)."""
    if len(packets) < 20:
        raise Fail(f"{what}: only {len(packets)} RTP packets captured")
    problems = []
    if {p["pt"] for p in packets} != {pt}:
        problems.append(f"payload types {sorted({p['pt'] for p in packets})}, expected {pt}")
    if len({p["ssrc"] for p in packets}) != 1:
        problems.append(f"{len({p['ssrc'] for p in packets})} SSRCs")
    if {p["sport"] for p in packets} .__len__() != 1:
        problems.append("several source ports")
    sizes = {len(p["payload"]) for p in packets}
    if sizes != {160}:
        problems.append(f"payload sizes {sorted(sizes)}, expected 160")
    for i, (a, b) in enumerate(zip(packets, packets[1:])):
        if (b["seq"] - a["seq"]) % 65536 != 1:
            around = ", ".join(f"#{p['seq']} ts {p['ts']} at {p['time'] - packets[0]['time']:.3f}s"
                               for p in packets[max(0, i - 2): i + 4])
            problems.append(f"sequence {a['seq']} followed by {b['seq']} (packet {i + 1} of {len(packets)}: {around})")
            break
        if (b["ts"] - a["ts"]) % 2**32 != 160:
            problems.append(f"timestamp {a['ts']} followed by {b['ts']}")
            break
    span = packets[-1]["time"] - packets[0]["time"]
    rate = (len(packets) - 1) / span if span > 0 else 0
    if not 45 <= rate <= 55:
        problems.append(f"{rate:.1f} packets a second, expected 50")
    if problems:
        raise Fail(f"{what}: " + "; ".join(problems) + f" [capture drops: {drops}]")
    table = G711[pt]
    frames = []
    for p in packets:
        a = array.array("h", (table[b] for b in p["payload"]))
        if sys.byteorder != "little":
            a.byteswap()
        frames.append(a.tobytes())
    count, summary = check_tone(frames, freq, expected_rms, min_tone_packets, len(packets), what)
    return f"{summary}; {len(packets)} packets at {rate:.1f}/s, sequence and timestamps continuous"


# ---------------------------------------------------------------- SIPp


class Sipp:
    """One SIPp process, with its message trace and error log kept. With
    sniff, the RTP to and from its media port is captured from the start."""

    def __init__(self, ctx, name, xml, *, port=None, target=None, service="2000",
                 calls=1, extra=(), timeout=40, sniff=False):
        self.ctx = ctx
        self.name = name
        self.port = port or free_port()
        self.media_port = free_port(pair=True)
        self.sniffer = None
        if sniff:
            try:
                self.sniffer = Sniffer([self.media_port])
                ctx.sniffers.append(self.sniffer)
            except Skip as e:
                if sniff == "required" or IN_CI:
                    raise
                log(f"RTP on the wire not checked: {e}")
        base = os.path.join(ctx.work, f"{ctx.scenario}.{name}")
        self.files = {
            "messages": base + ".messages.log",
            "errors": base + ".errors.log",
            "screen": base + ".screen.log",
            "output": base + ".out.log",
        }
        for f in self.files.values():
            if os.path.exists(f):
                os.unlink(f)
        args = [
            "sipp", "-sf", os.path.join(SCENARIOS_DIR, xml),
            "-i", LOOPBACK, "-mi", LOOPBACK,
            "-p", str(self.port), "-mp", str(self.media_port),
            "-m", str(calls), "-nostdin",
            "-trace_msg", "-message_file", self.files["messages"],
            "-trace_err", "-error_file", self.files["errors"],
            "-trace_screen", "-screen_file", self.files["screen"],
            "-timeout", f"{timeout}s", "-timeout_error",
        ] + list(extra)
        if target:
            args += ["-s", service, target]
        self.args = args
        self.out = open(self.files["output"], "wb")
        self.proc = subprocess.Popen(args, cwd=ctx.work, stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        ctx.sipps.append(self)
        if ctx.pidfile:
            with open(ctx.pidfile, "a") as f:
                f.write(f"{self.proc.pid}\n")
        log(f"sipp {name}: {xml} on {LOOPBACK}:{self.port} (media {self.media_port})"
            + (f" -> {target}" if target else "") + f", pid {self.proc.pid}")

    def wait_listening(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail(f"sipp {self.name} exited with {self.proc.returncode} before listening")
            if _owns_socket(self.proc.pid, _udp_sockets(self.port)):
                return
            time.sleep(0.05)
        raise Fail(f"sipp {self.name} not listening on {self.port} after {timeout}s")

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Fail(f"sipp {self.name} still running after {timeout}s")
        if rc != 0:
            raise Fail(f"sipp {self.name} exited with status {rc} (0 means every call succeeded)")
        log(f"sipp {self.name}: exit 0, {self.summary()}")

    def summary(self):
        """SIPp's own count of successful and failed calls, from its screen dump."""
        try:
            text = open(self.files["screen"], errors="replace").read()
        except OSError:
            return "no screen file"
        ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
        bad = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
        return f"{ok[-1] if ok else '?'} successful, {bad[-1] if bad else '?'} failed calls"

    def trace(self):
        """SIPp's message trace as [('sent'|'received', message text)]."""
        try:
            text = open(self.files["messages"], errors="replace").read()
        except OSError:
            return []
        out = []
        for block in re.split(r"\n-{20,} [^\n]*\n", "\n" + text):
            m = re.match(r"UDP message (sent|received) [^\n]*\n\n?", block)
            if m:
                out.append((m.group(1), block[m.end():].strip("\n")))
        return out

    def messages(self, direction, first_line, cseq=None):
        """The messages sent or received whose first line starts with
        first_line (and whose CSeq is cseq, when given)."""
        found = []
        for d, msg in self.trace():
            if d != direction or not msg.startswith(first_line):
                continue
            if cseq is not None and not re.search(rf"^CSeq:\s*{re.escape(cseq)}\s*$", msg, re.M | re.I):
                continue
            found.append(msg)
        return found

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.out.close()

    def dump(self):
        print(f"---- sipp {self.name}: {' '.join(self.args)}")
        print(f"---- exit status: {self.proc.poll()}")
        for key in ("output", "errors", "messages"):  # output ends with the screen
            path = self.files[key]
            if not os.path.exists(path):
                continue
            lines = open(path, errors="replace").read().splitlines()
            if not lines:
                continue
            keep = 400 if key == "messages" else 60
            print(f"---- {key} ({path}){', last %d lines' % keep if len(lines) > keep else ''}:")
            for line in lines[-keep:]:
                print("     " + line)


# ---------------------------------------------------------------- WebSocket client


class Client:
    """A scripted WebSocket client: control messages go into a queue in
    order; RTP frames are decoded and kept per call as they arrive."""

    def __init__(self, ctx, name="ws"):
        self.ctx = ctx
        self.name = name
        self.control = queue.Queue()
        self.audio = defaultdict(list)
        self.bad_frames = []
        self.transcript = []
        self.t0 = time.monotonic()
        self.closed = None
        self.ws = WebSocket(f"ws://{ctx.http}/ws", self._on_text, self._on_close)
        ctx.clients.append(self)

    def _note(self, direction, text):
        if len(text) > 120:
            text = text[:100] + f"...({len(text)} chars)"
        self.transcript.append(f"{time.monotonic() - self.t0:8.3f} {self.name}{direction} {text}")

    def _on_text(self, text, binary):
        if text is None:
            self.bad_frames.append(f"binary frame of {len(binary)} bytes")
            return
        if text.startswith("RTP:"):
            call_id, sep, data = text[4:].partition("##")
            try:
                pcm = base64.b64decode(data, validate=True)
            except Exception:  # noqa: BLE001
                self.bad_frames.append(f"bad base64 in {text[:60]}")
                return
            if not sep or not re.fullmatch(ID, call_id):
                self.bad_frames.append(f"bad RTP message {text[:60]}")
            elif len(pcm) != FRAME_BYTES:
                self.bad_frames.append(f"RTP frame of {len(pcm)} bytes for {call_id}")
            self.audio[call_id].append(pcm)
            return
        self._note("<", text)
        self.control.put(text)

    def _on_close(self, reason):
        self.closed = reason
        self._note("!", reason)
        self.control.put(None)

    def send(self, text):
        self._note(">", text)
        self.ws.send(text)

    def next(self, timeout):
        try:
            msg = self.control.get(timeout=timeout)
        except queue.Empty:
            raise Fail(f"{self.name}: nothing received in {timeout}s")
        if msg is None:
            raise Fail(f"{self.name}: connection closed ({self.closed})")
        return msg

    def expect(self, want, timeout=10):
        got = self.next(timeout)
        if got != want:
            raise Fail(f"{self.name}: expected {want!r}, got {got!r}")
        return got

    def expect_re(self, pattern, timeout=10):
        got = self.next(timeout)
        m = re.fullmatch(pattern, got)
        if not m:
            raise Fail(f"{self.name}: expected /{pattern}/, got {got!r}")
        return m

    def quiet(self, seconds=0.3):
        """Nothing more may arrive: no ERROR, no duplicate event."""
        try:
            msg = self.control.get(timeout=seconds)
        except queue.Empty:
            return
        if msg is not None:
            raise Fail(f"{self.name}: unexpected {msg!r}")

    def check_frames(self):
        if self.bad_frames:
            raise Fail(f"{self.name}: malformed audio: {self.bad_frames[:5]}")

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass


class Context:
    def __init__(self, scenario):
        self.scenario = scenario
        self.sip = os.environ["SIPRELAY_SIP"]
        self.http = os.environ["SIPRELAY_HTTP"]
        self.server_port = int(os.environ["SIPP_SERVER_PORT"])
        self.work = os.environ["INTEROP_WORK"]
        self.pidfile = os.environ.get("INTEROP_PIDS")
        self.sipps = []
        self.clients = []
        self.sniffers = []
        _taken.add(self.server_port)

    def cleanup(self):
        for sn in self.sniffers:
            sn.stop()
        for c in self.clients:
            c.close()
        for s in self.sipps:
            s.kill()

    def dump(self):
        for c in self.clients:
            print(f"---- WebSocket client {c.name} (control messages; audio frames: "
                  + ", ".join(f"{k}: {len(v)}" for k, v in c.audio.items()) + ")")
            for line in c.transcript[-200:]:
                print("     " + line)
        for s in self.sipps:
            s.dump()


# ---------------------------------------------------------------- scenarios

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def name_of(fn):
    return fn.__name__.replace("_", "-")


def _answer_incoming(c, caller="1001"):
    m = c.expect_re(rf"RING_ANS:(.*)##({ID})", timeout=10)
    if m.group(1) != caller:
        raise Fail(f"RING_ANS names caller {m.group(1)!r}, expected {caller!r}")
    return m.group(2)


@scenario
def inbound_no_client(ctx):
    """SIPp calls in while no WebSocket client is connected: 480. (First in
    the list, so that no earlier scenario's client can still be there.)"""
    time.sleep(0.2)
    sipp = Sipp(ctx, "uac", "uac_no_client.xml", target=ctx.sip)
    sipp.wait(15)
    if sipp.messages("received", "SIP/2.0 180"):
        raise Fail("siprelay rang (180) with no client connected")


def _inbound_audio(ctx, xml, codec):
    tone_rms = 32768 * 10 ** (TONE_GAIN_DB / 20) / math.sqrt(2)
    c = Client(ctx)
    c.send("PING")
    c.expect("PONG")
    sipp = Sipp(ctx, "uac", xml, target=ctx.sip, sniff=True)
    call = _answer_incoming(c)
    c.send(f"CALL_ANS:{call}")
    c.expect(f"CALL_ANS:{call}")
    # Audio back to SIPp: 2 s of 1000 Hz in one message, then 0.5 s in 7 odd-sized chunks.
    c.send(f"RTP:{call}##{base64.b64encode(tone_pcm(BACK_HZ, 2, BACK_AMPLITUDE)).decode()}")
    rest = tone_pcm(BACK_HZ, 0.5, BACK_AMPLITUDE)
    for i in range(0, len(rest), 1142):
        c.send(f"RTP:{call}##{base64.b64encode(rest[i:i + 1142]).decode()}")
    c.expect(f"BYE:{call}", timeout=15)
    sipp.wait(15)
    # The recordings-review-page scenario looks this call's recording up.
    with open(os.path.join(ctx.work, f"recorded-{codec}.call"), "w") as f:
        f.write(call)
    c.quiet()
    c.check_frames()
    frames = c.audio.get(call, [])
    n = TONE_SECONDS * 50
    log(check_tone(frames, TONE_HZ, tone_rms, n - 10, n + 1, f"{codec} from SIPp")[1])
    if sipp.sniffer:
        sipp.sniffer.stop()
        packets = sipp.sniffer.rtp(dport=sipp.media_port)
        log(check_rtp_stream(packets, {"PCMU": 0, "PCMA": 8}[codec], BACK_HZ,
                             BACK_AMPLITUDE / math.sqrt(2), 120, f"{codec} to SIPp on the wire",
                             sipp.sniffer.drops))


@scenario
def inbound_pcmu_audio(ctx):
    """SIPp calls in offering PCMU and streams a 440 Hz tone; the client
    answers, hears the tone, sends audio back; SIPp hangs up."""
    _inbound_audio(ctx, "uac_audio.xml", "PCMU")


@scenario
def inbound_pcma_audio(ctx):
    """The same with PCMA only."""
    _inbound_audio(ctx, "uac_audio_pcma.xml", "PCMA")


@scenario
def inbound_client_hangs_up(ctx):
    """SIPp calls in, the client answers and hangs up; SIPp receives the BYE."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uac", "uac_wait_bye.xml", target=ctx.sip)
    call = _answer_incoming(c)
    c.send(f"CALL_ANS:{call}")
    c.expect(f"CALL_ANS:{call}")
    time.sleep(1)
    c.send(f"HANGUP:{call}")
    c.expect(f"BYE:{call}")
    sipp.wait(15)
    c.quiet()


@scenario
def inbound_record_route(ctx):
    """SIPp calls in with a Record-Route (as a proxy would add); the client
    answers and hangs up: the 200 echoes the Record-Route and the BYE
    follows it as a Route."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uac", "uac_record_route.xml", target=ctx.sip)
    call = _answer_incoming(c)
    c.send(f"CALL_ANS:{call}")
    c.expect(f"CALL_ANS:{call}")
    time.sleep(0.5)
    c.send(f"HANGUP:{call}")
    c.expect(f"BYE:{call}")
    sipp.wait(15)
    c.quiet()


@scenario
def outbound_answered_echo(ctx):
    """CALL:1002 through --sip-server to a SIPp UAS that answers and echoes
    RTP: the client's 1000 Hz tone must come back; HANGUP sends BYE."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", "uas_answer.xml", port=ctx.server_port, extra=["-rtp_echo"], sniff=True)
    sipp.wait_listening()
    c.send("CALL:1002")
    call = c.expect_re(rf"CALLING:1002##({ID})").group(1)
    c.expect(f"RINGING:{call}")
    c.expect(f"CALL_ANS:{call}")
    c.send(f"RTP:{call}##{base64.b64encode(tone_pcm(BACK_HZ, 3, BACK_AMPLITUDE)).decode()}")
    time.sleep(3.6)
    c.send(f"HANGUP:{call}")
    c.expect(f"BYE:{call}")
    sipp.wait(15)
    c.quiet()
    c.check_frames()
    log(check_tone(c.audio.get(call, []), BACK_HZ, BACK_AMPLITUDE / math.sqrt(2), 140, 151,
                   "1000 Hz echoed by SIPp")[1])
    if sipp.sniffer:
        sipp.sniffer.stop()
        log(check_rtp_stream(sipp.sniffer.rtp(dport=sipp.media_port), 0, BACK_HZ,
                             BACK_AMPLITUDE / math.sqrt(2), 140, "PCMU to SIPp on the wire",
                             sipp.sniffer.drops))


@scenario
def outbound_far_end_hangs_up(ctx):
    """CALL:sip:bob@SIPp; SIPp answers and hangs up after a second."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", "uas_hangup.xml", port=ctx.server_port)
    sipp.wait_listening()
    uri = f"sip:bob@{LOOPBACK}:{ctx.server_port}"
    c.send(f"CALL:{uri}")
    call = c.expect_re(rf"CALLING:{re.escape(uri)}##({ID})").group(1)
    c.expect(f"RINGING:{call}")
    c.expect(f"CALL_ANS:{call}")
    c.expect(f"BYE:{call}", timeout=10)
    sipp.wait(15)
    c.quiet()


@scenario
def outbound_early_media(ctx):
    """The SIPp UAS sends 183 with SDP, then 180, then 200, and hangs up:
    RINGING comes once, then CALL_ANS and BYE."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", "uas_early_media.xml", port=ctx.server_port)
    sipp.wait_listening()
    uri = f"sip:early@{LOOPBACK}:{ctx.server_port}"
    c.send(f"CALL:{uri}")
    call = c.expect_re(rf"CALLING:{re.escape(uri)}##({ID})").group(1)
    c.expect(f"RINGING:{call}")
    c.expect(f"CALL_ANS:{call}")
    c.expect(f"BYE:{call}", timeout=10)
    sipp.wait(15)
    c.quiet()


def _outbound_rejected(ctx, xml, outcome):
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", xml, port=ctx.server_port)
    sipp.wait_listening()
    uri = f"sip:bob@{LOOPBACK}:{ctx.server_port}"
    c.send(f"CALL:{uri}")
    call = c.expect_re(rf"CALLING:{re.escape(uri)}##({ID})").group(1)
    c.expect(f"RINGING:{call}")
    c.expect(outcome.format(call=call))
    sipp.wait(15)
    c.quiet()


@scenario
def outbound_record_route(ctx):
    """A SIPp UAS answers with a Record-Route (as a proxy would add): the
    ACK and the BYE after the client's HANGUP carry it as a Route."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", "uas_record_route.xml", port=ctx.server_port)
    sipp.wait_listening()
    uri = f"sip:proxied@{LOOPBACK}:{ctx.server_port}"
    c.send(f"CALL:{uri}")
    call = c.expect_re(rf"CALLING:{re.escape(uri)}##({ID})").group(1)
    c.expect(f"RINGING:{call}")
    c.expect(f"CALL_ANS:{call}")
    time.sleep(0.5)
    c.send(f"HANGUP:{call}")
    c.expect(f"BYE:{call}")
    sipp.wait(15)
    c.quiet()


@scenario
def outbound_busy(ctx):
    """SIPp answers the daemon's INVITE 486: the client hears CALL_IGNORE."""
    _outbound_rejected(ctx, "uas_busy.xml", "CALL_IGNORE:{call}")


@scenario
def outbound_not_found(ctx):
    """SIPp answers 404: CALL_FAILED with the status and reason."""
    _outbound_rejected(ctx, "uas_not_found.xml", "CALL_FAILED:404 Not Found##{call}")


@scenario
def outbound_client_cancels(ctx):
    """The client hangs up while SIPp rings: CANCEL, 487, ACK, then BYE:{id}."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", "uas_cancel.xml", port=ctx.server_port)
    sipp.wait_listening()
    c.send("CALL:1002")
    call = c.expect_re(rf"CALLING:1002##({ID})").group(1)
    c.expect(f"RINGING:{call}")
    time.sleep(0.3)
    c.send(f"HANGUP:{call}")
    c.expect(f"BYE:{call}")
    sipp.wait(15)
    c.quiet()


def _inbound_rejected(ctx, xml, command):
    c = Client(ctx)
    sipp = Sipp(ctx, "uac", xml, target=ctx.sip)
    call = _answer_incoming(c)
    c.send(f"{command}:{call}")
    sipp.wait(15)
    c.quiet()


@scenario
def inbound_busy(ctx):
    """The client rejects SIPp's call with CALL_IGNORE: SIPp must get 486."""
    _inbound_rejected(ctx, "uac_busy.xml", "CALL_IGNORE")


@scenario
def inbound_declined(ctx):
    """The client declines with RING_IGNORE: SIPp must get 603."""
    _inbound_rejected(ctx, "uac_decline.xml", "RING_IGNORE")


@scenario
def inbound_caller_cancels(ctx):
    """SIPp cancels while ringing: the client hears RING_IGNORE."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uac", "uac_cancel.xml", target=ctx.sip)
    call = _answer_incoming(c)
    c.expect(f"RING_IGNORE:{call}", timeout=10)
    sipp.wait(15)
    c.quiet()


@scenario
def inbound_in_dialog_requests(ctx):
    """During an answered call SIPp sends OPTIONS (200), a session-refresh
    re-INVITE with the same SDP (200 with the same answer), INFO (405) and
    UPDATE (200 with the same answer); the 440 Hz tone keeps flowing; SIPp
    hangs up."""
    tone_rms = 32768 * 10 ** (TONE_GAIN_DB / 20) / math.sqrt(2)
    c = Client(ctx)
    sipp = Sipp(ctx, "uac", "uac_in_dialog.xml", target=ctx.sip)
    call = _answer_incoming(c)
    c.send(f"CALL_ANS:{call}")
    c.expect(f"CALL_ANS:{call}")
    c.expect(f"BYE:{call}", timeout=15)
    sipp.wait(15)
    c.quiet()
    c.check_frames()
    first = sipp.messages("received", "SIP/2.0 200", "1 INVITE")
    refresh = sipp.messages("received", "SIP/2.0 200", "3 INVITE")
    update = sipp.messages("received", "SIP/2.0 200", "5 UPDATE")
    if not first or not refresh or not update:
        raise Fail("the 200 OKs to the INVITE, the re-INVITE and the UPDATE are not all in SIPp's trace")

    def media(msg):
        return [line for line in msg.splitlines() if line.startswith(("c=", "m=", "a=rtpmap"))]

    for what, answer in (("re-INVITE", refresh[0]), ("UPDATE", update[0])):
        if media(first[0]) != media(answer):
            raise Fail(f"the {what}'s answer changed the media: {media(first[0])} -> {media(answer)}")
    n = TONE_SECONDS * 50
    log(check_tone(c.audio.get(call, []), TONE_HZ, tone_rms, n - 10, n + 1,
                   "PCMU across the re-INVITE")[1])


@scenario
def inbound_foreign_payloads(ctx):
    """SIPp sends telephone-events (payload 101: the key 1, from SIPp's own
    pcap) and PCMA packets (payload 8, not negotiated) on a PCMU call, then
    the tone: the client must hear the key as DTMF:{call}##1 (once per key
    press, however many packets carry it) and receive the tone as audio and
    nothing else. Needs root (SIPp's pcap player uses a raw socket)."""
    tone_rms = 32768 * 10 ** (TONE_GAIN_DB / 20) / math.sqrt(2)
    c = Client(ctx)
    sipp = Sipp(ctx, "uac", "uac_foreign_rtp.xml", target=ctx.sip, sniff="required")
    call = _answer_incoming(c)
    c.send(f"CALL_ANS:{call}")
    c.expect(f"CALL_ANS:{call}")
    keys = []
    while True:
        m = c.expect_re(rf"(?:DTMF:{call}##(.)|BYE:{call})", timeout=15)
        if m.group(1) is None:
            break
        keys.append(m.group(1))
    if not keys or set(keys) != {"1"}:
        raise Fail(f"DTMF from SIPp's telephone-events: {keys}, expected the key 1")
    log(f"DTMF reported: {' '.join(keys)}")
    sipp.wait(15)
    c.quiet()
    c.check_frames()
    frames = c.audio.get(call, [])
    n = TONE_SECONDS * 50
    count, summary = check_tone(frames, TONE_HZ, tone_rms, n - 10, n + 1, "PCMU after DTMF and PCMA")
    if len(frames) > n + 1:
        raise Fail(f"{summary}; {len(frames) - count} more frames: the DTMF or PCMA packets were forwarded")
    log(summary)
    sipp.sniffer.stop()
    sent = defaultdict(int)
    for p in sipp.sniffer.rtp(sport=sipp.media_port):
        sent[p["pt"]] += 1
    log("SIPp sent siprelay " + ", ".join(f"{v} packets of payload type {k}" for k, v in sorted(sent.items())))
    if sent[101] < 20 or sent[8] < 20 or sent[0] < n - 10:
        raise Fail("SIPp did not send the telephone-events, PCMA packets and tone this scenario needs")
    # One report per key press: never more than the distinct events sent.
    presses = {p["ts"] for p in sipp.sniffer.rtp(sport=sipp.media_port) if p["pt"] == 101}
    if len(keys) > len(presses):
        raise Fail(f"{len(keys)} DTMF reports for {len(presses)} key presses")


@scenario
def inbound_no_common_codec(ctx):
    """SIPp offers only G.729: siprelay answers 488 and offers nothing to the client."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uac", "uac_no_codec.xml", target=ctx.sip)
    sipp.wait(15)
    c.quiet(0.5)


@scenario
def outbound_pcma_echo(ctx):
    """A SIPp UAS answers PCMA only and echoes RTP: the client's 1000 Hz tone
    comes back through siprelay's A-law encoder and decoder."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", "uas_pcma.xml", port=ctx.server_port, extra=["-rtp_echo"], sniff=True)
    sipp.wait_listening()
    uri = f"sip:alaw@{LOOPBACK}:{ctx.server_port}"
    c.send(f"CALL:{uri}")
    call = c.expect_re(rf"CALLING:{re.escape(uri)}##({ID})").group(1)
    c.expect(f"RINGING:{call}")
    c.expect(f"CALL_ANS:{call}")
    c.send(f"RTP:{call}##{base64.b64encode(tone_pcm(BACK_HZ, 2, BACK_AMPLITUDE)).decode()}")
    time.sleep(2.5)
    c.send(f"HANGUP:{call}")
    c.expect(f"BYE:{call}")
    sipp.wait(15)
    c.quiet()
    c.check_frames()
    acks = sipp.messages("received", "ACK ")
    if not acks:
        raise Fail("no ACK in SIPp's trace")
    log(check_tone(c.audio.get(call, []), BACK_HZ, BACK_AMPLITUDE / math.sqrt(2), 90, 101,
                   "1000 Hz echoed over PCMA")[1])
    if sipp.sniffer:
        sipp.sniffer.stop()
        log(check_rtp_stream(sipp.sniffer.rtp(dport=sipp.media_port), 8, BACK_HZ,
                             BACK_AMPLITUDE / math.sqrt(2), 90, "PCMA to SIPp on the wire",
                             sipp.sniffer.drops))


@scenario
def outbound_no_common_codec(ctx):
    """A SIPp UAS answers with G.729 only: siprelay ACKs, hangs up with BYE,
    and reports CALL_FAILED:488."""
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", "uas_no_codec.xml", port=ctx.server_port)
    sipp.wait_listening()
    uri = f"sip:g729@{LOOPBACK}:{ctx.server_port}"
    c.send(f"CALL:{uri}")
    call = c.expect_re(rf"CALLING:{re.escape(uri)}##({ID})").group(1)
    c.expect(f"RINGING:{call}")
    c.expect(f"CALL_FAILED:488 Not Acceptable Here##{call}")
    sipp.wait(15)
    c.quiet()


@scenario
def inbound_concurrent(ctx):
    """SIPp places 20 calls, 10 at a time, each streaming the 440 Hz tone;
    the client answers every one; every call carries its audio and ends."""
    total, limit = 20, 10
    tone_rms = 32768 * 10 ** (TONE_GAIN_DB / 20) / math.sqrt(2)
    c = Client(ctx)
    sipp = Sipp(ctx, "uac", "uac_audio.xml", target=ctx.sip, calls=total,
                extra=["-l", str(limit), "-r", "10"], timeout=60)
    state = {}
    deadline = time.monotonic() + 60
    while len(state) < total or any(s != "ended" for s in state.values()):
        if time.monotonic() > deadline:
            raise Fail(f"calls not finished in time: {state}")
        msg = c.next(timeout=15)
        if m := re.fullmatch(rf"RING_ANS:1001##({ID})", msg):
            if m.group(1) in state:
                raise Fail(f"second RING_ANS for {m.group(1)}")
            state[m.group(1)] = "offered"
            c.send(f"CALL_ANS:{m.group(1)}")
        elif m := re.fullmatch(rf"CALL_ANS:({ID})", msg):
            if state.get(m.group(1)) != "offered":
                raise Fail(f"{msg} for a call in state {state.get(m.group(1))}")
            state[m.group(1)] = "connected"
        elif m := re.fullmatch(rf"BYE:({ID})", msg):
            if state.get(m.group(1)) != "connected":
                raise Fail(f"{msg} for a call in state {state.get(m.group(1))}")
            state[m.group(1)] = "ended"
        else:
            raise Fail(f"unexpected {msg!r}")
    sipp.wait(20)
    c.quiet()
    c.check_frames()
    n = TONE_SECONDS * 50
    worst = None
    for call in state:
        loud, _ = check_tone(c.audio.get(call, []), TONE_HZ, tone_rms, n - 10, n + 1, f"call {call}")
        worst = loud if worst is None else min(worst, loud)
    log(f"{total} calls answered and ended; each carried the 440 Hz tone "
        f"(at least {worst} of {n} frames per call)")


@scenario
def outbound_concurrent(ctx):
    """The client dials 10 calls at once to a SIPp UAS that echoes RTP; all
    connect, each echoes its own tone, the client hangs them all up."""
    total = 10
    c = Client(ctx)
    sipp = Sipp(ctx, "uas", "uas_answer.xml", port=ctx.server_port, calls=total,
                extra=["-rtp_echo"], timeout=60)
    sipp.wait_listening()
    for _ in range(total):
        c.send("CALL:1002")
    calls = {}
    freqs = {}
    deadline = time.monotonic() + 30
    while len(calls) < total or any(s != "connected" for s in calls.values()):
        if time.monotonic() > deadline:
            raise Fail(f"calls not connected in time: {calls}")
        msg = c.next(timeout=15)
        if m := re.fullmatch(rf"CALLING:1002##({ID})", msg):
            calls[m.group(1)] = "calling"
        elif m := re.fullmatch(rf"RINGING:({ID})", msg):
            if calls.get(m.group(1)) != "calling":
                raise Fail(f"{msg} for a call in state {calls.get(m.group(1))}")
            calls[m.group(1)] = "ringing"
        elif m := re.fullmatch(rf"CALL_ANS:({ID})", msg):
            if calls.get(m.group(1)) != "ringing":
                raise Fail(f"{msg} for a call in state {calls.get(m.group(1))}")
            calls[m.group(1)] = "connected"
            # A different tone per call, so that crossed streams show.
            freqs[m.group(1)] = 500 + 100 * len(freqs)
            pcm = tone_pcm(freqs[m.group(1)], 1.5, BACK_AMPLITUDE)
            c.send(f"RTP:{m.group(1)}##{base64.b64encode(pcm).decode()}")
        else:
            raise Fail(f"unexpected {msg!r}")
    time.sleep(2.2)
    for call in calls:
        c.send(f"HANGUP:{call}")
    ended = set()
    while len(ended) < total:
        msg = c.next(timeout=10)
        m = re.fullmatch(rf"BYE:({ID})", msg)
        if not m or m.group(1) not in calls or m.group(1) in ended:
            raise Fail(f"unexpected {msg!r} while hanging up")
        ended.add(m.group(1))
    sipp.wait(20)
    c.quiet()
    c.check_frames()
    for call, freq in freqs.items():
        check_tone(c.audio.get(call, []), freq, BACK_AMPLITUDE / math.sqrt(2), 65, 76,
                   f"call {call} echo of {freq} Hz")
    log(f"{total} calls connected, each echoed its own tone (500..{500 + 100 * (total - 1)} Hz), all hung up")


def _http(ctx, path, headers=None):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://{ctx.http}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, _lower(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, _lower(e.headers), e.read()


def _lower(headers):
    """Header names in lower case (the daemon sends them so; HTTP says case does not matter)."""
    return {k.lower(): v for k, v in headers.items()}


@scenario
def recordings_review_page(ctx):
    """The PCMU call of inbound-pcmu-audio was recorded: GET /recordings
    lists it, its WAV holds SIPp's 440 Hz on the left and the client's
    1000 Hz on the right, Range requests work, and the review page in
    Debian's headless Chromium lists it, plays it and draws both channels
    (scripts/interop/review_page.py; screenshot in target/review-page.png)."""
    import json
    marker = os.path.join(ctx.work, "recorded-PCMU.call")
    if not os.path.exists(marker):
        raise Fail("inbound-pcmu-audio did not run first (no recorded call id)")
    call = open(marker).read().strip()
    status, _, body = _http(ctx, "/recordings?number=1001&limit=1000")
    if status != 200:
        raise Fail(f"GET /recordings: {status} {body[:200]!r}")
    found = [r for r in json.loads(body) if r.get("call_id") == call]
    if not found:
        raise Fail(f"call {call} is not among the recordings listed")
    rec = found[0]
    log(f"recording {rec['id']}: {rec['duration_s']} s, hung up by {rec['hangup_by']}")
    if rec["hangup_by"] != "remote" or rec["codec"] != "PCMU" or rec["direction"] != "inbound":
        raise Fail(f"sidecar does not tell the call's story: {rec}")
    status, headers, wav = _http(ctx, f"/recordings/{rec['id']}.wav")
    if status != 200 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise Fail(f"GET the WAV: {status}, starts {wav[:12]!r}")
    channels, rate = struct.unpack("<HI", wav[22:28])
    bits = struct.unpack("<H", wav[34:36])[0]
    if (channels, rate, bits) != (2, 8000, 16):
        raise Fail(f"WAV is {channels} ch, {rate} Hz, {bits} bit")
    pcm = samples_of(wav[44:])
    left, right = pcm[0::2], pcm[1::2]
    for name, chan, freq in (("left (SIPp)", left, TONE_HZ), ("right (client)", right, BACK_HZ)):
        # 100 ms windows: a whole number of cycles of both tones.
        loud = [chan[i:i + 800] for i in range(0, len(chan) - 800, 800)
                if rms(chan[i:i + 800]) > 1000]
        if len(loud) < 10:
            raise Fail(f"{name} channel holds {len(loud)} loud windows, expected over 10")
        share = sum(goertzel_share(f, freq) for f in loud) / len(loud)
        if share < 0.9:
            raise Fail(f"{name} channel: only {share:.2f} of its energy at {freq} Hz")
        log(f"{name}: {len(loud)} windows of {freq} Hz ({share:.3f} of their energy)")
    status, headers, part = _http(ctx, f"/recordings/{rec['id']}.wav", {"Range": "bytes=44-1043"})
    if status != 206 or part != wav[44:1044] \
            or not headers.get("content-range", "").startswith("bytes 44-1043/"):
        raise Fail(f"Range request: {status} {headers.get('content-range')!r}, {len(part)} bytes")
    log("Range bytes=44-1043: 206 with the right bytes")

    # Kept after the run (the work directory is removed when all passed).
    shot = os.path.join(HERE, "..", "..", "target", "review-page.png")
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    cmd = [sys.executable, os.path.join(HERE, "review_page.py"), "--base", f"http://{ctx.http}",
           "--expect", rec["id"], "--screenshot", shot]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=80)
    for line in (result.stdout + result.stderr).splitlines():
        log(line)
    if result.returncode == 2:
        raise Skip("headless Chromium or selenium is not available")
    if result.returncode != 0:
        raise Fail("the review page test failed")
    log(f"screenshot: {shot}")


class EventWatcher:
    """GET /events read in a thread: each event's JSON into a queue."""

    def __init__(self, ctx, path="/events"):
        import json
        import queue
        import threading
        import urllib.request
        self.events = queue.Queue()
        self.response = urllib.request.urlopen(f"http://{ctx.http}{path}", timeout=30)
        if self.response.status != 200:
            raise Fail(f"GET {path}: {self.response.status}")

        def read():
            try:
                for raw in self.response:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("data: "):
                        self.events.put(json.loads(line[6:]))
            except Exception:  # the stream closed at the end of the scenario
                pass
        threading.Thread(target=read, daemon=True).start()

    def expect(self, name, call=None, timeout=10):
        import queue
        try:
            e = self.events.get(timeout=timeout)
        except queue.Empty:
            raise Fail(f"no {name} event within {timeout} s")
        if e.get("event") != name or (call is not None and e.get("call_id") != call):
            raise Fail(f"expected {name} for {call}, got {e}")
        log(f"event {name} {e.get('call_id')} {e.get('name') or ''}".rstrip())
        return e

    def close(self):
        self.response.close()


@scenario
def rest_dial_play_hang_up(ctx):
    """POST /calls dials 1002 through --sip-server to a SIPp UAS with a
    44.1 kHz stereo float WAV made by sox to play and hangup_after_play:
    GET /events tells CALLING, RINGING, CALL_ANS, PLAYED and BYE in order,
    SIPp gets the BYE, and the RTP on the wire holds the 1000 Hz tone."""
    import json
    sipp = Sipp(ctx, "uas", "uas_answer.xml", port=ctx.server_port, sniff=True)
    sipp.wait_listening()
    watch = EventWatcher(ctx)
    try:
        body = json.dumps({"to": "1002", "play": PLAY_FILE, "hangup_after_play": True}).encode()
        import urllib.request
        req = urllib.request.Request(f"http://{ctx.http}/calls", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 201:
                raise Fail(f"POST /calls: {r.status}")
            call = json.loads(r.read())["id"]
        watch.expect("CALLING", call)
        watch.expect("RINGING", call)
        watch.expect("CALL_ANS", call)
        played = watch.expect("PLAYED", call)
        if played.get("name") != PLAY_FILE:
            raise Fail(f"PLAYED names {played.get('name')!r}")
        watch.expect("BYE", call)
    finally:
        watch.close()
    sipp.wait(15)
    status, _, _ = _http(ctx, f"/calls/{call}")
    if status != 404:
        raise Fail(f"GET /calls/{call} after the call: {status}, expected 404")
    if sipp.sniffer:
        sipp.sniffer.stop()
        expected = 32768 * 10 ** (TONE_GAIN_DB / 20) / math.sqrt(2)
        frames = int(PLAY_SECONDS * 50)
        log(check_rtp_stream(sipp.sniffer.rtp(dport=sipp.media_port), 0, BACK_HZ, expected,
                             frames - 3, "the played file on the wire", sipp.sniffer.drops))


@scenario
def openapi_schemathesis(ctx):
    """schemathesis (PyPI) fuzzes every operation of GET /openapi.json
    against the live daemon: no 5xx, and every response matches the
    document. Any sip: target it makes up is rewritten to a loopback port
    where nothing answers (schemathesis_hooks.py), and plain numbers go to
    --sip-server on loopback, so nothing leaves the machine."""
    tool = os.environ.get("SCHEMATHESIS")
    if not tool or not os.path.exists(tool):
        raise Skip("schemathesis is not installed (interop.sh installs it)")
    env = dict(os.environ, NO_COLOR="1",
               SCHEMATHESIS_HOOKS=os.path.join(HERE, "schemathesis_hooks.py"),
               HYPOTHESIS_STORAGE_DIRECTORY=os.path.join(ctx.work, "hypothesis"))
    cmd = [tool, "--config-file", os.path.join(HERE, "schemathesis.toml"), "run",
           f"http://{ctx.http}/openapi.json", "--url", f"http://{ctx.http}",
           "--phases", "examples,coverage,fuzzing",
           "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
           "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "20"),
           "--seed", "4475", "--workers", "1", "--generation-database", "none",
           "--request-timeout", "5",
           # The event stream never ends by itself.
           "--exclude-path", "/events"]
    result = subprocess.run(cmd, cwd=ctx.work, env=env, capture_output=True, text=True, timeout=85)
    lines = (result.stdout + result.stderr).splitlines()
    for line in lines[-40:]:
        log(line)
    if result.returncode != 0:
        raise Fail(f"schemathesis exit status {result.returncode}")


# The device interop.sh configures (siprelay.toml in the work directory).
DEVICE_ID, DEVICE_TOKEN, DEVICE_EXTENSION = "door", "interop-door-token-0123456789", "2999"
SIMULATOR = os.path.join(HERE, "..", "..", "target", "release", "siprelay-device")


@scenario
def device_simulator_answers_sipp(ctx):
    """SIPp calls extension 2999: a device, simulated by siprelay-device
    (A-law binary frames, its clock 80 ppm fast, sending in bursts of 3).
    It answers, plays the sox-made 1000 Hz WAV, which SIPp must receive on
    the wire as PCMU, and records SIPp's 440 Hz to a WAV checked here."""
    import json
    import wave
    heard = os.path.join(ctx.work, "device-heard.wav")
    out = open(os.path.join(ctx.work, "device-simulator.log"), "wb")
    sim = subprocess.Popen(
        [SIMULATOR, "--url", f"ws://{ctx.http}", "--id", DEVICE_ID, "--token", DEVICE_TOKEN,
         "--format", "pcma", "--answer", "auto", "--calls", "1", "--drift-ppm", "80",
         "--burst", "3", "--play", os.path.join(ctx.work, "assets", PLAY_FILE), "--record", heard],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            status, _, body = _http(ctx, "/devices")
            if status == 200 and any(d["id"] == DEVICE_ID and d["online"] for d in json.loads(body)):
                break
            if time.monotonic() > deadline or sim.poll() is not None:
                raise Fail("the simulated device did not come online")
            time.sleep(0.1)
        log("device door online")
        sipp = Sipp(ctx, "uac", "uac_audio.xml", target=ctx.sip, service=DEVICE_EXTENSION, sniff=True)
        sipp.wait(20)
        try:
            sim.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise Fail("the simulator did not end after its call")
    finally:
        if sim.poll() is None:
            os.killpg(sim.pid, signal.SIGKILL)
            sim.wait()
        out.close()
    if sim.returncode != 0:
        raise Fail(f"siprelay-device exited with {sim.returncode}")
    with wave.open(heard) as w:
        if (w.getnchannels(), w.getframerate(), w.getsampwidth()) != (1, 8000, 2):
            raise Fail("the device's recording is not 8 kHz mono 16-bit")
        pcm = w.readframes(w.getnframes())
    frames = [pcm[i:i + 320] for i in range(0, len(pcm) - 319, 320)]
    tone_rms = 32768 * 10 ** (TONE_GAIN_DB / 20) / math.sqrt(2)
    log(check_tone(frames, TONE_HZ, tone_rms, 120, len(frames), "SIPp's 440 Hz recorded by the device")[1])
    if sipp.sniffer:
        sipp.sniffer.stop()
        frames = int(PLAY_SECONDS * 50)
        log(check_rtp_stream(sipp.sniffer.rtp(dport=sipp.media_port), 0, BACK_HZ, tone_rms,
                             frames - 5, "the device's WAV on the wire to SIPp", sipp.sniffer.drops))


# ---------------------------------------------------------------- main


def guarded(name, body, cleanup, dump):
    """Runs a scenario's body under the time limit's SIGTERM: 0 when it
    passes, 1 when it fails (after cleanup and the dump of its traces), 3
    when it had to be skipped (never in CI)."""

    def on_term(signum, _frame):
        raise Fail(f"killed by signal {signum} (scenario time limit)")

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    try:
        body()
    except Skip as e:
        cleanup()
        if IN_CI:
            print(f"FAIL {name}: {e} (CI runs as root: nothing may be skipped there)", flush=True)
            return 1
        print(f"skip {name}: {e}", flush=True)
        return 3
    except Fail as e:
        print(f"FAIL {name}: {e}", flush=True)
        cleanup()
        dump()
        return 1
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print(f"FAIL {name}: {e!r}", flush=True)
        cleanup()
        dump()
        return 1
    cleanup()
    print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)
    return 0


def run(name):
    fns = {name_of(fn): fn for fn in SCENARIOS}
    if name not in fns:
        raise SystemExit(f"unknown scenario {name}; known: {', '.join(fns)}")
    ctx = Context(name)
    return guarded(name, lambda: fns[name](ctx), ctx.cleanup, ctx.dump)


def main(argv):
    if len(argv) >= 2 and argv[1] == "list":
        for fn in SCENARIOS:
            print(name_of(fn))
        return 0
    if len(argv) == 3 and argv[1] == "ports":
        for _ in range(int(argv[2])):
            print(free_port())
        return 0
    if len(argv) == 3 and argv[1] == "media":
        make_media(argv[2])
        return 0
    if len(argv) == 3 and argv[1] == "run":
        return run(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
