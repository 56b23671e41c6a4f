"""Configuration: the TOML file of DESIGN.md, environment overrides, and every device's own model."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.driver import Driver, DriverConfig
from agent.errors import ConfigError, DriverLoadError
from agent.events import AGENT_DEVICE, ID_PATTERN, ID_RE
from agent.registry import DriverInfo, discover, load
from agent.units import Duration, Size, format_duration, format_size, plural

DEFAULT_PATH = Path("/etc/store-edge-agent/agent.toml")
CONFIG_ENV = "AGENT_CONFIG"
ENV_PREFIX = "AGENT_"

_base_dir: ContextVar[Path | None] = ContextVar("config_base_dir", default=None)


def _relative_to_config(value: Path) -> Path:
    base = _base_dir.get()
    # resolved: `agent status` and error messages show /srv/demo/var, not /srv/demo/../var
    return value if value.is_absolute() or base is None else (base / value).resolve()


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]
"""A path in the config file; a relative one is taken relative to the file's directory."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


STORE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
TOPIC_ROOT_PATTERN = r"^[^#+]+$"
PATTERN_WORDS = {
    STORE_ID_PATTERN: "allowed: letters, digits, '-' and '_', starting with a letter or digit, "
                      "at most 64 characters",
    TOPIC_ROOT_PATTERN: "allowed: any text without the MQTT wildcards '#' and '+'",
    ID_PATTERN: "allowed: lower-case letters, digits, '-' and '_', starting with a letter or "
                "digit, at most 63 characters",
}
"""Config patterns in the words ``config check`` uses."""


class AgentSection(_Section):
    store_id: str = Field(pattern=STORE_ID_PATTERN)
    data_dir: ConfigPath = Path("/var/lib/store-edge-agent")
    control_socket: ConfigPath = Path("/run/store-edge-agent/control.sock")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    drivers: list[str] | None = Field(
        default=None, description="allowlist of driver names; unset loads every installed driver"
    )
    status_interval: Duration = 30.0
    shutdown_flush: Duration = 5.0


class GpioSection(_Section):
    pin_factory: Literal["auto", "lgpio", "rpigpio", "mock"] = "auto"


