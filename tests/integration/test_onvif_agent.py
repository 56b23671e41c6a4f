"""onvif end to end: the real `agent run`, a real broker, and the fake camera speaking SOAP."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from support import AgentProcess, Subscriber, agent_config, free_port, wait_until, write_jsonl

from drivers.onvif.simulator import FakeCameraThread

FAST = {"pull_timeout": "1s", "retry_min": "100ms", "retry_max": "500ms", "request_timeout": "2s",
        "state_interval": "200ms"}


def epoch(env: dict) -> float:
    return datetime.fromisoformat(env["time"].replace("Z", "+00:00")).timestamp()


@pytest.fixture
def cameras():
    started: list[FakeCameraThread] = []
    yield started
    for cam in started:
        cam.close()


PASSWORD = "Zq9-cam-pass"


def cam_device(tmp: Path, port: int, password: str = PASSWORD, **extra) -> dict:
    secret = tmp / "camera.password"
    secret.write_text(password + "\n")
    return {"driver": "onvif", "host": "127.0.0.1", "port": port, "username": "admin",
            "password_file": str(secret), **FAST, **extra}


def state(sub: Subscriber, device: str) -> dict:
    payloads = sub.payloads(f"retail/t1/state/{device}")
    return json.loads(payloads[-1]) if payloads else {}


def test_events_clock_skew_and_reboot_end_to_end(tmp_path, broker, subscriber, agents, cameras):
    cam = FakeCameraThread(skew=30.0, password=PASSWORD)
    cameras.append(cam)
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, {
        "cam1": cam_device(tmp_path, cam.port)}))
    agents.append(agent)
    agent.start()
    subscriber.wait_events(1, "device.online")

    # The camera's clock is 30 s ahead: it signs with the offset and shows it in the state.
    wait_until(lambda: state(subscriber, "cam1").get("clock_offset_s") is not None, 10, "offset")
    offset = state(subscriber, "cam1")["clock_offset_s"]
    assert 29.0 <= offset <= 31.0
    assert state(subscriber, "cam1")["clock_warning"] is True
    assert "camera clock is +" in agent.output()

    injected = time.time()
    cam.run(cam.camera.motion, True)
    motion = subscriber.wait_events(1, "camera.motion")[0]
    assert motion["data"] == {"active": True, "topic": "tns1:VideoSource/MotionAlarm",
                              "source": "VideoSource_1"}
    # Uncorrected it would be 30 s off; the measurement is good to about a second.
    assert abs(epoch(motion) - injected) < 5, "event time is corrected by the camera offset"

    # A reboot: unreachable for a moment, subscriptions forgotten; the agent resubscribes alone.
    cam.call(cam.camera.reboot(down_for=0.5))
    offline = subscriber.wait_events(1, "device.offline")[0]
    assert offline["data"]["reason"] in ("unreachable", "subscription lost")
    subscriber.wait_events(2, "device.online", timeout=10)
    cam.run(cam.camera.motion, False)
    subscriber.wait_events(1, "camera.motion", where=lambda e: e["data"]["active"] is False)
    assert cam.camera.requests["CreatePullPointSubscription"] == 2

    status = agent.run_cli("status", "--json")
    assert status.returncode == 0
    assert agent.stop() == 0
    assert PASSWORD not in agent.output()
    assert cam.camera.unsubscribes == 0, "our subscription is left to expire"


def test_wrong_password_is_offline_auth_and_agent_keeps_running(tmp_path, broker, subscriber,
                                                                  agents, cameras):
    cam = FakeCameraThread(password=PASSWORD)
    cameras.append(cam)
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "door.opened", "data": {}, "delay": 0.5}])
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, {
        "cam1": cam_device(tmp_path, cam.port, password="Wr0ng-Pa55", auth_retry="1h"),
        "door1": {"driver": "replay", "file": str(rec), "loop": True},
    }))
    agents.append(agent)
    agent.start()
    offline = subscriber.wait_events(1, "device.offline")[0]
    assert offline["deviceid"] == "cam1"
    assert offline["data"] == {"reason": "auth"}
    wait_until(lambda: state(subscriber, "cam1").get("reason") == "auth", 10, "auth state")
    assert "Sender not Authorized" in state(subscriber, "cam1")["last_error"]
    before = len(subscriber.events("door.opened"))
    subscriber.wait_events(before + 2, "door.opened")  # the rest of the store carries on
    # refused twice in a row: from then on it waits auth_retry (1 h)
    wait_until(lambda: "retrying in 3600.0 s" in agent.output(), 10, "the second refusal")
    failures = cam.camera.auth_failures
    time.sleep(1.0)
    assert cam.camera.auth_failures == failures, "after two refusals it waits auth_retry"
    assert 0 < failures <= 4  # two connection attempts (GetServices, then GetCapabilities)
    assert "Wr0ng-Pa55" not in agent.output()
    assert agent.stop() == 0


def test_unreachable_camera_goes_online_when_it_appears(tmp_path, broker, subscriber, agents,
                                                         cameras):
    port = free_port()
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, {
        "cam1": cam_device(tmp_path, port)}))
    agents.append(agent)
    agent.start()
    offline = subscriber.wait_events(1, "device.offline")[0]
    assert offline["data"] == {"reason": "unreachable"}
    cam = FakeCameraThread(port=port, password=PASSWORD)
    cameras.append(cam)
    subscriber.wait_events(1, "device.online", timeout=10)
    cam.run(cam.camera.motion, True)
    subscriber.wait_events(1, "camera.motion")
    assert agent.stop() == 0


def test_snapshot_on_eas_alarm_at_the_camera_exit(tmp_path, broker, subscriber, agents, cameras):
    cam = FakeCameraThread(password=PASSWORD)
    cameras.append(cam)
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "eas.alarm", "data": {"direction": "out"}}])
    config = agent_config(tmp_path, broker, {
        "cam1": cam_device(tmp_path, cam.port, snapshot_on=["eas.alarm"]),
        "eas1": {"driver": "replay", "file": str(rec), "start_delay": "1500ms"},
    }, exits={"exit1": {"eas": "eas1", "camera": "cam1"}})
    agent = AgentProcess(tmp_path / "a", config)
    agents.append(agent)
    agent.start()
    alarm = subscriber.wait_events(1, "eas.alarm")[0]
    snap = subscriber.wait_events(1, "camera.snapshot")[0]
    assert alarm["subject"] == "exit1"
    assert snap["subject"] == "exit1"
    assert snap["data"]["trigger_id"] == alarm["id"]
    image = Path(snap["data"]["path"]).read_bytes()
    assert image.startswith(b"\xff\xd8")
    assert hashlib.sha256(image).hexdigest() == snap["data"]["sha256"]
    assert snap["data"]["bytes"] == len(image)
    assert Path(snap["data"]["path"]).is_relative_to(tmp_path / "data" / "devices" / "cam1")
    assert agent.stop() == 0
    subscriber.sync()
    assert len(subscriber.events("camera.snapshot")) == 1


def test_agent_sim_drives_a_simulated_camera(tmp_path, broker, subscriber, agents):
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, {
        "cam1": {"driver": "onvif", "simulate": True, **FAST}}))
    agents.append(agent)
    agent.start()
    subscriber.wait_events(1, "device.online")
    result = agent.run_cli("sim", "onvif", "cam1", "motion", "active=true")
    assert result.returncode == 0, result.stderr
    event = subscriber.wait_events(1, "camera.motion")[0]
    assert event["data"]["active"] is True
    assert agent.stop() == 0
