"""The publisher's paho client against a real mosquitto: every PUBACK taken, nothing read left idle."""

from __future__ import annotations

import select
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support import Subscriber, wait_until

from agent.pahoclient import BlockReadClient


def connected(broker, protocol: int) -> BlockReadClient:
    client = BlockReadClient(CallbackAPIVersion.VERSION2, client_id=f"block-{protocol}",
                             protocol=protocol)
    client.max_inflight_messages_set(0)
    client.connect(broker.host, broker.port)
    drive(client, lambda: client.is_connected(), "CONNACK")
    return client


def drive(client: BlockReadClient, until, what: str, timeout: float = 10.0) -> None:
    """A loop driven by hand, as paho documents it: read when readable, write when wanted."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        sock = client.socket()
        readable, writable, _ = select.select([sock], [sock] if client.want_write() else [], [],
                                              0.2)
        if sock in readable:
            assert client.loop_read() == paho.MQTT_ERR_SUCCESS
        if sock in writable:
            assert client.loop_write() == paho.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_a_burst_arrives_whole_and_in_order_and_every_puback_is_taken_once(broker, protocol):
    # Queued together, the PUBLISH packets go out joined (and partly sent when the socket is
    # full); the PUBACKs come back read in blocks.
    subscriber = Subscriber(broker, "t/#")
    client = connected(broker, protocol)
    acked: list[tuple[int, bool]] = []
    client.on_publish = lambda c, u, mid, reason, props: acked.append((mid, reason.is_failure))
    payloads = [f"{i} ".encode() + b"x" * (i % 300) for i in range(3000)]
    infos = [client.publish(f"t/{i % 7}", payload, qos=1) for i, payload in enumerate(payloads)]
    drive(client, lambda: len(acked) >= 3000, "3000 PUBACKs")
    assert sorted(mid for mid, _ in acked) == sorted(info.mid for info in infos)
    assert not any(failed for _, failed in acked)
    assert all(info.is_published() for info in infos)
    client.disconnect()
    wait_until(lambda: len(subscriber.messages) >= 3000, 10, "3000 messages at the subscriber")
    assert [m.payload for m in subscriber.messages] == payloads
    subscriber.close()


def test_packets_read_in_one_block_are_all_handled_by_one_loop_read(broker):
    # Ten retained messages come right after the SUBACK, in one burst, and one read takes them
    # all into the client's block, where select() cannot see them. paho handles one packet per
    # loop_read() when nothing is in flight: the rest would wait for the socket's next bytes.
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="block-sender")
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    for i in range(10):
        sender.publish(f"r/{i}", f"retained {i}".encode(), qos=1, retain=True).wait_for_publish(5)
    sender.loop_stop()
    sender.disconnect()

    client = connected(broker, paho.MQTTv5)
    got: list[bytes] = []
    client.on_message = lambda c, u, msg: got.append(msg.payload)
    client.subscribe("r/#", qos=0)
    client.loop_write()
    time.sleep(0.5)  # the SUBACK and all ten are in the socket now
    assert client.loop_read() == paho.MQTT_ERR_SUCCESS
    assert sorted(got) == sorted(f"retained {i}".encode() for i in range(10))
    assert select.select([client.socket()], [], [], 0.2)[0] == []  # and nothing is left unread
    client.disconnect()