def parse_host_port(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port).

    Raises:
        ValueError: not HOST:PORT with a port 1-65535, saying what is accepted.
    """
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or \
            ("]" in host or "[" in host) or (":" in host and not value.startswith("[")):
        raise ValueError("expected HOST:PORT such as 'broker1.example.com:8883' or "
                         "'[2001:db8::1]:8883' (port 1-65535)")
    return host, int(port)


class MqttSection(_Section):
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    hosts: list[str] = Field(
        default=[], description="brokers to fail over between, HOST:PORT each; when set, "
        "host and port are not used")
    hosts_order: Literal["ordered", "shuffled"] = Field(
        default="ordered", description="'ordered': the first of hosts is preferred; 'shuffled': "
        "each agent shuffles the list once (by its client id), spreading a fleet over the brokers")
    tls: bool = False
    ca_file: ConfigPath | None = None
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    username: str = ""
    password_file: ConfigPath | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    topic_root: str = Field(default="retail", pattern=TOPIC_ROOT_PATTERN)
    client_id: str = ""
    keepalive: Duration = 30.0
    max_inflight: int = Field(default=50, ge=1, le=1000)
    reconnect_min: Duration = 1.0
    reconnect_max: Duration = 60.0
    auth_retry: Duration = Field(
        default=300.0, description="wait after the broker refuses our credentials"
    )

    @field_validator("password_file", "ca_file", "cert_file", "key_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for i, entry in enumerate(value):
            try:
                parse_host_port(entry)
            except ValueError as err:
                raise ValueError(f"entry {i} {entry!r}: {err}") from None
        if len(set(value)) != len(value):
            raise ValueError("a broker is listed twice")
        return value

    @model_validator(mode="after")
    def _hosts_or_host(self) -> MqttSection:
        if self.hosts and {"host", "port"} & self.model_fields_set:
            raise ValueError("set either mqtt.hosts or mqtt.host/mqtt.port, not both")
        return self

    def brokers(self) -> list[tuple[str, int]]:
        """The brokers as (host, port) in configured order (``hosts``, else ``host``/``port``)."""
        if not self.hosts:
            return [(self.host, self.port)]
        return [parse_host_port(h) for h in self.hosts]

    @field_validator("host")
    @classmethod
    def _host_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: the broker's host name or IP address")
        return value

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _tls_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("tls"):
            _must_exist(value, "needed because tls = true")
        return value

    @field_validator("password_file")
    @classmethod
    def _password_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None:
            _must_exist(value, "the file holding the broker password")
        return value

    @field_validator("reconnect_max")
    @classmethod
    def _backoff_order(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("reconnect_min")
        if low is not None and value < low:
            raise ValueError(f"must not be below reconnect_min ({format_duration(low)})")
        return value


def _must_exist(path: Path, what: str) -> None:
    """A file the agent reads later (as the service user, who may read what this user cannot):
    only a file that is not there at all is an error now."""
    try:
        path.stat()
    except FileNotFoundError:
        raise ValueError(f"no such file: {path} ({what})") from None
    except OSError:
        pass


MIN_BUFFER_BYTES = 1024
"""The smallest ``buffer.max_bytes``: below it not even one ordinary event fits (0 is a typo,
not a setting)."""


class BufferSection(_Section):
    max_bytes: Size = 256 * 1024**2
    max_age: Duration = 7 * 86400.0
    synchronous: Literal["full", "normal"] = "full"
    hold_max: int = Field(
        default=5000, ge=100, le=1_000_000,
        description="events held in memory between emit() and the commit, and while the buffer "
        "cannot be written (a full disk): past it the lowest priority is dropped and reported",
    )
    reserve: Size = Field(
        default=4 * 1024**2,
        description="disk space kept in reserve beside the buffer, given up on a full disk so "
        "that published events can still be deleted (0 turns it off)",
    )

    @field_validator("max_bytes")
    @classmethod
    def _room_for_events(cls, value: int) -> int:
        if value < MIN_BUFFER_BYTES:
            raise ValueError(f"too small: at least {format_size(MIN_BUFFER_BYTES)}, room for the "
                             "events of a broker outage (default 256MiB)")
        return value


class LimitsSection(_Section):
    """Bounds on what the agent accepts from the outside (docs/security.md)."""

    request_max_bytes: Size = Field(default=64 * 1024, ge=64, description="largest MQTT "
                                    "request payload; a larger one is refused unread")
    request_id_max: int = Field(default=128, ge=1, le=4096,
                                description="longest request id (characters)")
    request_max_depth: int = Field(default=16, ge=2, le=256,
                                   description="deepest JSON nesting of a request")
    requests_per_minute: int = Field(default=60, ge=1, description="MQTT requests answered "
                                     "per minute; more are dropped (logged once a minute)")
    selftests_per_hour: int = Field(default=12, ge=1, description="remote and scheduled "
                                    "self-tests of all exits together, per hour")
    control_clients: int = Field(default=16, ge=1, le=512, description="control socket "
                                 "connections at once; more are refused")
    control_first_line: Duration = Field(default=5.0, gt=0, description="a control socket "
                                         "client must send its request within this")
    control_idle: Duration = Field(default=600.0, gt=0, description="a control socket command "
                                   "with no line either way for this long is stopped")


def _host_port(value: str) -> str:
    if value:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected HOST:PORT such as '127.0.0.1:9108' or '[::1]:9108'")
    return value


Listen = Annotated[str, AfterValidator(_host_port)]
"""``HOST:PORT`` to serve on; empty: off."""


def listen_address(listen: str) -> tuple[str, int] | None:
    """(host, port) of a ``Listen`` value, or None when it is empty (off)."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsSection(_Section):
    listen: Listen = Field(
        default="", description="HOST:PORT of the Prometheus endpoint, e.g. 127.0.0.1:9108 (port "
        "0: any free port, logged); empty (the default) turns it off",
    )

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when metrics are off."""
        return listen_address(self.listen)


class WebSection(_Section):
    """The local web page (agent/web, docs/web.md); off while ``listen`` is empty."""

    listen: Listen = Field(
        default="", description="HOST:PORT of the web page, always HTTPS, e.g. 0.0.0.0:8443 (port "
        "0: any free port, logged); empty (the default) turns it off",
    )
    url: str = Field(
        default="", description="the address phones use, e.g. https://lp-pi.store.lan:8443, for "
        "pairing links; empty: https://<this host's address>:<port>",
    )
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    session_ttl: Duration = Field(default=12 * 3600.0, description="a paired phone's session "
                                  "ends this long after pairing")
    max_pages: int = Field(default=50, ge=1, le=1000, description="live pages (event streams) "
                           "open at once")

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if value and not re.fullmatch(r"https://[^/\s]+/?", value):
            raise ValueError("expected https://HOST[:PORT], e.g. 'https://lp-pi.store.lan:8443' "
                             "(the page is HTTPS only)")
        return value

    @model_validator(mode="after")
    def _pair(self) -> WebSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (or neither: a self-signed "
                             "certificate is made in data_dir)")
        return self

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when the page is off."""
        return listen_address(self.listen)


