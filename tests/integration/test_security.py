"""The agent's public surfaces under attack (issue 19): MQTT requests, the control socket and a
hostile camera, against the real `agent` process, a real broker and real sockets."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

from support import (
    AGENT_BIN,
    AgentProcess,
    agent_config,
    publish_requests,
    request,
    wait_until,
)
from test_selftest import FAST_CAM, config, exit1, start

from drivers.onvif.simulator import FakeCameraThread


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


def test_requests_are_bounded_in_size_id_and_depth(tmp_path, broker, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1()))
    big_id = "x" * (10 * 1024 * 1024)  # echoed in full, this dropped the agent's connection
    reply = request(broker, "status", json.dumps({"id": big_id}).encode())
    assert reply == {"id": None, "status": "error", "error": "request is 10485770 bytes, more "
                     "than limits.request_max_bytes 65536: refused unread"}
    reply = request(broker, "status", json.dumps({"id": "y" * 129}).encode())
    assert reply == {"id": None, "status": "error", "error": 'request "id" is 129 characters, '
                     "more than limits.request_id_max 128"}
    deep = b'{"id": "d1", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    reply = request(broker, "status", deep)
    assert reply == {"id": None, "status": "error",
                     "error": "request is nested deeper than limits.request_max_depth 16"}
    reply = request(broker, "status", b'{"id": "ok1", "x": [[["[[[[[[[[[[[[[[[[[[[["]]]}')
    assert reply["status"] == "ok" and reply["id"] == "ok1"  # brackets in strings do not count
    assert "Traceback" not in agent.output() and "recursion" not in agent.output()
    assert agent.run_cli("status").returncode == 0
    assert agent.stop() == 0


def test_a_response_topic_outside_the_stores_response_tree_is_refused(
        tmp_path, broker, subscriber, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1()))
    for foreign in ("retail/t2/agent/status", "retail/t1/events/exit1-eas/eas.alarm",
                    "retail/t1/agent/response/"):
        subscriber.sync()
        before = len(subscriber.payloads(foreign))
        publish_requests(broker, "retail/t1/agent/request/status", [b'{"id": "f1"}'],
                response_topic=foreign)
        refusal = json.loads(wait_until(lambda: subscriber.payloads(
            "retail/t1/agent/response/status"), 15, "the refusal")[-1])
        assert refusal == {"id": "f1", "status": "error", "error": "response topic refused: "
                           "only topics under retail/t1/agent/response/ are answered"}
        subscriber.sync()
        assert len(subscriber.payloads(foreign)) == before
        subscriber.messages.clear()
    reply = request(broker, "status", b'{"id": "ok"}', v5_reply=True,
                    reply_topic="retail/t1/agent/response/dashboard-7")
    assert reply["status"] == "ok"
    assert agent.stop() == 0


def test_requests_over_the_rate_limit_are_dropped_unanswered(tmp_path, broker, subscriber,
                                                             agents):
    cfg = config(tmp_path, broker, exit1())
    cfg["limits"] = {"requests_per_minute": 10}
    agent = start(tmp_path, agents, cfg)
    publish_requests(broker, "retail/t1/agent/request/status",
            [json.dumps({"id": f"s{n}"}).encode() for n in range(200)])
    wait_until(lambda: "over limits.requests_per_minute 10 are dropped" in agent.output(), 15,
               "the rate-limit log line")
    time.sleep(2)
    subscriber.sync()
    answered = subscriber.payloads("retail/t1/agent/response/status")
    assert 10 <= len(answered) <= 12  # a burst of 10, then one every 6 s
    status = json.loads(agent.run_cli("status", "--json").stdout)
    assert status["limits"]["requests_dropped"] == 200 - len(answered)
    assert agent.run_cli("status").returncode == 0  # the socket is not limited
    assert agent.stop() == 0


def pedestal_at_rest(subscriber) -> None:
    """Wait until exit1's simulated pedestal input is inactive again (its 200 ms pulse ended):
    a pulse while it is still active is no new edge, no alarm."""
    wait_until(lambda: json.loads(subscriber.payloads("retail/t1/state/exit1-eas")[-1])
               .get("active") is False, 5, "the pedestal input at rest")


def peak_rss_mib(agent: AgentProcess) -> float:
    """The agent process's peak resident memory (VmHWM), MiB."""
    status = Path(f"/proc/{agent.proc.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def test_a_hostile_camera_cannot_wipe_evidence_redirect_or_collect_the_login(
        tmp_path, broker, subscriber, agents):
    cam, other = FakeCameraThread(password="cam-pass"), FakeCameraThread(password="other")
    try:
        secret = tmp_path / "camera.password"
        secret.write_text("cam-pass\n")
        devices = exit1(**{"exit1-cam": {
            "driver": "onvif", "host": "127.0.0.1", "port": cam.port, "username": "admin",
            "password_file": str(secret), "snapshot_on": ["eas.alarm"],
            "snapshot_max_bytes": "1MiB", "snapshot_keep": 1, **FAST_CAM}})
        agent = start(tmp_path, agents, config(tmp_path, broker, devices, camera="exit1-cam"))

        def alarm(then_logged: str = "") -> None:
            """A real alarm at the exit (which asks the camera for a snapshot); then wait for
            ``then_logged`` in the agent's log."""
            alarms = len(subscriber.events("eas.alarm"))
            assert agent.run_cli("sim", "gpio", "exit1-eas", "pulse").returncode == 0
            subscriber.wait_events(alarms + 1, "eas.alarm")
            pedestal_at_rest(subscriber)
            if then_logged:
                wait_until(lambda: then_logged in agent.output(), 15, then_logged)

        alarm()
        first = subscriber.wait_events(1, "camera.snapshot")[0]
        kept = Path(first["data"]["path"])
        assert kept.read_bytes().startswith(b"\xff\xd8")

        # 1 GiB, streamed without a length: reading stops at 1 MiB, nothing is saved, and the
        # evidence already there stays (snapshot_keep = 1 and its event may be unsent).
        cam.camera.snapshot_size = 1024**3
        alarm("larger than snapshot_max_bytes 1048576")
        assert peak_rss_mib(agent) < 250
        assert kept.exists() and [p.name for p in kept.parent.iterdir()] == [kept.name]
        cam.camera.snapshot_size = 0

        # A redirect to another host is not followed: the other host never sees our login.
        cam.camera.snapshot_redirect = f"http://127.0.0.1:{other.port}/snapshot.jpg"
        alarm("redirects are not followed")
        cam.camera.snapshot_redirect = None

        # A URI on a DNS name is refused; one on another private address is pinned to the
        # configured camera (a camera behind NAT reports its inner address).
        cam.camera.snapshot_uri = "http://evil.example:8080/snapshot.jpg"
        alarm("another host (evil.example:8080) than the camera")
        cam.camera.snapshot_uri = f"http://192.168.77.9:{other.port}/snapshot.jpg"
        requests = cam.camera.snapshot_requests
        alarm()
        second = subscriber.wait_events(2, "camera.snapshot")[1]
        assert cam.camera.snapshot_requests >= requests + 1
        assert Path(second["data"]["path"]).exists()
        assert other.camera.snapshot_requests == 0 and other.camera.snapshot_logins == 0
        state = json.loads(subscriber.payloads("retail/t1/state/exit1-cam")[-1])
        assert Path(state["last_snapshot"]).exists()
        assert "cam-pass" not in agent.output()
        assert agent.stop() == 0
    finally:
        cam.close()
        other.close()


