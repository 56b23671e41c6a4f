"""eas_serial on real socat pseudo-terminals and TCP: unplug/replug, silence, polls, noise."""

from __future__ import annotations

import asyncio

import pytest

from agent.testing import DriverHarness
from drivers.eas_serial.simulator import PedestalSimulator, SocatPair, TcpLink, UrlLink


@pytest.fixture
def pair(tmp_path):
    p = SocatPair(tmp_path).start()
    yield p
    p.stop()


def pedestal(pair: SocatPair, profile: str = "pipe-events") -> PedestalSimulator:
    return PedestalSimulator.for_profile(profile, UrlLink(str(pair.pedestal_end)))


async def test_unplug_and_replug_gives_offline_then_online_and_later_frames_arrive(tmp_path, pair):
    opts = {"port": str(pair.driver_end), "profile": "pipe-events", "reopen_min": "100ms",
            "reopen_max": "300ms"}
    async with DriverHarness("eas_serial", opts, tmp_path=tmp_path) as h:
        await h.wait_for("device.online")
        sim = pedestal(pair)
        sim.alarm(direction="out", level=2, pedestal=1)
        first = await h.wait_for("eas.alarm")
        assert first["data"]["direction"] == "out"

        pair.stop()  # the USB adapter is pulled
        offline = await h.wait_for("device.offline")
        assert offline["data"]["reason"].startswith("port lost")
        await asyncio.sleep(0.5)  # several reopen attempts fail while it is away
        assert len(h.of_type("device.offline")) == 1, "one device.offline per outage"
        assert h.driver.state["online"] is False
        assert "cannot open" in h.driver.state["reason"]  # the later reason, in the state

        pair.start()  # plugged in again: the same path reappears
        await h.wait_for("device.online", count=2)
        sim = pedestal(pair)
        sim.alarm(direction="in")
        second = await h.wait_for("eas.alarm", count=2)
        assert second["data"]["direction"] == "in"
        assert next((c.name, c.ok) for c in await h.driver.health()) == ("port open", True)
    seqs = [e["seq"] for e in h.events]
    assert seqs == sorted(seqs)


async def test_missing_port_at_start_is_offline_until_it_appears(tmp_path):
    pair = SocatPair(tmp_path)
    opts = {"port": str(pair.driver_end), "profile": "pipe-events", "reopen_min": "100ms",
            "reopen_max": "200ms"}
    async with DriverHarness("eas_serial", opts, tmp_path=tmp_path) as h:
        offline = await h.wait_for("device.offline")
        assert "cannot open" in offline["data"]["reason"]
        assert str(pair.driver_end) in offline["data"]["reason"]
        pair.start()
        try:
            await h.wait_for("device.online")
            pedestal(pair).count(3, 1)
            count = await h.wait_for("eas.people_count")
            assert count["data"] == {"in": 3, "out": 1, "interval_s": 60}
        finally:
            pair.stop()


async def test_noise_and_endless_lines_are_counted_and_good_lines_still_arrive(tmp_path, pair):
    opts = {"port": str(pair.driver_end), "profile": "pipe-events", "max_line": 128}
    async with DriverHarness("eas_serial", opts, tmp_path=tmp_path) as h:
        await h.wait_for("device.online")
        sim = pedestal(pair)
        sim.noise(20_000, newlines=False)  # one endless line
        sim.send("")  # ends it
        sim.link.write(b"\xc3\x28 bad utf-8\r\nA\x00B\r\nWHAT IS THIS\r\n")
        sim.fault("tx overload")
        fault = await h.wait_for("eas.fault")
        assert fault["data"]["reason"] == "tx overload"
        state = await h.wait_state(lambda s: s.get("bad_frames", 0) >= 3 and s.get("unmatched"))
        assert state["bad_frames"] == 3  # overlong, invalid UTF-8, control characters
        assert state["unmatched"] == 1
        assert state["last_bad_frame"]
        assert h.driver.online


