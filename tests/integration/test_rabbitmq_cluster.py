"""The agent against a two-node RabbitMQ cluster (MQTT 3.1.1): the node in use stops, the agent
moves to the other, and a subscriber there sees every seq.

RabbitMQ 3.10 (Debian bookworm) is installed by apt when missing; the test is skipped, saying
why, only when that install is impossible. Each node boots in ~17 s; both boot at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from support import (
    AgentProcess,
    Subscriber,
    agent_config,
    free_port,
    start_failover_agent,
    wait_until,
    write_jsonl,
)

pytestmark = pytest.mark.slow

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
"""The scripts themselves: /usr/sbin/rabbitmq-server would switch to user rabbitmq."""


def ensure_rabbitmq() -> None:
    if (RABBIT_BIN / "rabbitmq-server").exists():
        return
    sudo = [] if os.getuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "rabbitmq-server"], env=env,
                       check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"rabbitmq-server is not installed and apt-get could not install it: {err}")


class RabbitNode:
    """One RabbitMQ node of the test cluster, with the MQTT plugin, as the current user."""

    def __init__(self, workdir: Path, name: str, env: dict[str, str]) -> None:
        self.name = f"{name}@localhost"
        self.host = "127.0.0.1"
        self.port = free_port()
        base = workdir / name
        base.mkdir(parents=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {free_port()}\n"
            f"mqtt.listeners.tcp.default = {self.port}\n"
            "mqtt.allow_anonymous = true\n"
            "loopback_users = none\n")
        (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.env = {**env, "RABBITMQ_NODENAME": self.name,
                    "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                    "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(base / "log"),
                    "RABBITMQ_DIST_PORT": str(free_port())}
        self.log = base / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, *args],
                                env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} on {self.name}: "
                                 f"{result.stdout}{result.stderr}\n{self.log.read_text()[-3000:]}")
        return result.stdout

    def wait_booted(self) -> None:
        """Until the node says it started (await_startup fails at once on a node still booting)."""
        wait_until(lambda: "Starting broker... completed" in self.log.read_text()
                   or (self.proc is not None and self.proc.poll() is not None), 90,
                   f"RabbitMQ node {self.name} to boot")
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        self.ctl("await_startup", "--timeout", "60", timeout=70)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.ctl("stop", timeout=30)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def rabbit_nodes(tmp_path: Path, *names: str) -> Iterator[tuple[RabbitNode, ...]]:
    """Nodes booted side by side (not clustered), stopped afterwards with their epmd."""
    ensure_rabbitmq()
    home = tmp_path / "rabbit-home"  # the shared cookie, for the nodes and rabbitmqctl
    home.mkdir()
    cookie = home / ".erlang.cookie"
    cookie.write_text("STOREEDGEAGENTFLEETTEST")
    cookie.chmod(0o400)
    epmd_port = free_port()  # our own epmd, so that nothing stays behind on the shared one
    env = {**os.environ, "HOME": str(home), "ERL_EPMD_PORT": str(epmd_port)}
    nodes = tuple(RabbitNode(tmp_path, name, env) for name in names)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_booted()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        epmd = shutil.which("epmd")
        if epmd:
            subprocess.run([epmd, "-port", str(epmd_port), "-kill"], env=env,
                           capture_output=True, check=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RabbitNode, ...]]:
    with rabbit_nodes(tmp_path, "fleet1", "fleet2") as nodes:
        second = nodes[1]
        second.ctl("stop_app")
        second.ctl("join_cluster", nodes[0].name)
        second.ctl("start_app")
        second.ctl("await_startup", "--timeout", "60", timeout=70)
        yield nodes


def test_stopping_the_node_in_use_moves_the_agent_with_no_seq_gap(tmp_path, cluster, agents):
    node1, node2 = cluster
    sub = Subscriber(node2, "retail/#", protocol=paho.MQTTv311)
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "door.opened", "data": {}}])
    try:
        agent = start_failover_agent(
            tmp_path, [node1, node2], {"replay1": {"driver": "replay", "file": str(rec),
                                                   "rate": 100, "loop": True, "count": 2000}},
            agents, mqtt={"protocol": "3.1.1"})

        def replayed() -> list[int]:
            return sorted({e["seq"] for e in sub.events() if e["type"] == "door.opened"})

        wait_until(lambda: len(replayed()) >= 300, 30, "events through node 1 at node 2")
        started = time.monotonic()
        node1.stop()
        wait_until(lambda: f"connected to broker 127.0.0.1:{node2.port}" in agent.output(), 30,
                   "the agent on node 2")
        moved_after = time.monotonic() - started
        wait_until(lambda: len(replayed()) >= 2000, 60, "all 2000 events at node 2")
        assert agent.stop() == 0
        sub.sync()
        seqs = sorted({e["seq"] for e in sub.events()})
        assert seqs == list(range(1, max(seqs) + 1)), "a seq is missing at the surviving node"
        assert "did not echo" not in agent.output()  # the 3.1.1 ACL check: no false alarm
        print(f"moved to node 2 {moved_after:.1f} s after node 1 was told to stop")
    finally:
        sub.close()


def test_topic_permissions_refusal_is_named_and_not_retried_in_a_loop(tmp_path, agents):
    # RabbitMQ 3.10 has no MQTT 5 reason codes: it closes the connection when its topic
    # permissions refuse a subscription (or a publish), right after accepting it.
    with rabbit_nodes(tmp_path, "acl1") as (node,):
        node.ctl("add_user", "t1", "s1")
        node.ctl("set_permissions", "-p", "/", "t1", ".*", ".*", ".*")
        node.ctl("set_topic_permissions", "-p", "/", "t1", "amq.topic",
                 r"^retail\.{username}\..*",
                 r"^retail\.{username}\.agent\.(request\..*|availability)$")
        (tmp_path / "pw").write_text("s1\n")
        cfg = agent_config(tmp_path, None, {}, mqtt={
            "protocol": "3.1.1", "username": "t1", "password_file": str(tmp_path / "pw"),
            "reconnect_min": "1s", "reconnect_max": "8s"})
        cfg["mqtt"]["port"] = node.port
        cfg["agent"]["store_id"] = "t2"  # another store's id
        agent = AgentProcess(tmp_path / "a", cfg)
        agents.append(agent)
        agent.start(wait_connected=True, timeout=30)
        time.sleep(12)
        out = agent.output()
        assert "s after it accepted it (a broker closes at once when its access control " \
            "refuses a subscription or a publish: check agent.store_id" in out
        # growing backoff: a handful of attempts in 12 s, not one every half second
        assert 2 <= out.count("connected to broker") <= 10, out[-3000:]
