"""The ``exacq_serial`` output: ASCII lines between start and end markers for an exacqVision serial
profile, over a kept-open TCP connection (the server's "TCP Listener" serial port)."""

from __future__ import annotations

import socket
import textwrap
from typing import Any, Literal

from pydantic import Field, field_validator

from agent.outputs import net
from agent.outputs.base import (
    DeliveryError,
    Output,
    OutputConfig,
    SocketConfig,
    Template,
    checked_template,
)

LINE_MAX = 80
"""exacqVision ends a serial line after 80 characters (or CR/LF): longer lines are wrapped here."""
DEFAULT_TEMPLATE = "{label}{type} {exit}\ncamera {camera} device {deviceid}\nseq {seq} {time}"


class ExacqSerialConfig(SocketConfig):
    kind: Literal["exacq_serial"]
    start_marker: str = Field(default="SEA BEGIN", min_length=1, max_length=LINE_MAX,
                              description="the profile's SOT (start of transaction) marker")
    end_marker: str = Field(default="SEA END", min_length=1, max_length=LINE_MAX,
                            description="the profile's EOT (end of transaction) marker")
    template: str = Field(default=DEFAULT_TEMPLATE,
                          description="the transaction's lines (\\n separates lines); event "
                          "keywords match in them")

    _template = field_validator("template")(checked_template)

    @field_validator("start_marker", "end_marker")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(c in value for c in "\r\n") or not value.isascii():
            raise ValueError("a marker is one line of ASCII text")
        return value


class ExacqSerial(Output):
    """Delivered means written to the connected socket (serial data has no acknowledgement)."""

    kind = "exacq_serial"
    Config = ExacqSerialConfig

    def __init__(self, name: str, config: OutputConfig) -> None:
        super().__init__(name, config)
        assert isinstance(config, ExacqSerialConfig)
        self.cfg = config
        self.template = Template(config.template)
        self._sock: socket.socket | None = None

    def transaction(self, env: dict[str, Any], *, label: bool) -> bytes:
        """SOT line, the template's lines (ASCII, wrapped at 80), EOT line; each ends CR LF."""
        text = self.text(self.template, env, label=label)
        lines = [self.cfg.start_marker]
        for raw in text.splitlines():
            line = raw.encode("ascii", "replace").decode()
            lines.extend(textwrap.wrap(line, LINE_MAX) or [""])
        lines.append(self.cfg.end_marker)
        return "".join(f"{line}\r\n" for line in lines).encode("ascii")

    def send(self, env: dict[str, Any], *, label: bool) -> str:
        data = self.transaction(env, label=label)
        cfg = self.cfg
        if self._sock is not None and net.peer_closed(self._sock):
            self.close()
        if self._sock is None:
            self._sock = net.connect(cfg.host, cfg.port, cfg.timeout)
        try:
            self._sock.sendall(data)
        except OSError as err:
            self.close()
            raise DeliveryError(f"tcp {cfg.host}:{cfg.port}: {err.strerror or err}") from err
        return f"{len(data)} bytes written to tcp {cfg.target()} (serial data has no answer)"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.connected = False
