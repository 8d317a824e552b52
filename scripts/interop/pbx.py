#!/usr/bin/env python3
"""Interop with a real PBX and a real softphone, on loopback only.

Kamailio (Debian's kamailio, kamailio-tls-modules; config in kamailio/)
is the registrar and proxy of the domain pbx.test, with digest auth for
REGISTER (401) and INVITE (407) against plain-text users. baresip
(baresip-core: aufile source, sndfile recording, ctrl_tcp control, no
stdio) is user 3000 on it; siprelay is user 2000. Each scenario starts its
own Kamailio, baresip and siprelay instances on free ports and stops them.
Audio is checked by frequency on both sides: baresip sends a 1000 Hz tone
(made by sox) that siprelay's WebSocket client must hear, and the client
sends 440 Hz that must be in baresip's recording of what it heard.

    python3 scripts/interop/pbx.py list
    python3 scripts/interop/pbx.py run NAME

Run by scripts/interop.sh, which installs the packages and builds siprelay.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
# interop.py's helpers (WebSocket client, tone analysis, capture, ports)
# read these only when a SIPp scenario runs; give them harmless values.
os.environ.setdefault("SIPRELAY_SIP", "127.0.0.1:9")
os.environ.setdefault("SIPRELAY_HTTP", "127.0.0.1:9")
os.environ.setdefault("SIPP_SERVER_PORT", "9")
import interop  # noqa: E402
from interop import Fail, Skip, log  # noqa: E402

BIN = os.path.join(ROOT, "target", "release", "siprelay")
KAMAILIO_CFG = os.path.join(HERE, "kamailio", "kamailio.cfg")
DOMAIN = "pbx.test"
SIPRELAY_USER, SIPRELAY_PASSWORD = "2000", "siprelay-secret"
PHONE_USER, PHONE_PASSWORD = "3000", "baresip-secret"
PHONE_HZ = 1000   # baresip's tone
CLIENT_HZ = 440   # siprelay's client's tone
CLIENT_AMPLITUDE = 8000


def work_dir(name):
    base = os.environ.get("INTEROP_WORK") or "/tmp/siprelay-pbx"
    d = os.path.join(base, "pbx", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


class Processes:
    """Every process a scenario starts, each in its own process group, so
    that a failure or a time limit never leaves one behind."""

    def __init__(self):
        self.procs = []

    def spawn(self, name, argv, logfile, env=None):
        out = open(logfile, "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env)
        p.name, p.logfile = name, logfile
        pidfile = os.environ.get("INTEROP_PIDS")
        if pidfile:
            with open(pidfile, "a") as f:
                f.write(f"{p.pid}\n")
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p, sig=signal.SIGTERM, wait=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return p.returncode

    def cleanup(self):
        for p in reversed(self.procs):
            self.stop(p, signal.SIGKILL, 5)

    def dump(self):
        for p in self.procs:
            print(f"---- {p.name} log ({p.logfile}), last lines:")
            try:
                with open(p.logfile, "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines[-60:]:
                print("     " + line[:300])


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise Fail(f"{what} within {timeout}s")


def certificate(work):
    """A self-signed certificate for 127.0.0.1 (openssl), for Kamailio's and
    siprelay's TLS listeners; both trust it."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:pbx.test",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "extendedKeyUsage=serverAuth,clientAuth"],
        check=True, capture_output=True, timeout=60)
    return cert, key


