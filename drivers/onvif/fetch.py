"""Bounded reads from a camera: SOAP answers up to ``xml_max_bytes``; the snapshot fetch with
its URI pinned to the camera, no redirects and a streamed read up to ``snapshot_max_bytes``.

A camera is not trusted with where our credentials go or how much we read. The URI it reports
is only fetched from the configured camera (``pin_uri``): an address a camera behind NAT
reports about itself (an IP literal of a private, loopback or link-local range) is rewritten to
the configured host and port, any other host is refused. Redirects are errors, so the Digest
answer (the camera's login) only ever goes to the camera. The body is read in chunks and
dropped as soon as it passes ``max_bytes``.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from lxml import etree

__all__ = ["FetchRefused", "bounded_session", "fetch_image", "pin_uri"]

CHUNK = 64 * 1024


class FetchRefused(Exception):
    """The camera's answer (or its URI) was not taken; the message says why, nothing was saved."""


def check_xml_limits(body: bytes) -> None:
    """Refuse an XML answer past libxml2's limits without ``huge_tree`` (256 levels deep, 10 MB
    text nodes). The SOAP stack parses with ``recover``, which would silently cut such a
    document down (a 100k-deep pull answer became an empty pull); other syntax errors are
    left to it.

    Raises:
        FetchRefused: the answer is nested too deep or has a huge node.
    """
    if not body.lstrip().startswith(b"<"):
        return
    try:
        etree.fromstring(body, _STRICT)
    except etree.XMLSyntaxError as err:
        if err.code == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
            raise FetchRefused(f"XML answer refused: {err.msg}") from err


_STRICT = etree.XMLParser(huge_tree=False, resolve_entities=False, no_network=True)


class _BoundedResponse(aiohttp.ClientResponse):
    """A response whose whole-body ``read()`` (what the SOAP stack uses) stops at
    ``max_bytes``, and whose XML is within ``check_xml_limits``: a camera's 300 MB answer
    costs at most that much memory, not 300 MB."""

    max_bytes = 0

    async def read(self) -> bytes:
        if self._body is None:
            declared = self.content_length
            body = bytearray()
            try:
                if declared is not None and declared > self.max_bytes:
                    raise FetchRefused(f"answer of {declared} bytes is larger than xml_max_bytes "
                                       f"{self.max_bytes}: refused unread")
                async for chunk in self.content.iter_chunked(CHUNK):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchRefused(f"answer is larger than xml_max_bytes "
                                           f"{self.max_bytes}: reading stopped")
            except BaseException:
                self.close()
                raise
            check_xml_limits(bytes(body))
            self._body = bytes(body)
        return await super().read()


def bounded_session(max_bytes: int) -> aiohttp.ClientSession:
    """A session for the SOAP services whose answers are read up to ``max_bytes``."""
    response_class = type("BoundedResponse", (_BoundedResponse,), {"max_bytes": max_bytes})
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False),
                                 response_class=response_class)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_own_address(host: str) -> bool:
    """What a camera behind NAT may report about itself: an IP literal that is private,
    loopback or link-local (never a DNS name or a public address)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def pin_uri(uri: str, host: str, port: int) -> str:
    """The URI to fetch: ``uri``'s path and query on the configured ``host:port``.

    Raises:
        FetchRefused: not http(s), or on a host that is not the camera's.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"snapshot URI scheme {parts.scheme or 'none'!r} refused "
                           "(only http and https)")
    try:
        reported_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise FetchRefused(f"snapshot URI has a bad port: {err}") from err
    reported = parts.hostname or ""
    same = reported.lower() == host.lower() and reported_port == port
    if not same and not _is_own_address(reported):
        raise FetchRefused(f"snapshot URI names another host ({_netloc(reported, reported_port)})"
                           f" than the camera {_netloc(host, port)}: refused, nothing fetched")
    # userinfo in the URI is dropped: credentials are ours to send, to the camera only
    return urlunsplit((parts.scheme, _netloc(host, port), parts.path or "/", parts.query, ""))


async def fetch_image(session: aiohttp.ClientSession, url: str, *, username: str,
                      password: str, timeout: float, max_bytes: int) -> bytes:
    """GET ``url`` with HTTP Digest auth (when a username is set), without redirects, reading
    at most ``max_bytes``.

    Raises:
        FetchRefused: a redirect, an error status, or a body larger than ``max_bytes``.
        aiohttp.ClientError, TimeoutError: the connection failed or took longer than ``timeout``.
    """
    middlewares = (aiohttp.DigestAuthMiddleware(username, password),) if username else ()
    async with session.get(url, allow_redirects=False, middlewares=middlewares,
                           timeout=aiohttp.ClientTimeout(total=timeout)) as response:
        if 300 <= response.status < 400:
            where = response.headers.get("Location", "nowhere")[:200]
            raise FetchRefused(f"snapshot answer was a redirect (HTTP {response.status} to "
                               f"{where}): redirects are not followed")
        if response.status == 401:
            raise FetchRefused("camera refused the credentials for the snapshot (HTTP 401)")
        if response.status >= 400:
            raise FetchRefused(f"snapshot answer was HTTP {response.status}")
        declared = response.content_length
        if declared is not None and declared > max_bytes:
            raise FetchRefused(f"snapshot of {declared} bytes is larger than snapshot_max_bytes "
                               f"{max_bytes}: refused unread, nothing saved")
        body = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise FetchRefused(f"snapshot is larger than snapshot_max_bytes {max_bytes}: "
                                   f"reading stopped after {len(body)} bytes, nothing saved")
        return bytes(body)
