"""paho's client for the publisher, without three per-message costs of a QoS 1 stream.

paho reads a packet with one ``recv`` per byte of its fixed header and one for the rest: three
system calls for every 4-byte PUBACK. For every PUBACK it builds a ``ReasonCode`` and a
``Properties``, each filling a dict of every name it knows, even when the PUBACK is the two
bytes of a packet id that say success (every PUBACK of MQTT 3.1.1, and MQTT 5's usual one).
And it sends every packet with its own ``send()`` as it is queued. Profiled on the Modbus
workload of bench/peer_thingsboard.py, the PUBACK handling was 22 % of the agent's Python
time, 15 % the two objects alone (docs/performance.md).

This client reads the socket in blocks (and handles every packet of a block before
``loop_read()`` returns, so ``select()`` on the socket stays true to what is left), joins the
PUBLISH packets queued together into one ``send()``, and answers a two-byte PUBACK with one
shared success reason code and one shared empty ``Properties``. Everything else is paho's own
code. It overrides the public ``loop_read`` and paho's private ``_sock_recv``, ``_packet_write``
and ``_handle_pubackcomp``; their signatures, and what they use (``_in_packet["packet"]``,
``_out_packet``'s dicts, ``_out_messages``, ``_do_on_publish``), are the same in paho 2.0.0 and
2.2.0: the floors run (scripts/check-floors) and the main run test both ends.

Its loop must call ``loop_write()`` when ``want_write()`` says so: nothing is sent before.
"""

from __future__ import annotations

from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.client import PUBLISH
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

RECV_BLOCK = 65536
"""Bytes asked of the socket per read: a PUBACK is 4, so one read takes many."""
SEND_BLOCK = 65536
"""PUBLISH packets queued together are joined into one ``send()`` up to about this size."""

_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


def _watched(client: paho.Client, userdata: Any, sock: Any) -> None:
    """paho's hook for a loop that watches the socket for writing: ours asks ``want_write()``."""


def _joins(packet: Any) -> bool:
    """A QoS 1 PUBLISH not yet begun: once it is written paho does nothing more with it."""
    return (packet["command"] & 0xF0) == PUBLISH and packet["qos"] == 1 and packet["pos"] == 0


class BlockReadClient(paho.Client):
    """A ``paho.Client`` that reads in blocks, writes what is queued together in one ``send()``,
    and handles a plain PUBACK cheaply."""

    _block = b""
    _at = 0
    _block_sock: object = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Without an outside loop paho sends every packet as it is queued, one send() each;
        # with one, packets wait for loop_write(), which sends those queued together at once.
        self.on_socket_register_write = _watched

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        # paho stops after max_packets (one when nothing is in flight); what is left of the
        # block would wait for the socket's next bytes, as select() cannot see it
        rc = super().loop_read(max_packets)
        while (rc == paho.MQTT_ERR_SUCCESS and self._sock is not None
               and self._block_sock is self._sock and self._at < len(self._block)):
            rc = super().loop_read(max_packets)
        return rc

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._block_sock is not self._sock or self._at >= len(self._block):
            block = super()._sock_recv(RECV_BLOCK)  # BlockingIOError when nothing is there
            self._block, self._at, self._block_sock = block, 0, self._sock
            if not block:
                return b""  # the connection closed
        start = self._at
        self._at = min(start + bufsize, len(self._block))
        return self._block[start:self._at]

    def _packet_write(self) -> paho.MQTTErrorCode:
        queue = self._out_packet
        if len(queue) > 1 and _joins(queue[0]) and _joins(queue[1]):
            run = [queue.popleft()]
            size = len(run[0]["packet"])
            while queue and _joins(queue[0]) and size < SEND_BLOCK:
                run.append(queue.popleft())
                size += len(run[-1]["packet"])
            data = b"".join(packet["packet"] for packet in run)
            queue.appendleft({"command": PUBLISH, "mid": run[-1]["mid"], "qos": 1, "pos": 0,
                              "to_process": len(data), "packet": data, "info": None})
        return super()._packet_write()

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> paho.MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = int.from_bytes(packet, "big")
        self._easy_log(paho.MQTT_LOG_DEBUG, "Received %s (Mid: %d)", cmd, mid)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PROPERTIES)
        return paho.MQTT_ERR_SUCCESS
