"""One connection to a camera through onvif-zeep-async: clock, services, PullPoint, snapshots.

Imported only by a running onvif device (the ONVIF stack costs about 40 MB and 0.4 s), never
by the agent at start-up. Every failure leaves as ``CameraError`` with a short ``reason``
(``unreachable``, ``auth``, ``subscription lost``, ``protocol``) and a readable detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
from aiohttp import ClientError
from zeep.exceptions import Fault, TransportError

from drivers.onvif.fetch import FetchRefused, bounded_session, fetch_image, pin_uri
from drivers.onvif.mapping import Message
from drivers.onvif.timesync import camera_epoch, measure_offset

T = TypeVar("T")

UNREACHABLE, AUTH, LOST, PROTOCOL = "unreachable", "auth", "subscription lost", "protocol"
PULLPOINT_NS = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"
CREATE_GRACE = 0.3
"""Seconds a cancelled service creation may still take (within the driver's 2 s stop budget)."""


def _load_onvif() -> Any:
    """Import onvif-zeep-async without letting its ``logging.basicConfig`` change our logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import onvif

    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    # Its debug output holds whole SOAP bodies (WS-Security headers included) and a traceback
    # for every garbage timestamp a camera sends: keep it out of the agent's log.
    # The library turns lxml's huge_tree on: no nesting or text-size limits for what a camera
    # sends. Off, libxml2's limits hold (fetch.check_xml_limits refuses what passes them).
    onvif.settings.DEFAULT_SETTINGS.xml_huge_tree = False
    for name in ("onvif", "zeep"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("zeep.xsd").setLevel(logging.CRITICAL)
    return onvif


onvif = _load_onvif()


class CameraError(Exception):
    """A camera operation failed; ``reason`` is what ``device.offline`` says."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _is_auth_fault(err: Fault) -> bool:
    codes = [str(getattr(c, "localname", c)) for c in (getattr(err, "subcodes", None) or [])]
    text = f"{err.message} {' '.join(codes)}".lower()
    return any(k in text for k in ("notauthorized", "not authorized", "authority", "unauthorized"))


def classify(err: BaseException, *, fault_reason: str = PROTOCOL) -> CameraError:  # noqa: PLR0911
    """The ``CameraError`` for an exception from the ONVIF stack; a non-auth SOAP fault gets
    ``fault_reason`` (``subscription lost`` while pulling or renewing)."""
    if isinstance(err, CameraError):
        return err
    if isinstance(err, FetchRefused):
        return CameraError(PROTOCOL, str(err))
    if isinstance(err, onvif.exceptions.ONVIFAuthError):
        return CameraError(AUTH, str(err))
    if isinstance(err, Fault):
        if _is_auth_fault(err):
            return CameraError(AUTH, f"camera refused the credentials: {err.message}")
        return CameraError(fault_reason, f"SOAP fault: {err.message}")
    if isinstance(err, TransportError) and err.status_code in (401, 403):
        return CameraError(AUTH, f"HTTP {err.status_code}")
    if isinstance(err, TimeoutError | onvif.exceptions.ONVIFTimeoutError):
        return CameraError(UNREACHABLE, "no answer in time")
    if isinstance(err, ClientError | OSError):
        return CameraError(UNREACHABLE, f"{type(err).__name__}: {err}")
    if isinstance(err, onvif.ONVIFError) and isinstance(err.__cause__, ClientError | OSError):
        return CameraError(UNREACHABLE, str(err.__cause__))
    return CameraError(PROTOCOL, f"{type(err).__name__}: {err}")


def _items(node: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in getattr(node, "SimpleItem", None) or []:
        name = getattr(item, "Name", None)
        if name:
            out[str(name)] = str(getattr(item, "Value", ""))
    return out


def to_message(note: Any) -> Message | None:
    """A zeep ``NotificationMessage`` as a plain ``Message``; None when it has no topic."""
    topic = getattr(getattr(note, "Topic", None), "_value_1", None)
    if not topic:
        return None
    msg = getattr(getattr(note, "Message", None), "_value_1", None)
    return Message(
        topic=str(topic),
        utc_time=getattr(msg, "UtcTime", None),
        operation=getattr(msg, "PropertyOperation", None),
        source=_items(getattr(msg, "Source", None)),
        data=_items(getattr(msg, "Data", None)),
    )


class Camera:
    """A session with one camera: ``connect()``, ``subscribe()``, then ``pull()``/``renew()``."""

    def __init__(self, host: str, port: int, username: str, password: str, *,
                 request_timeout: float, lifetime: float, xml_max_bytes: int) -> None:
        self.device = onvif.ONVIFCamera(host, port, username or None, password or None,
                                        no_cache=True, adjust_time=False)
        self.host, self.port = host, port
        self._login = (username, password)
        self._http: aiohttp.ClientSession | None = None
        self._soap_http = bounded_session(xml_max_bytes)
        self.request_timeout = request_timeout
        self.lifetime = dt.timedelta(seconds=lifetime)
        self.offset: float | None = None
        self.info: dict[str, str] = {}
        self.profiles: list[str] = []
        self.address: str | None = None
        self.terminates: float | None = None
        """When our subscription ends, on our clock."""
        self.renew_at: float | None = None
        """``time.monotonic()`` at which to renew."""
        self._subscription: Any = None
        self._pullpoint: Any = None

    async def _create(self, awaitable: Awaitable[T]) -> T:
        """A library call that creates a service. The library opens the service's HTTP session
        before its ``setup()`` and forgets it when ``setup()`` is cancelled ("Unclosed client
        session" at exit): on cancellation, let the creation finish (briefly) so that
        ``close()`` finds and closes the session."""
        task = asyncio.ensure_future(awaitable)
        try:
            return await self._call(asyncio.shield(task))
        except asyncio.CancelledError:
            await asyncio.wait({task}, timeout=CREATE_GRACE)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: nobody needs it now
            raise

    async def _call(self, awaitable: Awaitable[T], *, timeout: float | None = None,
                    fault_reason: str = PROTOCOL) -> T:
        try:
            # Not asyncio.wait_for: on Python 3.11 it returns the result, and loses the
            # cancellation, when a stop meets a request that has just been answered (a camera
            # that answers every pull at once), and the driver never stops.
            async with asyncio.timeout(timeout or self.request_timeout):
                return await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise classify(err, fault_reason=fault_reason) from err

    async def _service(self, created: Awaitable[T]) -> T:
        """A service of the camera whose answers are read through our bounded session."""
        service = await self._create(created)
        service.transport.session = self._soap_http  # type: ignore[attr-defined]
        return service

    async def measure_clock(self) -> float | None:
        """GetSystemDateAndTime (unauthenticated first, as ONVIF allows): the camera's offset
        from our clock in seconds, or None when the camera reports no usable time."""
        devicemgmt = await self._service(self.device.create_devicemgmt_service())
        sent = time.time()
        try:
            answer = await self._call(devicemgmt.authless_GetSystemDateAndTime())
        except CameraError as err:
            if err.reason == UNREACHABLE:
                raise
            sent = time.time()
            answer = await self._call(devicemgmt.GetSystemDateAndTime())
        received = time.time()
        utc = getattr(answer, "UTCDateTime", None)
        date, clock = getattr(utc, "Date", None), getattr(utc, "Time", None)
        epoch = camera_epoch([getattr(date, "Year", None), getattr(date, "Month", None),
                              getattr(date, "Day", None), getattr(clock, "Hour", None),
                              getattr(clock, "Minute", None), getattr(clock, "Second", None)])
        self.offset = None if epoch is None else measure_offset(epoch, sent, received)
        return self.offset

    async def connect(self, *, want_profiles: bool) -> None:
        """Measure the clock, sign with it, discover the services and read the device info."""
        offset = await self.measure_clock()
        # The library measures the offset again (whole seconds) inside update_xaddrs when
        # adjust_time is on; with a garbage camera clock there is nothing to adjust to.
        self.device.adjust_time = offset is not None
        await self._create(self.device.update_xaddrs())
        if offset is not None:
            self.device.dt_diff = dt.timedelta(seconds=offset)  # services created from now on
        devicemgmt = await self._service(self.device.create_devicemgmt_service())
        try:
            info = await self._call(devicemgmt.GetDeviceInformation())
            self.info = {k: str(getattr(info, k, "") or "") for k in
                         ("Manufacturer", "Model", "FirmwareVersion", "SerialNumber")}
        except CameraError as err:
            if err.reason in (UNREACHABLE, AUTH):
                raise
        if want_profiles:
            media = await self._service(self.device.create_media_service())
            profiles = await self._call(media.GetProfiles())
            self.profiles = [str(p.token) for p in profiles or []]

    def _granted(self, answer: Any) -> None:
        current = getattr(answer, "CurrentTime", None)
        termination = getattr(answer, "TerminationTime", None)
        lifetime = self.lifetime.total_seconds()
        if isinstance(current, dt.datetime) and isinstance(termination, dt.datetime):
            granted = (termination - current).total_seconds()
            if granted > 0:
                lifetime = granted
        self.terminates = time.time() + lifetime
        # Renew with a fifth of the lifetime to spare (a slow camera, a busy Pi).
        self.renew_at = time.monotonic() + lifetime * 0.8

    async def subscribe(self) -> None:
        """CreatePullPointSubscription and the services that pull from and renew it."""
        events = await self._service(self.device.create_events_service())
        answer = await self._call(events.CreatePullPointSubscription({
            "InitialTerminationTime": self.device.get_next_termination_time(self.lifetime),
        }))
        address = answer.SubscriptionReference.Address._value_1
        self.device.xaddrs[PULLPOINT_NS] = self.device.rewrite_url(address)
        self.address = str(address)
        self._subscription = await self._service(
            self.device.create_subscription_service("PullPointSubscription"))
        self._pullpoint = await self._service(self.device.create_pullpoint_service())
        if self.device.has_broken_relative_time(self.lifetime, answer.CurrentTime,
                                                answer.TerminationTime):
            answer = await self._call(self._subscription.Renew(
                self.device.get_next_termination_time(self.lifetime)), fault_reason=LOST)
        self._granted(answer)

    async def renew(self) -> None:
        """Extend the subscription by its lifetime."""
        answer = await self._call(self._subscription.Renew(
            self.device.get_next_termination_time(self.lifetime)), fault_reason=LOST)
        self._granted(answer)

    async def pull(self, timeout: float, limit: int) -> list[Message]:
        """PullMessages: waits up to ``timeout`` for up to ``limit`` messages."""
        answer = await self._call(
            self._pullpoint.PullMessages({"Timeout": dt.timedelta(seconds=timeout),
                                          "MessageLimit": limit}),
            timeout=timeout + self.request_timeout, fault_reason=LOST,
        )
        notes = getattr(answer, "NotificationMessage", None) or []
        return [m for m in (to_message(n) for n in notes) if m is not None]

    async def unsubscribe(self) -> None:
        """Unsubscribe (best effort; see ``unsubscribe_on_stop`` for why it is off by default)."""
        if self._subscription is not None:
            await self._call(self._subscription.Unsubscribe(), fault_reason=LOST)

    async def snapshot(self, profile: str, timeout: float, max_bytes: int) -> bytes:
        """A JPEG from GetSnapshotUri, fetched from the configured camera only (HTTP Digest, no
        redirects, at most ``max_bytes``) within ``timeout``; see ``drivers.onvif.fetch``.

        Raises:
            CameraError: no profile, no snapshot URI, a URI on another host, a redirect, too
                large, the fetch failed, or not a JPEG.
        """
        token = profile or (self.profiles[0] if self.profiles else "")
        if not token:
            raise CameraError(PROTOCOL, "the camera has no media profile")
        # asked each time (not the library's cache): a URI may change with a reboot
        media = await self._service(self.device.create_media_service())
        answer = await self._call(media.GetSnapshotUri({"ProfileToken": token}))
        uri = getattr(answer, "Uri", None)
        if not uri:
            raise CameraError(PROTOCOL, f"no snapshot URI for profile {token!r}")
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=False, limit=2))  # LAN cameras self-sign
        try:
            image = await fetch_image(self._http, pin_uri(str(uri), self.host, self.port),
                                      username=self._login[0], password=self._login[1],
                                      timeout=timeout, max_bytes=max_bytes)
        except FetchRefused as err:
            raise CameraError(PROTOCOL, str(err)) from err
        except (ClientError, TimeoutError) as err:
            raise classify(err) from err
        if not image.startswith(b"\xff\xd8"):
            raise CameraError(PROTOCOL, f"snapshot is not a JPEG ({len(image)} bytes)")
        return image

    async def close(self) -> None:
        """Close every HTTP session (never sends Unsubscribe)."""
        closing = [self.device.close(), *(s.close() for s in (self._http, self._soap_http)
                                          if s is not None)]
        with contextlib.suppress(TimeoutError, ClientError, OSError, RuntimeError):
            # together, in 0.5 s: within the 2 s stop budget
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 0.5)