async def test_silence_timeout_reports_silent_until_the_next_frame(tmp_path, pair):
    opts = {"port": str(pair.driver_end), "profile": "pipe-events", "silence_timeout": "1s"}
    async with DriverHarness("eas_serial", opts, tmp_path=tmp_path) as h:
        await h.wait_for("device.online")
        silent = await h.wait_for("device.offline")
        assert silent["data"]["reason"] == "silent"
        checks = {c.name: c for c in await h.driver.health()}
        assert checks["port open"].ok
        assert not checks["not silent"].ok
        pedestal(pair).heartbeat()
        await h.wait_for("device.online", count=2)
        assert {c.name: c.ok for c in await h.driver.health()}["not silent"]


async def test_poll_command_is_sent_and_replies_keep_the_device_online(tmp_path, pair):
    opts = {"port": str(pair.driver_end), "profile": "polled-kv", "poll_interval": "100ms",
            "silence_timeout": "1s"}
    async with DriverHarness("eas_serial", opts, tmp_path=tmp_path) as h:
        sim = pedestal(pair, "polled-kv")
        sim.alarm(direction="out", pedestal=3, level=80)  # queued until the next poll
        alarm = await h.wait_for("eas.alarm")
        assert alarm["data"] == {"direction": "out", "pedestal": 3, "level": 80}
        assert sim.polls >= 1
        sim.silence()  # stops answering polls
        assert (await h.wait_for("device.offline"))["data"]["reason"] == "silent"
        sim.resume()
        await h.wait_for("device.online", count=2)


async def test_serial_over_ip_connection_drop_and_reconnect(tmp_path):
    link = TcpLink()
    sim = PedestalSimulator.for_profile("pipe-events", link)
    opts = {"port": link.port, "profile": "pipe-events", "reopen_min": "100ms",
            "reopen_max": "200ms"}
    try:
        async with DriverHarness("eas_serial", opts, tmp_path=tmp_path) as h:
            await h.wait_for("device.online")
            await asyncio.to_thread(link.connected.wait, 5)
            sim.alarm(direction="out")
            await h.wait_for("eas.alarm")
            link.drop_client()  # the device server reboots
            assert "port lost" in (await h.wait_for("device.offline"))["data"]["reason"]
            await h.wait_for("device.online", count=2)
            await asyncio.to_thread(link.connected.wait, 5)
            sim.alarm(direction="in")
            assert (await h.wait_for("eas.alarm", count=2))["data"]["direction"] == "in"
    finally:
        link.close()


async def test_simulate_mode_sends_through_the_real_driver_path(tmp_path):
    async with DriverHarness("eas_serial", {"simulate": True, "profile": "pipe-events"},
                             tmp_path=tmp_path) as h:
        await h.wait_for("device.online")
        assert h.driver.state["port"].startswith("/dev/pts/")
        result = await h.driver.simulate("alarm", {"direction": "in", "level": "4"})
        assert result["sent"] == "ALARM|IN|4|1"
        alarm = await h.wait_for("eas.alarm")
        assert alarm["data"] == {"direction": "in", "level": 4, "pedestal": 1,
                                 "raw": "ALARM|IN|4|1"}
        with pytest.raises(ValueError, match="direction must be one of"):
            await h.driver.simulate("alarm", {"direction": "sideways"})
        with pytest.raises(ValueError, match="unknown command"):
            await h.driver.simulate("explode", {})


async def test_interference_and_faults_take_the_pedestal_out_of_its_resting_state(tmp_path, pair):
    """What a self-test's rest step reads: the conditions the pedestal itself reported."""
    opts = {"port": str(pair.driver_end), "profile": "pipe-events"}
    async with DriverHarness("eas_serial", opts, tmp_path=tmp_path) as h:
        await h.wait_for("device.online")
        sim = pedestal(pair)
        rest = await h.driver.at_rest()
        assert rest is not None and rest.ok
        sim.interference(inhibit=True)
        await h.wait_for("eas.interference")
        rest = await h.driver.at_rest()
        assert rest is not None and not rest.ok
        assert rest.detail.startswith("interference reported at ")
        sim.interference(inhibit=False)
        await h.wait_for("eas.interference", count=2)
        assert (await h.driver.at_rest()).ok
        sim.fault("antenna open")
        await h.wait_for("eas.fault")
        rest = await h.driver.at_rest()
        assert not rest.ok and rest.detail.startswith("fault (antenna open) reported at ")
