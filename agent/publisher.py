"""The publisher: drains the buffer to the broker in seq order, QoS 1, deleting only after PUBACK."""

from __future__ import annotations

import collections
import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.acl import EchoProbe, publish_denied, subscribe_denied
from agent.backoff import FULL, Backoff
from agent.buffer import Buffer, Row
from agent.config import MqttSection
from agent.credentials import EXPIRY_WARNING_DAYS, CredentialWatch, cert_days_left
from agent.errors import ConfigError
from agent.events import dumps
from agent.mqtt import AUTH_REFUSED, Topics, broker_order, connect_args, make_client
from agent.pahoclient import BlockReadClient
from agent.watchdog import Heartbeat

log = logging.getLogger(__name__)

RequestHandler = Callable[[str, bytes, "Properties | None"], None]

EVENT_CONTENT_TYPE = "application/cloudevents+json"
"""The CloudEvents MQTT binding's content type for structured mode (MQTT 5 only)."""
JSON_CONTENT_TYPE = "application/json"
MAX_RESPONSES = 256
"""Responses waiting for the publisher thread; more are refused (a request flood)."""
SELECT_TIMEOUT = 1.0
"""The loop goes round at least this often (keepalive, heartbeat, stop)."""
STOP_FLUSH = 3.0
STABLE_AFTER = 10.0
"""A connection lost sooner than this after being accepted does not reset the backoff: a broker
that closes at once (RabbitMQ when its access control refuses a subscription) is not retried in
a loop."""


def _properties(content_type: str) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    props.PayloadFormatIndicator = 1  # UTF-8
    return props


class _Packed(Properties):
    """Properties that never change, packed once: paho packs a message's properties again for
    every PUBLISH (a tenth of the publisher's time per event)."""

    def __init__(self, content_type: str) -> None:
        super().__init__(PacketTypes.PUBLISH)
        self.ContentType = content_type
        self.PayloadFormatIndicator = 1  # UTF-8
        object.__setattr__(self, "_packed", super().pack())

    def pack(self) -> bytes:
        packed: bytes = self.__dict__["_packed"]
        return packed


