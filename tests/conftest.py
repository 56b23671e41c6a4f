"""Shared fixtures: a real mosquitto on a free loopback port, a subscriber, agent processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import AgentProcess, Broker, Subscriber


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    s = Subscriber(broker, "retail/#")
    yield s
    s.close()


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    """Register AgentProcess objects here; they are killed at the end of the test."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill()
