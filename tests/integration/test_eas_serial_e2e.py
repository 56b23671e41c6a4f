"""eas_serial end to end: pedestal lines through the real `agent run` and mosquitto to MQTT."""

from __future__ import annotations

import json

from support import AgentProcess, agent_config, wait_until

from agent.events import parse_envelope
from drivers.eas_serial.simulator import PedestalSimulator, SocatPair, UrlLink


def test_pedestal_lines_arrive_as_events_through_unplug_and_replug(tmp_path, broker, subscriber,
                                                                    agents):
    pair = SocatPair(tmp_path / "pty").start()
    try:
        devices = {"exit1-eas": {"driver": "eas_serial", "port": str(pair.driver_end),
                                 "profile": "pipe-events", "reopen_min": "100ms",
                                 "reopen_max": "300ms"}}
        cfg = agent_config(tmp_path, broker, devices, exits={"exit1": {"eas": "exit1-eas"}})
        agent = AgentProcess(tmp_path / "a", cfg)
        agents.append(agent)
        agent.start(wait_connected=True)
        subscriber.wait_events(1, "device.online")
        sim = PedestalSimulator.for_profile("pipe-events", UrlLink(str(pair.pedestal_end)))
        sim.alarm(direction="out", level=3, pedestal=2)
        sim.count(5, 4)
        sim.send("NOT A KNOWN LINE")
        alarm = subscriber.wait_events(1, "eas.alarm")[0]
        assert alarm["data"] == {"direction": "out", "level": 3, "pedestal": 2,
                                 "raw": "ALARM|OUT|3|2"}
        assert alarm["subject"] == "exit1"
        assert alarm["deviceid"] == "exit1-eas"
        assert subscriber.wait_events(1, "eas.people_count")[0]["data"]["in"] == 5

        pair.stop()
        offline = subscriber.wait_events(1, "device.offline")[0]
        assert offline["data"]["reason"].startswith("port lost")
        # reopening fails meanwhile: the retained state says so, with no second device.offline
        wait_until(lambda: "cannot open" in (_state(subscriber) or {}).get("reason", ""), 10,
                   "the later reason in the retained state")
        pair.start()
        subscriber.wait_events(2, "device.online")
        assert len(subscriber.events("device.offline")) == 1, "one device.offline per outage"
        PedestalSimulator.for_profile("pipe-events", UrlLink(str(pair.pedestal_end))).alarm(
            direction="in")
        later = subscriber.wait_events(2, "eas.alarm")[1]
        assert later["data"]["direction"] == "in"

        state = wait_until(lambda: (s := _state(subscriber)) and s.get("unmatched") and s,
                           10, "retained state with counters")
        assert state["unmatched"] == 1
        assert state["port_open"] is True
        assert agent.proc.poll() is None  # the agent never restarted
        assert agent.stop() == 0
        # the journal: each change of the device's state once, with its reason and duration
        journal = agent.output()
        assert journal.count("drivers.eas_serial: offline: port lost") == 1, journal
        assert journal.count("drivers.eas_serial: online again after") == 1, journal
        assert "offline (port lost" not in journal  # the reason shown is the last one
        assert "offline (cannot open" in journal
        for msg in subscriber.messages:
            if "/events/exit1-eas/" in msg.topic:
                parse_envelope(msg.payload)
    finally:
        pair.stop()


def test_agent_sim_alarm_flows_through_the_simulated_pedestal(tmp_path, broker, subscriber,
                                                              agents):
    devices = {"sim-eas": {"driver": "eas_serial", "simulate": True, "profile": "pipe-events"}}
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, devices))
    agents.append(agent)
    agent.start(wait_connected=True)
    subscriber.wait_events(1, "device.online")
    done = agent.run_cli("sim", "eas", "sim-eas", "alarm", "direction=out")
    assert done.returncode == 0, done.stderr
    assert "ALARM|OUT" in done.stdout
    alarm = subscriber.wait_events(1, "eas.alarm")[0]
    assert alarm["data"]["direction"] == "out"
    assert alarm["data"]["raw"] == "ALARM|OUT|1|1"
    bad = agent.run_cli("sim", "eas", "sim-eas", "alarm", "direction=up")
    assert bad.returncode != 0
    assert "direction must be one of" in bad.stderr
    assert agent.stop() == 0


def _state(subscriber) -> dict | None:
    payloads = subscriber.payloads("retail/t1/state/exit1-eas")
    return json.loads(payloads[-1]) if payloads else None
