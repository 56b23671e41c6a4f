"""SIGHUP (``systemctl reload``): check the config file again and apply only what changed.

A file that does not validate changes nothing: its problems are logged as ``agent config
check`` prints them and the agent runs on. A valid one restarts the devices whose table (or
exit) changed, starts added ones and stops removed ones; the others keep running untouched.
The buffer and the broker connection are left alone unless their own section changed. Keys
that only a restart can apply are logged and kept at their running value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from agent.config import Config, LimitsSection, check_host, load_config
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.driver import Driver
    from agent.runtime import Agent

__all__ = ["RESTART_ONLY", "Changes", "diff", "effective", "reload"]

log = logging.getLogger(__name__)

RESTART_ONLY = {"agent": ("store_id", "data_dir", "control_socket"),
                "buffer": ("synchronous", "hold_max", "reserve"),
                "web": ("listen", "url", "cert_file", "key_file", "session_ttl", "max_pages"),
                "limits": tuple(LimitsSection.model_fields)}
"""Keys a running agent cannot change: its identity, its files, how the buffer was opened and
sized its hold and disk reserve; the web page's server and its sessions; the bounds its request
and socket handling started with."""
SECTIONS = ("agent", "gpio", "mqtt", "buffer", "metrics")
"""Sections compared as a whole; ``devices`` and ``exits`` are compared table by table."""
REMOVED = "removed from the configuration"
RESTARTING = "restarting with its new configuration"


@dataclasses.dataclass(frozen=True)
class Changes:
    """What differs between the running configuration and the file."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    """Devices kept but restarted: their table or exit changed (every device when ``[gpio]``
    changed: drivers read it)."""
    sections: tuple[str, ...] = ()
    """Changed sections: ``agent``, ``gpio``, ``mqtt``, ``buffer``, ``metrics``, ``exits.<name>``."""
    restart_only: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    """``section.key`` -> (running value, value in the file) of the ``RESTART_ONLY`` keys."""
    devices: tuple[str, ...] = ()
    """Devices whose own table or exit changed, added and removed ones included."""

    @property
    def names(self) -> list[str]:
        """``changed`` of ``agent.config_reloaded``: device ids, then sections."""
        return [*self.devices, *self.sections]


def diff(old: Config, new: Config) -> Changes:
    """Compare two valid configurations."""
    added = tuple(d for d in new.devices if d not in old.devices)
    removed = tuple(d for d in old.devices if d not in new.devices)
    kept = [d for d in new.devices if d in old.devices]
    # Device is a frozen dataclass: equal when driver class, validated keys and exit are.
    changed = [d for d in kept if old.devices[d] != new.devices[d]]
    a, b = old.settings, new.settings
    sections = [s for s in SECTIONS if getattr(a, s) != getattr(b, s)]
    sections += [f"exits.{e}" for e in sorted(set(a.exits) | set(b.exits))
                 if a.exits.get(e) != b.exits.get(e)]
    restart_only = {
        f"{section}.{key}": (was, now)
        for section, keys in RESTART_ONLY.items() for key in keys
        if (was := getattr(getattr(a, section), key)) != (now := getattr(getattr(b, section), key))
    }
    if old.outputs != new.outputs:  # their threads and cursors are set up at start
        restart_only["outputs"] = (sorted(old.outputs), sorted(new.outputs))
    restart = kept if "gpio" in sections else changed
    return Changes(added=added, removed=removed, restart=tuple(restart),
                   sections=tuple(sections), restart_only=restart_only,
                   devices=tuple(sorted((*added, *removed, *changed))))


def effective(old: Config, new: Config) -> Config:
    """``new``, with the ``RESTART_ONLY`` keys at their running values (its hash is the file's)."""
    update = {
        section: getattr(new.settings, section).model_copy(
            update={key: getattr(getattr(old.settings, section), key) for key in keys})
        for section, keys in RESTART_ONLY.items()
    }
    update["outputs"] = old.settings.outputs
    return dataclasses.replace(new, settings=new.settings.model_copy(update=update),
                               outputs=old.outputs)


async def reload(agent: Agent) -> Changes | None:
    """Read the agent's config file again and apply it; ``None`` when the file was refused."""
    old = agent.config
    log.info("SIGHUP: reloading the configuration from %s", old.path)
    try:
        new = await asyncio.to_thread(load_config, old.path)
        # and what this machine lacks for it, as `agent config check` and `agent run` ask
        for warning in await asyncio.to_thread(check_host, new):
            log.warning("%s", warning)
    except ConfigError as err:
        log.error("configuration reload refused: the agent runs on with the configuration it "
                  "has (hash %s); what `agent config check` says:", old.hash)
        for problem in err.problems:
            log.error("%s", problem)
        return None
    changes = diff(old, new)
    for key, (was, now) in changes.restart_only.items():
        log.warning("%s changed from %s to %s: that needs a restart (systemctl restart "
                    "store-edge-agent); still using %s", key, was, now, was)
    config = effective(old, new)
    # Build every new driver before anything stops: a failure leaves the agent as it was.
    try:
        started = {d: agent.new_driver(config.devices[d]) for d in (*changes.restart,
                                                                    *changes.added)}
    except Exception:
        log.exception("configuration reload refused: a device could not be set up; the agent "
                      "runs on with the configuration it has (hash %s)", old.hash)
        return None
    await _apply(agent, old, config, changes, started)
    agent.pipeline.emit_agent("agent.config_reloaded",
                              {"config_hash": config.hash, "changed": changes.names})
    log.info("configuration reloaded (hash %s): %s; devices restarted: %s, started: %s, "
             "stopped: %s", config.hash, ", ".join(changes.names) or "nothing changed",
             ", ".join(changes.restart) or "none", ", ".join(changes.added) or "none",
             ", ".join(changes.removed) or "none")
    agent.publish_status()
    return changes


async def _apply(agent: Agent, old: Config, config: Config, changes: Changes,
                 started: dict[str, Driver]) -> None:
    for device_id in (*changes.removed, *changes.restart):
        stopped = await agent.supervisor.remove(device_id)
        # Nobody watches the hardware until the new driver is up: say so.
        stopped.set_offline(REMOVED if device_id in changes.removed else RESTARTING)
    for device_id in changes.removed:
        agent.publisher.retain(agent.publisher.topics.state(device_id), "")  # drops it
    agent.pipeline.reconfigure(config)
    agent.config = config
    for driver in started.values():
        agent.supervisor.add(driver)
    agent.drivers = [agent.supervisor.drivers[d] for d in config.devices]

    settings = config.settings
    if settings.agent.log_level != old.settings.agent.log_level:
        logging.getLogger().setLevel(settings.agent.log_level.upper())
    if "buffer" in changes.sections:
        agent.buffer.max_bytes = settings.buffer.max_bytes
        agent.buffer.max_age = settings.buffer.max_age
    if "mqtt" in changes.sections:
        agent.replace_publisher()
    if any(s.startswith("exits.") for s in changes.sections):
        agent.selftests.load()
        agent.restart_schedule()
    if "metrics" in changes.sections:
        agent.restart_metrics()
