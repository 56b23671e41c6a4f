"""The web page of the real agent over HTTPS: pairing, roles, CSRF, revoking, TLS, live events,
self-tests and walk tests driven by the page (mock pins, real broker, real `agent` commands)."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support import AgentProcess, Broker, Subscriber, make_tls, wait_until
from test_selftest import config, exit1
from websupport import WebClient, pair_link, web_config, web_status


@pytest.fixture
def agent(tmp_path: Path, broker: Broker, agents: list[AgentProcess]) -> AgentProcess:
    cfg = web_config(config(tmp_path, broker, exit1(), walk_within="30s"))
    proc = AgentProcess(tmp_path / "a", cfg)
    agents.append(proc)
    proc.start(wait_connected=True)
    return proc


def phone(agent: AgentProcess, role: str = "viewer") -> WebClient:
    """A phone paired as ``role``."""
    client = WebClient(web_status(agent)["url"], cert(agent))
    assert client.pair(pair_link(agent, role)).status == 200
    return client


def cert(agent: AgentProcess) -> Path:
    return agent.dir.parent / "data" / "web" / "web.crt"


def test_tls_is_on_with_the_certificate_whose_fingerprint_agent_status_shows(agent):
    web = web_status(agent)
    host, port = web["url"].removeprefix("https://").split(":")
    served = ssl.get_server_certificate((host, int(port)))
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(served)).hexdigest().upper()
    assert web["fingerprint_sha256"].replace(":", "") == digest
    assert web["self_signed"] is True
    assert f"certificate SHA-256 {web['fingerprint_sha256']} (self-signed)" in \
        agent.run_cli("status").stdout
    # Plain HTTP gets no page.
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(100)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/")
    # The page and its assets come from the agent (no CDN), with a strict policy.
    page = WebClient(web["url"], cert(agent)).get("/")
    assert page.status == 200 and b"/static/app.js" in page.body and b"http" not in page.body
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    # The certificate is made once: a restart serves the same one.
    agent.stop()
    agent.start(wait_connected=True)
    assert web_status(agent)["fingerprint_sha256"] == web["fingerprint_sha256"]


def test_pairing_gives_a_secure_session_once_and_a_viewer_is_refused_a_selftest(agent):
    link = pair_link(agent, "viewer")
    client = WebClient(web_status(agent)["url"], cert(agent))
    assert client.get("/api/store").status == 401  # not paired yet
    reply = client.pair(link)
    assert reply.status == 200 and reply.json()["role"] == "viewer"
    attrs = [a.strip().lower() for a in client.set_cookie.split(";")]
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= set(attrs)
    # The link is one-time.
    assert WebClient(web_status(agent)["url"], cert(agent)).pair(link).status == 403

    store = client.get("/api/store").json()
    assert store["exits"]["exit1"]["devices"]["eas"] == "exit1-eas"
    assert set(store["status"]["devices"]) == {"exit1-door", "exit1-eas", "exit1-testtag"}

    refused = client.post("/api/runs", {"exits": ["exit1"]})
    assert refused.status == 403 and "viewer cannot start a self-test" in refused.json()["error"]
    session = reply.json()["session"]
    log = agent.output()
    assert f"web session {session} (viewer) paired from 127.0.0.1" in log
    assert f"web session {session} (viewer): self-test of exit1 refused" in log
    assert "self-test of exit1 (" not in log  # nothing ran
    # No secret in the log: neither the pairing code, the cookie nor the CSRF token.
    for secret in (link.split("#pair=")[1], client.cookie, client.csrf):
        assert secret and secret not in log


def test_csrf_token_is_required_and_an_operator_runs_a_selftest_from_the_page(
        agent, broker, tmp_path):
    sub = Subscriber(broker, "retail/t1/agent/selftest/#")
    try:
        client = phone(agent, "operator")
        no_token = client.post("/api/runs", {"exits": ["exit1"]}, csrf=False)
        assert no_token.status == 403 and "CSRF" in no_token.json()["error"]
        wrong = client.request("POST", "/api/runs", {"exits": ["exit1"]},
                               headers={"X-CSRF-Token": "x" * 32}, csrf=False)
        assert wrong.status == 403
        assert "self-test of exit1 (" not in agent.output()  # nothing ran

        run = client.post("/api/runs", {"exits": ["exit1"]}).json()
        items = list(client.stream(f"/api/runs/{run['id']}/stream"))
        steps = {i["step"]: i for i in items if i.get("kind") == "step"}
        assert steps["alarm"]["result"] == "pass" and steps["alarm"]["latency_ms"] > 0
        assert items[-1]["kind"] == "end" and items[-1]["run"]["results"] == {"exit1": "pass"}

        report = client.get(f"/api/runs/{run['id']}/report.json")
        assert report.headers["Content-Disposition"].startswith("attachment")
        assert report.json()["result"] == "pass" and report.json()["trigger"] == "web"
        junit = ET.fromstring(client.get(f"/api/runs/{run['id']}/report.xml").body)
        assert junit.find("testsuite").get("failures") == "0"
        # Where CLI reports go: data_dir and the retained topic.
        kept = json.loads((tmp_path / "data" / "selftest" / "exit1.json").read_text())
        assert kept["run_id"] == report.json()["run_id"]
        retained = wait_until(lambda: sub.payloads("retail/t1/agent/selftest/exit1"), 10,
                              "the retained report")
        assert json.loads(retained[-1])["run_id"] == kept["run_id"]
    finally:
        sub.close()


def test_a_revoked_session_is_refused(agent):
    client = phone(agent, "operator")
    session = client.get("/api/me").json()["session"]
    listed = agent.run_cli("web", "sessions", "--json")
    assert [s["id"] for s in json.loads(listed.stdout)] == [session]
    assert "operator" in agent.run_cli("web", "sessions").stdout
    revoked = agent.run_cli("web", "revoke", session)
    assert revoked.returncode == 0 and f"session {session} (operator) revoked" in revoked.stdout
    assert client.get("/api/store").status == 401
    assert client.post("/api/runs", {"exits": ["exit1"]}).status == 401
    unknown = agent.run_cli("web", "revoke", "nosuch")
    assert unknown.returncode == 2 and "no session 'nosuch'" in unknown.stderr


def test_wrong_pairing_codes_are_rate_limited(agent):
    client = WebClient(web_status(agent)["url"], cert(agent))
    for _ in range(10):
        assert client.post("/api/pair", {"code": "guess"}).status == 403
    good = pair_link(agent, "viewer")
    limited = client.pair(good)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
    assert "too many pairing attempts" in limited.json()["error"]


def test_live_events_are_filtered_by_exit_and_test_events_marked(agent):
    client = phone(agent, "operator")
    events = client.stream("/api/events?exit=exit1")
    assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0
    first = next(events)
    assert first["type"] == "door.opened" and first["subject"] == "exit1" and not first["test"]
    assert agent.run_cli("sim", "gpio", "exit1-door", "close").returncode == 0
    assert next(events)["type"] == "door.closed"
    run = client.post("/api/runs", {"exits": ["exit1"]}).json()
    watch = client.stream(f"/api/runs/{run['id']}/stream")
    seen = []
    while not any(e["type"] == "eas.alarm" for e in seen):
        seen.append(next(events))
    alarm = next(e for e in seen if e["type"] == "eas.alarm")
    assert alarm["test"] is True and alarm["deviceid"] == "exit1-eas"
    assert all(e["subject"] == "exit1" for e in seen)
    list(watch)
    events.close()
    assert client.get("/api/events?exit=nosuch").status == 404


def test_leaving_the_page_cancels_a_walk_test_like_a_lost_cli_session(agent, tmp_path):
    client = phone(agent, "operator")
    run = client.post("/api/runs", {"exits": ["exit1"], "walk": True}).json()
    items = client.stream(f"/api/runs/{run['id']}/stream")
    for item in items:
        if item.get("kind") == "prompt":
            assert "test tag" in item["text"]
            break
    items.close()  # the phone leaves the page
    left = time.monotonic()
    report = wait_until(lambda: (r := client.get(f"/api/runs/{run['id']}/report.json")).status
                        == 200 and r.json(), 20, "the walk test to be cancelled")
    assert time.monotonic() - left < 15  # GRACE (5 s), not the 30 s walk window
    steps = {s["step"]: s for s in report["steps"]}
    assert "walk low" not in steps
    assert steps["aborted"]["result"] == "fail" and report["result"] == "fail"
    assert steps["restore"]["result"] == "pass"
    assert f"run {run['id']} of exit1: its page went away; cancelling it" in agent.output()
    assert json.loads((tmp_path / "data" / "selftest" / "exit1.json").read_text())[
        "run_id"] == report["run_id"]


def test_web_commands_say_when_the_page_is_off(tmp_path, broker, agents):
    proc = AgentProcess(tmp_path / "a", config(tmp_path, broker, exit1()))
    agents.append(proc)
    proc.start()
    result = proc.run_cli("web", "pair")
    assert result.returncode == 2 and "the web page is off: set [web] listen" in result.stderr


def test_a_step_that_cannot_be_done_is_noted_with_its_reason_in_the_report(agent):
    client = phone(agent, "operator")
    run = client.post("/api/runs", {"exits": ["exit1"], "walk": True}).json()
    items = client.stream(f"/api/runs/{run['id']}/stream")
    assert client.post(f"/api/runs/{run['id']}/note", {"reason": "x"}).status == 409  # no prompt
    prompt = next(i for i in items if i.get("kind") == "prompt")
    assert client.post(f"/api/runs/{run['id']}/note", {"reason": " "}).status == 400
    noted = client.post(f"/api/runs/{run['id']}/note", {"reason": "exit blocked by a pallet"})
    assert noted.status == 200
    noted_at = time.monotonic()
    assert next(items) == {"kind": "note", "exit": "exit1", "instruction": prompt["text"],
                           "reason": "exit blocked by a pallet"}
    step = next(i for i in items if i.get("kind") == "step")  # skipped, not waited out
    assert time.monotonic() - noted_at < 5, "the step's window is 30 s"
    assert step["step"] == "walk low" and step["result"] == "skip"
    assert step["detail"] == "not done: exit blocked by a pallet"
    following = next(i for i in items if i.get("kind") == "prompt")
    assert "MIDDLE height" in following["text"], "the walk goes on"
    assert client.post(f"/api/runs/{run['id']}/cancel", {}).status == 200  # "Stop"
    assert [i for i in items if i.get("kind") == "end"]
    report = client.get(f"/api/runs/{run['id']}/report.json").json()
    assert report["notes"] == [{"instruction": prompt["text"],
                                "reason": "exit blocked by a pallet"}]
    assert "cannot do" in agent.output() and "exit blocked by a pallet" in agent.output()


@pytest.mark.slow
def test_a_step_the_officer_cannot_do_leaves_no_claim_behind(agent, broker):
    """The walk's claims mark the device's next events as the test's; once the officer says a
    step cannot be done, what the device reports is real again, not hidden as a test."""
    sub = Subscriber(broker, "retail/t1/events/#")
    try:
        client = phone(agent, "operator")
        run = client.post("/api/runs", {"exits": ["exit1"], "walk": True}).json()
        items = client.stream(f"/api/runs/{run['id']}/stream")
        steps: list[dict] = []

        def until(kind: str) -> dict:
            for item in items:
                steps.extend([item] if item.get("kind") == "step" else [])
                if item.get("kind") == kind:
                    return item
            raise AssertionError(f"the run ended before a {kind}")

        for _ in range(4):  # the three heights, then "Open the exit door."
            prompt = until("prompt")
            assert client.post(f"/api/runs/{run['id']}/note",
                               {"reason": "exit blocked"}).status == 200
        assert prompt["text"].startswith("Open the exit door")
        until("question")  # the sounder question, which claims nothing
        assert [(s["step"], s["result"]) for s in steps[-2:]] == [
            ("walk door opened", "skip"), ("walk door closed", "skip")]
        assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0
        (opened,) = sub.wait_events(1, "door.opened")
        assert opened["test"] is False, "a real door opening, not the walk's"
        assert client.post(f"/api/runs/{run['id']}/cancel", {}).status == 200
    finally:
        sub.close()


def test_open_pages_do_not_hold_up_a_stop(agent):
    client = phone(agent, "viewer")
    events = client.stream("/api/events")
    assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0
    next(events)
    started = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - started < 10, "the open page held the agent's stop"
    for _ in events:  # what was sent before; then the stream ends (a hang would time out)
        pass


def test_a_configured_certificate_is_served_and_a_bad_one_named(tmp_path, broker, agents):
    tls = make_tls(tmp_path / "tls")
    cfg = web_config(config(tmp_path, broker, exit1()))
    cfg["web"].update(cert_file=str(tls["cert"]), key_file=str(tls["key"]))
    good = AgentProcess(tmp_path / "a", cfg)
    agents.append(good)
    good.start()
    web = web_status(good)
    assert web["self_signed"] is False
    client = WebClient(web["url"], tls["ca"])  # verified against the store's own CA
    assert client.get("/").status == 200
    assert not (tmp_path / "data" / "web").exists()  # nothing self-signed was made
    good.stop()

    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello\n")
    cfg["web"].update(cert_file=str(bad))
    broken = AgentProcess(tmp_path / "b", cfg)
    agents.append(broken)
    broken.start()
    line = wait_until(lambda: next((ln for ln in broken.output().splitlines()
                                    if "web page on 127.0.0.1:0 unavailable" in ln), None), 10,
                      "the web page's error")
    assert f"web.cert_file {bad}" in line
    status = json.loads(broken.run_cli("status", "--json").stdout)
    assert "web" not in status and status["devices"]  # the agent runs on without the page


def test_leaving_a_floor_walk_does_not_start_the_next_exit(tmp_path, broker, agents):
    devices = {**exit1(),
               "exit2-door": {"driver": "gpio_door", "pin": "GPIO23", "held_open_after": "0"},
               "exit2-eas": {"driver": "gpio_input", "pin": "GPIO22", "pull": "up",
                             "on_active": {"event": "eas.alarm",
                                           "data": {"direction": "unknown"}}}}
    cfg = web_config(config(tmp_path, broker, devices, walk_within="30s"))
    cfg["exits"]["exit2"] = {"eas": "exit2-eas", "door": "exit2-door", "walk_within": "30s"}
    proc = AgentProcess(tmp_path / "a", cfg)
    agents.append(proc)
    proc.start(wait_connected=True)
    client = phone(proc, "operator")
    run = client.post("/api/runs", {"exits": [], "walk": True}).json()
    assert run["exits"] == ["exit1", "exit2"]  # [] is every exit
    items = client.stream(f"/api/runs/{run['id']}/stream")
    next(i for i in items if i.get("kind") == "prompt")
    items.close()
    report = wait_until(lambda: (r := client.get(f"/api/runs/{run['id']}/report.json")).status
                        == 200 and r.json(), 20, "the walk to end")
    assert report["exit"] == "exit1" and report["result"] == "fail"  # one report: exit1's
    assert "self-test of exit2" not in proc.output()
    assert "exit2" not in client.get("/api/store").json()["status"]["last_selftest"]