class HomeAssistantSection(_Section):
    discovery: bool = Field(default=False, description="publish Home Assistant MQTT discovery "
                            "configs: exits' alarms and doors, last self-tests, the agent")
    prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
                        description="Home Assistant's discovery prefix")


class ExitSection(_Section):
    eas: str | None = Field(default=None, description="the EAS device expected to alarm")
    door: str | None = None
    camera: str | None = None
    test_tag: str | None = Field(default=None, description="output that energises a test tag")
    sounder: str | None = Field(default=None, description="sounder feedback input")
    alarm_within: Duration = 3.0
    sounder_within: Duration = 3.0
    motion_within: Duration = 5.0
    walk_within: Duration = Field(default=60.0, description="time for each walk-test pass")
    schedule: str | None = Field(
        default=None, description="cron 'm h dom mon dow' (local time); a leading seconds field "
        "is accepted ('s m h dom mon dow')")
    schedule_retry: Duration = Field(
        default=300.0, description="a scheduled run that finds the door open or an alarm active "
        "is retried after this long")
    min_interval: Duration = Field(
        default=300.0, description="shortest time between two remote or scheduled self-tests "
        "of this exit")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value:
            cron_trigger(value)
        return value

    def devices(self) -> dict[str, str]:
        """Role -> device id, for the roles that are set."""
        roles = ("eas", "door", "camera", "test_tag", "sounder")
        return {r: v for r in roles if (v := getattr(self, r))}


