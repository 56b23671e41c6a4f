"""The driver against the simulated controller over real TCP, on the agent's real pipeline."""

from pathlib import Path

import pytest
from acme_eas.simulator import ControllerSimulator

from agent.config import load_config
from agent.driver import ActionError

HERE = Path(__file__).resolve().parent.parent


@pytest.fixture
async def controller():
    async with ControllerSimulator(heartbeat=0.1) as sim:
        yield sim


def options(sim: ControllerSimulator, **more):
    return {"host": sim.host, "port": sim.port, "heartbeat_timeout": "500ms", **more}


async def online(h, count=1):
    await h.wait_for("device.online", count=count)


async def test_an_alarm_is_one_event_with_direction_and_pedestal(controller, driver_harness):
    async with driver_harness("acme_eas", options(controller)) as h:
        await online(h)
        controller.alarm("out", pedestal="2", level=91)
        alarm = await h.wait_for("eas.alarm")
        assert alarm["data"]["direction"] == "out"
        assert alarm["data"]["pedestal"] == "2"
        assert alarm["data"]["level"] == 91
        assert alarm["source"] == "urn:store-edge-agent:test:dev1"
        assert (await h.driver.health())[-1].ok


async def test_a_corrupted_line_is_counted_not_emitted(controller, driver_harness):
    async with driver_harness("acme_eas", options(controller)) as h:
        await online(h)
        controller.send_raw(b"ALM,1,O,80*00\r\n")  # wrong checksum: a noisy cable
        controller.fault("E12", "TX coil open")
        fault = await h.wait_for("eas.fault")
        assert fault["data"]["reason"] == "E12: TX coil open"
        assert h.driver.state["bad_lines"] == 1
        assert h.of_type("eas.alarm") == []


async def test_a_controller_reboot_is_offline_then_online(controller, driver_harness):
    async with driver_harness("acme_eas", options(controller)) as h:
        await online(h)
        controller.drop()
        offline = await h.wait_for("device.offline")
        assert "closed the connection" in offline["data"]["reason"]
        await online(h, count=2)  # reconnected by itself


async def test_a_hung_controller_goes_offline_by_heartbeat(controller, driver_harness):
    async with driver_harness("acme_eas", options(controller)) as h:
        await online(h)
        controller.mute(1.5)
        offline = await h.wait_for("device.offline")
        assert offline["data"]["reason"].endswith("no heartbeat for 0.5 s")
        await online(h, count=2)


async def test_silence_is_acknowledged_by_the_controller(controller, driver_harness):
    async with driver_harness("acme_eas", options(controller)) as h:
        await online(h)
        assert await h.driver.action("silence", {"for": "30s"}) == {"silenced_for": 30}
        assert any(line.startswith("SIL,30*") for line in controller.received)
        with pytest.raises(ActionError, match="1 to 600 s"):
            await h.driver.action("silence", {"for": 0})
        with pytest.raises(ActionError, match="for: "):
            await h.driver.action("silence", {"for": "soon"})
        with pytest.raises(ActionError, match="accepts no action 'reboot'"):
            await h.driver.action("reboot", {})


async def test_simulate_true_drives_a_built_in_controller(driver_harness):
    async with driver_harness("acme_eas", {"simulate": True}) as h:
        await online(h)
        await h.driver.simulate("count", {"in": "4", "out": "6"})
        count = await h.wait_for("eas.people_count")
        assert count["data"] == {"in": 4, "out": 6, "interval_s": 60}


async def test_a_real_controller_refuses_simulate_commands(controller, driver_harness):
    async with driver_harness("acme_eas", options(controller)) as h:
        with pytest.raises(ActionError, match="real controller"):
            await h.driver.simulate("alarm", {})


def test_sample_config_is_valid_and_in_the_readme():
    sample = HERE / "acme_eas" / "sample.toml"
    config = load_config(sample)
    assert config.devices["exit1-eas"].driver.name == "acme_eas"
    readme = (HERE / "README.md").read_text()
    assert f"```toml\n{sample.read_text()}```" in readme, "README.md must show sample.toml as is"