class Kamailio:
    def __init__(self, procs, work, tls=None, dispatcher=None, port=None):
        self.procs, self.work, self.tls, self.dispatcher = procs, work, tls, dispatcher
        self.port = port or interop.free_port()
        self.tls_port = interop.free_port() if tls else None
        self.ctl = os.path.join(work, "kamailio.ctl")
        self.log = os.path.join(work, "kamailio.log")
        self.proc = None

    def start(self):
        argv = ["kamailio", "-f", KAMAILIO_CFG, "-DD", "-E", "-Y", self.work, "-w", self.work,
                "-P", os.path.join(self.work, "kamailio.pid"),
                "-l", f"udp:127.0.0.1:{self.port}", "-l", f"tcp:127.0.0.1:{self.port}",
                "-A", f'CTL="unix:{self.ctl}"']
        if self.tls:
            cert, key = self.tls
            cfg = os.path.join(self.work, "tls.cfg")
            with open(cfg, "w") as f:
                f.write(f"[server:default]\nmethod = TLSv1.2+\ncertificate = {cert}\nprivate_key = {key}\n"
                        "verify_certificate = no\nrequire_certificate = no\n\n"
                        "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")
            argv += ["-l", f"tls:127.0.0.1:{self.tls_port}", "-A", "WITH_TLS", "-A", f'TLS_CFG="{cfg}"']
        if self.dispatcher:
            listfile = os.path.join(self.work, "dispatcher.list")
            with open(listfile, "w") as f:
                for dest in self.dispatcher:
                    f.write(f"1 sip:{dest}\n")
            argv += ["-A", "WITH_DISPATCHER", "-A", f'DISPATCHER_LIST="{listfile}"']
        self.proc = self.procs.spawn("kamailio", argv, self.log)
        wait_until("Kamailio answers its control socket", lambda: self.rpc("core.uptime") is not None, 15)
        log(f"kamailio on 127.0.0.1:{self.port} (udp, tcp)" + (f", tls {self.tls_port}" if self.tls else ""))

    def rpc(self, *command):
        r = subprocess.run(["kamcmd", "-s", f"unix:{self.ctl}", *command],
                           capture_output=True, text=True, timeout=10)
        return r.stdout if r.returncode == 0 else None

    def location(self):
        return self.rpc("ul.dump") or ""

    def registered(self, user):
        return f"AoR: {user}\n" in self.location()

    def stop(self, sig=signal.SIGTERM):
        return Processes.stop(self.proc, sig)

    def requests(self, method, user=None):
        """Requests Kamailio logged (its xlog line per request)."""
        with open(self.log, errors="replace") as f:
            return [line for line in f
                    if (f" {method} sip:" in line or f" {method} sips:" in line)
                    and (user is None or f"{user}@" in line)]


