"""Every built-in driver's sample.toml is a valid config, and its README shows it as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.registry import discover

DRIVERS = Path(__file__).resolve().parents[2] / "drivers"
SAMPLES = sorted(DRIVERS.glob("*/sample.toml"))


def test_every_built_in_driver_has_a_sample():
    built_in = {i.name for i in discover().values() if i.package == "store-edge-agent"}
    assert built_in and built_in <= {p.parent.name for p in SAMPLES}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.parent.name)
def test_sample_config_is_valid_and_in_the_readme(sample):
    config = load_config(sample)
    assert sample.parent.name in {d.driver.name for d in config.devices.values()}
    readme = (sample.parent / "README.md").read_text()
    assert f"```toml\n{sample.read_text()}```" in readme, "README.md must show sample.toml as is"
