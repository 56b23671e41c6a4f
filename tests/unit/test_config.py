"""`agent config check`: every problem named with file, key path, value and what is accepted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import AGENT_BIN

from agent.cli import main
from agent.config import load_config

GOOD = """
[agent]
store_id = "0042"
data_dir = "data"

[mqtt]
port = 1883

[buffer]
max_bytes = "64MiB"
max_age = "7d"

[devices.exit1-replay]
driver = "replay"
file = "rec.jsonl"

[exits.exit1]
eas = "exit1-replay"
alarm_within = "3s"
walk_within = "45s"
"""


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    (tmp_path / "rec.jsonl").write_text('{"type": "door.opened"}\n')
    return tmp_path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["--config", str(path), "config", "check"])
    out = capsys.readouterr()
    return code, out.out + out.err


def write(cfg_dir: Path, text: str) -> Path:
    path = cfg_dir / "agent.toml"
    path.write_text(text)
    return path


def test_valid_file_gets_one_line_summary_and_exit_0(cfg_dir, capsys):
    code, out = check(write(cfg_dir, GOOD), capsys)
    assert code == 0
    assert out.count("\n") == 1 and "OK: store 0042, 1 device (1 replay), 1 exit," in out


def test_relative_paths_are_relative_to_the_config_file(cfg_dir):
    config = load_config(write(cfg_dir, GOOD))
    assert config.settings.agent.data_dir == cfg_dir.resolve() / "data"
    assert config.devices["exit1-replay"].config.file == cfg_dir.resolve() / "rec.jsonl"
    assert config.devices["exit1-replay"].exit == "exit1"
    assert config.settings.buffer.max_bytes == 64 * 1024**2
    assert config.settings.exits["exit1"].alarm_within == 3.0


@pytest.mark.parametrize(("edit", "expected"), [
    (("[mqtt]\nport = 1883", "[mqtt]\nport = 1883\nhots = 'x'"),
     "mqtt.hots: unknown key (a typo?)"),
    (("port = 1883", "port = 'abc'"), "mqtt.port: got 'abc': Input should be a valid integer"),
    (('max_age = "7d"', 'max_age = "7 fortnights"'), "buffer.max_age: got '7 fortnights': unknown unit"),
    (('driver = "replay"', 'driver = "nosuch"'),
     "devices.exit1-replay.driver: got 'nosuch': no driver called 'nosuch' is installed (installed:"),
    (('file = "rec.jsonl"', 'file = "rec.jsonl"\nrate = -1'),
     "devices.exit1-replay.rate: got -1: Input should be greater than or equal to 0"),
    (('file = "rec.jsonl"', 'file = "rec.jsonl"\nloops = true'),
     "devices.exit1-replay.loops: unknown key (a typo?)"),
    (('eas = "exit1-replay"', 'eas = "exit9-eas"'),
     "exits.exit1.eas: got 'exit9-eas': no such device in [devices]"),
    (('walk_within = "45s"', 'schedule = "at six"'), "exits.exit1.schedule: got 'at six'"),
    (('store_id = "0042"', ''), "agent.store_id: required key is missing"),
    (("[devices.exit1-replay]", "[devices.Exit_1]"), "devices.Exit_1: got 'Exit_1': not a device id: allowed: lower-case letters, digits, '-' and "
     "'_', starting with a letter or digit, at most 63 characters; 'agent' is reserved"),
    # values that cannot work
    (("[mqtt]\nport = 1883", "[mqtt]\nport = 1883\nhost = ''"),
     "mqtt.host: got '': must not be empty: the broker's host name or IP address"),
    (("[mqtt]\nport = 1883", "[mqtt]\nport = 1883\ntls = true\nca_file = 'ca.pem'"),
     "mqtt.ca_file: got 'ca.pem': no such file: {dir}/ca.pem (needed because tls = true)"),
    (("[mqtt]\nport = 1883", "[mqtt]\nport = 1883\ntls = true\ncert_file = 'c.pem'\nkey_file = 'k.pem'"),
     "mqtt.key_file: got 'k.pem': no such file: {dir}/k.pem (needed because tls = true)"),
    (("[mqtt]\nport = 1883", "[mqtt]\nport = 1883\npassword_file = 'secret'"),
     "mqtt.password_file: got 'secret': no such file: {dir}/secret (the file holding the broker "
     "password)"),
    (("[mqtt]\nport = 1883", "[mqtt]\nport = 1883\nreconnect_min = '2m'\nreconnect_max = '30s'"),
     "mqtt.reconnect_max: got '30s': must not be below reconnect_min (2m)"),
    (('max_bytes = "64MiB"', "max_bytes = 0"),
     "buffer.max_bytes: got 0: too small: at least 1.0KiB, room for the events of a broker outage"),
    (('max_bytes = "64MiB"', 'max_bytes = "500B"'), "buffer.max_bytes: got '500B': too small"),
    # plain words
    (('store_id = "0042"', "store_id = 42"),
     'agent.store_id: got 42: must be text: put the value in quotes, e.g. store_id = "0042"'),
    (('store_id = "0042"', 'store_id = "shop 42"'),
     "agent.store_id: got 'shop 42': allowed: letters, digits, '-' and '_', starting with a "
     "letter or digit, at most 64 characters"),
    (('alarm_within = "3s"', 'alarm_within = "-5s"'),
     "exits.exit1.alarm_within: got '-5s': a duration must be positive or 0: seconds as a number"),
])
def test_bad_config_exits_2_naming_file_and_key(cfg_dir, capsys, edit, expected):
    old, new = edit
    assert old in GOOD
    path = write(cfg_dir, GOOD.replace(old, new))
    code, out = check(path, capsys)
    assert code == 2
    assert str(path) in out
    assert expected.format(dir=cfg_dir.resolve()) in out


def test_every_problem_is_reported_at_once(cfg_dir, capsys):
    text = GOOD.replace("port = 1883", "port = 99999\ntls = 'maybe'").replace(
        'driver = "replay"', 'driver = "nosuch"')
    code, out = check(write(cfg_dir, text), capsys)
    assert code == 2
    assert "mqtt.port" in out and "mqtt.tls" in out


def test_literal_choices_are_listed(cfg_dir, capsys):
    code, out = check(write(cfg_dir, GOOD.replace('max_age = "7d"',
                                                  'max_age = "7d"\nsynchronous = "fast"')), capsys)
    assert code == 2
    assert "buffer.synchronous: got 'fast': accepted: 'full' or 'normal'" in out


def test_environment_overrides_the_file_and_is_named_in_errors(cfg_dir, capsys, monkeypatch):
    path = write(cfg_dir, GOOD)
    monkeypatch.setenv("AGENT_MQTT__PORT", "1884")
    assert load_config(path).settings.mqtt.port == 1884
    monkeypatch.setenv("AGENT_MQTT__PORT", "x")
    code, out = check(path, capsys)
    assert code == 2 and "mqtt.port (from environment AGENT_MQTT__PORT)" in out


def test_toml_syntax_error_and_missing_file(cfg_dir, capsys):
    code, out = check(write(cfg_dir, "[agent\nstore_id = 1"), capsys)
    assert code == 2 and "not valid TOML" in out and "line 1" in out
    code, out = check(cfg_dir / "nope.toml", capsys)
    assert code == 2 and "nope.toml: no such file" in out


def test_the_real_command_exits_2(cfg_dir):
    path = write(cfg_dir, GOOD.replace("port = 1883", "prot = 1883"))
    proc = subprocess.run([AGENT_BIN, "--config", str(path), "config", "check"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"{path}: mqtt.prot: unknown key" in proc.stderr


@pytest.mark.parametrize("argv", [
    ["--config", "{path}", "config", "check"],
    ["config", "--config", "{path}", "check"],
    ["config", "check", "--config", "{path}"],
    ["config", "check", "-c", "{path}"],
])
def test_config_is_accepted_before_and_after_the_subcommand(cfg_dir, capsys, argv):
    path = write(cfg_dir, GOOD)
    assert main([a.format(path=path) for a in argv]) == 0
    assert f"{path}: OK: store 0042" in capsys.readouterr().out


def test_config_after_run_status_and_drivers_check_is_parsed():
    from agent.cli import build_parser

    parser = build_parser()
    for argv in (["run", "--config", "f.toml"], ["status", "-c", "f.toml"],
                 ["drivers", "check", "replay", "--config", "f.toml"],
                 ["selftest", "--walk", "-c", "f.toml"], ["tail", "-c", "f.toml", "--raw"]):
        assert parser.parse_args(argv).config == "f.toml", argv
    # given before the subcommand, a subcommand without the option keeps it
    assert parser.parse_args(["-c", "f.toml", "status"]).config == "f.toml"


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: d, "is a directory, not a config file"),
    (lambda d: (d / "bin.toml").write_bytes(b"[agent]\nstore_id = '\xff\xfe'\n") and d / "bin.toml",
     "not a text file (TOML is UTF-8 text)"),
])
def test_a_directory_or_binary_file_as_config_is_one_line_and_exit_2(cfg_dir, capsys, make,
                                                                       expected):
    path = make(cfg_dir)
    code, out = check(path, capsys)
    assert code == 2
    assert out == f"configuration error: {path}: {expected}" + out.split(expected, 1)[1]
    assert out.count("\n") == 1 and "Traceback" not in out


def test_tls_files_are_checked_only_with_tls_and_existing_ones_pass(cfg_dir, capsys):
    (cfg_dir / "ca.pem").write_text("x")
    (cfg_dir / "secret").write_text("pw\n")
    text = GOOD.replace("[mqtt]\nport = 1883", "[mqtt]\nport = 1883\ntls = true\n"
                        "ca_file = 'ca.pem'\npassword_file = 'secret'")
    assert check(write(cfg_dir, text), capsys)[0] == 0
    unused = GOOD.replace("[mqtt]\nport = 1883", "[mqtt]\nport = 1883\nca_file = 'gone.pem'")
    assert check(write(cfg_dir, unused), capsys)[0] == 0  # tls off: the file is not used