def test_a_camera_answering_pulls_with_huge_or_deep_xml_is_refused(tmp_path, broker, subscriber,
                                                                    agents):
    cam = FakeCameraThread(password="cam-pass")
    try:
        secret = tmp_path / "camera.password"
        secret.write_text("cam-pass\n")
        agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, {"cam1": {
            "driver": "onvif", "host": "127.0.0.1", "port": cam.port, "username": "admin",
            "password_file": str(secret), **FAST_CAM}}))
        agents.append(agent)
        agent.start(wait_connected=True)
        subscriber.wait_events(1, "device.online")
        cam.camera.pull_padding = 300 * 1024**2  # 300 MB, streamed without a length
        cam.run(cam.camera.motion, True)
        wait_until(lambda: "answer is larger than xml_max_bytes 4194304: reading stopped"
                   in agent.output(), 20, "the size refusal")
        assert peak_rss_mib(agent) < 250
        cam.camera.pull_padding = 0
        cam.camera.pull_depth = 100_000  # was silently taken as an empty pull
        wait_until(lambda: "XML answer refused: Excessive depth in document: 256"
                   in agent.output(), 20, "the depth refusal")
        offline = subscriber.wait_events(1, "device.offline")[0]
        assert offline["data"]["reason"] == "protocol"
        cam.camera.pull_depth = 0  # a camera that behaves again is taken back
        online = len(subscriber.events("device.online"))
        subscriber.wait_events(online + 1, "device.online", timeout=20)
        cam.run(cam.camera.motion, False)
        subscriber.wait_events(1, "camera.motion", where=lambda e: e["data"]["active"] is False)
        assert agent.stop() == 0
    finally:
        cam.close()


def open_fds(agent: AgentProcess) -> int:
    return len(list(Path(f"/proc/{agent.proc.pid}/fd").iterdir()))