class Phone:
    """baresip as user 3000 on the PBX: sends a tone, records what it hears,
    controlled over ctrl_tcp."""

    def __init__(self, procs, work, pbx, transport="udp", mediaenc=None, tls=None):
        self.procs, self.work, self.pbx = procs, work, pbx
        self.dir = os.path.join(work, "baresip")
        self.snd = os.path.join(self.dir, "snd")
        os.makedirs(self.snd)
        self.sip_port = interop.free_port()
        self.ctrl_port = interop.free_port()
        self.rtp_port = interop.free_port(pair=True)
        tone = os.path.join(self.dir, "tone.wav")
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", tone,
                        "synth", "120", "sine", str(PHONE_HZ), "vol", "0.5"], check=True, timeout=60)
        config = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "net_interface 127.0.0.1",
            f"audio_source aufile,{tone}",
            "audio_player aufile,/dev/null",
            "audio_alert aufile,/dev/null",
            f"rtp_ports {self.rtp_port}-{self.rtp_port + 1}",
            "module_path /usr/lib/baresip/modules",
            "module g711.so", "module aufile.so", "module sndfile.so", "module srtp.so",
            "module_app account.so", "module_app menu.so", "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            f"snd_path {self.snd}",
        ]
        if tls:
            # Trust Kamailio's certificate, and show it on baresip's own TLS
            # listener too (in-dialog requests reach baresip there).
            cert, key = tls
            both = os.path.join(self.dir, "cert-and-key.pem")
            with open(both, "w") as f:
                f.write(open(cert).read() + open(key).read())
            config += [f"sip_cafile {cert}", f"sip_certificate {both}"]
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write("\n".join(config) + "\n")
        port = pbx.tls_port if transport == "tls" else pbx.port
        outbound = f"sip:127.0.0.1:{port};transport={transport}"
        aor = f"sip:{PHONE_USER}@{DOMAIN}" + (f";transport={transport}" if transport != "udp" else "")
        params = f";auth_pass={PHONE_PASSWORD};outbound=\"{outbound}\";regint=300;answermode=auto"
        if mediaenc:
            params += f";mediaenc={mediaenc}"
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(f"<{aor}>{params}\n")
        self.proc = None

    def start(self):
        self.proc = self.procs.spawn("baresip", ["baresip", "-f", self.dir, "-t", "300"],
                                     os.path.join(self.dir, "baresip.log"))
        wait_until("baresip registers with Kamailio", lambda: self.pbx.registered(PHONE_USER), 15)
        log(f"baresip registered as {PHONE_USER}@{DOMAIN} (RTP port {self.rtp_port})")

    def command(self, command, params=""):
        body = json.dumps({"command": command, "params": params, "token": "pbx"}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=5) as s:
            s.sendall(str(len(body)).encode() + b":" + body + b",")
            s.settimeout(5)
            data = b""
            while b'"response":true' not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        if b'"ok":true' not in data:
            raise Fail(f"baresip refused {command} {params}: {data[:200]!r}")

    def heard(self):
        """What baresip heard in its last call (sndfile's decoded dump)."""
        files = sorted(f for f in os.listdir(self.snd) if f.endswith("-dec.wav"))
        if not files:
            raise Fail("baresip recorded no call")
        with wave.open(os.path.join(self.snd, files[-1])) as w:
            return w.readframes(w.getnframes())


class Relay:
    """One siprelay instance with the given [[accounts]] and flags."""

    def __init__(self, procs, work, name, accounts="", args=(), tls=None, tcp=False, rtp=None):
        self.procs, self.name = procs, name
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.sip_port = interop.free_port()
        self.http_port = interop.free_port()
        if rtp is None:
            first = interop.free_port(pair=True)
            rtp = (first, first + 1)
        self.http = f"127.0.0.1:{self.http_port}"
        self.config = os.path.join(self.dir, "siprelay.toml")
        with open(self.config, "w") as f:
            f.write(accounts)
        self.argv = [BIN, "--config", self.config, "--sip-listen", f"127.0.0.1:{self.sip_port}",
                     "--http-listen", self.http, "--rtp-ports", f"{rtp[0]}-{rtp[1]}", "--greeting", "none",
                     "--no-record", *args]
        if tcp:
            self.argv += ["--sip-listen-tcp", f"127.0.0.1:{interop.free_port()}"]
        if tls:
            cert, key = tls
            self.argv += ["--sip-listen-tls", f"127.0.0.1:{interop.free_port()}",
                          "--tls-cert", cert, "--tls-key", key, "--tls-ca", cert]
        self.proc = None
        self.clients = []

    def start(self):
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        self.proc = self.procs.spawn(f"siprelay {self.name}", self.argv,
                                     os.path.join(self.dir, "siprelay.log"), env)
        wait_until(f"siprelay {self.name} is ready", lambda: self.get("/healthz") is not None, 20)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=2) as r:
                body = r.read()
                return json.loads(body) if r.headers.get("content-type", "").startswith("application/json") else body
        except OSError:
            return None

    def account(self):
        accounts = self.get("/accounts")
        return accounts[0] if accounts else None

    def wait_registered(self, timeout=15):
        wait_until(f"siprelay {self.name} registers", lambda: self.account()["state"] == "registered", timeout)

    def client(self, name="ws"):
        c = interop.Client(self, name)
        return c

    def answered_calls(self):
        """Incoming calls answered with 200, from /metrics."""
        text = self.get("/metrics") or b""
        for line in text.decode().splitlines():
            if line.startswith('siprelay_calls_total{direction="inbound",status="200"}'):
                return int(float(line.split()[-1]))
        return 0

    def stop(self, sig=signal.SIGTERM):
        return Processes.stop(self.proc, sig)


