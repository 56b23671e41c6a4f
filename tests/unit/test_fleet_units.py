"""Fleet settings without a broker: `mqtt.hosts` validation, broker order, reconnect jitter,
credential files and certificate expiry."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest
from support import make_tls

from agent.backoff import FULL, Backoff
from agent.cli import main
from agent.config import MqttSection
from agent.credentials import CredentialWatch, cert_days_left
from agent.mqtt import broker_order

BASE = '[agent]\nstore_id = "0042"\ndata_dir = "data"\n\n[mqtt]\n'


def check(tmp_path: Path, mqtt: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + mqtt)
    code = main(["--config", str(path), "config", "check"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_hosts_are_listed_in_the_summary(tmp_path, capsys):
    code, out = check(tmp_path, 'hosts = ["b1.example:8883", "[2001:db8::1]:8883"]\n', capsys)
    assert code == 0, out
    assert "broker b1.example:8883, 2001:db8::1:8883" in out


@pytest.mark.parametrize(("mqtt", "expected"), [
    ('hosts = ["b1.example"]\n', "mqtt.hosts: got ['b1.example']: entry 0 'b1.example': expected "
     "HOST:PORT"),
    ('hosts = ["a:1883", "b:70000"]\n', "entry 1 'b:70000': expected HOST:PORT"),
    ('hosts = ["a:1883", "a:1883"]\n', "mqtt.hosts: got ['a:1883', 'a:1883']: a broker is "
     "listed twice"),
    ('hosts = ["a:1883"]\nhost = "b"\n', "set either mqtt.hosts or mqtt.host/mqtt.port, not both"),
    ('hosts = ["a:1883"]\nhosts_order = "random"\n',
     "mqtt.hosts_order: got 'random': accepted: 'ordered' or 'shuffled'"),
])
def test_bad_hosts_exit_2_naming_the_key(tmp_path, capsys, mqtt, expected):
    code, out = check(tmp_path, mqtt, capsys)
    assert code == 2
    assert str(tmp_path / "agent.toml") in out
    assert expected in out


def test_shuffled_order_is_stable_per_agent_and_spreads_a_fleet():
    hosts = [f"b{i}:1883" for i in range(3)]
    mqtt = MqttSection(hosts=hosts, hosts_order="shuffled")
    assert broker_order(mqtt, "store-1") == broker_order(mqtt, "store-1")
    firsts = [broker_order(mqtt, f"store-{i}")[0][0] for i in range(3000)]
    assert {h: firsts.count(h) for h in ("b0", "b1", "b2")} == pytest.approx(
        {"b0": 1000, "b1": 1000, "b2": 1000}, abs=120)
    assert broker_order(MqttSection(hosts=hosts), "store-1") == [("b0", 1883), ("b1", 1883),
                                                                  ("b2", 1883)]


def test_full_jitter_spreads_from_zero_to_the_cap_and_the_first_attempt_too():
    first = [Backoff(initial=1.0, cap=60.0, jitter=FULL).next() for _ in range(5000)]
    assert min(first) < 0.05 and max(first) <= 1.0 and statistics.mean(first) == pytest.approx(
        0.5, abs=0.05)
    old_first = [Backoff(initial=1.0, cap=60.0).next() for _ in range(5000)]
    assert min(old_first) >= 0.8  # today's +-20 %: every agent retries within 0.8-1.2 s
    capped = Backoff(initial=1.0, cap=60.0, jitter=FULL)
    capped.attempts = 20
    delays = [capped.next() for _ in range(5000)]
    assert min(delays) < 1.0 and max(delays) <= 60.0 and statistics.pstdev(delays) > 15


def test_credential_watch_sees_a_rename_over_an_edit_and_a_deletion(tmp_path):
    ca, pw = tmp_path / "ca.crt", tmp_path / "pw"
    ca.write_text("ca")
    pw.write_text("secret")
    watch = CredentialWatch(MqttSection(tls=True, ca_file=ca, username="u", password_file=pw),
                            interval=0.0)
    assert watch.changed() == []
    new = tmp_path / "pw.new"
    new.write_text("secret")  # same size, same content: only the inode differs
    os.replace(new, pw)
    assert watch.changed() == [pw]
    assert watch.changed() == []
    ca.write_text("ca2")
    assert watch.changed() == [ca]
    ca.unlink()
    assert watch.changed() == [ca]


def test_client_certificate_days_left_from_the_file(tmp_path):
    tls = make_tls(tmp_path, client=True)  # valid for 2 days
    days = cert_days_left(tls["client_cert"])
    assert days is not None and 1.9 < days <= 2.0
    assert cert_days_left(tmp_path / "missing.crt") is None
