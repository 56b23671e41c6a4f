"""Blocking socket and HTTP helpers for outputs, each bounded by a timeout."""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.outputs.base import DeliveryError

MAX_REPLY = 4096
"""Bytes of a target's answer that are read and reported at most."""
REPLY_PAUSE = 0.2
"""Seconds of silence after the first bytes of an answer that end it."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    reason: str
    body: bytes

    def __str__(self) -> str:
        text = self.body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {self.status} {self.reason}" + (f": {text}" if text else "")


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
         ca_file: Path | None = None) -> HttpAnswer:
    """POST ``body`` to ``url``; a 2xx answer is returned, anything else raises.

    Raises:
        DeliveryError: unreachable, TLS failure, timeout, or a status other than 2xx.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={**headers,
                                                        "Content-Length": str(len(body))})
        response = conn.getresponse()
        answer = HttpAnswer(response.status, response.reason, response.read(MAX_REPLY))
    except ssl.SSLError as err:
        raise DeliveryError(f"TLS with {host}:{port or 443} failed: {err.reason or err}") from err
    except TimeoutError as err:
        raise DeliveryError(f"{url}: no answer within {timeout:g} s") from err
    except (OSError, http.client.HTTPException) as err:
        raise DeliveryError(f"{url}: {type(err).__name__}: {err}") from err
    finally:
        conn.close()
    if not 200 <= answer.status < 300:
        raise DeliveryError(f"{url} answered {answer}")
    return answer


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with ``timeout`` on every operation.

    Raises:
        DeliveryError: refused, unreachable or timed out.
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise DeliveryError(f"tcp {host}:{port}: {err.strerror or err}") from err
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def peer_closed(sock: socket.socket) -> bool:
    """True when the peer of a kept-open connection has closed it (or sent us something
    we do not read: either way, start a new one)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    with contextlib.suppress(OSError):
        return sock.recv(MAX_REPLY, socket.MSG_PEEK) == b""
    return True


def tcp_exchange(host: str, port: int, data: bytes, *, timeout: float, reply: bool) -> bytes:
    """Connect, send ``data``; with ``reply`` half-close and read the answer until the peer
    closes (or ``timeout``); close.

    Raises:
        DeliveryError: as ``connect``, or the connection failed while sending.
    """
    sock = connect(host, port, timeout)
    try:
        sock.sendall(data)
        if not reply:
            return b""
        sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        with contextlib.suppress(TimeoutError):
            while sum(map(len, chunks)) < MAX_REPLY and (chunk := sock.recv(MAX_REPLY)):
                chunks.append(chunk)
                # A server that answers and keeps the connection open: a pause ends the answer.
                sock.settimeout(REPLY_PAUSE)
        return b"".join(chunks)[:MAX_REPLY]
    except OSError as err:
        raise DeliveryError(f"tcp {host}:{port}: {err.strerror or err}") from err
    finally:
        sock.close()


def udp_send(host: str, port: int, data: bytes) -> None:
    """One datagram (no answer in the protocol).

    Raises:
        DeliveryError: the address cannot be resolved or the send failed locally.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.sendto(data, address)
    except OSError as err:
        raise DeliveryError(f"udp {host}:{port}: {err.strerror or err}") from err