def account_toml(transport="udp", port=None, password=SIPRELAY_PASSWORD, srtp=None, expires=300):
    lines = ["[[accounts]]", 'name = "office"', f'username = "{SIPRELAY_USER}"',
             f'password = "{password}"', f'domain = "{DOMAIN}"',
             f'registrar = "127.0.0.1:{port}"', f'transport = "{transport}"', f"expires = {expires}"]
    if srtp:
        lines.append(f'srtp = "{srtp}"')
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- audio


def check_phone_heard(phone, what):
    pcm = phone.heard()
    frames = [pcm[i:i + 320] for i in range(0, len(pcm) - 319, 320)]
    rms = CLIENT_AMPLITUDE / 2 ** 0.5
    log(interop.check_tone(frames, CLIENT_HZ, rms, 50, len(frames), what)[1])


def check_client_heard(client, call_id, what):
    frames = client.audio[call_id]
    # sox's "vol 0.5": half of full scale.
    rms = 0.5 * 32767 / 2 ** 0.5
    log(interop.check_tone(frames, PHONE_HZ, rms, 50, len(frames), what)[1])


def talk(client, call_id, seconds=3):
    """The client sends its tone in real time, 200 ms a message."""
    pcm = interop.tone_pcm(CLIENT_HZ, seconds, CLIENT_AMPLITUDE)
    step = 320 * 10
    t0 = time.monotonic()
    for i, start in enumerate(range(0, len(pcm), step)):
        client.send(f"RTP:{call_id}##{interop.base64.b64encode(pcm[start:start + step]).decode()}")
        time.sleep(max(0.0, t0 + (i + 1) * 0.2 - time.monotonic()))


def talk_and_hang_up(phone, client, call_id):
    """Tones both ways on a connected call, then the client hangs up and
    each side's recording is checked for the other's tone."""
    talk(client, call_id)
    client.send(f"HANGUP:{call_id}")
    client.expect(f"BYE:{call_id}", timeout=10)
    time.sleep(0.5)
    check_client_heard(client, call_id, f"baresip's {PHONE_HZ} Hz heard by siprelay's client")
    check_phone_heard(phone, f"the client's {CLIENT_HZ} Hz recorded by baresip")


def call_phone_to_relay(phone, relay, client):
    """baresip calls siprelay's account through Kamailio; the client
    answers; audio both ways; the client hangs up."""
    phone.command("dial", f"sip:{SIPRELAY_USER}@{DOMAIN}")
    ring = client.expect_re(rf"RING_ANS:{PHONE_USER}##({interop.ID})", timeout=15)
    call_id = ring.group(1)
    client.send(f"CALL_ANS:{call_id}")
    client.expect(f"CALL_ANS:{call_id}", timeout=10)
    view = relay.get(f"/calls/{call_id}")
    if view["account"] != "office":
        raise Fail(f"the call is not shown on the account: {view}")
    talk_and_hang_up(phone, client, call_id)


def call_relay_to_phone(phone, relay, client, pbx, transport="udp"):
    """siprelay dials baresip's number through its account (answering
    Kamailio's 407); baresip answers on its own; audio both ways."""
    before = len(pbx.requests("INVITE", PHONE_USER))
    client.send(f"CALL:{PHONE_USER}")
    calling = client.expect_re(rf"CALLING:{PHONE_USER}##({interop.ID})")
    call_id = calling.group(1)
    while True:
        msg = client.next(15)
        if msg == f"CALL_ANS:{call_id}":
            break
        if not msg.startswith("RINGING:"):
            raise Fail(f"expected CALL_ANS, got {msg!r}")
    invites = pbx.requests("INVITE", PHONE_USER)[before:]
    if len(invites) < 2:
        raise Fail(f"expected the INVITE and its answer to the 407, Kamailio saw {len(invites)}")
    if not all(f"({transport})" in line for line in invites):
        raise Fail(f"siprelay's INVITEs did not all come over {transport}: {invites}")
    log(f"Kamailio saw {len(invites)} INVITEs for {PHONE_USER} (the first challenged with 407)")
    talk_and_hang_up(phone, client, call_id)


