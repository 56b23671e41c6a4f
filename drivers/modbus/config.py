"""The ``modbus`` device table: connection, poll interval and the register map."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.driver import DriverConfig
from agent.errors import EventError
from agent.events import CATALOGUE, validate_data
from agent.units import Duration
from drivers.modbus.registers import BIT_TABLES, EventRule, Point, Table, ValueType, value_text

PARITY = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}


class EventSpec(BaseModel):
    """What an edge, increment or change emits: ``{type = "eas.alarm", data = {...}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    field: str | None = Field(default=None, description="data field that receives the value "
                                                        "(on_change) or the increment")
    values: dict[str, Any] = Field(default_factory=dict,
                                   description="value (as text) -> what to put in field")
    ignore: list[Any] = Field(default_factory=list, description="values that give no event")

    @field_validator("type")
    @classmethod
    def _catalogued(cls, value: str) -> str:
        if value not in CATALOGUE:
            eas = ", ".join(t for t in CATALOGUE if t.startswith("eas."))
            raise ValueError(f"not a catalogue event type; EAS types: {eas} (all: `agent schema`)")
        return value

    def check(self, sample: Any) -> None:
        """Validate the event this spec gives for a value like ``sample``.

        Raises:
            ValueError: the data would not fit the catalogue; names the missing field.
        """
        data = dict(self.data)
        if self.field:
            data[self.field] = self.values.get(value_text(sample), sample)
        try:
            validate_data(self.type, data)
        except EventError as err:
            raise ValueError(f"{err} (set data = {{...}} or field)") from err

    def compile(self) -> EventRule:
        return EventRule(self.type, dict(self.data), self.field,
                         {str(k): v for k, v in self.values.items()},
                         tuple(value_text(v) for v in self.ignore))


class RegisterEntry(BaseModel):
    """One ``[[devices.<id>.registers]]`` entry: where a value lives and what it means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="shown in the device state")
    table: Table
    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    type: ValueType | None = Field(default=None, description="default: bool for coils and "
                                                             "discrete inputs, uint16 otherwise")
    word_order: Literal["big", "little"] = "big"
    bit: int | None = Field(default=None, ge=0, le=15, description="a bool from one bit of a "
                                                                   "register")
    on_rise: EventSpec | None = None
    on_fall: EventSpec | None = None
    on_increment: EventSpec | None = None
    on_change: EventSpec | None = None
    max_step: int = Field(default=1000, ge=1, description="largest believable increment per poll")

    @property
    def value_type(self) -> str:
        return self.type or ("bool" if self.table in BIT_TABLES else "uint16")

    @model_validator(mode="after")
    def _consistent(self) -> RegisterEntry:
        vt = self.value_type
        if self.table in BIT_TABLES and vt != "bool":
            raise ValueError(f"a {self.table} holds one bit: type must be bool")
        if self.bit is not None and (self.table in BIT_TABLES or vt != "bool"):
            raise ValueError("bit picks a bool out of a holding or input register: use it with "
                             "type = \"bool\"")
        if (self.on_rise or self.on_fall) and vt != "bool":
            raise ValueError("on_rise/on_fall are for bool values; use on_change or "
                             "on_increment")
        if self.on_increment and vt not in ("uint16", "uint32"):
            raise ValueError("on_increment is for counters: type uint16 or uint32")
        if not (self.on_rise or self.on_fall or self.on_increment or self.on_change):
            raise ValueError("the entry emits nothing: set on_rise, on_fall, on_increment or "
                             "on_change")
        sample: Any = True if vt == "bool" else 1.5 if vt == "float32" else 1
        for key in ("on_rise", "on_fall", "on_increment", "on_change"):
            spec: EventSpec | None = getattr(self, key)
            if spec is not None:
                try:
                    spec.check(sample if key in ("on_change", "on_increment") else None)
                except ValueError as err:
                    raise ValueError(f"{key}: {err}") from err
        return self


class ModbusConfig(DriverConfig):
    """``[devices.<id>]`` of a ``modbus`` device: TCP (``host``) or RTU (``port``)."""

    host: str | None = Field(default=None, description="Modbus TCP: controller address")
    tcp_port: int = Field(default=502, ge=1, le=65535)
    port: str | None = Field(default=None, description="Modbus RTU: a pyserial URL "
                                                       "(/dev/ttyUSB0, socket://host:port)")
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    stopbits: Literal[1, 2] = 1
    simulate: bool = Field(default=False, description="poll a simulated EAS controller "
                                                      "started by the driver on 127.0.0.1")
    device_id: int = Field(default=1, ge=0, le=247, description="unit / slave id")
    poll_interval: Duration = Field(default=1.0, ge=0.05)
    timeout: Duration = Field(default=1.0, gt=0)
    retries: int = Field(default=1, ge=0, le=5)
    max_gap: int = Field(default=8, ge=0, le=100, description="unused addresses one request may "
                                                              "span to avoid another request")
    reconnect_min: Duration = Field(default=1.0, gt=0)
    reconnect_max: Duration = Field(default=30.0, gt=0)
    registers: list[RegisterEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _transport(self) -> ModbusConfig:
        given = [k for k in ("host", "port") if getattr(self, k)]
        if self.simulate and given:
            raise ValueError(f"simulate = true starts its own controller: remove {given[0]}")
        if not self.simulate and len(given) != 1:
            raise ValueError("set host (Modbus TCP) or port (Modbus RTU, a pyserial URL), "
                             "exactly one of them")
        names = [r.name for r in self.registers]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"register names must be unique: {', '.join(dup)}")
        return self

    def resources(self) -> list[str]:
        if self.port:
            return [f"serial:{self.port}"]
        return []  # several devices may share one TCP gateway

    def points(self) -> list[Point]:
        """The map entries for the read planner, keyed by their index."""
        return [Point(i, r.table, r.address, r.value_type) for i, r in enumerate(self.registers)]

    def where(self) -> str:
        """The controller, for messages."""
        if self.port:
            return f"{self.port} unit {self.device_id}"
        return f"{self.host}:{self.tcp_port} unit {self.device_id}"
