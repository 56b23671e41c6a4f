"""The ``milestone_generic`` output: a text string for an XProtect generic event, over TCP or UDP."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from agent.outputs import net
from agent.outputs.base import Output, OutputConfig, SocketConfig, Template, checked_template

DEFAULT_TEMPLATE = "{label}SEA {type} exit={exit} camera={camera} seq={seq}"


class MilestoneGenericConfig(SocketConfig):
    kind: Literal["milestone_generic"]
    protocol: Literal["tcp", "udp"] = "tcp"
    port: int = Field(default=1234, ge=1, le=65535)
    template: str = Field(default=DEFAULT_TEMPLATE,
                          description="the string the generic event's expression matches")
    terminator: str = Field(default="\r\n", max_length=4,
                            description="appended to each string (the data source's separator)")

    _template = field_validator("template")(checked_template)

    def target(self) -> str:
        return f"{self.protocol} {self.host}:{self.port}"


class MilestoneGeneric(Output):
    """XProtect gives no acknowledgement: delivered means written to a connected TCP socket
    (or handed to the network as a UDP datagram)."""

    kind = "milestone_generic"
    Config = MilestoneGenericConfig

    def __init__(self, name: str, config: OutputConfig) -> None:
        super().__init__(name, config)
        assert isinstance(config, MilestoneGenericConfig)
        self.cfg = config
        self.template = Template(config.template)

    def message(self, env: dict[str, Any], *, label: bool) -> bytes:
        return (self.text(self.template, env, label=label) + self.cfg.terminator).encode()

    def send(self, env: dict[str, Any], *, label: bool) -> str:
        data = self.message(env, label=label)
        cfg = self.cfg
        if cfg.protocol == "udp":
            net.udp_send(cfg.host, cfg.port, data)
        else:
            net.tcp_exchange(cfg.host, cfg.port, data, timeout=cfg.timeout, reply=False)
        return f"{len(data)} bytes written to {cfg.target()} (the protocol has no answer): " \
            f"{data.decode().strip()!r}"
