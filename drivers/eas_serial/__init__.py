"""eas_serial: EAS pedestal text event feeds over serial, RS-485 or serial-over-IP."""

from drivers.eas_serial.config import EasSerialConfig, Rule, profile_names
from drivers.eas_serial.driver import EasSerialDriver

__all__ = ["EasSerialConfig", "EasSerialDriver", "Rule", "profile_names"]