class _Wakeup:
    """A socket pair that interrupts the publisher thread's ``select()`` from any thread."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = threading.Event()

    def fileno(self) -> int:
        return self._reader.fileno()

    def set(self) -> None:
        if not self._pending.is_set():
            self._pending.set()
            with contextlib.suppress(OSError):
                self._writer.send(b"!")

    def clear(self) -> None:
        # Drain first, then clear: a set() in between finds the flag still set and writes
        # nothing, and the caller goes on to look at what was handed over anyway.
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass
        self._pending.clear()

    def wait(self, timeout: float) -> None:
        with contextlib.suppress(OSError, ValueError):
            select.select([self._reader], [], [], timeout)


class Publisher:
    """Owns the broker connection, on one thread.

    paho is not thread-safe when its loop is driven by hand: a ``publish()`` from another thread
    writes to the socket (and takes messages out of paho's own queue) concurrently with the
    loop. So every paho call happens on the publisher thread: other threads hand over retained
    states and responses and wake the thread through a pipe. paho's own in-flight window is
    unlimited (0), so paho never queues an event behind our back: the window of
    ``mqtt.max_inflight`` events is ours, and events go out strictly in seq order.

    A new paho client is made for every connection, so paho never re-sends its own copy of
    in-flight messages: after a reconnect the thread re-sends from the buffer, in seq order.
    """

    def __init__(
        self,
        mqtt: MqttSection,
        store_id: str,
        buffer: Buffer,
        *,
        ack: Callable[[list[int]], None],
        on_request: RequestHandler | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.topics = Topics.of(mqtt, store_id)
        self.client_id = mqtt.client_id or f"store-edge-agent-{store_id}"
        self.brokers = broker_order(mqtt, self.client_id)
        """(host, port) in the order they are tried; the first is the preferred one."""
        self._watch = CredentialWatch(mqtt)
        self.buffer = buffer
        self._ack = ack
        self._on_request = on_request
        self.on_connected: Callable[[], None] = lambda: None
        self._wake = _Wakeup()
        self._stopping = threading.Event()
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._refused: str | None = None
        self._denied: str | None = None  # a publish the broker's access control refused
        self._refused_mids: list[tuple[int, str]] = []
        self._probe: EchoProbe | None = None
        self._accepted_at = 0.0
        self._subscriptions: dict[int, str] = {}  # mid -> topic, until its SUBACK
        self._acked_mids: list[int] = []
        self._retained: dict[str, bytes] = {}
        self._retained_dirty: set[str] = set()
        self._responses: collections.deque[tuple[str, bytes, bytes | None]] = collections.deque()
        self._handover = threading.Lock()
        self._thread: threading.Thread | None = None
        self._drained = threading.Event()
        v5 = mqtt.protocol == "5"
        self._event_props = _Packed(EVENT_CONTENT_TYPE) if v5 else None
        self._json_props = _Packed(JSON_CONTENT_TYPE) if v5 else None
        # figures for `agent status` and metrics
        self.published = 0
        self.reconnects = 0
        self.inflight = 0
        self.last_error: str | None = None
        self.refusal: str | None = None
        """What the broker's access control refused on the current connection, in words."""
        self.connected_since: float | None = None
        self.broker = f"{self.brokers[0][0]}:{self.brokers[0][1]}"
        """HOST:PORT of the broker in use (or being tried), for `agent status` and metrics."""
        self.cert_days_left: float | None = cert_days_left(mqtt.cert_file) if mqtt.tls else None
        self.published_by: collections.Counter[tuple[str, str]] = collections.Counter()
        """(device, type) -> events the broker acknowledged, for metrics."""
        self.observe_latency: Callable[[float], None] = lambda seconds: None
        """Called on the publisher thread with each event's publish-to-PUBACK time."""
        self.beat = Heartbeat("mqtt")

    # -- public (any thread) ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.beat.name, daemon=True)
        self.beat.attach(self._thread)
        self._thread.start()

    def wake(self) -> None:
        """New events were committed."""
        self._drained.clear()
        self._wake.set()

    def retain(self, topic: str, payload: dict[str, Any] | str) -> None:
        """Publish ``payload`` retained on ``topic`` now or on the next connection (latest wins)."""
        data = payload.encode() if isinstance(payload, str) else dumps(payload)
        with self._handover:
            self._retained[topic] = data
            self._retained_dirty.add(topic)
        self._wake.set()

    def respond(
        self, topic: str, payload: dict[str, Any], correlation: bytes | None = None
    ) -> None:
        """Publish a response to a remote request (QoS 1, not retained, not buffered)."""
        if not self.connected:
            log.warning("cannot answer on %s: not connected to the broker", topic)
            return
        with self._handover:
            if len(self._responses) >= MAX_RESPONSES:
                log.warning("cannot answer on %s: %d responses are already waiting", topic,
                            MAX_RESPONSES)
                return
            self._responses.append((topic, dumps(payload), correlation))
        self._wake.set()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every committed event is acknowledged by the broker."""
        self._wake.set()
        return self._drained.wait(timeout)

    def stop(self, timeout: float = STOP_FLUSH) -> None:
        """Publish ``offline`` on availability, disconnect cleanly, stop the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 2.0)

    # -- the publisher thread ------------------------------------------------------------------

    def _new_client(self) -> BlockReadClient:
        client = make_client(self.mqtt, self.client_id, BlockReadClient)
        client.will_set(self.topics.availability, b"offline", qos=1, retain=True)
        client.max_inflight_messages_set(0)  # the window is ours: paho must never queue
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _run(self) -> None:
        backoff = Backoff(initial=self.mqtt.reconnect_min, cap=self.mqtt.reconnect_max,
                          jitter=FULL)
        index = 0  # into self.brokers; 0 is the preferred broker
        refused_in_round = False
        while not self._stopping.is_set():
            self.beat.beat()
            self._refused = self._denied = None
            host, port = self.brokers[index]
            self.broker = where = f"{host}:{port}"
            outcome, message, auth = "failed", "", False
            log.debug("connecting to broker %s (MQTT %s, TLS %s, user %s)", where,
                      self.mqtt.protocol, "on" if self.mqtt.tls else "off",
                      repr(self.mqtt.username) if self.mqtt.username else "none")
            try:
                self._watch.mark()  # before the files are read: a change after it is seen
                client = self._new_client()
                client.connect(**connect_args(self.mqtt, (host, port)))  # type: ignore[arg-type]
            except ConfigError as err:
                self._fail(str(err), self.mqtt.auth_retry)
                continue
            except ssl.SSLError as err:
                message = f"TLS handshake with broker {where} failed: {err}"
            except OSError as err:
                message = f"broker {where} unreachable: {err}"
            else:
                self._client = client
                self._check_certificate()
                outcome = self._serve(client)
                self._set_disconnected()
                if self._stopping.is_set():
                    break
                message, auth = self._why(outcome, where)
            if outcome == "rotated":
                continue  # the same broker at once, with the new files
            if outcome == "lost":
                # Back to the preferred broker, after a delay spread over [0, reconnect_min]:
                # a fleet that lost one broker together does not come back together.
                lasted = time.monotonic() - self._accepted_at
                if lasted >= STABLE_AFTER:
                    backoff.reset()
                else:
                    message += (f" {lasted:.1f} s after it accepted it (a broker closes at once "
                                "when its access control refuses a subscription or a publish: "
                                "check agent.store_id and the broker's ACL for this store)")
                self.reconnects += 1
                index, refused_in_round = 0, False
                self._fail(message, backoff.next())
                continue
            refused_in_round |= auth
            index = (index + 1) % len(self.brokers)
            if index:  # another broker is left in this round: try it at once
                self._fail(f"{message}; trying broker {self._where(index)} next", 0.0)
            elif refused_in_round:
                refused_in_round = False
                self._fail(message, self.mqtt.auth_retry)
            else:
                self._fail(message, backoff.next())
        self._set_disconnected()

    def _where(self, index: int) -> str:
        host, port = self.brokers[index]
        return f"{host}:{port}"

    def _why(self, outcome: str, where: str) -> tuple[str, bool]:
        """What the log says about a connection that ended, and whether credentials were refused."""
        if self._refused in AUTH_REFUSED:
            user = self.mqtt.username or "(none)"
            return (f"broker {where} refused the credentials of user {user!r}: {self._refused}. "
                    "Check mqtt.username and mqtt.password_file; the file is read again on "
                    "the next attempt"), True
        if self._denied:
            return self._denied, True
        if self._refused:
            return f"broker {where} refused the connection: {self._refused}", False
        if outcome == "lost":
            return f"connection to broker {where} lost", False
        hint = ""
        if self.mqtt.tls and not self.mqtt.cert_file:
            hint = " (does it require a TLS client certificate? set mqtt.cert_file and " \
                   "mqtt.key_file)"
        return f"broker {where} closed the connection before accepting it{hint}", False

    def _report_refusal(self, message: str) -> None:
        self.refusal = message
        log.error("%s", message)

    def _check_certificate(self) -> None:
        """Refresh the client certificate's days left; warn when it expires soon."""
        if not (self.mqtt.tls and self.mqtt.cert_file):
            return
        self.cert_days_left = days = cert_days_left(self.mqtt.cert_file)
        if days is not None and days < EXPIRY_WARNING_DAYS:
            log.warning("the client certificate %s %s: replace it (the agent picks up the new "
                        "file by itself)", self.mqtt.cert_file,
                        f"expires in {days:.0f} days" if days >= 0 else "has EXPIRED")

    def _serve(self, client: paho.Client) -> str:
        """Run one connection until it ends: ``"stopped"``, ``"lost"`` (it had been accepted),
        ``"failed"`` (it never was) or ``"rotated"`` (credential files changed: closed by us)."""
        feed = _Feed(self, client)
        was_connected = False
        while True:
            self.beat.beat()
            if self._stopping.is_set():
                self._close(client)
                return "stopped"
            if changed := self._watch.changed():
                log.info("credential files changed (%s): reconnecting to broker %s with them",
                         ", ".join(str(p) for p in changed), self.broker)
                feed.run()  # take the acks that are in; the rest are sent again
                self._close(client, say_offline=False)
                return "rotated"
            sock: Any = client.socket()
            if sock is None:
                return "lost" if was_connected else "failed"
            timeout = SELECT_TIMEOUT
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                timeout = 0.0  # TLS: decrypted bytes already buffered, select() would not say
            try:
                readable, writable, _ = select.select(
                    [sock, self._wake.fileno()], [sock] if client.want_write() else [], [],
                    timeout)
            except (OSError, ValueError):
                return "lost" if was_connected else "failed"
            if self._wake.fileno() in readable:  # else there is nothing to drain
                self._wake.clear()
            rc = paho.MQTT_ERR_SUCCESS
            if sock in readable or timeout == 0.0:
                rc = client.loop_read()
            if rc == paho.MQTT_ERR_SUCCESS and sock in writable:
                rc = client.loop_write()
            if rc == paho.MQTT_ERR_SUCCESS:
                rc = client.loop_misc()
            if rc != paho.MQTT_ERR_SUCCESS or self._refused:
                return "lost" if was_connected else "failed"
            if self.connected:
                was_connected = True
                feed.run()
                if self._denied:
                    self._close(client, say_offline=False)
                    return "denied"
                if self._probe is not None and self._probe.overdue():
                    self._report_refusal(self._probe.message)

    def _close(self, client: paho.Client, *, say_offline: bool = True) -> None:
        """Say ``offline`` (waiting a little for its PUBACK) and disconnect."""
        if self.connected and say_offline:
            info = client.publish(self.topics.availability, b"offline", qos=1, retain=True)
            deadline = time.monotonic() + STOP_FLUSH
            while not info.is_published() and time.monotonic() < deadline and \
                    (sock := client.socket()) is not None:
                client.loop_write()
                with contextlib.suppress(OSError, ValueError):
                    select.select([sock], [], [], 0.1)
                client.loop_read()
        client.disconnect()
        with contextlib.suppress(OSError, ValueError):
            client.loop_write()

    def _fail(self, message: str, delay: float) -> None:
        """Log ``message`` and wait ``delay``, cut short when the credential files change."""
        self.last_error = message
        if delay <= 0:
            log.error("%s", message)
            return
        log.error("%s; retrying in %.1f s", message, delay)
        deadline = time.monotonic() + delay
        while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            self.beat.beat()
            self._wake.wait(min(left, SELECT_TIMEOUT))
            self._wake.clear()
            if changed := self._watch.changed():
                log.info("credential files changed (%s): trying again now",
                         ", ".join(str(p) for p in changed))
                return

    def _set_disconnected(self) -> None:
        if self._connected.is_set():
            self._connected.clear()
            self.connected_since = None
        self.inflight = 0

    # -- paho callbacks (on the publisher thread, inside loop_read) ---------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if client is not self._client:
            return
        log.debug("broker %s answered the CONNECT: %s", self.broker, reason)
        if reason.is_failure:
            self._refused = str(reason)
            return
        log.info("connected to broker %s", self.broker)
        self.last_error = None
        self.connected_since = time.time()
        self._accepted_at = time.monotonic()
        self.refusal = None
        self._probe = None
        if self.mqtt.protocol == "3.1.1":  # subscribed before the publish it is to echo
            self._probe = EchoProbe(self.broker, self.mqtt.username, self.topics.availability)
            self._subscribe(client, self.topics.availability)
        client.publish(self.topics.availability, b"online", qos=1, retain=True)
        if self._on_request is not None:
            self._subscribe(client, self.topics.request("+"))
        with self._handover:
            self._retained_dirty = set(self._retained)
        self._connected.set()
        self.on_connected()

    def _subscribe(self, client: paho.Client, topic: str) -> None:
        _, mid = client.subscribe(topic, qos=1)
        if mid is not None:
            self._subscriptions[mid] = topic

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if client is self._client and not self._stopping.is_set():
            log.warning("disconnected from broker: %s", reason)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if client is not self._client:
            return
        if getattr(reason, "is_failure", False):  # MQTT 5 only: 3.1.1 has no reason codes
            self._refused_mids.append((mid, f"{reason} (reason code {reason.value})"))
        else:
            self._acked_mids.append(mid)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        topic = self._subscriptions.pop(mid, "?")
        for reason in reasons:
            if reason.is_failure:
                self._report_refusal(subscribe_denied(
                    self.broker, self.mqtt.username, topic,
                    f"{reason} (reason code {reason.value})"))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == self.topics.availability:
            if self._probe is not None:
                self._probe.saw(bytes(message.payload), bool(message.retain))
            return
        command = message.topic.rsplit("/", 1)[-1]
        if self._on_request is not None:
            try:
                self._on_request(command, bytes(message.payload), message.properties)
            except Exception:
                log.exception("handling request %s failed", message.topic)


