"""The publisher: drains the buffer to the broker in seq order, QoS 1, deleting only after PUBACK."""

from __future__ import annotations

import collections
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties

from agent.backoff import Backoff
from agent.buffer import Buffer, Row
from agent.config import MqttSection
from agent.errors import ConfigError
from agent.events import dumps
from agent.mqtt import AUTH_REFUSED, Topics, connect_args, make_client
from agent.watchdog import Heartbeat

log = logging.getLogger(__name__)

RequestHandler = Callable[[str, bytes, "Properties | None"], None]


class Publisher:
    """Owns the broker connection. Two threads: the network loop, and the feeder that publishes.

    A new paho client is made for every connection, so paho never re-sends its own copy of
    in-flight messages: after a reconnect the feeder re-sends from the buffer, in seq order.
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
        self.buffer = buffer
        self._ack = ack
        self._on_request = on_request
        self.on_connected: Callable[[], None] = lambda: None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._client: paho.Client | None = None
        self._generation = 0
        self._connected = threading.Event()
        self._refused: str | None = None
        self._acks: collections.deque[tuple[int, int]] = collections.deque()
        self._retained: dict[str, bytes] = {}
        self._retained_dirty: set[str] = set()
        self._retained_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._inflight_count = 0
        self._drained = threading.Event()
        # figures for `agent status` and metrics
        self.published = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.published_by: collections.Counter[tuple[str, str]] = collections.Counter()
        """(device, type) -> events the broker acknowledged, for metrics."""
        self.observe_latency: Callable[[float], None] = lambda seconds: None
        """Called on the feeder thread with each event's publish-to-PUBACK time."""
        self.feeder_beat = Heartbeat("mqtt-feeder")
        self.network_beat = Heartbeat("mqtt-network", must_beat=False)

    # -- public ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        for target, beat in ((self._network, self.network_beat), (self._feeder, self.feeder_beat)):
            thread = threading.Thread(target=target, name=beat.name, daemon=True)
            beat.attach(thread)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """New events were committed."""
        self._drained.clear()
        self._wake.set()

    def retain(self, topic: str, payload: dict[str, Any] | str) -> None:
        """Publish ``payload`` retained on ``topic`` now or on the next connection (latest wins)."""
        data = payload.encode() if isinstance(payload, str) else dumps(payload)
        with self._retained_lock:
            self._retained[topic] = data
            self._retained_dirty.add(topic)
        self._wake.set()

    def respond(
        self, topic: str, payload: dict[str, Any], correlation: bytes | None = None
    ) -> None:
        """Publish a response to a remote request (QoS 1, not retained, not buffered)."""
        client = self._client
        if client is None or not self.connected:
            log.warning("cannot answer on %s: not connected to the broker", topic)
            return
        props = None
        if correlation is not None and self.mqtt.protocol == "5":
            props = Properties(paho.PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        client.publish(topic, dumps(payload), qos=1, properties=props)

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every committed event is acknowledged by the broker."""
        self._wake.set()
        return self._drained.wait(timeout)

    def stop(self, timeout: float = 3.0) -> None:
        """Publish ``offline`` on availability, disconnect cleanly, stop the threads."""
        client = self._client
        if client is not None and self.connected:
            info = client.publish(self.topics.availability, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._stopping.set()
        self._wake.set()
        if client is not None:
            client.disconnect()
        for thread in self._threads:
            thread.join(timeout)

    # -- network thread ---------------------------------------------------------------------

    def _new_client(self) -> paho.Client:
        client = make_client(self.mqtt, self.client_id)
        client.will_set(self.topics.availability, b"offline", qos=1, retain=True)
        client.max_inflight_messages_set(self.mqtt.max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _network(self) -> None:
        backoff = Backoff(initial=self.mqtt.reconnect_min, cap=self.mqtt.reconnect_max)
        where = f"{self.mqtt.host}:{self.mqtt.port}"
        while not self._stopping.is_set():
            self._refused = None
            was_connected = False
            try:
                client = self._new_client()
                client.connect(**connect_args(self.mqtt))  # type: ignore[arg-type]
            except ConfigError as err:
                self._fail(str(err), self.mqtt.auth_retry)
                continue
            except ssl.SSLError as err:
                self._fail(f"TLS handshake with broker {where} failed: {err}", backoff.next())
                continue
            except OSError as err:
                self._fail(f"broker {where} unreachable: {err}", backoff.next())
                continue
            self._client = client
            while not self._stopping.is_set():
                rc = client.loop(timeout=1.0)
                was_connected = was_connected or self.connected
                if rc != paho.MQTT_ERR_SUCCESS or self._refused:
                    break
            self._set_disconnected()
            if self._stopping.is_set():
                break
            if self._refused in AUTH_REFUSED:
                user = self.mqtt.username or "(none)"
                self._fail(
                    f"broker {where} refused the credentials of user {user!r}: {self._refused}. "
                    "Check mqtt.username and mqtt.password_file; the file is read again on "
                    "the next attempt", self.mqtt.auth_retry,
                )
            elif self._refused:
                self._fail(f"broker {where} refused the connection: {self._refused}",
                           backoff.next())
            elif was_connected:
                backoff.reset()
                self.reconnects += 1
                self._fail(f"connection to broker {where} lost", backoff.next())
            else:
                hint = ""
                if self.mqtt.tls and not self.mqtt.cert_file:
                    hint = " (does it require a TLS client certificate? set mqtt.cert_file and " \
                           "mqtt.key_file)"
                self._fail(f"broker {where} closed the connection before accepting it{hint}",
                           backoff.next())
        self._set_disconnected()

    def _fail(self, message: str, delay: float) -> None:
        self.last_error = message
        log.error("%s; retrying in %.1f s", message, delay)
        self._stopping.wait(delay)

    def _set_disconnected(self) -> None:
        if self._connected.is_set():
            self._connected.clear()
            self.connected_since = None
        self._generation += 1
        self._wake.set()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            self._refused = str(reason)
            return
        log.info("connected to broker %s:%s", self.mqtt.host, self.mqtt.port)
        self.last_error = None
        self.connected_since = time.time()
        client.publish(self.topics.availability, b"online", qos=1, retain=True)
        if self._on_request is not None:
            client.subscribe(self.topics.request("+"), qos=1)
        with self._retained_lock:
            self._retained_dirty = set(self._retained)
        self._connected.set()
        self._wake.set()
        self.on_connected()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if client is self._client and not self._stopping.is_set():
            log.warning("disconnected from broker: %s", reason)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        # Runs holding paho's message lock: only hand the ack over, never call into paho here.
        self._acks.append((id(client), mid))
        self._wake.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        command = message.topic.rsplit("/", 1)[-1]
        if self._on_request is not None:
            try:
                self._on_request(command, bytes(message.payload), message.properties)
            except Exception:
                log.exception("handling request %s failed", message.topic)

    # -- feeder thread ------------------------------------------------------------------------

    def _feeder(self) -> None:
        inflight: dict[int, tuple[Row, float]] = {}  # mid -> (row, sent), this connection
        last_sent = 0  # highest seq handed to the current connection
        generation = -1
        client_id = 0
        while not self._stopping.is_set():
            self.feeder_beat.beat()
            self._wake.wait(1.0)
            self._wake.clear()
            if generation != self._generation or not self.connected:
                if inflight:
                    last_sent = min(r.seq for r, _ in inflight.values()) - 1  # no PUBACK: again
                inflight.clear()
                self._acks.clear()
                if not self.connected:
                    continue
                generation = self._generation
            client = self._client
            if client is None:
                continue
            client_id = id(client)
            acked = []
            now = time.monotonic()
            while self._acks:
                cid, mid = self._acks.popleft()
                if cid == client_id and (entry := inflight.pop(mid, None)) is not None:
                    row, sent = entry
                    acked.append(row.seq)
                    self.published_by[(row.device, row.type)] += 1
                    self.observe_latency(now - sent)
            if acked:
                self.published += len(acked)
                self._ack(acked)
            self._send_retained(client)
            room = self.mqtt.max_inflight - len(inflight)
            rows = []
            # Refill in batches (half a window at a time): one query and one wake-up per batch
            # instead of one per PUBACK when the window is full.
            if room > 0 and (len(inflight) <= self.mqtt.max_inflight // 2):
                rows = self.buffer.fetch(last_sent, room)
                for row in rows:
                    info = client.publish(self.topics.event(row.device, row.type), row.payload,
                                          qos=1)
                    if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                        log.warning("publishing seq %d failed: %s", row.seq, info.rc)
                        break
                    inflight[info.mid] = (row, time.monotonic())
                    last_sent = row.seq
                if len(rows) == room:
                    self._wake.set()  # more waiting: come back as soon as acks make room
            self._inflight_count = len(inflight)
            if not inflight and not rows and not acked:
                self._drained.set()

    def _send_retained(self, client: paho.Client) -> None:
        with self._retained_lock:
            if not self._retained_dirty:
                return
            items = [(t, self._retained[t]) for t in self._retained_dirty]
            self._retained_dirty.clear()
        for topic, payload in items:
            client.publish(topic, payload, qos=1, retain=True)
