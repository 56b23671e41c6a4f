"""GPIO drivers on gpiozero's MockFactory and the real pipeline: debounce, door rules, outputs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.testing import DriverHarness
from drivers.gpio_common import factory

ROOT = Path(__file__).resolve().parents[2]
EAS_RELAY = {"pin": "GPIO17", "pull": "up",
             "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}}}


@pytest.fixture(autouse=True)
def no_leaked_pin_factory():
    from gpiozero import Device

    assert factory.current() is None, "a previous test left the pin factory open"
    yield
    assert factory.current() is None, "the drivers did not release the pin factory"
    assert Device.pin_factory is None, "a driver set gpiozero's process-wide pin factory"


def mock_pin(name: str):
    """The gpiozero MockPin the running drivers share (what a wire or a person would drive)."""
    held = factory.current()
    assert held is not None
    assert held[0] == "mock"
    return held[1].pin(name)


async def online(h: DriverHarness) -> None:
    await h.wait_state(lambda s: s.get("online") is True)


async def test_a_burst_of_edges_gives_one_alarm(tmp_path):
    async with DriverHarness("gpio_input", EAS_RELAY, tmp_path=tmp_path) as h:
        await online(h)
        pin = mock_pin("GPIO17")
        for _ in range(5):  # a bouncing relay contact: ten edges within a millisecond
            pin.drive_low()
            pin.drive_high()
        pin.drive_low()
        alarm = await h.wait_for("eas.alarm")
        assert alarm["data"] == {"direction": "unknown"}
        await h.wait_state(lambda s: s.get("active") is True and s.get("changes") == 1)
        await asyncio.sleep(0.2)  # four debounce periods: nothing more may come
        assert len(h.of_type("eas.alarm")) == 1


async def test_a_glitch_shorter_than_the_debounce_is_ignored(tmp_path):
    opts = EAS_RELAY | {"debounce": "100ms"}
    async with DriverHarness("gpio_input", opts, tmp_path=tmp_path) as h:
        await online(h)
        pin = mock_pin("GPIO17")
        pin.drive_low()
        pin.drive_high()  # back before 100 ms
        await asyncio.sleep(0.15)
        pin.drive_low()  # a real alarm
        await h.wait_for("eas.alarm")
        assert len(h.of_type("eas.alarm")) == 1
        assert h.driver.state["changes"] == 1, "the glitch was no change"


async def test_sim_pulse_gives_both_edges_and_state(tmp_path):
    opts = EAS_RELAY | {"on_inactive": {"event": "door.input_trouble",
                                        "data": {"condition": "tamper"}}}
    async with DriverHarness("gpio_input", opts, tmp_path=tmp_path) as h:
        await online(h)
        result = await h.driver.simulate("pulse", {"for": 0.2})
        assert result == {"pin": "GPIO17", "pulse": "low", "for": 0.2}
        await h.wait_for("eas.alarm")
        trouble = await h.wait_for("door.input_trouble")
        assert trouble["data"] == {"condition": "tamper"}
        state = await h.wait_state(lambda s: s.get("changes") == 2)
        assert state["active"] is False
        assert state["level"] == "high"


async def test_door_opened_closed_and_held_open_repeats(tmp_path):
    opts = {"pin": 5, "held_open_after": "300ms", "held_open_repeat": "200ms"}
    async with DriverHarness("gpio_door", opts, tmp_path=tmp_path) as h:
        start = await h.wait_state(lambda s: s.get("online") is True and "door" in s)
        assert start["door"] == "closed"
        assert start["armed"] is False
        await h.driver.simulate("open", {})
        opened = await h.wait_for("door.opened")
        held = [await h.wait_for("door.held_open", count=n) for n in (1, 2)]
        assert [e["data"]["open_for_s"] for e in held] == [0.3, 0.5]
        await h.driver.simulate("close", {})
        await h.wait_for("door.closed")
        await asyncio.sleep(0.4)  # past the next repeat: a closed door is not held open
        assert len(h.of_type("door.held_open")) == 2
        assert not h.of_type("door.forced"), "not armed"
        state = h.driver.state
        assert state["door"] == "closed"
        assert state["openings"] == 1
        assert opened["time"] < held[0]["time"] < held[1]["time"]


async def test_door_closed_before_held_open_after_gives_no_held_open(tmp_path):
    # 1 s against a 100 ms opening: only a loop stalled for 0.9 s could see it held open.
    async with DriverHarness("gpio_door", {"pin": 5, "held_open_after": "1s"},
                             tmp_path=tmp_path) as h:
        await online(h)
        await h.driver.simulate("pulse", {"for": 0.1})
        await h.wait_for("door.closed")
        await asyncio.sleep(1.0)
        assert not h.of_type("door.held_open")


async def test_forced_versus_request_to_exit(tmp_path):
    opts = {"pin": 5, "rex_pin": 6, "armed": True, "shunt": "1s", "held_open_after": 0}
    async with DriverHarness("gpio_door", opts, tmp_path=tmp_path) as h:
        await online(h)
        # 1: no REX: forced.
        await h.driver.simulate("open", {})
        await h.wait_for("door.forced")
        assert h.driver.state["forced"] is True
        await h.driver.simulate("close", {})
        await h.wait_for("door.closed")
        # 2: REX held while the door opens: authorised.
        await h.driver.simulate("rex", {"for": 1.0})
        await h.wait_state(lambda s: s.get("rex_active") is True)
        await h.driver.simulate("open", {})
        await h.wait_for("door.opened", count=2)
        await h.driver.simulate("close", {})
        await h.wait_for("door.closed", count=2)
        # 3: opened within the shunt after the REX was released: authorised.
        await h.wait_state(lambda s: s.get("rex_active") is False and s.get("openings") == 2)
        await h.driver.simulate("open", {})
        await h.wait_for("door.opened", count=3)
        await h.driver.simulate("close", {})
        await h.wait_for("door.closed", count=3)
        # 4: after the shunt ran out: forced again.
        await asyncio.sleep(1.1)
        await h.driver.simulate("open", {})
        await h.wait_for("door.opened", count=4)
        await h.wait_for("door.forced", count=2)
        forced_at = [e["time"] for e in h.of_type("door.forced")]
        opened_at = [e["time"] for e in h.of_type("door.opened")]
        assert forced_at == [opened_at[0], opened_at[3]]


async def test_door_opening_outside_its_armed_window_is_not_forced(tmp_path):
    later = datetime.now() + timedelta(hours=2)  # a window that cannot contain the test
    window = f"{later:%H}:00-{(later + timedelta(hours=1)):%H}:00"
    async with DriverHarness("gpio_door", {"pin": 5, "armed": [window]},
                             tmp_path=tmp_path) as h:
        start = await h.wait_state(lambda s: s.get("online") is True and "armed" in s)
        assert start["armed"] is False
        await h.driver.simulate("pulse", {"for": 0.1})
        await h.wait_for("door.closed")
        assert not h.of_type("door.forced")


async def test_simulated_inputs_start_idle_whatever_their_pull(tmp_path):
    opts = {"pin": 5, "pull": "down", "contact": "no", "rex_pin": 6, "rex_pull": "none",
            "rex_active": "low"}
    async with DriverHarness("gpio_door", opts, tmp_path=tmp_path) as h:
        start = await h.wait_state(lambda s: s.get("online") is True and "door" in s)
        assert start["door"] == "closed"
        assert start["rex_active"] is False
        assert mock_pin("GPIO6").state is True  # released REX, active low


async def test_output_safe_state_at_start_and_stop_and_every_actuation_in_state(tmp_path):
    opts = {"pin": 27, "active": "low", "safe_state": "on"}
    h = DriverHarness("gpio_output", opts, tmp_path=tmp_path)
    async with h:
        start = await h.wait_state(lambda s: s.get("online") is True and "output" in s)
        pin = mock_pin("GPIO27")
        assert start["output"] == "on"
        assert start["level"] == "low"
        assert start["last_action"]["action"] == "safe_state"
        assert pin.function == "output"
        assert pin.state is False
        await h.driver.action("off", {})
        assert pin.state is True
        result = await h.driver.action("pulse", {"for": 0.2})
        assert result == {"output": "on", "for": 0.2}
        assert pin.state is False
        ended = await h.wait_state(lambda s: s.get("last_action", {}).get("action") == "pulse_end")
        assert ended["output"] == "off"
        assert pin.state is True
        await h.driver.action("off", {})
    # Stopped with the relay off: the safe state ("on") was applied before letting go.
    assert pin.state is False
    last = h.states[-1]
    assert last["output"] == "on"
    assert last["last_action"] == {
        "action": "safe_state", "at": last["last_action"]["at"], "reason": "stop"}
    actions = {s["actuations"]: s["last_action"]["action"] for s in h.states if "actuations" in s}
    assert list(actions.values()) == ["safe_state", "off", "pulse", "pulse_end", "off", "safe_state"]
    assert last["actuations"] == 6


async def test_output_rejects_bad_pulses(tmp_path):
    from agent.driver import ActionError

    async with DriverHarness("gpio_output", {"pin": 27, "max_pulse": "2s"},
                             tmp_path=tmp_path) as h:
        await online(h)
        for bad in ({"for": "3s"}, {"for": 0}, {"for": "soon"}):
            with pytest.raises(ActionError, match="for"):
                await h.driver.action("pulse", bad)


async def test_a_wired_output_drives_its_input_whatever_started_first(tmp_path):
    devices = {"relay": {"driver": "gpio_input", **EAS_RELAY},
               "testtag": {"driver": "gpio_output", "pin": 27, "safe_state": "on",
                           "sim_drives": "relay"}}
    (tmp_path / "o").mkdir()
    (tmp_path / "i").mkdir()
    out = DriverHarness("gpio_output", {"pin": 27, "safe_state": "on", "sim_drives": "relay"},
                        tmp_path=tmp_path / "o", device_id="testtag",
                        settings={"devices": {"relay": devices["relay"]}})
    inp = DriverHarness("gpio_input", EAS_RELAY, tmp_path=tmp_path / "i", device_id="relay",
                        settings={"devices": {"testtag": devices["testtag"]}})
    async with out:
        await online(out)
        async with inp:
            # The output (safe state on) started first: the input reads active from the start.
            start = await inp.wait_state(lambda s: s.get("online") is True and "active" in s)
            assert start["active"] is True
            await out.driver.action("off", {})
            await inp.wait_state(lambda s: s.get("active") is False)
            await out.driver.action("pulse", {"for": 0.2})
            await inp.wait_for("eas.alarm")
            await out.driver.simulate("unwire", {})  # during the pulse: the relay lets go
            released = await inp.wait_state(lambda s: s.get("changes") == 3)  # off, pulse, cut
            assert released["active"] is False
            await out.driver.action("pulse", {"for": 0.1})
            await out.wait_state(lambda s: s.get("last_action", {}).get("action") == "pulse_end")
            await asyncio.sleep(0.1)
            assert len(inp.of_type("eas.alarm")) == 1, "an unwired pedestal does not alarm"


async def test_no_gpio_library_is_device_offline_and_no_simulation(tmp_path):
    from agent.driver import ActionError

    async with DriverHarness("gpio_input", EAS_RELAY, tmp_path=tmp_path,
                             settings={"gpio": {"pin_factory": "lgpio"}}) as h:
        offline = await h.wait_for("device.offline")
        assert "GPIO pin factory 'lgpio' is not available" in offline["data"]["reason"]
        with pytest.raises(ActionError, match='pin_factory = "mock"'):
            await h.driver.simulate("pulse", {})
