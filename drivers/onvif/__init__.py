"""onvif: ONVIF camera events by PullPoint and evidence snapshots (the ONVIF stack loads in run())."""

from drivers.onvif.config import OnvifConfig
from drivers.onvif.driver import OnvifDriver

__all__ = ["OnvifConfig", "OnvifDriver"]
