"""A fake ONVIF camera over aiohttp: real SOAP 1.2, WS-Security digest, PullPoint events, snapshots.

It is the onvif driver's simulated transport (tests, benchmarks, the demo, ``simulate = true``).
It answers the SOAP POSTs the real onvif-zeep-async client sends (the client reads the WSDLs
from its own package) and behaves like the cameras that break in stores: it reboots and forgets
subscriptions, runs a skewed or garbage clock, and rejects wrong passwords with
``ter:NotAuthorized``. Use ``FakeCamera`` inside an event loop or ``FakeCameraThread`` from
synchronous code; ``python -m drivers.onvif.simulator`` serves one from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web
from lxml import etree

from drivers.onvif.timesync import parse_duration

__all__ = ["FakeCamera", "FakeCameraThread", "Notification"]

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tt": "http://www.onvif.org/ver10/schema",
    "tns1": "http://www.onvif.org/ver10/topics",
    "ter": "http://www.onvif.org/ver10/error",
    "wsrf-rw": "http://docs.oasis-open.org/wsrf/rw-2",
    "wsntw": "http://docs.oasis-open.org/wsn/bw-2",
}
_XMLNS = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)

# A 16x16 baseline JPEG; each snapshot gets a COM segment with a counter so hashes differ.
_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEAAQABAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJDREN"
    "Dg8QEBEQCgwSExIQEw8QEBD/2wBDAQMDAwQDBAgEBAgQCwkLEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ"
    "EBAQEBAQEBAQEBAQEBD/wAARCAAQABADASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAABwQF/8QAJBAAAQQBBAICAwAA"
    "AAAAAAAAAQIDBAYFBwgSExEiABQJMTL/xAAVAQEBAAAAAAAAAAAAAAAAAAAABv/EACMRAAECBQMFAAAAAAAAAAAAAAECEQME"
    "BQYhABIxFRZhgeH/2gAMAwEAAhEDEQA/ABSm0mobc8HmExLUlRzzEWPkJWW+ulrsaUVAseUgslSlH9LKuPryIKuWPZdskzXm"
    "m3fX5m2nF4GlVxx/HOpx4ks51+MiU/Iaad7UcUo4tILoS4kqcWkezS0hO/HvuRp0rO6hWnWO1UisZVuFi4GFeyEpmGepa5S5"
    "SWVPuciFKRFLgSrwetnyPIB+Vb4N9mKhQMzo5po9XLdDs9d6ZVix2VEhiL9kuNPxw2gEKcDQ/rs8AuA8VAe0vdl7VOYn+27f"
    "lGAUgmITjbhSmCg3BYlyeWDkMolvw4KOp1KM6iCNvngZHwetf//Z"
)
MOTION_TOPIC = "tns1:VideoSource/MotionAlarm"
SUBSCRIPTION_QUEUE = 10_000
"""Messages a subscription holds for a client that does not pull (older ones are dropped)."""


class SoapFault(Exception):
    """A SOAP 1.2 fault to answer with: ``code`` is ``Sender``/``Receiver``, ``subcode`` a QName."""

    def __init__(self, subcode: str, reason: str, *, code: str = "Sender", status: int = 400):
        super().__init__(reason)
        self.code, self.subcode, self.reason, self.status = code, subcode, reason, status


@dataclass
class Notification:
    """One event as the camera announces it."""

    topic: str
    data: dict[str, str]
    source: dict[str, str] = field(default_factory=dict)
    utc_time: str | None = None
    """The message's UtcTime attribute as sent (garbage-timestamp cameras); None = when injected."""
    operation: str = "Changed"
    at: float | None = None
    """The camera's clock when it was injected (set by ``FakeCamera.inject``)."""

    def xml(self, camera_now: float) -> str:
        when = self.utc_time if self.utc_time is not None else _iso(
            camera_now if self.at is None else self.at, millis=True)
        src = "".join(f"<tt:SimpleItem Name={quoteattr(k)} Value={quoteattr(v)}/>"
                      for k, v in self.source.items())
        data = "".join(f"<tt:SimpleItem Name={quoteattr(k)} Value={quoteattr(v)}/>"
                       for k, v in self.data.items())
        return (
            "<wsnt:NotificationMessage>"
            '<wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
            f"{escape(self.topic)}</wsnt:Topic>"
            f"<wsnt:Message><tt:Message UtcTime={quoteattr(when)} "
            f"PropertyOperation={quoteattr(self.operation)}>"
            f"<tt:Source>{src}</tt:Source><tt:Data>{data}</tt:Data></tt:Message></wsnt:Message>"
            "</wsnt:NotificationMessage>"
        )


