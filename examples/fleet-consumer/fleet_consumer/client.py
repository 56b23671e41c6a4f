"""The MQTT side: one MQTT 5 session that feeds every store's messages into a ``Fleet``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_consumer.tracker import Fleet

log = logging.getLogger(__name__)


def subscriptions(topic_root: str, stores: Sequence[str], *, group: str | None
                  ) -> list[str]:
    """Events through a shared subscription when ``group`` is set (the broker then hands
    each event to one member of the group); the retained topics never, because a broker
    sends no retained messages to shared subscriptions (MQTT 5, 4.8.2)."""
    out = []
    for store in stores or ["+"]:
        root = f"{topic_root}/{store}"
        out.append(f"$share/{group}/{root}/events/#" if group else f"{root}/events/#")
        out += [f"{root}/agent/availability", f"{root}/agent/status", f"{root}/agent/selftest/+"]
    return out


class FleetClient:
    """Subscribes to the stores and keeps ``fleet`` up to date; ``rows()`` reads it safely.

    The session outlives disconnections (``session_expiry`` seconds), so the broker queues the
    events that arrive while we are away: a consumer restart is not a gap. ``group`` takes the
    events through a shared subscription when the broker offers one (its CONNACK says so);
    mosquitto 2.0 does not keep shared subscriptions over its own restart, so events published
    before we are back are lost to us (false gaps): that is why it is not the default.
    """

    def __init__(self, fleet: Fleet, host: str, port: int, *, stores: Sequence[str] = (),
                 group: str | None = None, client_id: str = "fleet-consumer",
                 session_expiry: int = 86400, username: str | None = None,
                 password: str | None = None) -> None:
        self.fleet = fleet
        self.stores = list(stores)
        self.group = group
        self.subscribed = threading.Event()
        self.shared: bool | None = None
        self._lock = threading.Lock()
        self._host, self._port = host, port
        self._session_expiry = session_expiry
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 10)

    def start(self, timeout: float = 10.0) -> FleetClient:
        """Connect and wait for the subscriptions.

        Raises:
            TimeoutError: not subscribed within ``timeout`` seconds.
        """
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
        self.client.connect(self._host, self._port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"not subscribed at {self._host}:{self._port} within {timeout} s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def rows(self, grace: float = 30.0) -> list[dict[str, Any]]:
        with self._lock:
            return self.fleet.rows(grace)

    def read(self, func: Any) -> Any:
        """``func(fleet)`` while no message is being counted."""
        with self._lock:
            return func(self.fleet)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    props: Properties | None) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        # Absent means available (MQTT 5, 3.2.2.3.15).
        self.shared = getattr(props, "SharedSubscriptionAvailable", 1) == 1
        topics = subscriptions(self.fleet.topic_root, self.stores,
                               group=self.group if self.shared else None)
        client.subscribe([(t, 1) for t in topics])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: Any,
                      props: Any) -> None:
        self.subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.fleet.on_message(msg.topic, msg.payload)
