"""Real components for the tests: a mosquitto broker, a subscriber, and the real `agent` process."""

from __future__ import annotations

import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from jsonschema import Draft202012Validator
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.testing import write_config

AGENT_BIN = str(Path(sys.executable).with_name("agent"))
MOSQUITTO = shutil.which("mosquitto", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
"""Debian installs it in /usr/sbin, which is not on a normal user's PATH."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_port() -> int:
    """A free port below the range the kernel hands out as source ports, for a server that
    restarts on the same port: on a port from that range, a client retrying while the server
    is down can get it as its own source port and connect to itself (TCP simultaneous open),
    and the restarted server cannot bind it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(low, 10001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def metrics_port(log: str) -> int | None:
    """The port an agent's metrics endpoint serves on, from its log (``listen`` port 0 lets the
    agent take a free one: no other process can take it between picking and binding)."""
    match = re.search(r"metrics on http://\S+:(\d+)/metrics", log)
    return int(match.group(1)) if match else None


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy; return its value or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Broker:
    """A real mosquitto on a free loopback port, restartable on the same port."""

    def __init__(self, workdir: Path, *, password: dict[str, str] | None = None,
                 tls: dict[str, Any] | None = None, persistence: bool = False,
                 acl: str | None = None, port: int | None = None) -> None:
        """``acl``: the text of a mosquitto ``acl_file``; ``port``: default, a free one."""
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or server_port()
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if password else 'true'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "log_type error",
            "log_type warning",
        ]
        if password:
            pwfile = self.dir / "passwd"
            pwfile.write_text("")
            for user, secret in password.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, secret], check=True,
                               capture_output=True)
            lines.append(f"password_file {pwfile}")
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            lines.append(f"acl_file {self.dir / 'acl'}")
            # mosquitto 2.0.11 with max_queued_messages 0 resets an MQTT 5 connection right after
            # the PUBACK of a denied QoS 1 publish, instead of carrying on
            lines[lines.index("max_queued_messages 0")] = "max_queued_messages 1000"
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
            if tls.get("require_certificate"):
                lines.append("require_certificate true")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = self.dir / "mosquitto.log"

    def start(self) -> Broker:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex((self.host, self.port)) == 0:
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


_event_validator: Draft202012Validator | None = None


def event_validator() -> Draft202012Validator:
    """The published JSON Schema (``agent schema``, run once per session) as a 2020-12 validator."""
    global _event_validator
    if _event_validator is None:
        schema = json.loads(subprocess.run([AGENT_BIN, "schema"], capture_output=True, text=True,
                                           check=True).stdout)
        Draft202012Validator.check_schema(schema)
        _event_validator = Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return _event_validator


def schema_problems(payload: bytes) -> list[str]:
    """Why ``payload`` is not a valid event by ``agent schema`` (empty when it is)."""
    try:
        event = json.loads(payload)
    except ValueError as err:
        return [f"not JSON: {err}"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '(event)'}: {e.message}"
            for e in event_validator().iter_errors(event)]


