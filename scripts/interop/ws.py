"""A minimal RFC 6455 WebSocket client on the Python standard library.

Enough for the interop scenarios: one connection, text frames both ways,
pings answered, close handled. Received text frames are handed to a callback
from a reader thread, so a scenario never stalls the daemon's writer even
while it is busy with something else.
"""

import base64
import hashlib
import os
import socket
import struct
import threading
import urllib.parse

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketError(Exception):
    pass


class WebSocket:
    def __init__(self, url, on_text, on_close, timeout=5.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise WebSocketError(f"only ws:// URLs are supported: {url}")
        host, port = u.hostname, u.port or 80
        path = (u.path or "/") + (("?" + u.query) if u.query else "")
        self._on_text = on_text
        self._on_close = on_close
        self._send_lock = threading.Lock()
        self._closed = False
        self.close_code = None
        self._sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self._sock.sendall(request.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise WebSocketError("connection closed during the handshake")
            buf += chunk
            if len(buf) > 65536:
                raise WebSocketError("handshake response too long")
        head, self._buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise WebSocketError(f"handshake refused: {lines[0]}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        want = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise WebSocketError("bad Sec-WebSocket-Accept in the handshake")
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # -- sending ---------------------------------------------------------

    def _send_frame(self, opcode, payload):
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        if n:
            full = (mask * (n // 4 + 1))[:n]
            masked = (
                int.from_bytes(payload, "little") ^ int.from_bytes(full, "little")
            ).to_bytes(n, "little")
        else:
            masked = b""
        with self._send_lock:
            self._sock.sendall(header + mask + masked)

    def send(self, text):
        if self._closed:
            raise WebSocketError("send on a closed connection")
        self._send_frame(0x1, text.encode())

    def close(self, code=1000):
        if not self._closed:
            try:
                self._send_frame(0x8, struct.pack("!H", code))
            except OSError:
                pass
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout=2)
        self._sock.close()

    # -- receiving -------------------------------------------------------

    def _read_exact(self, n):
        while len(self._buf) < n:
            chunk = self._sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise EOFError
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_loop(self):
        reason = "connection closed"
        fragments, frag_op = [], None
        try:
            while True:
                b0, b1 = self._read_exact(2)
                fin, opcode = b0 & 0x80, b0 & 0x0F
                if b1 & 0x80:
                    raise WebSocketError("server sent a masked frame")
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", self._read_exact(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", self._read_exact(8))
                payload = self._read_exact(n)
                if opcode == 0x9:
                    self._send_frame(0xA, payload)
                elif opcode == 0xA:
                    pass
                elif opcode == 0x8:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    reason = f"close frame {self.close_code}"
                    if not self._closed:
                        try:
                            self._send_frame(0x8, payload[:2])
                        except OSError:
                            pass
                    break
                elif opcode in (0x1, 0x2, 0x0):
                    if opcode != 0x0:
                        frag_op, fragments = opcode, []
                    fragments.append(payload)
                    if fin:
                        data = b"".join(fragments)
                        fragments = []
                        if frag_op == 0x2:
                            self._on_text(None, data)
                        else:
                            self._on_text(data.decode("utf-8"), None)
                else:
                    raise WebSocketError(f"unknown opcode {opcode}")
        except (EOFError, OSError) as e:
            if not self._closed:
                reason = f"connection lost: {e!r}"
        except Exception as e:  # noqa: BLE001 - reported to the scenario
            reason = f"reader failed: {e!r}"
        self._on_close(reason)
