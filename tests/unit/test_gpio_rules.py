"""GPIO rules without hardware: debounce, door logic, arming windows, pin names."""

from __future__ import annotations

from datetime import datetime

import pytest

from drivers.gpio_common.debounce import Debouncer
from drivers.gpio_common.pins import canonical_pin, pin_resource
from drivers.gpio_door.logic import DoorLogic
from drivers.gpio_door.schedule import ArmSchedule, Window


def test_a_burst_of_edges_settles_once_stamped_with_its_first_edge():
    d = Debouncer(0.05, False)
    for i, t in enumerate([1.000, 1.002, 1.004, 1.006, 1.010]):
        d.edge(i % 2 == 0, t)  # high, low, high, low, high
    assert d.settle(1.059) is None, "the last edge was under 50 ms ago"
    change = d.settle(1.060)
    assert change is not None
    assert change.level is True
    assert change.at == 1.000
    assert d.settle(2.0) is None


def test_a_glitch_back_to_the_settled_level_is_no_change():
    d = Debouncer(0.05, True)
    d.edge(False, 1.0)
    d.edge(True, 1.01)
    assert d.settle(1.1) is None
    assert d.level is True


def test_a_repeated_level_is_not_an_edge():
    d = Debouncer(0.05, False)
    assert d.edge(False, 1.0) is None
    assert d.edge(True, 1.0) == pytest.approx(1.05)


def door(**kw):
    opts = {"is_open": False, "now": 0.0, "held_open_after": 30.0, "repeat": 0.0, "shunt": 10.0}
    return DoorLogic(**(opts | kw))


def types(events):
    return [e.type for e in events]


def test_opening_while_armed_without_rex_is_forced():
    d = door()
    assert types(d.contact(True, 5.0, armed=True)) == ["door.opened", "door.forced"]
    assert types(d.contact(False, 6.0, armed=True)) == ["door.closed"]


def test_opening_while_disarmed_is_never_forced():
    assert types(door().contact(True, 5.0, armed=False)) == ["door.opened"]


def test_rex_held_or_within_the_shunt_authorises_the_opening():
    d = door(shunt=10.0)
    d.rex(True, 1.0)
    assert types(d.contact(True, 2.0, armed=True)) == ["door.opened"], "REX held"
    d.contact(False, 3.0, armed=True)
    d.rex(False, 4.0)
    assert types(d.contact(True, 14.0, armed=True)) == ["door.opened"], "10 s after release"
    d.contact(False, 15.0, armed=True)
    assert types(d.contact(True, 14.5, armed=True)) == ["door.opened", "door.forced"]


def test_held_open_once_then_every_repeat_until_closed():
    d = door(held_open_after=30.0, repeat=60.0)
    d.contact(True, 100.0, armed=False)
    assert d.next_deadline == 130.0
    assert d.tick(129.0) == []
    held = d.tick(130.0)
    assert [(e.type, e.at, e.data) for e in held] == [("door.held_open", 130.0, {"open_for_s": 30.0})]
    assert [e.data["open_for_s"] for e in d.tick(250.0)] == [90.0, 150.0]
    d.contact(False, 251.0, armed=False)
    assert d.next_deadline is None
    assert d.tick(1000.0) == []


def test_a_door_open_at_start_counts_held_open_from_start_and_is_not_forced():
    d = door(is_open=True, now=50.0, held_open_after=30.0)
    assert not d.forced
    assert types(d.tick(80.0)) == ["door.held_open"]


def test_held_open_zero_disables_it():
    d = door(held_open_after=0.0)
    d.contact(True, 1.0, armed=False)
    assert d.next_deadline is None


@pytest.mark.parametrize(("when", "armed"), [
    ("2026-11-23 18:59", False),  # a Monday
    ("2026-11-23 19:00", True),
    ("2026-11-24 07:29", True),   # Tuesday morning: Monday's window past midnight
    ("2026-11-24 07:30", False),
    ("2026-11-29 07:00", False),  # Sunday morning: the Saturday window is not mon-fri
    ("2026-11-28 07:00", True),   # Saturday morning: Friday's window
])
def test_arming_windows_run_past_midnight(when, armed):
    schedule = ArmSchedule.parse(["mon-fri 19:00-07:30"])
    assert schedule.armed_at(datetime.fromisoformat(when)) is armed


def test_arming_window_forms():
    assert Window.parse("sat,sun 00:00-24:00").days == frozenset({5, 6})
    assert Window.parse("fri-mon 10:00-11:00").days == frozenset({4, 5, 6, 0})
    assert ArmSchedule.parse(True).armed_at(datetime(2026, 1, 1))
    for bad in ["19:00", "mon-fry 19:00-07:00", "25:00-07:00", "24:00-07:00"]:
        with pytest.raises(ValueError, match="armed window"):
            Window.parse(bad)


@pytest.mark.parametrize("spec", [17, "17", "GPIO17", "gpio17", "BCM17", "BOARD11", "J8:11", "WPI0"])
def test_every_name_of_a_pin_claims_the_same_resource(spec):
    assert canonical_pin(spec) == "GPIO17"
    assert pin_resource(spec) == "gpio:17"


@pytest.mark.parametrize(("spec", "message"), [
    ("BOARD1", "3V3, not a GPIO"), (99, "no such pin"), ("GPIO99", "no such pin"), (1.5, "expected"),
])
def test_bad_pins_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        canonical_pin(spec)


def check(tmp_path, devices, **gpio):
    from agent.config import load_config
    from agent.testing import write_config

    doc = {"agent": {"store_id": "t1"}, "gpio": {"pin_factory": "mock", **gpio},
           "devices": devices}
    return load_config(write_config(tmp_path / "agent.toml", doc))


@pytest.mark.parametrize(("table", "message"), [
    ({"driver": "gpio_door", "pin": 5, "rex_pin": "BCM5"},
     "devices.d: ... rex_pin and pin are both GPIO5"),
    ({"driver": "gpio_input", "pin": 17, "on_active": {"event": "eas.alarm",
                                                      "data": {"direction": "sideways"}}},
     "devices.d.on_active: ... data does not fit eas.alarm"),
    ({"driver": "gpio_input", "pin": 17, "on_active": {"event": "agent.started"}},
     "devices.d.on_active: ... is not one an input may emit"),
    ({"driver": "gpio_input", "pin": 17, "pull": "none"},
     "devices.d: ... set active"),
    ({"driver": "gpio_input", "pin": "BOARD6"}, "devices.d.pin: got 'BOARD6': pin 'BOARD6' is GND"),
    ({"driver": "gpio_door", "pin": 9, "rex_pin": "BOARD5", "rex_pull": "down"},
     "devices.d: ... GPIO3 has a fixed pull-up resistor"),
    ({"driver": "gpio_door", "pin": 5, "armed": ["nightly"]},
     "devices.d.armed: ... armed window 'nightly'"),
    ({"driver": "gpio_output", "pin": 27, "pulse": "2s", "max_pulse": "1s"},
     "devices.d: ... longer than max_pulse"),
])
def test_bad_gpio_device_tables_are_named(tmp_path, table, message):
    from agent.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        check(tmp_path, {"d": table})
    text = str(err.value)
    for part in message.split("..."):
        assert part.strip() in text, text