@dataclass
class _Subscription:
    id: str
    terminates: float  # camera clock, epoch s
    queue: deque[Notification] = field(default_factory=lambda: deque(maxlen=SUBSCRIPTION_QUEUE))
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


def _iso(epoch: float, *, millis: bool = False) -> str:
    when = datetime.fromtimestamp(epoch, UTC)
    if millis:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()


class FakeCamera:
    """One fake ONVIF camera on ``host:port`` (port 0 picks a free one; see ``port`` after start).

    Attributes tests change at will: ``skew`` (camera clock minus real clock, s), ``garbage_clock``
    (GetSystemDateAndTime answers zeros), ``auth_window`` (allowed WS-Security ``Created``
    distance from the camera clock), ``password``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "admin",
        password: str = "secret",  # noqa: S107 - a fake camera's default
        skew: float = 0.0,
        auth_window: float = 10.0,
        initial_state: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.skew = skew
        self.garbage_clock = False
        self.broken_relative_time: float | None = None
        """Grant this many seconds for any relative (``PT..S``) termination time, as firmwares
        that misread durations do; absolute times are honoured."""
        self.fault_pulls = False
        """Fault every PullMessages (a firmware whose pull point is broken)."""
        self.ignore_timeout = False
        """Answer PullMessages at once even when nothing is waiting (some firmwares do)."""
        self.snapshot_delay = 0.0
        """Seconds the snapshot URI takes to answer (a camera busy encoding)."""
        self.snapshot_size = 0
        """A hostile camera: pad each snapshot to this many bytes, streamed without a length."""
        self.snapshot_uri: str | None = None
        """A hostile camera: report this snapshot URI instead of its own."""
        self.snapshot_redirect: str | None = None
        """A hostile camera: answer the snapshot URI with a 302 to this location."""
        self.pull_padding = 0
        """A hostile camera: stream this many bytes of whitespace after each PullMessages answer."""
        self.pull_depth = 0
        """A hostile camera: nest an element this deep in each PullMessages answer."""
        self.snapshot_requests = 0
        self.snapshot_logins = 0
        """Snapshot requests that carried an ``Authorization`` header (a login sent here)."""
        self.auth_window = auth_window
        self.initial_state = initial_state
        self.subscriptions: dict[str, _Subscription] = {}
        self.properties: dict[tuple[str, tuple[tuple[str, str], ...]], Notification] = {}
        self.requests: dict[str, int] = {}
        self.auth_failures = 0
        self.unsubscribes = 0
        self.snapshots = 0
        self.injected = 0
        self._ids = itertools.count(1)
        self._nonces: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._pulls: set[asyncio.BaseTransport] = set()
        self._digest_nonce = uuid.uuid4().hex

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def now(self) -> float:
        """The camera's clock (epoch s)."""
        return time.time() + self.skew

    async def start(self) -> FakeCamera:
        app = web.Application()
        app.router.add_post("/onvif/{service:.*}", self._soap)
        app.router.add_get("/snapshot.jpg", self._snapshot)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()
        return self

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        self._drop_pulls()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def reboot(self, down_for: float = 0.0) -> None:
        """Forget every subscription, drop open connections, and refuse connections for a while."""
        self.subscriptions.clear()
        self.properties.clear()
        self._nonces.clear()
        self._drop_pulls()
        if down_for > 0 and self._site is not None:
            await self._site.stop()
            await asyncio.sleep(down_for)
            await self._listen()

    def _drop_pulls(self) -> None:
        for transport in list(self._pulls):
            transport.close()
        self._pulls.clear()

    # -- events ---------------------------------------------------------------------------------

    def inject(self, note: Notification) -> None:
        """Announce ``note`` to every live subscription (and remember it as the property state)."""
        self.injected += 1
        if note.at is None:
            note = replace(note, at=self.now())
        key = (note.topic, tuple(sorted(note.source.items())))
        self.properties[key] = note
        for sub in self.subscriptions.values():
            sub.queue.append(note)
            sub.wakeup.set()

    def motion(self, active: bool, *, source: str = "VideoSource_1", utc_time: str | None = None
               ) -> None:
        """Inject ``tns1:VideoSource/MotionAlarm`` with ``State``."""
        self.inject(Notification(MOTION_TOPIC, {"State": str(active).lower()},
                                 {"Source": source}, utc_time))

    def flood(self, depth: int) -> None:
        """Top every subscription up to ``depth`` waiting motion messages (as fast as pulled)."""
        for sub in self.subscriptions.values():
            missing = depth - len(sub.queue)
            for i in range(missing):
                sub.queue.append(Notification(MOTION_TOPIC, {"State": "true" if i % 2 else "false"},
                                              {"Source": "VideoSource_1"}))
            if missing > 0:
                self.injected += missing
                sub.wakeup.set()

    # -- SOAP -----------------------------------------------------------------------------------

    async def _soap(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            doc = etree.fromstring(body, _PARSER)
            payload = doc.find("env:Body", NS)
            if payload is None or len(payload) == 0:
                raise SoapFault("ter:InvalidArgVal", "no SOAP 1.2 Body")
            op = etree.QName(payload[0]).localname
            self.requests[op] = self.requests.get(op, 0) + 1
            if op != "GetSystemDateAndTime":
                self._check_auth(doc)
            handler = getattr(self, f"_op_{op}", None)
            if handler is None:
                raise SoapFault("ter:ActionNotSupported", f"{op} is not supported",
                                code="Receiver", status=500)
            result = handler(payload[0], request)
            if asyncio.iscoroutine(result):
                result = await result
        except SoapFault as fault:
            return self._fault(fault)
        except etree.XMLSyntaxError as err:
            return self._fault(SoapFault("ter:WellFormed", f"not XML: {err}"))
        if isinstance(result, web.StreamResponse):
            return result
        body = (f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {_XMLNS}><env:Body>{result}'
                "</env:Body></env:Envelope>")
        if op == "PullMessages" and self.pull_padding:
            return await self._stream(request, body.encode(), self.pull_padding, fill=b" ",
                                      content_type="application/soap+xml; charset=utf-8")
        return web.Response(body=body, content_type="application/soap+xml", charset="utf-8")

    def _fault(self, fault: SoapFault) -> web.Response:
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {_XMLNS}><env:Body><env:Fault>'
            f"<env:Code><env:Value>env:{fault.code}</env:Value><env:Subcode><env:Value>"
            f"{fault.subcode}</env:Value></env:Subcode></env:Code><env:Reason>"
            f'<env:Text xml:lang="en">{escape(fault.reason)}</env:Text></env:Reason>'
            "</env:Fault></env:Body></env:Envelope>"
        )
        return web.Response(status=fault.status, body=xml, content_type="application/soap+xml",
                            charset="utf-8")

    def _check_auth(self, doc: Any) -> None:
        token = doc.find("env:Header/wsse:Security/wsse:UsernameToken", NS)
        try:
            if token is None:
                raise ValueError("no UsernameToken")
            user = token.findtext("wsse:Username", namespaces=NS)
            digest = token.findtext("wsse:Password", namespaces=NS) or ""
            nonce = token.findtext("wsse:Nonce", namespaces=NS) or ""
            created = token.findtext("wsu:Created", namespaces=NS) or ""
            expected = base64.b64encode(hashlib.sha1(  # noqa: S324 - WS-Security mandates SHA-1
                base64.b64decode(nonce) + created.encode() + self.password.encode()
            ).digest()).decode()
            if user != self.username or digest != expected:
                raise ValueError("wrong user name or password")
            if abs(_parse_time(created) - self.now()) > self.auth_window:
                raise ValueError(f"Created {created} is outside the camera's time window")
            if nonce in self._nonces:
                raise ValueError("nonce replayed")
            self._nonces.add(nonce)
            if len(self._nonces) > 100_000:
                self._nonces.clear()
        except (ValueError, TypeError) as err:
            self.auth_failures += 1
            raise SoapFault("ter:NotAuthorized", f"Sender not Authorized: {err}") from err

    # device service

    def _op_GetSystemDateAndTime(self, req: Any, request: web.Request) -> str:
        if self.garbage_clock:
            y = mo = d = h = mi = s = 0
        else:
            t = datetime.fromtimestamp(self.now(), UTC)
            y, mo, d, h, mi, s = t.year, t.month, t.day, t.hour, t.minute, t.second
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
            f"<tt:Time><tt:Hour>{h}</tt:Hour><tt:Minute>{mi}</tt:Minute><tt:Second>{s}</tt:Second>"
            f"</tt:Time><tt:Date><tt:Year>{y}</tt:Year><tt:Month>{mo}</tt:Month><tt:Day>{d}</tt:Day>"
            "</tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _services(self) -> list[tuple[str, str]]:
        return [(NS["tds"], f"{self.base}/onvif/device_service"),
                (NS["trt"], f"{self.base}/onvif/media_service"),
                (NS["tev"], f"{self.base}/onvif/events_service")]

    def _op_GetServices(self, req: Any, request: web.Request) -> str:
        services = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{xaddr}</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for ns, xaddr in self._services()
        )
        return f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>"

    def _op_GetCapabilities(self, req: Any, request: web.Request) -> str:
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{self.base}/onvif/device_service</tt:XAddr></tt:Device>"
            f"<tt:Events><tt:XAddr>{self.base}/onvif/events_service</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false"
            "</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>"
            f"<tt:Media><tt:XAddr>{self.base}/onvif/media_service</tt:XAddr></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def _op_GetDeviceInformation(self, req: Any, request: web.Request) -> str:
        return (
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>store-edge-agent</tds:Manufacturer>"
            "<tds:Model>FakeCam</tds:Model><tds:FirmwareVersion>1.0</tds:FirmwareVersion>"
            f"<tds:SerialNumber>FAKE-{self.port}</tds:SerialNumber><tds:HardwareId>sim"
            "</tds:HardwareId></tds:GetDeviceInformationResponse>"
        )

    # media service

    def _op_GetProfiles(self, req: Any, request: web.Request) -> str:
        return ('<trt:GetProfilesResponse><trt:Profiles token="profile_1" fixed="true">'
                "<tt:Name>main</tt:Name></trt:Profiles></trt:GetProfilesResponse>")

    def _op_GetSnapshotUri(self, req: Any, request: web.Request) -> str:
        token = req.findtext("trt:ProfileToken", namespaces=NS)
        if token != "profile_1":  # noqa: S105 - a profile token, not a secret
            raise SoapFault("ter:InvalidArgVal", f"no profile {token!r}")
        return (
            f"<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>"
            f"{escape(self.snapshot_uri or self.base + '/snapshot.jpg')}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false"
            "</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
            "</trt:GetSnapshotUriResponse>"
        )

    # events service

    def _termination(self, text: str | None, default: float = 600.0) -> float:
        now = self.now()
        if not text:
            return now + default
        text = text.strip()
        if text.startswith("P"):
            if self.broken_relative_time is not None:
                return now + self.broken_relative_time
            return now + parse_duration(text)
        try:
            return _parse_time(text)
        except ValueError as err:
            raise SoapFault("wsntw:UnacceptableInitialTerminationTimeFault",
                            f"bad termination time {text!r}") from err

    def _op_CreatePullPointSubscription(self, req: Any, request: web.Request) -> str:
        sub = _Subscription(
            id=str(next(self._ids)),
            terminates=self._termination(req.findtext("tev:InitialTerminationTime", namespaces=NS)),
        )
        self.subscriptions[sub.id] = sub
        if self.initial_state:
            for note in self.properties.values():
                sub.queue.append(replace(note, operation="Initialized", at=None))
        now = self.now()
        return (
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>"
            f"{self.base}/onvif/subscription/{sub.id}</wsa:Address></tev:SubscriptionReference>"
            f"<wsnt:CurrentTime>{_iso(now)}</wsnt:CurrentTime>"
            f"<wsnt:TerminationTime>{_iso(sub.terminates)}</wsnt:TerminationTime>"
            "</tev:CreatePullPointSubscriptionResponse>"
        )

    def _subscription(self, request: web.Request) -> _Subscription:
        sub_id = request.match_info["service"].rpartition("/")[2]
        sub = self.subscriptions.get(sub_id)
        if sub is not None and sub.terminates < self.now():
            del self.subscriptions[sub_id]
            sub = None
        if sub is None:
            raise SoapFault("wsrf-rw:ResourceUnknownFault", f"no subscription {sub_id!r}")
        return sub

    async def _op_PullMessages(self, req: Any, request: web.Request) -> str:
        sub = self._subscription(request)
        if self.fault_pulls:
            raise SoapFault("ter:Action", "PullMessages failed", code="Receiver", status=500)
        timeout = parse_duration(req.findtext("tev:Timeout", namespaces=NS) or "PT10S")
        limit = int(req.findtext("tev:MessageLimit", namespaces=NS) or "1")
        if not sub.queue and not self.ignore_timeout:
            sub.wakeup.clear()
            transport = request.transport
            if transport is not None:
                self._pulls.add(transport)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.wakeup.wait(), timeout)
            finally:
                self._pulls.discard(transport)
            sub = self._subscription(request)  # a reboot while we waited
        messages = [sub.queue.popleft() for _ in range(min(limit, len(sub.queue)))]
        now = self.now()
        return (
            f"<tev:PullMessagesResponse><tev:CurrentTime>{_iso(now)}</tev:CurrentTime>"
            f"<tev:TerminationTime>{_iso(sub.terminates)}</tev:TerminationTime>"
            + "".join(m.xml(now) for m in messages)
            + "<tev:x>" * self.pull_depth + "</tev:x>" * self.pull_depth
            + "</tev:PullMessagesResponse>"
        )

    def _op_Renew(self, req: Any, request: web.Request) -> str:
        sub = self._subscription(request)
        sub.terminates = self._termination(req.findtext("wsnt:TerminationTime", namespaces=NS))
        return (f"<wsnt:RenewResponse><wsnt:TerminationTime>{_iso(sub.terminates)}"
                f"</wsnt:TerminationTime><wsnt:CurrentTime>{_iso(self.now())}</wsnt:CurrentTime>"
                "</wsnt:RenewResponse>")

    def _op_Unsubscribe(self, req: Any, request: web.Request) -> str:
        self.unsubscribes += 1
        sub = self._subscription(request)
        del self.subscriptions[sub.id]
        return "<wsnt:UnsubscribeResponse/>"

    def _op_SetSynchronizationPoint(self, req: Any, request: web.Request) -> str:
        self._subscription(request)
        return "<tev:SetSynchronizationPointResponse/>"

    # -- snapshot (HTTP digest, RFC 7616 MD5 with qop=auth) ----------------------------------------

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        self.snapshot_requests += 1
        self.snapshot_logins += "Authorization" in request.headers
        if self.snapshot_redirect:
            raise web.HTTPFound(self.snapshot_redirect)
        if not self._digest_ok(request):
            return web.Response(status=401, headers={"WWW-Authenticate": (
                f'Digest realm="fakecam", qop="auth", nonce="{self._digest_nonce}", '
                'algorithm=MD5, opaque="0"')})
        await asyncio.sleep(self.snapshot_delay)
        self.snapshots += 1
        comment = f"fakecam snapshot {self.snapshots} {time.time():.6f}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        image = _JPEG[:2] + segment + _JPEG[2:]
        if self.snapshot_size > len(image):
            return await self._stream(request, image, self.snapshot_size)
        return web.Response(body=image, content_type="image/jpeg")

    async def _stream(self, request: web.Request, head: bytes, size: int, *,
                      fill: bytes = b"\0", content_type: str = "image/jpeg"
                      ) -> web.StreamResponse:
        """``head`` followed by ``fill`` up to ``size`` bytes, chunked without a length, until
        the client hangs up."""
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(head)
        chunk, sent = fill * (256 * 1024), len(head)
        with contextlib.suppress(ConnectionError):
            while sent < size:
                await response.write(chunk[:size - sent])
                sent += len(chunk)
            await response.write_eof()
        return response

    def _digest_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        fields = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', header[7:])}

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 7616 MD5

        if fields.get("username") != self.username or fields.get("nonce") != self._digest_nonce:
            return False
        ha1 = md5(f"{self.username}:fakecam:{self.password}")
        ha2 = md5(f"{request.method}:{fields.get('uri', '')}")
        expected = md5(f"{ha1}:{fields['nonce']}:{fields.get('nc', '')}:{fields.get('cnonce', '')}"
                       f":{fields.get('qop', '')}:{ha2}")
        return fields.get("response") == expected


