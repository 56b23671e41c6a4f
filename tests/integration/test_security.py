"""The agent's public surfaces under attack (issue 19): MQTT requests, the control socket and a
hostile camera, against the real `agent` process, a real broker and real sockets."""

from __future__ import annotations

import json
import re
import threading
import time

from support import request, wait_until
from test_selftest import config, exit1, start


def test_a_real_alarm_during_a_remote_self_test_is_not_a_test(tmp_path, broker, subscriber,
                                                              agents):
    # A silent sounder keeps the run going for sounder_within after the test tag.
    devices = exit1(**{"exit1-door": {"armed": True},
                       "exit1-sounder": {"driver": "gpio_input", "pin": "GPIO22", "pull": "up"}})
    agent = start(tmp_path, agents, config(tmp_path, broker, devices, alarm_within="3s",
                                           sounder="exit1-sounder", sounder_within="10s"))
    answer: dict = {}  # the request runs while we act at the exit
    thread = threading.Thread(target=lambda: answer.update(
        request(broker, "selftest", b'{"id": "r1", "exit": "exit1"}')))
    thread.start()
    # The test tag's alarm arrives marked as a test...
    tag = subscriber.wait_events(1, "eas.alarm")[0]
    assert tag["test"] is True
    # ...and while the run is still going (and inside the 3 s alarm window), once the 500 ms
    # tag pulse has released the pedestal, a shoplifter walks out through the forced door.
    time.sleep(0.6)
    assert agent.run_cli("sim", "gpio", "exit1-eas", "pulse").returncode == 0
    assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0
    real = subscriber.wait_events(2, "eas.alarm")[1]
    forced = subscriber.wait_events(1, "door.forced")[0]
    thread.join(60)
    finished = subscriber.wait_events(1, where=lambda e: e["type"] in (
        "selftest.passed", "selftest.failed"))[0]
    assert real["seq"] < finished["seq"] and forced["seq"] < finished["seq"]
    assert real["test"] is False and forced["test"] is False
    assert subscriber.events("door.opened")[0]["test"] is False
    assert answer["status"] == "ok" and answer["reports"][0]["trigger"] == "remote"
    assert agent.stop() == 0


def test_remote_self_tests_are_rate_limited_and_refused_during_a_real_alarm(
        tmp_path, broker, subscriber, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1(), min_interval="10m"))
    first = request(broker, "selftest", b'{"id": "r1", "exit": "exit1"}')
    assert first["status"] == "ok" and first["result"] == "pass"
    # A loop re-requesting as soon as each answer arrives gets refusals, and no coil pulse.
    started = len(subscriber.events("selftest.started"))
    for n in range(5):
        again = request(broker, "selftest", json.dumps({"id": f"loop{n}"}).encode())
        assert again["status"] == "error"
        assert "exits.exit1.min_interval is 10m" in again["error"]
        assert re.search(r"the next is allowed at \d\d:\d\d:\d\d", again["error"]), again
        assert again["retry_at"]
    subscriber.sync()
    assert len(subscriber.events("selftest.started")) == started
    # A real alarm at the exit: no self-test may start there, not even from the technician.
    assert agent.run_cli("sim", "gpio", "exit1-eas", "pulse").returncode == 0
    subscriber.wait_events(1, "eas.alarm", where=lambda e: not e["test"])
    result = agent.run_cli("selftest")
    assert result.returncode == 2
    assert "exit1 is in a real alarm (eas.alarm from exit1-eas at " in result.stderr
    assert "the next is allowed at " in result.stderr
    assert agent.stop() == 0


def test_remote_and_scheduled_self_tests_share_a_global_hourly_limit(tmp_path, broker,
                                                                      subscriber, agents):
    cfg = config(tmp_path, broker, exit1(), min_interval="0s", schedule="*/2 * * * * *",
                 schedule_retry="1s")
    cfg["limits"] = {"selftests_per_hour": 2}
    agent = start(tmp_path, agents, cfg)
    wait_until(lambda: "limits.selftests_per_hour 2" in agent.output(), 20,
               "a scheduled run postponed by the hourly limit")
    assert len(subscriber.events("selftest.started")) == 2
    refused = request(broker, "selftest", b'{"id": "r1"}')
    assert refused["status"] == "error" and "limits.selftests_per_hour 2" in refused["error"]
    status = json.loads(agent.run_cli("status", "--json").stdout)
    assert "selftests_per_hour" in status["selftest_schedule"]["exit1"]["postponed"]["reason"]
    assert agent.stop() == 0
