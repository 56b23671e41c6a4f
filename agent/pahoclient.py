"""paho's client for the publisher, without two per-message costs of a QoS 1 stream.

paho reads a packet with one ``recv`` per byte of its fixed header and one for the rest: three
system calls for every 4-byte PUBACK. And for every PUBACK it builds a ``ReasonCode`` and a
``Properties``, each filling a dict of every name it knows, even when the PUBACK is the two
bytes of a packet id that say success (every PUBACK of MQTT 3.1.1, and MQTT 5's usual one).
Profiled on the Modbus workload of bench/peer_thingsboard.py, the PUBACK handling was a sixth
of the agent's Python time (docs/performance.md).

This client reads the socket in blocks and answers a two-byte PUBACK with one shared success
reason code and one shared empty ``Properties``. Everything else is paho's own code. It works
on paho's private methods (``_sock_recv``, ``_handle_pubackcomp``), which are the same from
paho 2.0 to 2.2: the floors run (scripts/check-floors) and the main run test both ends.

Its loop must be driven by hand and must ask ``pending()`` before it waits on the socket:
bytes already read into the block are not seen by ``select()`` (as with TLS's own buffer).
"""

from __future__ import annotations

from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

RECV_BLOCK = 65536
"""Bytes asked of the socket per read: a PUBACK is 4, so one read takes many."""

_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


class BlockReadClient(paho.Client):
    """A ``paho.Client`` that reads in blocks and handles a plain PUBACK cheaply."""

    _block = b""
    _at = 0
    _block_sock: object = None

    def pending(self) -> bool:
        """Bytes of the connection are read and waiting: handle them before ``select()``."""
        sock = self._sock
        if sock is None:
            return False
        if self._block_sock is sock and self._at < len(self._block):
            return True
        return bool(getattr(sock, "pending", lambda: 0)())  # TLS: decrypted, not yet taken

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._block_sock is not self._sock or self._at >= len(self._block):
            block = super()._sock_recv(RECV_BLOCK)  # BlockingIOError when nothing is there
            self._block, self._at, self._block_sock = block, 0, self._sock
            if not block:
                return b""  # the connection closed
        start = self._at
        self._at = min(start + bufsize, len(self._block))
        return self._block[start:self._at]

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
