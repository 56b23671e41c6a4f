"""Fake VMS and webhook receivers on loopback, written from the targets' public descriptions.

- XProtect generic events: plain text over TCP or UDP (one string per packet/connection, the
  data source's separator CR LF); no answer.
- XProtect Analytics Events: an ``AnalyticsEvent`` XML document (namespace urn:milestone-systems)
  over HTTP POST (answered by the status) or raw TCP (answered after the sender half-closes).
- exacqVision serial profile ("TCP Listener" serial port): ASCII lines ending CR/LF, a
  transaction between the profile's SOT and EOT marker lines.
- Webhook: HTTP POST of a structured-mode CloudEvent, HMAC-SHA256 of the body in a header.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support import free_port

MILESTONE_NS = "{urn:milestone-systems}"


class FakeTcp:
    """A TCP listener that records what each connection sent; stop() and start() again on the
    same port (a VMS going down and coming back)."""

    def __init__(self, *, reply: bytes | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.reply = reply
        self.connections: list[bytearray] = []
        self.arrived: list[float] = []
        """monotonic time of each chunk received (for latency)."""
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> FakeTcp:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(2)
        self._threads = []

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._socks.append(sock)
                buf = bytearray()
                self.connections.append(buf)
            thread = threading.Thread(target=self._read, args=(sock, buf), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, sock: socket.socket, buf: bytearray) -> None:
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                with self._lock:
                    buf += chunk
                    self.arrived.append(time.monotonic())
            if self.reply is not None:
                sock.sendall(self.reply)
        sock.close()

    @property
    def data(self) -> bytes:
        with self._lock:
            return b"".join(bytes(c) for c in self.connections)

    def lines(self) -> list[str]:
        return [line for line in self.data.decode().split("\r\n") if line]


class FakeUdp:
    """A UDP socket that records each datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data, _ = self.sock.recvfrom(65536)
                self.datagrams.append(data)

    def stop(self) -> None:
        self.sock.close()


class FakeHttp:
    """An HTTP server that records each POST and answers ``status``; with ``secret`` it checks
    the ``X-Signature-SHA256`` header as a webhook receiver should (401 when it is wrong)."""

    def __init__(self, *, secret: bytes | None = None, status: int = 200,
                 header: str = "X-Signature-SHA256", tls: dict[str, Path] | None = None) -> None:
        self.secret = secret
        self.status = status
        self.header = header
        self.requests: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.arrived.append(time.monotonic())
                status, answer = fake.status, b"ok"
                if fake.secret is not None:
                    good = "sha256=" + hmac.new(fake.secret, body, hashlib.sha256).hexdigest()
                    if not hmac.compare_digest(good, self.headers.get(fake.header, "")):
                        status, answer = 401, b"bad signature"
                if 200 <= status < 300:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body})
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls["cert"], tls["key"])
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def analytics_events(bodies: list[bytes]) -> list[dict[str, str]]:
    """Message, source name, description and custom tag of each AnalyticsEvent document."""
    out = []
    for body in bodies:
        root = ET.fromstring(body)
        assert root.tag == f"{MILESTONE_NS}AnalyticsEvent", root.tag
        header = root.find(f"{MILESTONE_NS}EventHeader")
        assert header is not None

        def text(parent: ET.Element, path: str) -> str:
            node = parent.find(path)
            return node.text or "" if node is not None else ""

        out.append({
            "id": text(header, f"{MILESTONE_NS}ID"),
            "message": text(header, f"{MILESTONE_NS}Message"),
            "source": text(header, f"{MILESTONE_NS}Source/{MILESTONE_NS}Name"),
            "tag": text(header, f"{MILESTONE_NS}CustomTag"),
            "description": text(root, f"{MILESTONE_NS}Description"),
        })
    return out


def exacq_transactions(lines: list[str], start: str, end: str) -> list[list[str]]:
    """The lines of each transaction between ``start`` and ``end`` marker lines."""
    out: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if line == start:
            current = []
        elif line == end and current is not None:
            out.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return out
