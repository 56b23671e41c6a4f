"""The web page's HTTPS server (aiohttp, inside the agent): pages, JSON API and event streams.

Every ``/api`` request but pairing needs a session cookie; every state-changing request also
needs the session's CSRF token in ``X-CSRF-Token`` and a JSON body. Actions are logged with the
session id, never with a secret (aiohttp's access log is off: URLs are logged by us).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.commands import CommandError
from agent.events import rfc3339
from agent.selftest.report import junit_xml
from agent.web import OFF
from agent.web.hub import EventHub
from agent.web.runs import Run, Runs
from agent.web.sessions import PairingLimited, Session, Sessions
from agent.web.tls import Certificate, load_certificate, local_address

if TYPE_CHECKING:
    from agent.runtime import Agent

__all__ = ["WebServer"]

log = logging.getLogger(__name__)

COOKIE = "sea_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_BODY = 16 * 1024
"""Bytes of a request body; the page only sends small JSON objects."""
KEEPALIVE = 15.0
"""Seconds between comments on an idle event stream (keeps proxies and phones from closing it)."""
SHUTDOWN = 1.0
"""Seconds a stopping agent gives open pages before their streams are cut (aiohttp's default,
60 s, is longer than systemd waits)."""
BATCH = 0.05
"""Seconds a live-events page gathers events before they are written to it."""
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000",
}
STATIC = resources.files("agent.web") / "static"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION_KEY = web.RequestKey("session", Session)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _refuse(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class WebServer:
    """The page for phones on ``[web] listen`` (HTTPS only), and the ``web`` control command."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.settings = agent.config.settings.web
        self.sessions = Sessions(session_ttl=self.settings.session_ttl)
        self.runs = Runs(agent)
        self.cert: Certificate | None = None
        self.url = ""
        self.hub: EventHub | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._runner: web.AppRunner | None = None
        self._streams = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def _names(self, host: str) -> list[str]:
        names = [local_address(), socket.gethostname(), "localhost", "127.0.0.1"]
        if host not in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            names.insert(0, host)
        if self.settings.url:
            names.insert(0, self.settings.url.split("://")[-1].rsplit(":", 1)[0].strip("[]/"))
        return list(dict.fromkeys(names))

    async def start(self) -> None:
        """Serve on ``[web] listen`` if set.

        Raises:
            ConfigError: the configured certificate cannot be used; OSError: the address is
            taken, or the self-signed certificate cannot be made.
        """
        address = self.settings.address
        if address is None:
            return
        host, port = address
        agent_settings = self.agent.config.settings.agent
        self.cert = await asyncio.to_thread(load_certificate, self.settings.cert_file,
                                            self.settings.key_file, agent_settings.data_dir,
                                            self._names(host))
        self.hub = EventHub(asyncio.get_running_loop())
        self._unsubscribe = self.agent.pipeline.subscribe(self.hub.listener)
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=SHUTDOWN)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.cert.context())
        await site.start()
        bound = self._runner.addresses[0][1]
        shown = local_address() if host in ("", "0.0.0.0", "::") else host  # noqa: S104
        self.url = self.settings.url.rstrip("/") or f"https://{shown}:{bound}"
        log.info("web page on %s (listening on %s:%d; certificate SHA-256 %s%s)", self.url, host,
                 bound, self.cert.fingerprint, ", self-signed" if self.cert.self_signed else "")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.runs.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def status(self) -> dict[str, Any] | None:
        """The ``web`` part of ``agent status``: where, the certificate's fingerprint."""
        if self.cert is None:
            return None
        return {"url": self.url, "fingerprint_sha256": self.cert.fingerprint,
                "self_signed": self.cert.self_signed, "sessions": len(self.sessions.list()),
                "pages": self._streams}

    # -- the ``web`` control command (agent web pair / sessions / revoke) ----------------------

    async def command(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{"do": "pair", "role", "for"}``, ``{"do": "sessions"}``, ``{"do": "revoke", "id"}``.

        Raises:
            CommandError: the page is off, or bad parameters.
        """
        if self.cert is None:
            raise CommandError(OFF)
        what = params.get("do")
        if what == "pair":
            try:
                code, expires = self.sessions.pair(str(params.get("role", "viewer")),
                                                   float(params.get("for", 600)))
            except (TypeError, ValueError) as err:
                raise CommandError(str(err)) from err
            log.info("web: pairing link made for the role %s, valid until %s",
                     params.get("role", "viewer"), rfc3339(expires))
            return {"link": f"{self.url}/#pair={code}", "expires": rfc3339(expires),
                    "role": params.get("role", "viewer"), "fingerprint_sha256":
                    self.cert.fingerprint}
        if what == "sessions":
            return {"sessions": [s.public() for s in self.sessions.list()]}
        if what == "revoke":
            try:
                session = self.sessions.revoke(str(params.get("id", "")))
            except KeyError as err:
                raise CommandError(err.args[0]) from err
            log.info("web session %s (%s) revoked", session.id, session.role)
            return {"revoked": session.public()}
        raise CommandError(f"unknown web command {what!r}; allowed: pair, sessions, revoke")

    # -- HTTP ------------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", Path(str(STATIC)), append_version=False)
        app.router.add_post("/api/pair", self._pair)
        app.router.add_get("/api/me", self._me)
        app.router.add_post("/api/logout", self._logout)
        app.router.add_get("/api/store", self._store)
        app.router.add_get("/api/exits/{exit}", self._exit)
        app.router.add_get("/api/exits/{exit}/report.{fmt}", self._last_report)
        app.router.add_get("/api/events", self._events)
        app.router.add_post("/api/runs", self._start_run)
        app.router.add_get("/api/runs/{run}/stream", self._run_stream)
        app.router.add_post("/api/runs/{run}/answer", self._answer)
        app.router.add_post("/api/runs/{run}/note", self._note)
        app.router.add_post("/api/runs/{run}/cancel", self._cancel)
        app.router.add_get("/api/runs/{run}/report.{fmt}", self._run_report)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Sessions, roles' CSRF tokens and security headers, for every request."""
        path = request.path
        if path.startswith("/api/") and path != "/api/pair":
            session = self.sessions.find(request.cookies.get(COOKIE))
            if session is None:
                return _refuse(401, "not paired, or the session expired or was revoked: pair "
                               "this phone again with `agent web pair`")
            if request.method not in ("GET", "HEAD") and not self.sessions.csrf_ok(
                    session, request.headers.get(CSRF_HEADER)):
                log.warning("web session %s: %s %s refused: missing or wrong CSRF token",
                            session.id, request.method, path)
                return _refuse(403, "missing or wrong CSRF token: reload the page")
            request[SESSION_KEY] = session
            if request.method in ("GET", "HEAD"):  # POSTs are logged by their handlers
                log.debug("web session %s (%s): %s %s", session.id, session.role,
                          request.method, request.rel_url)
        if request.method not in ("GET", "HEAD") and request.content_type != "application/json":
            return _refuse(415, "send JSON (Content-Type: application/json)")
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @staticmethod
    def _session(request: web.Request) -> Session:
        return request[SESSION_KEY]

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as err:
            raise web.HTTPBadRequest(text="the body is not JSON") from err
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return body

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(Path(str(STATIC / "index.html")),
                                headers={"Cache-Control": "no-store"})

    async def _pair(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        client = request.remote or "?"
        agent_header = request.headers.get("User-Agent", "")[:60]
        try:
            session, secret = self.sessions.redeem(str(body.get("code", "")),
                                                   f"{client} {agent_header}")
        except PairingLimited as err:
            log.warning("web: pairing from %s refused: %s", client, err)
            return web.Response(text=json.dumps({"error": str(err)}), status=429,
                                content_type="application/json",
                                headers={"Retry-After": f"{err.retry_after:.0f}"})
        except KeyError as err:
            log.warning("web: pairing from %s refused: unknown, used or expired code", client)
            return _refuse(403, err.args[0])
        log.info("web session %s (%s) paired from %s", session.id, session.role, client)
        response = _json(self._me_data(session))
        response.set_cookie(COOKIE, secret, max_age=int(session.expires - session.created),
                            secure=True, httponly=True, samesite="Strict", path="/")
        return response

    @staticmethod
    def _me_data(session: Session) -> dict[str, Any]:
        return {"session": session.id, "role": session.role, "csrf": session.csrf,
                "expires": rfc3339(session.expires)}

    async def _me(self, request: web.Request) -> web.StreamResponse:
        return _json(self._me_data(self._session(request)))

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        self.sessions.revoke(session.id)
        log.info("web session %s (%s) logged out", session.id, session.role)
        response = _json({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    def _exits(self) -> dict[str, Any]:
        last = self.agent.selftests.summary()
        return {name: {"devices": ex.devices(), "last_selftest": last.get(name, {})}
                for name, ex in self.agent.config.exits.items()}

    async def _store(self, request: web.Request) -> web.StreamResponse:
        return _json({"status": self.agent.status(), "exits": self._exits(),
                      "me": self._me_data(self._session(request))})

    def _exit_name(self, request: web.Request) -> str:
        name = request.match_info["exit"]
        if name not in self.agent.config.exits:
            raise web.HTTPNotFound(text=f"no exit {name!r}")
        return name

    async def _exit(self, request: web.Request) -> web.StreamResponse:
        name = self._exit_name(request)
        status = self.agent.status()["devices"]
        roles = self.agent.config.exits[name].devices()
        return _json({"exit": name, "devices": {role: {"id": dev, **status.get(dev, {})}
                                                for role, dev in roles.items()},
                      "last_report": self.agent.selftests.last.get(name),
                      "running": self.agent.selftests.running.get(name)})

    @staticmethod
    def _download(reports: list[dict[str, Any]], fmt: str, name: str) -> web.Response:
        if fmt == "json":
            body, kind = json.dumps(reports if len(reports) > 1 else reports[0], indent=1), \
                "application/json"
        elif fmt == "xml":
            body, kind = junit_xml(reports), "application/xml"
        else:
            raise web.HTTPNotFound(text="reports are report.json or report.xml (JUnit)")
        return web.Response(text=body, content_type=kind, headers={
            "Content-Disposition": f'attachment; filename="{name}.{fmt}"',
            "Cache-Control": "no-store"})

    async def _last_report(self, request: web.Request) -> web.StreamResponse:
        name = self._exit_name(request)
        report = self.agent.selftests.last.get(name)
        if report is None:
            raise web.HTTPNotFound(text=f"exit {name} has no self-test report yet")
        return self._download([report], request.match_info["fmt"], f"selftest-{name}")

    # -- streams ---------------------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if self._streams >= self.settings.max_pages:
            raise web.HTTPServiceUnavailable(
                text=f"{self._streams} live pages are open (web.max_pages): close one")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no", **SECURITY_HEADERS})
        await response.prepare(request)
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Committed events as Server-Sent Events, optionally of one exit (``?exit=``)."""
        exit_name = request.query.get("exit") or None
        if exit_name is not None and exit_name not in self.agent.config.exits:
            raise web.HTTPNotFound(text=f"no exit {exit_name!r}")
        assert self.hub is not None
        session = self._session(request)
        response = await self._stream(request)
        page, close = self.hub.open(exit_name)
        self._streams += 1
        log.debug("web session %s: live events opened (%s)", session.id, exit_name or "all")
        try:
            lost = 0
            while self.sessions.is_live(session):
                try:
                    line = await asyncio.wait_for(page.queue.get(), KEEPALIVE)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                # One write per BATCH, not per event: at 200 events/s and 20 pages that is the
                # difference between 4,000 TLS writes a second and 400 (bench/web_load.py).
                await asyncio.sleep(BATCH)
                chunk = [f"data: {line}\n\n"]
                while not page.queue.empty():
                    chunk.append(f"data: {page.queue.get_nowait()}\n\n")
                if page.lost != lost:
                    lost = page.lost
                    chunk.append(f"event: lost\ndata: {lost}\n\n")
                await response.write("".join(chunk).encode())
        except ConnectionResetError:  # the page went away (a cancellation goes on up)
            pass
        finally:
            close()
            self._streams -= 1
        return response

    def _run(self, request: web.Request) -> Run:
        run = self.runs.runs.get(request.match_info["run"])
        if run is None:
            raise web.HTTPNotFound(text="no such run (finished runs are kept for a while only)")
        return run

    async def _start_run(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        body = await self._body(request)
        walk = bool(body.get("walk", False))
        what = "walk test" if walk else "self-test"
        exits = body.get("exits") or []
        if not isinstance(exits, list) or not all(isinstance(e, str) for e in exits):
            return _refuse(400, '"exits" must be a list of exit names')
        if not session.may("operator"):
            log.warning("web session %s (viewer): %s of %s refused: viewers cannot run tests",
                        session.id, what, ", ".join(exits) or "every exit")
            return _refuse(403, f"a viewer cannot start a {what}: pair as an operator "
                           "(`agent web pair --role operator`)")
        try:
            run = self.runs.start(exits, walk=walk, session_id=session.id)
        except CommandError as err:
            return _refuse(409, str(err))
        log.info("web session %s (operator): started %s %s of %s", session.id, what, run.id,
                 ", ".join(run.exits))
        return _json(run.public())

    async def _run_stream(self, request: web.Request) -> web.StreamResponse:
        """A run's progress as Server-Sent Events (``id`` = item index, so a reconnecting page
        gets only what it missed); its end is an ``end`` item."""
        run = self._run(request)
        last = request.headers.get("Last-Event-ID", "-1")
        start = int(last) + 1 if last.lstrip("-").isdigit() else 0
        response = await self._stream(request)
        self._streams += 1
        run.watch()
        try:
            async for index, item in self._items(run, start):
                if item is None:
                    await response.write(b": keepalive\n\n")
                    continue
                await response.write(f"id: {index}\ndata: {json.dumps(item, default=str)}\n\n"
                                     .encode())
        except ConnectionResetError:  # the page went away (a cancellation goes on up)
            pass
        finally:
            self._streams -= 1
            run.unwatch()
        return response

    @staticmethod
    async def _items(run: Run, start: int) -> AsyncIterator[tuple[int, dict[str, Any] | None]]:
        """Each item from ``start`` as it comes, up to the ``end`` item; ``None`` now and then
        while nothing happens."""
        index = start
        while True:
            while index < len(run.items):
                item = run.items[index]
                yield index, item
                index += 1
                if item.get("kind") == "end":
                    return
            try:
                await asyncio.wait_for(run.changed(), KEEPALIVE)
            except TimeoutError:
                yield index, None

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        session, run = self._session(request), self._run(request)
        if not session.may("operator"):
            return _refuse(403, "a viewer cannot answer a test's questions")
        answer = str((await self._body(request)).get("answer", ""))[:200]
        try:
            run.answer(answer)
        except CommandError as err:
            return _refuse(409, str(err))
        log.info("web session %s (operator): run %s: answered %r", session.id, run.id, answer)
        return _json({"ok": True})

    async def _note(self, request: web.Request) -> web.StreamResponse:
        """The officer cannot do the instruction shown now: the engine skips the step with the
        reason (it does not wait out the window), and the reason goes with the run's reports."""
        session, run = self._session(request), self._run(request)
        if not session.may("operator"):
            return _refuse(403, "a viewer cannot mark a step")
        reason = str((await self._body(request)).get("reason", "")).strip()[:200]
        if not reason:
            return _refuse(400, "say why the step cannot be done")
        try:
            note = run.note(reason)
        except CommandError as err:
            return _refuse(409, str(err))
        log.info("web session %s (operator): run %s: %s: cannot do %r: %s", session.id, run.id,
                 note["exit"], note["instruction"], reason)
        return _json(note)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        session, run = self._session(request), self._run(request)
        if not session.may("operator"):
            return _refuse(403, "a viewer cannot stop a test")
        if run.task is not None and not run.task.done():
            log.info("web session %s (operator): cancelled run %s", session.id, run.id)
            run.abandoned = True
            run.task.cancel()
        return _json(run.public())

    async def _run_report(self, request: web.Request) -> web.StreamResponse:
        run = self._run(request)
        if not run.reports:
            raise web.HTTPNotFound(text="this run has no report (yet)")
        return self._download(run.reports_with_notes(), request.match_info["fmt"],
                              f"selftest-{run.id}")