class _Feed:
    """One connection's window of in-flight events: acks in, the next events out, in seq order."""

    def __init__(self, publisher: Publisher, client: paho.Client) -> None:
        self.pub = publisher
        self.client = client
        self.inflight: dict[int, tuple[Row, float]] = {}  # mid -> (row, sent)
        self.last_sent = 0  # highest seq handed to this connection

    def run(self) -> None:
        pub, client = self.pub, self.client
        acked = self._take_acks()
        self._send_handed_over()
        window = pub.mqtt.max_inflight
        room = window - len(self.inflight)
        rows: list[Row] = []
        # Refill in batches (half a window at a time): one query per batch instead of one per
        # PUBACK when the window is full.
        if len(self.inflight) <= window // 2:
            rows = pub.buffer.fetch(self.last_sent, room)
            topics = pub.topics
            for row in rows:
                info = client.publish(topics.event(row.device, row.type), row.payload, qos=1,
                                      properties=pub._event_props)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    log.warning("publishing seq %d failed: %s", row.seq, info.rc)
                    break
                self.inflight[info.mid] = (row, time.monotonic())
                self.last_sent = row.seq
            if len(rows) == room:
                pub._wake.set()  # more waiting: go round again as soon as acks make room
        pub.inflight = len(self.inflight)
        if not self.inflight and not rows and not acked:
            pub._drained.set()

    def _take_acks(self) -> list[int]:
        pub = self.pub
        mids, pub._acked_mids = pub._acked_mids, []
        refused, pub._refused_mids = pub._refused_mids, []
        for mid, reason in refused:
            if (entry := self.inflight.pop(mid, None)) is not None and not pub._denied:
                row = entry[0]
                pub._denied = publish_denied(
                    pub.broker, pub.mqtt.username, pub.topics.event(row.device, row.type),
                    row.seq, reason)
                pub.refusal = pub._denied  # logged when the connection is closed for it
        acked = []
        now = time.monotonic()
        for mid in mids:
            if (entry := self.inflight.pop(mid, None)) is not None:
                row, sent = entry
                acked.append(row.seq)
                pub.published_by[(row.device, row.type)] += 1
                pub.observe_latency(now - sent)
        if acked:
            pub.published += len(acked)
            pub._ack(acked)
        return acked

    def _send_handed_over(self) -> None:
        pub, client = self.pub, self.client
        with pub._handover:
            retained = [(t, pub._retained[t]) for t in pub._retained_dirty]
            pub._retained_dirty.clear()
            responses = list(pub._responses)
            pub._responses.clear()
        for topic, payload in retained:
            props = pub._json_props if payload[:1] in (b"{", b"[") else None
            client.publish(topic, payload, qos=1, retain=True, properties=props)
        for topic, payload, correlation in responses:
            answer = None
            if pub.mqtt.protocol == "5":
                answer = _properties(JSON_CONTENT_TYPE)
                if correlation is not None:
                    answer.CorrelationData = correlation
            client.publish(topic, payload, qos=1, properties=answer)