def test_a_control_socket_flood_is_bounded_and_the_agent_keeps_answering(tmp_path, broker,
                                                                       agents):
    cfg = config(tmp_path, broker, exit1())
    cfg["limits"] = {"control_first_line": "6s", "control_clients": 8}
    agent = start(tmp_path, agents, cfg)
    baseline = open_fds(agent)
    path = str(tmp_path / "control.sock")
    idle = []
    for _ in range(1100):  # idle clients that never send a line
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        idle.append(sock)
    try:
        flooded = time.monotonic()
        # the refused ones are answered and closed at once: the agent holds 8 (and its own)
        wait_until(lambda: open_fds(agent) <= baseline + 8 + 2, 2, "the refused closed")
        refused = idle[-1].recv(4096)
        assert b"too many control clients (limits.control_clients 8)" in refused
        busy = agent.run_cli("status")  # the slots are taken: said so
        assert busy.returncode == 3 and busy.stderr == "agent status: too many control " \
            "clients (limits.control_clients 8); try again\n", busy.stderr
        time.sleep(max(0.0, flooded + 6.5 - time.monotonic()))  # the first-line timeout
        status = agent.run_cli("status", "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["storeid"] == "t1"
        assert json.loads(status.stdout)["limits"]["control_refused"] >= 1100 - 8
        assert b"no request within limits.control_first_line 6 s" in idle[0].recv(4096)
    finally:
        for sock in idle:
            sock.close()
    # A line past the limit and a deep request: a clear answer, no unhandled error.
    for line, error in ((b'{"command": "status", "x": "' + b"y" * 70_000 + b'"}\n',
                         b"request line longer than 65536 bytes"),
                        (b'{"command": "status", "x": ' + b"[" * 100_000 + b"\n",
                         b"request line longer than 65536 bytes"),
                        (b'{"command": "status", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}\n",
                         b"nested deeper than limits.request_max_depth 16")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(line)
            assert error in sock.recv(4096)
    assert "Traceback" not in agent.output() and "Unhandled" not in agent.output()
    assert agent.run_cli("status").returncode == 0
    assert agent.stop() == 0


def test_an_output_switched_on_returns_to_its_safe_state_after_max_on(tmp_path, broker,
                                                                      subscriber, agents):
    devices = exit1(**{"exit1-testtag": {"max_on": "1s"}})
    agent = start(tmp_path, agents, config(tmp_path, broker, devices))
    result = agent.run_cli("sim", "gpio", "exit1-testtag", "on")
    assert result.returncode == 0, result.stderr
    alarm = subscriber.wait_events(1, "eas.alarm")[0]  # the coil set the pedestal off
    assert alarm["test"] is False  # nobody claimed it: an operator's doing, not a self-test

    def last_action() -> dict:
        payloads = subscriber.payloads("retail/t1/state/exit1-testtag")
        return json.loads(payloads[-1]).get("last_action", {}) if payloads else {}

    wait_until(lambda: last_action().get("action") == "max_on_end", 5, "the output back off")
    assert agent.stop() == 0


def test_state_files_are_0640_whatever_the_umask(tmp_path, broker, agents):
    agent = AgentProcess(tmp_path / "a", config(tmp_path, broker, exit1()), umask=0)
    agents.append(agent)
    agent.start(wait_connected=True)
    result = agent.run_cli("selftest")
    assert result.returncode == 0, result.stdout + result.stderr
    data = tmp_path / "data"
    files = [data / "selftest" / "exit1.json", data / "buffer.db", data / "buffer.db.seq",
             *[p for p in (data / "buffer.db-wal", data / "buffer.db-shm") if p.exists()]]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == \
        {f.name: "0o640" for f in files}
    assert agent.stop() == 0


def test_a_real_alarm_between_walk_passes_is_not_a_test(tmp_path, broker, subscriber, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1(), walk_within="10s"))
    proc = subprocess.Popen([AGENT_BIN, "--config", str(agent.config_path), "selftest",
                             "--walk"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    for line in proc.stdout:
        if ">>>" not in line:
            continue
        if "height" in line:  # each pass the technician walks
            assert agent.run_cli("sim", "gpio", "exit1-eas", "pulse").returncode == 0
        elif "Open the exit door" in line:
            # no pass is open now: an alarm at the pedestal is someone else walking out
            pedestal_at_rest(subscriber)
            assert agent.run_cli("sim", "gpio", "exit1-eas", "pulse").returncode == 0
            subscriber.wait_events(5, "eas.alarm")
            assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0
        elif "Close the exit door" in line:
            assert agent.run_cli("sim", "gpio", "exit1-door", "close").returncode == 0
            proc.stdin.write("y\n")
            proc.stdin.flush()
    assert proc.wait(30) == 0, proc.stderr.read()
    alarms = subscriber.wait_events(5, "eas.alarm")
    assert [a["test"] for a in alarms] == [True, True, True, True, False]  # tag, 3 passes, real
    assert agent.stop() == 0


def test_a_walk_window_the_control_socket_would_cut_is_a_config_error(tmp_path):
    from agent.testing import write_config

    cfg = config(tmp_path, None, exit1(), walk_within="15m")
    path = write_config(tmp_path / "agent.toml", cfg)
    result = subprocess.run([AGENT_BIN, "--config", str(path), "config", "check"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert ("exits.exit1.walk_within: got 900.0: a walk test waits this long for a pass without "
            "a word on the control socket; limits.control_idle (600 s) would stop it") \
        in result.stderr, result.stderr
