"""config.example.toml: valid as shipped and as scripts/install writes it, and complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.config import (
    AgentSection,
    BufferSection,
    ExitSection,
    GpioSection,
    HomeAssistantSection,
    LimitsSection,
    MetricsSection,
    MqttSection,
    Settings,
    WebSection,
    load_config,
)
from agent.errors import ConfigError
from agent.testing import write_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def test_the_example_is_a_valid_config():
    config = load_config(EXAMPLE)
    assert config.settings.agent.store_id == "0042"
    assert config.settings.metrics.address is None  # metrics are off unless asked for
    assert [d.driver.name for d in config.devices.values()] == ["replay"]


def test_the_installed_config_has_the_demo_device_cut_out_and_is_valid(tmp_path):
    # The same cut scripts/install makes (between the "# >>> demo" and "# <<< demo" lines).
    text = EXAMPLE.read_text()
    installed = re.sub(r"^# >>> demo.*?^# <<< demo\n", "", text, flags=re.S | re.M)
    assert "replay" not in installed
    path = tmp_path / "agent.toml"
    path.write_text(installed)
    assert load_config(path).devices == {}


@pytest.mark.parametrize("section", sorted(Settings.model_fields))
def test_every_section_is_in_the_example(section):
    assert re.search(rf"^#? ?\[{section}[.\]]", EXAMPLE.read_text(), re.M), section


@pytest.mark.parametrize(("section", "model"), [
    ("agent", AgentSection), ("gpio", GpioSection), ("mqtt", MqttSection),
    ("buffer", BufferSection), ("metrics", MetricsSection), ("exits", ExitSection),
    ("web", WebSection),
    ("homeassistant", HomeAssistantSection),
    ("limits", LimitsSection),
])
def test_every_key_is_in_the_example(section, model):
    text = EXAMPLE.read_text()
    missing = [k for k in model.model_fields if not re.search(rf"^#? ?{k} = ", text, re.M)]
    assert not missing, f"[{section}] keys missing from config.example.toml: {missing}"


@pytest.mark.parametrize(("listen", "address"), [
    ("127.0.0.1:9108", ("127.0.0.1", 9108)),
    ("[::1]:9108", ("::1", 9108)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),  # any free port
    ("", None),
])
def test_metrics_listen_accepts_host_and_port(tmp_path, listen, address):
    path = write_config(tmp_path / "a.toml", {"agent": {"store_id": "s"},
                                              "metrics": {"listen": listen}})
    assert load_config(path).settings.metrics.address == address


@pytest.mark.parametrize("listen", ["9108", "localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_a_bad_metrics_listen_names_the_key(tmp_path, listen):
    path = write_config(tmp_path / "a.toml", {"agent": {"store_id": "s"},
                                              "metrics": {"listen": listen}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"metrics.listen: got {listen!r}: expected HOST:PORT" in str(err.value)


@pytest.mark.parametrize(("web", "problem"), [
    ({"listen": "8443"}, "web.listen: got '8443': expected HOST:PORT"),
    ({"url": "http://pi:8443"}, "web.url: got 'http://pi:8443': expected https://HOST[:PORT]"),
    ({"cert_file": "web.crt"}, "web: got {'cert_file': 'web.crt'}: cert_file and key_file go together"),
])
def test_a_bad_web_section_names_the_key(tmp_path, web, problem):
    path = write_config(tmp_path / "a.toml", {"agent": {"store_id": "s"}, "web": web})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert problem in str(err.value)


def test_the_web_page_is_off_by_default(tmp_path):
    path = write_config(tmp_path / "a.toml", {"agent": {"store_id": "s"}})
    assert load_config(path).settings.web.address is None