class Subscriber:
    """A paho client that records every message under ``topic`` (thread-safe)."""

    def __init__(self, broker: Broker, topic: str = "#", *, username: str | None = None,
                 password: str | None = None, tls_ca: Path | None = None,
                 client_cert: tuple[Path, Path] | None = None, persistent: bool = False,
                 protocol: int = paho.MQTTv5) -> None:
        """``persistent``: a session the broker keeps (and queues for) while we are away;
        ``protocol``: ``paho.MQTTv311`` for brokers without MQTT 5 (RabbitMQ)."""
        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
                                  protocol=protocol)
        connect_props = None
        if persistent and protocol == paho.MQTTv5:
            connect_props = Properties(PacketTypes.CONNECT)
            connect_props.SessionExpiryInterval = 3600
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca),
                                certfile=str(client_cert[0]) if client_cert else None,
                                keyfile=str(client_cert[1]) if client_cert else None)
        self._subscribed = threading.Event()
        self.topic = topic
        self._sync_prefix = topic.rstrip("#") + "test-sync/"
        self._synced: set[str] = set()
        self._checked = 0
        self.invalid: list[str] = []
        """Events that ``agent schema`` rejects: reading events or closing raises on them."""

        def on_connect(c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe(topic, qos=1)

        def on_subscribe(c: paho.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
            self._subscribed.set()

        def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
            with self._cond:
                if msg.topic.startswith(self._sync_prefix):
                    self._synced.add(msg.topic)
                else:
                    self.messages.append(msg)
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        if protocol == paho.MQTTv5:
            self.client.connect(broker.host, broker.port, clean_start=not persistent,
                                properties=connect_props)
        else:
            self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber did not subscribe")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._check_schema()

    def _check_schema(self) -> list[paho.MQTTMessage]:
        """Every message so far; each new event is validated against ``agent schema`` once, so
        every event an integration test sees has been checked by the `jsonschema` library."""
        with self._cond:
            msgs = list(self.messages)
        for msg in msgs[self._checked:]:
            if "/events/" in msg.topic:
                self.invalid += [f"{msg.topic}: {p}" for p in schema_problems(msg.payload)]
        self._checked = len(msgs)
        if self.invalid:
            raise AssertionError("events that `agent schema` rejects:\n" +
                                 "\n".join(self.invalid[:20]))
        return msgs

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until everything the broker took before now has reached us.

        A stopped agent's last messages (``agent.stopping``, final states) were acknowledged by
        the broker, but may still be on their way here. A marker published now comes back after
        them: the broker forwards to one subscriber in the order it took the messages.
        """
        marker = f"{self._sync_prefix}{uuid.uuid4().hex}"
        self.client.publish(marker, b"", qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: marker in self._synced, timeout):
                raise AssertionError(f"the sync marker did not come back within {timeout} s")

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Decoded events (messages on .../events/...), optionally of one type."""
        msgs = self._check_schema()
        out = [json.loads(m.payload) for m in msgs if "/events/" in m.topic]
        return [e for e in out if event_type is None or e["type"] == event_type]

    def payloads(self, topic: str) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages if m.topic == topic]

    def wait_events(self, count: int, event_type: str | None = None, timeout: float = 15.0,
                    where: Callable[[dict[str, Any]], bool] = lambda e: True,
                    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` matching events arrived; return all matching."""
        return wait_until(
            lambda: (m if len(m := [e for e in self.events(event_type) if where(e)]) >= count
                     else None),
            timeout, f"{count} {event_type or 'events'} (have "
            f"{len([e for e in self.events(event_type) if where(e)])})",
        )


class AgentProcess:
    """The real ``agent run`` command in a subprocess, with a config written from a dict."""

    command: tuple[str, ...] = (AGENT_BIN,)

    def __init__(self, workdir: Path, config: dict[str, Any], *, env: dict[str, str] | None = None,
                 umask: int = -1):
        self.umask = umask
        """The process's umask (-1: inherited)."""
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = write_config(self.dir / "agent.toml", config)
        self.log = self.dir / "agent.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_connected: bool = False, timeout: float = 15.0,
              log_level: str = "debug") -> AgentProcess:
        """Start ``agent run``; ``output()`` from now on shows only this run's log."""
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.command, "--config", str(self.config_path), "run", "--log-level", log_level],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, umask=self.umask,
            )
        wait_until(lambda: "started:" in self.output() or self.proc.poll() is not None,
                   timeout, "agent to start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.output()}")
        if wait_connected:
            wait_until(lambda: "connected to broker" in self.output(), timeout,
                       "agent to connect to the broker")
        return self

    def output(self) -> str:
        """The log of the current (or last) run."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as fh:
            fh.seek(getattr(self, "_offset", 0))
            return fh.read().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not stop within {timeout} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL: the crash a power cut or the OOM killer gives."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def run_cli(self, *args: str, timeout: float = 30.0, input: str | None = None,
                ) -> subprocess.CompletedProcess[str]:
        """Run another ``agent`` command against the same config."""
        return subprocess.run([AGENT_BIN, "--config", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env,
                              input=input)


MODULES_HOOK = """
import json, os, signal, sys
from agent.cli import main
out = sys.argv.pop(1)
def dump(*_):
    with open(out + ".tmp", "w") as fh:
        json.dump(sorted(sys.modules), fh)
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR1, dump)
sys.exit(main(sys.argv[1:]))
"""
"""``agent`` under a SIGUSR1 handler that writes ``sys.modules`` (as JSON) to ``argv[1]``."""


class ProbedAgentProcess(AgentProcess):
    """``agent run`` whose ``sys.modules`` can be read: the same ``agent.cli.main`` started with
    a SIGUSR1 handler that writes them to a file (nothing is added to the agent itself)."""

    def __init__(self, workdir: Path, config: dict[str, Any], **kwargs: Any):
        super().__init__(workdir, config, **kwargs)
        self.modules_file = self.dir / "modules.json"
        # -P: the working directory is not put first on sys.path (a PYTHONPATH tree is used)
        self.command = (sys.executable, "-P", "-c", MODULES_HOOK, str(self.modules_file))

    def modules(self, timeout: float = 5.0) -> list[str]:
        """The names in ``sys.modules`` of the running agent, now."""
        assert self.proc is not None
        self.modules_file.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        wait_until(self.modules_file.exists, timeout, "the agent's module list")
        return json.loads(self.modules_file.read_text())


def agent_config(tmp: Path, broker: Broker | None, devices: dict[str, Any] | None = None,
                 **sections: dict[str, Any]) -> dict[str, Any]:
    """A config dict for the test store ``t1``, pointing at ``broker``."""
    cfg: dict[str, Any] = {
        "agent": {"store_id": "t1", "data_dir": str(tmp / "data"),
                  "control_socket": str(tmp / "control.sock"), "status_interval": "2s"},
        "gpio": {"pin_factory": "mock"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port if broker else free_port(),
                 "reconnect_min": "100ms", "reconnect_max": "1s"},
        "devices": devices or {},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def request(broker: Broker, command: str, payload: bytes, *, v5_reply: bool = False,
            reply_topic: str | None = None, root: str = "retail/t1/agent") -> dict[str, Any]:
    """Publish one request to the test store's agent; wait for its response (on an MQTT 5
    response topic when ``v5_reply``: ``reply_topic`` or a unique one)."""
    if reply_topic is None:
        reply_topic = f"{root}/response/replies-{time.monotonic_ns()}" if v5_reply else \
            f"{root}/response/{command}"
    sub = Subscriber(broker, reply_topic)
    try:
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.connect(broker.host, broker.port)
        client.loop_start()
        props = None
        if v5_reply:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_topic
            props.CorrelationData = b"corr-1"
        client.publish(f"{root}/request/{command}", payload, qos=1, properties=props
                       ).wait_for_publish(5)
        msg = wait_until(lambda: next(iter(sub.messages), None), 30, f"response to {command}")
        client.loop_stop()
        client.disconnect()
        reply = json.loads(msg.payload)
        if v5_reply:
            assert msg.properties.CorrelationData == b"corr-1"
        return dict(reply)
    finally:
        sub.close()


def publish_requests(broker: Broker, topic: str, payloads: list[bytes], *,
                     response_topic: str | None = None) -> None:
    """Publish raw requests (QoS 1, MQTT 5), optionally with a response topic."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    props = None
    if response_topic is not None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
    for payload in payloads:
        client.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def start_failover_agent(tmp: Path, brokers: list[Any], devices: dict[str, Any],
                         agents: list[AgentProcess], **sections: dict[str, Any]) -> AgentProcess:
    """An agent with ``mqtt.hosts`` = ``brokers`` (anything with ``port``), started and connected
    to the first, the preferred one."""
    cfg = agent_config(tmp, None, devices, **sections)
    del cfg["mqtt"]["host"], cfg["mqtt"]["port"]
    cfg["mqtt"]["hosts"] = [f"127.0.0.1:{b.port}" for b in brokers]
    agent = AgentProcess(tmp / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    assert f"connected to broker 127.0.0.1:{brokers[0].port}" in agent.output()
    return agent


def system_root(path: Path) -> Path:
    """An empty system tree at ``path`` with this machine's user databases, as an SD card image
    has: for ``scripts/install --root``."""
    etc = path / "etc"
    etc.mkdir(parents=True)
    for db in ("passwd", "group", "shadow", "gshadow"):
        if (Path("/etc") / db).exists():
            shutil.copy(Path("/etc") / db, etc / db)
    return path


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def make_tls(directory: Path, *, client: bool = False) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and optionally a client one."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in
                                  ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    out = {"ca": ca, "cert": cert, "key": key}
    if client:
        ccert, ckey = issue_client_cert(directory, "client", days=2)
        out.update(client_cert=ccert, client_key=ckey)
    return out


def issue_client_cert(directory: Path, name: str, *, days: int) -> tuple[Path, Path]:
    """A client certificate and key ``<name>.crt``/``.key`` from ``make_tls``'s CA in
    ``directory``, valid for ``days``."""
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    for args in (["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                  "-subj", "/CN=store-0042"],
                 ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                  "-CAcreateserial", "-out", str(cert), "-days", str(days)]):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    return cert, key


class NotifySocket:
    """What systemd listens on for sd_notify: a datagram socket on a path or an abstract name.

    ``env`` is the value for ``NOTIFY_SOCKET``; each message is a dict of its ``KEY=value`` lines.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"store-edge-agent-test-{uuid.uuid4().hex}"
            self.env = f"@{name}"
            self.sock.bind("\0" + name)
        else:
            self.env = str(path)
            self.sock.bind(str(path))
        self.sock.settimeout(2)

    @staticmethod
    def _parse(datagram: bytes) -> dict[str, str]:
        return dict(line.split("=", 1) for line in datagram.decode().split("\n"))

    def recv(self) -> dict[str, str]:
        return self._parse(self.sock.recv(65536))

    def pending(self) -> list[dict[str, str]]:
        """Every message already received, without waiting."""
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self._parse(self.sock.recv(65536)))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(2)

    def _recv_before(self, deadline: float) -> dict[str, str] | None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        self.sock.settimeout(left)
        try:
            return self.recv()
        except TimeoutError:
            return None
        finally:
            self.sock.settimeout(2)

    def collect(self, seconds: float) -> list[dict[str, str]]:
        """Every message received during the next ``seconds``."""
        deadline = time.monotonic() + seconds
        out = []
        while (message := self._recv_before(deadline)) is not None:
            out.append(message)
        return out

    def wait_for(self, key: str, timeout: float = 15.0) -> list[dict[str, str]]:
        """Messages up to and including the first with ``key``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        out: list[dict[str, str]] = []
        while not out or key not in out[-1]:
            message = self._recv_before(deadline)
            if message is None:
                raise AssertionError(f"no {key}= within {timeout} s; got {out}")
            out.append(message)
        return out

    def close(self) -> None:
        self.sock.close()
