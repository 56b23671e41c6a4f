"""The consumer's tests against the real agent use the agent repository's test components: a real
mosquitto, the real `agent run` (tests/support.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_TESTS = Path(__file__).resolve().parents[3] / "tests"
for folder in (REPO_TESTS, REPO_TESTS / "integration"):  # support.py; the simulated exit
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from support import AgentProcess, Broker  # noqa: E402


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Broker]:
    """Keeps sessions over its own restarts, as a central broker does."""
    broker = Broker(tmp_path / "broker", persistence=True).start()
    yield broker
    broker.stop()


@pytest.fixture
def agent_processes() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill()