# ---------------------------------------------------------------- scenarios

SCENARIOS = []
name_of = interop.name_of


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def setup(procs, work, transport="udp", mediaenc=None, srtp=None):
    tls = certificate(work) if transport == "tls" else None
    pbx = Kamailio(procs, work, tls=tls)
    pbx.start()
    port = pbx.tls_port if transport == "tls" else pbx.port
    relay = Relay(procs, work, "siprelay", account_toml(transport, port, srtp=srtp), tls=tls,
                  tcp=transport == "tcp")
    relay.start()
    relay.wait_registered()
    registers = pbx.requests("REGISTER", SIPRELAY_USER)
    if not registers or not all(f"({transport})" in line for line in registers):
        raise Fail(f"siprelay's REGISTERs did not all come over {transport}: {registers}")
    loc = pbx.location()
    if "User-Agent: siprelay/" not in loc:
        raise Fail(f"siprelay's binding is not in Kamailio's location table:\n{loc}")
    log(f"siprelay registered as {SIPRELAY_USER}@{DOMAIN} over {transport}, seen in Kamailio's location table")
    phone = Phone(procs, work, pbx, transport, mediaenc, tls=tls)
    phone.start()
    return pbx, relay, phone


def wire_tones(sniffer, phone):
    """How much of the captured payloads' energy, read as G.711 µ-law, is
    at each side's tone: each direction taken separately."""
    shares = {}
    for hz, packets in ((PHONE_HZ, sniffer.rtp(sport=phone.rtp_port)),
                        (CLIENT_HZ, sniffer.rtp(dport=phone.rtp_port))):
        if len(packets) < 100:
            raise Fail(f"only {len(packets)} RTP packets captured for the {hz} Hz direction")
        payload = b"".join(p["payload"][:160] for p in packets[25:125])
        shares[hz] = interop.goertzel_share([interop.ulaw_to_linear(b) for b in payload], hz)
    return shares


@scenario
def pbx_calls_over_udp(procs, work):
    """siprelay registers with Kamailio (401); baresip calls it through
    Kamailio and a client answers; siprelay calls baresip (407)."""
    pbx, relay, phone = setup(procs, work)
    client = relay.client()
    sniffer = interop.Sniffer([phone.rtp_port])
    try:
        call_phone_to_relay(phone, relay, client)
        call_relay_to_phone(phone, relay, client, pbx)
    finally:
        sniffer.stop()
    # The positive control of the SRTP scenario's check: plain G.711 on the
    # wire decodes to the tones.
    shares = wire_tones(sniffer, phone)
    if min(shares.values()) < 0.5:
        raise Fail(f"the plain RTP on the wire does not hold the tones: {shares}")
    log(f"plain RTP on the wire holds the tones (energy share at {PHONE_HZ}/{CLIENT_HZ} Hz: "
        f"{shares[PHONE_HZ]:.2f}/{shares[CLIENT_HZ]:.2f})")


@scenario
def pbx_calls_over_tcp(procs, work):
    """The same two calls with SIP over TCP on every hop."""
    pbx, relay, phone = setup(procs, work, "tcp")
    client = relay.client()
    call_phone_to_relay(phone, relay, client)
    call_relay_to_phone(phone, relay, client, pbx, "tcp")