class FakeCameraThread:
    """A ``FakeCamera`` on its own event loop in a daemon thread, for synchronous tests and tools."""

    def __init__(self, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fakecam", daemon=True)
        self._thread.start()
        self.camera: FakeCamera = self.call(self._make(options))

    async def _make(self, options: dict[str, Any]) -> FakeCamera:
        return await FakeCamera(**options).start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run ``coro`` on the camera's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def run(self, fn: Any, *args: Any) -> Any:
        """Call plain ``fn(*args)`` on the camera's loop (inject, motion...) and return its result."""
        async def wrapper() -> Any:
            return fn(*args)
        return self.call(wrapper())

    @property
    def port(self) -> int:
        return self.camera.port

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.camera.stop(), 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def main(argv: list[str] | None = None) -> None:
    """Serve a fake camera until interrupted (``--motion-every``, ``--flood`` make events)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default=os.environ.get("FAKECAM_PASSWORD", "secret"))
    parser.add_argument("--skew", type=float, default=0.0, help="camera clock minus real clock, s")
    parser.add_argument("--motion-every", type=float, default=0.0, help="seconds; 0 = never")
    parser.add_argument("--flood", type=int, default=0, metavar="N",
                        help="keep N motion messages waiting in every subscription (benchmarks)")
    args = parser.parse_args(argv)

    async def serve() -> None:
        cam = await FakeCamera(host=args.host, port=args.port, username=args.username,
                               password=args.password, skew=args.skew).start()
        print(f"fake ONVIF camera on {cam.base} (user {args.username})", flush=True)
        active = False
        while True:
            if args.flood:
                cam.flood(args.flood)
                await asyncio.sleep(0.005)
                continue
            await asyncio.sleep(args.motion_every or 3600)
            if args.motion_every:
                active = not active
                cam.motion(active)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
