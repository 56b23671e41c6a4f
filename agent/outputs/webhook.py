"""The ``webhook`` output: the CloudEvent POSTed in structured JSON mode, signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

from pydantic import Field, field_validator

from agent.config import ConfigPath, read_secret
from agent.events import dumps
from agent.outputs import net
from agent.outputs.base import Output, OutputConfig

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


class WebhookConfig(OutputConfig):
    kind: Literal["webhook"]
    url: str = Field(description="http:// or https:// URL the events are POSTed to")
    secret_file: ConfigPath | None = Field(
        default=None, description="file whose first line is the HMAC-SHA256 key")
    signature_header: str = Field(default="X-Signature-SHA256", pattern=r"^[A-Za-z0-9-]+$")
    ca_file: ConfigPath | None = Field(default=None, description="CA bundle for https")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value.split("/", 3)[2]) == 0:
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("secret_file", "ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def target(self) -> str:
        return self.url.split("?", 1)[0]


def signature(secret: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Webhook(Output):
    """2xx means delivered; the answer's status line (and the start of its body) is reported."""

    kind = "webhook"
    Config = WebhookConfig

    def __init__(self, name: str, config: OutputConfig) -> None:
        super().__init__(name, config)
        assert isinstance(config, WebhookConfig)
        self.cfg = config
        self._secret = read_secret(config.secret_file, f"the secret of output {name}").encode() \
            if config.secret_file else b""

    def body(self, env: dict[str, Any], *, label: bool) -> bytes:
        """The event as sent: a labelled test carries the label in ``testlabel`` as well."""
        if label:
            env = {**env, "test": True, "testlabel": self.cfg.test_label}
        return dumps(env)

    def send(self, env: dict[str, Any], *, label: bool) -> str:
        body = self.body(env, label=label)
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "store-edge-agent"}
        if self._secret:
            headers[self.cfg.signature_header] = signature(self._secret, body)
        answer = net.post(self.cfg.url, body, headers, timeout=self.cfg.timeout,
                          ca_file=self.cfg.ca_file)
        return str(answer)


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does: compare the header with its own HMAC in constant time."""
    return hmac.compare_digest(signature(secret, body), header)


__all__ = ["Webhook", "WebhookConfig", "signature", "verify"]
