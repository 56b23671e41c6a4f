"""The web page from outside: pairing through the real `agent web pair`, HTTPS requests that
trust only the agent's own certificate, and Server-Sent Event streams."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from support import AgentProcess, wait_until


def web_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with the web page on a free loopback port."""
    return {**cfg, "web": {"listen": "127.0.0.1:0", **cfg.get("web", {})}}


def web_status(agent: AgentProcess) -> dict[str, Any]:
    """The ``web`` part of `agent status --json`, once the page serves."""
    def web() -> dict[str, Any] | None:
        out = agent.run_cli("status", "--json").stdout
        return json.loads(out).get("web") if out else None
    return wait_until(web, 15, "the web page in agent status")


def pair_link(agent: AgentProcess, role: str = "viewer", *extra: str) -> str:
    """The link `agent web pair` prints."""
    result = agent.run_cli("web", "pair", "--role", role, "--no-qr", *extra)
    assert result.returncode == 0, result.stderr
    match = re.search(r"https://\S+/#pair=\S+", result.stdout)
    assert match, result.stdout
    return match.group(0)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebClient:
    """One phone: HTTPS to the agent, trusting only ``cert`` (the agent's certificate)."""

    def __init__(self, url: str, cert: Path) -> None:
        parts = urlsplit(url)
        self.host, self.port = str(parts.hostname), int(parts.port or 443)
        self.ssl = ssl.create_default_context(cafile=str(cert))
        self.cookie: str | None = None
        self.csrf: str | None = None
        self.set_cookie = ""

    def _conn(self, timeout: float = 10) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, *, csrf: bool = True,
                headers: dict[str, str] | None = None) -> Reply:
        sent = dict(headers or {})
        if self.cookie:
            sent["Cookie"] = f"sea_session={self.cookie}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
            if csrf and self.csrf:
                sent["X-CSRF-Token"] = self.csrf
        conn = self._conn()
        try:
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            resp.close()  # the socket stays open while the response holds it
            conn.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: Any, *, csrf: bool = True) -> Reply:
        return self.request("POST", path, body, csrf=csrf)

    def pair(self, link: str) -> Reply:
        """Open the pairing link as the page does: POST its code, keep the cookie."""
        reply = self.post("/api/pair", {"code": link.split("#pair=", 1)[1]})
        if reply.status == 200:
            self.set_cookie = reply.headers["Set-Cookie"]
            self.cookie = re.search(r"sea_session=([^;]+)", self.set_cookie).group(1)  # type: ignore[union-attr]
            self.csrf = reply.json()["csrf"]
        return reply

    def stream(self, path: str, timeout: float = 30) -> Iterator[dict[str, Any]]:
        """The JSON items of a Server-Sent Events stream (named events as ``{"event": ...}``),
        open when this returns; closing the iterator closes the connection, as a phone leaving
        the page does."""
        conn = self._conn(timeout)
        conn.request("GET", path, headers={"Cookie": f"sea_session={self.cookie}"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert resp.headers["Content-Type"] == "text/event-stream"
        return self._items(conn, resp)

    @staticmethod
    def _items(conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse
               ) -> Iterator[dict[str, Any]]:
        try:
            event = None
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    yield {"event": event, "data": data} if event else data
                    event = None
        finally:
            resp.close()  # the socket stays open while the response holds it
            conn.close()
