"""The ``milestone_analytics`` output: an XProtect Analytics Event (XML) naming the exit's camera as
its source, over HTTP POST (acknowledged by the status) or raw TCP."""

from __future__ import annotations

from typing import Any, Literal
from xml.sax.saxutils import escape

from pydantic import Field, field_validator

from agent.outputs import net
from agent.outputs.base import Output, OutputConfig, SocketConfig, Template, checked_template

NAMESPACE = "urn:milestone-systems"


class MilestoneAnalyticsConfig(SocketConfig):
    kind: Literal["milestone_analytics"]
    transport: Literal["http", "tcp"] = Field(
        default="http", description="http: the event server's answer is the acknowledgement")
    port: int = Field(default=9090, ge=1, le=65535)
    path: str = Field(default="/", pattern=r"^/")
    message: str = Field(default="SEA {type}", description="must equal the name of an analytics "
                         "event defined in the Management Client")
    description: str = Field(default="{label}{type} at {exit} ({deviceid}), seq {seq}")
    custom_tag: str = Field(default="store-edge-agent")

    _templates = field_validator("message", "description", "custom_tag")(checked_template)

    def target(self) -> str:
        return f"{self.transport} {self.host}:{self.port}"


class MilestoneAnalytics(Output):
    kind = "milestone_analytics"
    Config = MilestoneAnalyticsConfig

    def __init__(self, name: str, config: OutputConfig) -> None:
        super().__init__(name, config)
        assert isinstance(config, MilestoneAnalyticsConfig)
        self.cfg = config
        self.templates = {k: Template(getattr(config, k))
                          for k in ("message", "description", "custom_tag")}

    def document(self, env: dict[str, Any], *, label: bool) -> bytes:
        """The AnalyticsEvent XML: the message names the analytics event, the source the camera.
        A labelled test carries the label in the description (the message must still match)."""
        values = self.values(env, label=label)
        message = self.templates["message"].render(values)
        description = self.text(self.templates["description"], env, label=label)
        tag = self.templates["custom_tag"].render(values)
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            f'<AnalyticsEvent xmlns:i="http://www.w3.org/2001/XMLSchema-instance" '
            f'xmlns="{NAMESPACE}">\n'
            "  <EventHeader>\n"
            f"    <ID>{escape(str(env.get('id', '')))}</ID>\n"
            f"    <Timestamp>{escape(str(env.get('time', '')))}</Timestamp>\n"
            f"    <Type>{escape(str(env.get('type', '')))}</Type>\n"
            f"    <Message>{escape(message)}</Message>\n"
            f"    <CustomTag>{escape(tag)}</CustomTag>\n"
            f"    <Source><Name>{escape(str(values['camera']))}</Name></Source>\n"
            "  </EventHeader>\n"
            f"  <Description>{escape(description)}</Description>\n"
            "</AnalyticsEvent>\n"
        ).encode()

    def send(self, env: dict[str, Any], *, label: bool) -> str:
        body = self.document(env, label=label)
        cfg = self.cfg
        if cfg.transport == "http":
            answer = str(net.post(f"http://{cfg.host}:{cfg.port}{cfg.path}", body,
                                  {"Content-Type": "text/xml; charset=utf-8"},
                                  timeout=cfg.timeout))
        else:
            reply = net.tcp_exchange(cfg.host, cfg.port, body, timeout=cfg.timeout,
                                     reply=True)
            answer = reply.decode("utf-8", "replace").strip() or "(no answer)"
            answer = f"written to tcp {cfg.host}:{cfg.port}; it answered: {answer[:200]}"
        return answer
