"""pytest plugin (``pytest11`` entry point): driver-test fixtures and the installed drivers in the header.

Installed with the agent, so a vendor's test suite has it without any conftest::

    async def test_alarm(driver_harness):
        async with driver_harness("acme_eas", {"simulate": True}) as h:
            await h.driver.simulate("alarm", {})
            await h.wait_for("eas.alarm")

The conformance checks are ``agent.conformance.DriverConformance``; subclass it in a test module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def pytest_report_header(config: pytest.Config) -> list[str]:
    """One line: the drivers this environment would load (what the tests run against)."""
    from agent.registry import discover

    drivers = discover()
    shown = ", ".join(f"{name} {cls.version}" if (cls := info.load()) else f"{name} (not loaded)"
                      for name, info in sorted(drivers.items()))
    return [f"store-edge-agent drivers: {shown or 'none'}"]


@pytest.fixture
def driver_harness(tmp_path: Path) -> Callable[..., Any]:
    """``driver_harness(driver, options, **kw)``: an ``agent.testing.DriverHarness`` in its own
    temporary directory (use it with ``async with``)."""
    from agent.testing import DriverHarness

    made = 0

    def make(driver: str, options: dict[str, Any], **kwargs: Any) -> DriverHarness:
        nonlocal made
        made += 1
        workdir = tmp_path / f"harness{made}"
        workdir.mkdir()
        return DriverHarness(driver, options, tmp_path=workdir, **kwargs)

    return make