def cron_trigger(expression: str, timezone: Any = None) -> Any:
    """The APScheduler trigger of a cron ``schedule`` (5 fields, or 6 with seconds first).

    Raises:
        ValueError: not a cron expression, saying what is accepted.
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    try:
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                               day_of_week=_cron_weekdays(dow), timezone=timezone)
        if len(fields) == 5:
            minute, hour, day, month, dow = fields
            return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                               day_of_week=_cron_weekdays(dow), timezone=timezone)
    except ValueError as err:
        raise ValueError(f"not a cron expression ('m h dom mon dow'): {err}") from err
    raise ValueError(f"not a cron expression: expected 5 fields 'm h dom mon dow' (or 6 with "
                     f"seconds first), got {len(fields)}")


def _cron_weekdays(field: str) -> str:
    """Cron counts weekdays from Sunday = 0 (7 too); APScheduler 3 from Monday = 0: translate
    numbers, keep names (``mon-fri``)."""
    names = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return re.sub(r"(?<![/\d])\d+", lambda m: names[int(m.group())] if int(m.group()) <= 7 else m.group(),
                  field)


class Settings(BaseSettings):
    """The whole file; ``devices`` tables are checked afterwards by each driver's model."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    agent: AgentSection
    gpio: GpioSection = GpioSection()
    mqtt: MqttSection = MqttSection()
    buffer: BufferSection = BufferSection()
    metrics: MetricsSection = MetricsSection()
    web: WebSection = WebSection()
    homeassistant: HomeAssistantSection = HomeAssistantSection()
    limits: LimitsSection = LimitsSection()
    devices: dict[str, dict[str, Any]] = {}
    exits: dict[str, ExitSection] = {}
    outputs: dict[str, dict[str, Any]] = {}
    """``[outputs.<name>]``: checked afterwards by the model of each table's ``kind``."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: AGENT_<SECTION>__<KEY> overrides the file.
        return env_settings, init_settings


@dataclass(frozen=True)
class Device:
    """One configured device: its id, driver class and validated config."""

    id: str
    driver: type[Driver]
    config: DriverConfig
    exit: str | None = None


@dataclass(frozen=True)
class Config:
    """A validated configuration, ready to run."""

    path: Path
    settings: Settings
    devices: dict[str, Device]
    drivers: dict[str, DriverInfo] = field(repr=False)
    hash: str
    outputs: dict[str, Any] = field(default_factory=dict)
    """Output name -> its validated ``OutputConfig`` (agent/outputs)."""

    @property
    def exits(self) -> dict[str, ExitSection]:
        return self.settings.exits

    def summary(self) -> str:
        """The one line ``agent config check`` prints for a valid file."""
        s = self.settings
        by_driver: dict[str, int] = {}
        for dev in self.devices.values():
            by_driver[dev.driver.name] = by_driver.get(dev.driver.name, 0) + 1
        drivers = ", ".join(f"{n} {d}" for d, n in sorted(by_driver.items())) or "no devices"
        return (
            f"{self.path}: OK: store {s.agent.store_id}, {plural(len(self.devices), 'device')} "
            f"({drivers}), {plural(len(s.exits), 'exit')}, "
            f"broker {', '.join(f'{h}:{p}' for h, p in s.mqtt.brokers())}"
            f"{' tls' if s.mqtt.tls else ''}, config hash {self.hash}"
        )


def config_path(explicit: str | Path | None = None) -> Path:
    """``--config``, else ``AGENT_CONFIG``, else ``/etc/store-edge-agent/agent.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_PATH


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _describe(path: Path, loc: tuple[Any, ...], msg: str, value: Any, *, has_value: bool) -> str:
    key = ".".join(str(p) for p in loc) or "(top level)"
    source = f" (from environment {_env_name(loc)})" if os.environ.get(_env_name(loc)) else ""
    got = f": got {value!r}" if has_value else ""
    return f"{path}: {key}{source}{got}: {msg}"


