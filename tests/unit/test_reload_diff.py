"""What a reload counts as changed, from two real config files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import Config, load_config
from agent.reload import diff, effective
from agent.testing import write_config

DEVICES = {"door": {"driver": "gpio_door", "pin": "GPIO5"},
           "relay": {"driver": "gpio_input", "pin": "GPIO17"}}


def config(tmp: Path, name: str, **sections: Any) -> Config:
    doc: dict[str, Any] = {"agent": {"store_id": "t1", "data_dir": str(tmp / "data")},
                           "gpio": {"pin_factory": "mock"}, "devices": DEVICES}
    doc.update(sections)
    return load_config(write_config(tmp / f"{name}.toml", doc))


def test_a_gpio_change_restarts_every_device_but_names_only_the_section(tmp_path):
    old = config(tmp_path, "old")
    changes = diff(old, config(tmp_path, "new", gpio={"pin_factory": "lgpio"}))
    assert changes.names == ["gpio"]
    assert changes.restart == ("door", "relay")


def test_moving_a_device_into_an_exit_restarts_it_and_names_both(tmp_path):
    old = config(tmp_path, "old")
    changes = diff(old, config(tmp_path, "new", exits={"exit1": {"door": "door"}}))
    assert changes.names == ["door", "exits.exit1"]
    assert changes.restart == ("door",)


def test_restart_only_keys_keep_their_running_values(tmp_path):
    old = config(tmp_path, "old")
    new = config(tmp_path, "new", agent={"store_id": "t2", "data_dir": str(tmp_path / "x")},
                 buffer={"synchronous": "normal", "max_age": "1d", "hold_max": 200})
    changes = diff(old, new)
    assert set(changes.restart_only) == {"agent.store_id", "agent.data_dir",
                                         "buffer.synchronous", "buffer.hold_max"}
    running = effective(old, new)
    assert running.settings.agent.store_id == "t1"
    assert running.settings.agent.data_dir == tmp_path / "data"
    assert running.settings.buffer.synchronous == "full"
    assert running.settings.buffer.max_age == 86400
    assert running.hash == new.hash  # what `agent config check` prints for the file
    assert diff(running, new).restart_only == changes.restart_only  # said again next time