@scenario
def pbx_calls_over_tls_with_srtp(procs, work):
    """The same over TLS, with SRTP required on both sides (baresip
    mediaenc=srtp-mand): the capture of baresip's RTP shows no G.711."""
    pbx, relay, phone = setup(procs, work, "tls", mediaenc="srtp-mand", srtp="required")
    client = relay.client()
    sniffer = interop.Sniffer([phone.rtp_port])
    try:
        call_phone_to_relay(phone, relay, client)
        call_relay_to_phone(phone, relay, client, pbx, "tls")
    finally:
        sniffer.stop()
    packets = sniffer.rtp(dport=phone.rtp_port) + sniffer.rtp(sport=phone.rtp_port)
    sizes = {len(p["payload"]) for p in packets}
    if sizes != {170}:
        raise Fail(f"payload sizes {sizes}: expected 160 bytes of G.711 and an 80-bit tag (170)")
    shares = wire_tones(sniffer, phone)
    if max(shares.values()) > 0.05:
        raise Fail(f"the captured payloads decode as G.711 tones: {shares}")
    log(f"{len(packets)} SRTP packets on the wire, 170-byte payloads; as G.711 they hold no tone "
        f"(energy share at {PHONE_HZ}/{CLIENT_HZ} Hz: {shares[PHONE_HZ]:.3f}/{shares[CLIENT_HZ]:.3f})")


@scenario
def pbx_wrong_password(procs, work):
    """A wrong password: the account is failed with Kamailio's 401, and
    siprelay does not retry in a loop (REGISTERs counted over 10 s)."""
    pbx = Kamailio(procs, work)
    pbx.start()
    relay = Relay(procs, work, "siprelay", account_toml("udp", pbx.port, password="not-the-password"))
    relay.start()
    wait_until("the account shows failed", lambda: relay.account()["state"] == "failed", 10)
    account = relay.account()
    if account["last_status"] != 401 or "wrong credentials" not in (account["last_error"] or ""):
        raise Fail(f"expected a 401 for wrong credentials: {account}")
    client = relay.client()
    time.sleep(10)
    registers = pbx.requests("REGISTER", SIPRELAY_USER)
    log(f"account failed: {account['last_status']} {account['last_error']}; "
        f"{len(registers)} REGISTERs in the first 10 s")
    if len(registers) > 4:
        raise Fail(f"{len(registers)} REGISTERs in 10 s: a retry loop")
    client.quiet(0.2)


@scenario
def pbx_registrar_restart(procs, work):
    """Kamailio restarts (losing its location table) while siprelay is
    registered: siprelay registers again on its next refresh, within its
    backoff."""
    pbx = Kamailio(procs, work)
    pbx.start()
    relay = Relay(procs, work, "siprelay", account_toml("udp", pbx.port, expires=10))
    relay.start()
    relay.wait_registered()
    if not pbx.registered(SIPRELAY_USER):
        raise Fail("not in the location table")
    pbx.stop()
    time.sleep(2)
    pbx = Kamailio(procs, work, port=pbx.port)
    pbx.start()
    if pbx.registered(SIPRELAY_USER):
        raise Fail("the restarted Kamailio still knows the binding: nothing was tested")
    started = time.monotonic()
    wait_until("siprelay registers with the restarted Kamailio", lambda: pbx.registered(SIPRELAY_USER), 30)
    log(f"registered again {time.monotonic() - started:.1f}s after Kamailio came back; "
        f"account {relay.account()['state']}")


def answer_everything(client, stop):
    """A client that answers every call offered to it, until stop is set."""
    def run():
        while not stop.is_set():
            try:
                msg = client.control.get(timeout=0.2)
            except Exception:  # noqa: BLE001
                continue
            if msg and msg.startswith("RING_ANS:"):
                client.send("CALL_ANS:" + msg.rsplit("##", 1)[1])
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def sipp_load(procs, work, target, calls, name):
    """SIPp (sipp/uac_via_proxy.xml): `calls` calls of 2 s each, 10 a second, to 2000."""
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    port = interop.free_port()
    argv = ["sipp", "-sf", os.path.join(HERE, "sipp", "uac_via_proxy.xml"), "-s", SIPRELAY_USER, "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(port), "-m", str(calls), "-r", "10", "-l", str(calls),
            "-timeout", "60s", "-trace_stat", "-stf", os.path.join(d, "stat.csv"), "-nostdin", target]
    p = procs.spawn(name, argv, os.path.join(d, "sipp.log"))
    try:
        p.wait(timeout=90)
    except subprocess.TimeoutExpired:
        Processes.stop(p, signal.SIGKILL)
        raise Fail(f"{name}: SIPp did not finish")
    return p.returncode