def _problems(path: Path, err: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    out = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
            out.append(_describe(path, loc, msg, None, has_value=False))
        elif e["type"] == "missing":
            out.append(_describe(path, loc, "required key is missing", None, has_value=False))
        else:
            if e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
                msg = f"accepted: {e['ctx']['expected']}"
            elif e["type"] == "string_type":
                msg = 'must be text: put the value in quotes, e.g. store_id = "0042"'
            elif e["type"] == "string_pattern_mismatch":
                pattern = e.get("ctx", {}).get("pattern", "")
                msg = PATTERN_WORDS.get(pattern, f"must match the pattern {pattern}")
            out.append(_describe(path, loc, msg, e.get("input"), has_value=True))
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise ConfigError([f"{path}: no such file (set --config or {CONFIG_ENV})"]) from err
    except PermissionError as err:
        raise ConfigError([f"{path}: cannot read it: permission denied"]) from err
    except IsADirectoryError as err:
        raise ConfigError([f"{path}: is a directory, not a config file (set --config or "
                           f"{CONFIG_ENV} to the .toml file)"]) from err
    except OSError as err:
        raise ConfigError([f"{path}: cannot read it: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not a text file (TOML is UTF-8 text): {err.reason} at "
                           f"byte {err.start}"]) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{path}: not valid TOML: {err}"]) from err


def _check_devices(
    path: Path, settings: Settings, drivers: dict[str, DriverInfo]
) -> tuple[dict[str, Device], list[str]]:
    problems: list[str] = []
    devices: dict[str, Device] = {}
    exit_of = {dev: name for name, ex in settings.exits.items() for dev in ex.devices().values()}
    for dev_id, table in settings.devices.items():
        where = ("devices", dev_id)
        if not ID_RE.match(dev_id) or dev_id == AGENT_DEVICE:
            problems.append(_describe(
                path, where, f"not a device id: {PATTERN_WORDS[ID_PATTERN]}; 'agent' is reserved", dev_id,
                has_value=True,
            ))
            continue
        if not isinstance(table, dict):
            problems.append(_describe(path, where, "must be a table", table, has_value=True))
            continue
        options = dict(table)
        name = options.pop("driver", None)
        if not name:
            problems.append(_describe(
                path, (*where, "driver"), "required key is missing (the driver name; see "
                "`agent drivers`)", None, has_value=False,
            ))
            continue
        try:
            cls = load(name, drivers)
        except DriverLoadError as err:
            problems.append(_describe(path, (*where, "driver"), str(err), name, has_value=True))
            continue
        try:
            # The whole file as context: a driver may check a key against another section or
            # device (e.g. a simulation-only key against [gpio] pin_factory).
            config = cls.Config.model_validate(
                options, context={"settings": settings, "device_id": dev_id}
            )
        except ValidationError as err:
            problems.extend(_problems(path, err, where))
            continue
        devices[dev_id] = Device(dev_id, cls, config, exit_of.get(dev_id))

    claimed: dict[str, str] = {}
    for dev in devices.values():
        for res in dev.config.resources():
            if res in claimed:
                problems.append(
                    f"{path}: devices.{dev.id}: claims {res}, already claimed by "
                    f"devices.{claimed[res]}"
                )
            else:
                claimed[res] = dev.id

    for exit_name, ex in settings.exits.items():
        if not ID_RE.match(exit_name):
            problems.append(_describe(
                path, ("exits", exit_name), f"not an exit name: {PATTERN_WORDS[ID_PATTERN]}", exit_name,
                has_value=True,
            ))
        for role, dev_id in ex.devices().items():
            if dev_id not in settings.devices:
                problems.append(_describe(
                    path, ("exits", exit_name, role), "no such device in [devices]", dev_id,
                    has_value=True,
                ))
            elif role == "test_tag" and dev_id in devices and \
                    "pulse" not in devices[dev_id].driver.actions:
                problems.append(_describe(
                    path, ("exits", exit_name, role), f"device {dev_id!r} "
                    f"({devices[dev_id].driver.name}) has no 'pulse' action: a test tag needs an "
                    "output such as gpio_output", dev_id, has_value=True,
                ))
        if ex.walk_within >= settings.limits.control_idle:
            problems.append(_describe(
                path, ("exits", exit_name, "walk_within"), "a walk test waits this long for a "
                f"pass without a word on the control socket; limits.control_idle "
                f"({settings.limits.control_idle:g} s) would stop it: make walk_within shorter "
                "or control_idle longer", ex.walk_within, has_value=True,
            ))
        if ex.schedule and not ex.test_tag:
            problems.append(_describe(
                path, ("exits", exit_name, "schedule"), "a scheduled self-test needs test_tag: "
                "nobody walks a tag through the exit at a scheduled time (run `agent selftest "
                "--walk` instead)", ex.schedule, has_value=True,
            ))
    return devices, problems


def _check_outputs(path: Path, settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """Each ``[outputs.<name>]`` table against the model of its ``kind``."""
    if not settings.outputs:
        return {}, []  # without importing the kinds' modules and models
    from agent.outputs import KINDS  # the kinds import this module (ConfigPath)

    outputs: dict[str, Any] = {}
    problems: list[str] = []
    for name, table in settings.outputs.items():
        where = ("outputs", name)
        if not ID_RE.match(name):
            problems.append(_describe(path, where, f"output name must match {ID_PATTERN}", name,
                                      has_value=True))
            continue
        if not isinstance(table, dict):
            problems.append(_describe(path, where, "must be a table", table, has_value=True))
            continue
        with_credentials = [key for key, value in table.items()
                            if isinstance(value, str) and "@" in value.partition("://")[2]
                            .split("/", 1)[0]]
        if with_credentials:  # said without the value: it would print the password
            problems.append(_describe(
                path, (*where, with_credentials[0]), "no credentials in a URL (they would be "
                "logged); a webhook's receiver checks the signature made with secret_file",
                None, has_value=False))
            continue
        kind = table.get("kind")
        if kind not in KINDS:
            problems.append(_describe(
                path, (*where, "kind"), f"{'unknown output kind' if kind else 'required key is missing'}"
                f"; accepted: {', '.join(sorted(KINDS))}", kind, has_value=kind is not None))
            continue
        try:
            outputs[name] = KINDS[kind].Config.model_validate(table)
        except ValidationError as err:
            problems.extend(_problems(path, err, where))
        else:
            unknown = set(outputs[name].exits) - set(settings.exits)
            if settings.exits and unknown:
                problems.append(_describe(
                    path, (*where, "exits", sorted(unknown)[0]), "no such exit in [exits]",
                    sorted(unknown)[0], has_value=True))
    return outputs, problems


def _settings(path: Path, raw: dict[str, Any]) -> Settings:
    try:
        return Settings(**raw)
    except ValidationError as err:
        raise ConfigError(_problems(path, err)) from err


def load_settings(path: str | Path | None = None) -> Settings:
    """The file's sections without checking its devices (``agent drivers`` reads the allowlist).

    Raises:
        ConfigError: the file cannot be read or a section is invalid.
    """
    path = config_path(path)
    raw = _read_toml(path)
    token = _base_dir.set(path.parent.resolve())
    try:
        return _settings(path, raw)
    finally:
        _base_dir.reset(token)


def load_config(
    path: str | Path | None = None, *, drivers: dict[str, DriverInfo] | None = None
) -> Config:
    """Read, validate and resolve the configuration.

    Raises:
        ConfigError: with every problem found, each naming the file and the key path.
    """
    path = config_path(path)
    raw = _read_toml(path)
    token = _base_dir.set(path.parent.resolve())
    try:
        settings = _settings(path, raw)
        if drivers is None:
            drivers = discover(settings.agent.drivers)
        devices, problems = _check_devices(path, settings, drivers)
        outputs, output_problems = _check_outputs(path, settings)
        problems += output_problems
    finally:
        _base_dir.reset(token)
    if problems:
        raise ConfigError(problems)
    digest = hashlib.sha256(
        json.dumps(settings.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:12]
    return Config(path=path, settings=settings, devices=devices, drivers=drivers, hash=digest,
                  outputs=outputs)


def check_host(config: Config) -> list[str]:
    """Ask each driver what this machine lacks for its devices (``Driver.check_host``); return
    the warnings, one line each naming the file and the devices (one line for a problem that
    several devices share).

    Raises:
        ConfigError: with every fatal problem (a GPIO library that is not installed...).
    """
    by_driver: dict[type[Driver], dict[str, DriverConfig]] = {}
    for dev in config.devices.values():
        by_driver.setdefault(dev.driver, {})[dev.id] = dev.config
    found: dict[tuple[bool, str], list[str]] = {}
    for cls, configs in by_driver.items():
        for problem in cls.check_host(config.settings, configs):
            found.setdefault((problem.fatal, problem.message), []).append(problem.device_id)
    lines = {key: f"{config.path}: {', '.join(f'devices.{d}' for d in ids)}: {key[1]}"
             for key, ids in found.items()}
    errors = [line for (fatal, _), line in lines.items() if fatal]
    if errors:
        raise ConfigError(errors)
    return list(lines.values())


def read_secret(path: Path | None, what: str) -> str:
    """The first line of a secret file (a password), without its newline.

    Raises:
        ConfigError: the file cannot be read; the message names the file, never the secret.
    """
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    except OSError as err:
        raise ConfigError([f"{path}: cannot read {what}: {err.strerror}"]) from err
