"""The README's configuration reference names every key the code accepts."""

from __future__ import annotations

from pathlib import Path

from agent.config import (
    AgentSection,
    BufferSection,
    ExitSection,
    GpioSection,
    MqttSection,
    WebSection,
)

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_config_key_is_documented():
    missing = []
    for section, model in (("agent", AgentSection), ("gpio", GpioSection), ("mqtt", MqttSection),
                           ("buffer", BufferSection), ("web", WebSection)):
        missing += [f"{section}.{k}" for k in model.model_fields if f"{section}.{k}" not in README]
    missing += [f"exits.*.{k}" for k in ExitSection.model_fields if f".{k}`" not in README]
    assert not missing, f"README's configuration table lacks {missing}"


def test_readme_starts_with_the_two_commands():
    block = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[0] for line in block] == ["scripts/demo", "scripts/test"]
