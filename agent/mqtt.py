"""MQTT client set-up shared by the publisher and ``agent tail``: protocol, TLS, credentials, topics."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from typing import TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import MqttSection, read_secret

C = TypeVar("C", bound=paho.Client)

AUTH_REFUSED = {"Bad user name or password", "Not authorized", "Bad username or password"}


@dataclass(frozen=True)
class Topics:
    """The fixed topic tree of DESIGN.md for one store."""

    root: str

    @classmethod
    def of(cls, mqtt: MqttSection, store_id: str) -> Topics:
        return cls(f"{mqtt.topic_root}/{store_id}")

    def event(self, device: str, event_type: str) -> str:
        return f"{self.root}/events/{device}/{event_type}"

    def state(self, device: str) -> str:
        return f"{self.root}/state/{device}"

    @property
    def availability(self) -> str:
        return f"{self.root}/agent/availability"

    @property
    def status(self) -> str:
        return f"{self.root}/agent/status"

    def selftest(self, exit_name: str) -> str:
        return f"{self.root}/agent/selftest/{exit_name}"

    def request(self, command: str) -> str:
        return f"{self.root}/agent/request/{command}"

    def response(self, command: str) -> str:
        return f"{self.root}/agent/response/{command}"


def make_client(mqtt: MqttSection, client_id: str, cls: type[C]) -> C:
    """A paho client (callback API v2, of class ``cls``) with protocol, TLS and credentials from
    ``mqtt``.

    The password file is read on every call, so a corrected file is picked up on the next
    connection attempt without a restart.

    Raises:
        ConfigError: the password file cannot be read.
        ssl.SSLError, OSError: the TLS files cannot be loaded.
    """
    protocol = paho.MQTTv5 if mqtt.protocol == "5" else paho.MQTTv311
    client = cls(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == paho.MQTTv5 else True,
    )
    if mqtt.tls:
        client.tls_set(
            ca_certs=str(mqtt.ca_file) if mqtt.ca_file else None,
            certfile=str(mqtt.cert_file) if mqtt.cert_file else None,
            keyfile=str(mqtt.key_file) if mqtt.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    if mqtt.username:
        client.username_pw_set(mqtt.username, read_secret(mqtt.password_file, "mqtt.password_file"))
    return client


def broker_order(mqtt: MqttSection, client_id: str) -> list[tuple[str, int]]:
    """The brokers in the order this agent tries them, the preferred one first.

    ``shuffled`` shuffles once per agent, seeded by its client id: the same order on every
    start of one agent, and a fleet spread evenly over the brokers.
    """
    brokers = mqtt.brokers()
    if mqtt.hosts_order == "shuffled":
        random.Random(client_id).shuffle(brokers)  # not for security: a spread, stable per agent
    return brokers


def connect_args(mqtt: MqttSection, broker: tuple[str, int] | None = None) -> dict[str, object]:
    """Keyword arguments for ``client.connect`` to ``broker`` (default: the first configured)."""
    host, port = broker or mqtt.brokers()[0]
    args: dict[str, object] = {"host": host, "port": port, "keepalive": int(mqtt.keepalive)}
    if mqtt.protocol == "5":
        args["clean_start"] = True
    return args