@scenario
def pbx_dispatcher_scale_out(procs, work):
    """Kamailio's dispatcher in front of two siprelay instances: 50 SIPp
    calls spread over both; with one stopped (SIGTERM, then the other
    killed with -9 after the first is back), new calls go to the one left."""
    # Room for every call at once (below the kernel's ephemeral ports).
    a = Relay(procs, work, "a", rtp=(46000, 46199))
    b = Relay(procs, work, "b", rtp=(46200, 46399))
    for r in (a, b):
        r.start()
    pbx = Kamailio(procs, work, dispatcher=[f"127.0.0.1:{a.sip_port}", f"127.0.0.1:{b.sip_port}"])
    pbx.start()
    stop = threading.Event()
    try:
        clients = {r.name: r.client() for r in (a, b)}
        for c in clients.values():
            answer_everything(c, stop)
        # Both answer the dispatcher's OPTIONS probes before the load.
        time.sleep(3)
        rc = sipp_load(procs, work, f"127.0.0.1:{pbx.port}", 50, "sipp-50")
        counts = {r.name: r.answered_calls() for r in (a, b)}
        log(f"50 calls through the dispatcher: SIPp exit {rc}, answered {counts}")
        if rc != 0 or sum(counts.values()) != 50 or min(counts.values()) < 10:
            raise Fail(f"calls not spread over both instances: {counts}, SIPp exit {rc}")

        a.stop(signal.SIGTERM)
        time.sleep(3)  # the probes find it gone
        before = b.answered_calls()
        rc = sipp_load(procs, work, f"127.0.0.1:{pbx.port}", 10, "sipp-after-sigterm")
        moved = b.answered_calls() - before
        log(f"a stopped with SIGTERM: 10 calls, SIPp exit {rc}, b answered {moved}")
        if rc != 0 or moved != 10:
            raise Fail(f"after SIGTERM of a, b answered {moved} of 10 (SIPp exit {rc})")

        a2 = Relay(procs, work, "a-again", rtp=(46000, 46199))
        a2.argv[a2.argv.index("--sip-listen") + 1] = f"127.0.0.1:{a.sip_port}"
        a2.start()
        answer_everything(a2.client(), stop)
        time.sleep(3)  # probed back in
        b.stop(signal.SIGKILL)
        time.sleep(3)
        before = a2.answered_calls()
        rc = sipp_load(procs, work, f"127.0.0.1:{pbx.port}", 10, "sipp-after-kill")
        moved = a2.answered_calls() - before
        log(f"b killed with -9: 10 calls, SIPp exit {rc}, a answered {moved}")
        if rc != 0 or moved != 10:
            raise Fail(f"after kill -9 of b, a answered {moved} of 10 (SIPp exit {rc})")
    finally:
        stop.set()


# ---------------------------------------------------------------- main


def run(name):
    fns = {name_of(fn): fn for fn in SCENARIOS}
    if name not in fns:
        raise SystemExit(f"unknown scenario {name}; known: {', '.join(fns)}")
    procs = Processes()
    return interop.guarded(name, lambda: fns[name](procs, work_dir(name)), procs.cleanup, procs.dump)


def main(argv):
    if len(argv) >= 2 and argv[1] == "list":
        for fn in SCENARIOS:
            print(name_of(fn))
        return 0
    if len(argv) == 3 and argv[1] == "run":
        return run(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
