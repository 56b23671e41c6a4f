"""The ``[devices.<id>]`` table of an ACME controller: where it is and how patient to be."""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.driver import DriverConfig
from agent.units import Duration


class AcmeEasConfig(DriverConfig):
    """One ACME controller (up to 8 pedestals) on the store network."""

    host: str = Field(default="", description="the controller's address; unused with simulate")
    port: int = Field(default=4001, ge=1, le=65535)
    simulate: bool = Field(default=False, description="talk to a built-in simulated controller")
    heartbeat_timeout: Duration = Field(
        default=5.0, gt=0, description="no line for this long: offline, and reconnect"
    )
    connect_timeout: Duration = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _where(self) -> AcmeEasConfig:
        if not self.simulate and not self.host:
            raise ValueError("host is required (or simulate = true)")
        return self

    def resources(self) -> list[str]:
        # The controller accepts one client: two devices on it would steal each other's events.
        return [] if self.simulate else [f"tcp:{self.host}:{self.port}"]
