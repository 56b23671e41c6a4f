"""modbus: EAS controllers and I/O modules read as register maps over Modbus TCP or RTU."""

from drivers.modbus.config import EventSpec, ModbusConfig, RegisterEntry
from drivers.modbus.driver import ModbusDriver

__all__ = ["EventSpec", "ModbusConfig", "ModbusDriver", "RegisterEntry"]
