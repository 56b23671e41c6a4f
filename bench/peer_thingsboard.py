"""Per-event cost of the agent beside ThingsBoard IoT Gateway 3.8.5 on the same Modbus workload.

    .venv/bin/python bench/peer_thingsboard.py [--rounds 2] [--seconds 20] [--outage-seconds 30]
                                               [--sides agent,tb-memory,tb-sqlite]

Workload, the same for every side: a pymodbus TCP server on 127.0.0.1 with 10 units (device ids
1 to 10) of 10 holding registers each; every read of a register first adds 1 to it, so every
poll sees every register change and a register's value is the number of times it was read.
Both sides poll every unit every 100 ms: 1,000 readings/s.

- agent: one ``modbus`` device per unit (``u1``..``u10``), one request per poll for the 10
  registers, ``on_change = {type = "eas.people_count", field = "in", data = {out = <register>}}``:
  one event per reading, carrying the register (``out``) and the value read (``in``);
  ``buffer.synchronous = "full"`` (the default), log level info.
- tb-memory, tb-sqlite: ThingsBoard IoT Gateway 3.8.5 with its Modbus connector, one request
  per register (as it reads them), 10 values per telemetry message on ``v1/gateway/telemetry``,
  ``reportStrategy`` ON_RECEIVED, rate limits ``"0:0,"`` (none), QoS 1, statistics off, its
  default log configuration (info), and ``memory`` or ``sqlite`` storage.

Everything runs inside one network namespace the bench makes for itself (it re-executes itself
under ``unshare -n``): the gateway phones home at start, and nothing here should leave the
machine. ThingsBoard's connection points at a mosquitto on 127.0.0.1 (no TLS, a made-up access
token). It waits for the answer to its ``getSessionLimits`` RPC (``v1/devices/me/rpc/request/<n>``)
before it sends anything: the bench's subscriber answers on ``v1/devices/me/rpc/response/<n>``
with no limits. The gateway runs from its own venv, ``var/tb-venv`` (created on first use:
``pymodbus==3.9.2`` first, which it pins, then ``thingsboard-gateway==3.8.5``).

What is measured, per side, in rounds that alternate the sides within one run:

- readings delivered: distinct (unit, register, value) seen by one subscriber on the broker
  (an agent event is one reading; a ThingsBoard message carries 10), so messages of different
  sizes compare;
- CPU seconds per 1,000 readings delivered: utime + stime of the side's process tree from /proc
  over ``--seconds`` after a warm-up, divided by the readings delivered in that window;
- peak RSS: VmHWM of the side's process at the end of its run (after the outage, when there is
  one);
- loss across a broker outage (in the first ``--outage-rounds`` rounds): the register values
  are taken ``--lead-seconds`` before mosquitto stops (so that what the side had in flight at
  that moment counts); it stays down ``--outage-seconds``, comes back, and after
  ``--recover-seconds`` the values are taken again. Every value in between was served to
  the side (a value is the read count, so none is skipped), and each is a distinct
  (unit, register, value). The bench then waits until all of them arrived or none came for
  ``--settle-seconds``; loss = served - delivered among them. mosquitto runs with persistence
  and the subscriber with a persistent session (MQTT 5, session expiry 1 h), so what the broker
  acknowledged before it stopped is delivered after it restarts: a missing reading was lost by
  the side, not by the broker or the subscriber. A reading the side failed to read (a timeout)
  also counts as lost: the server served it. When some are lost, the bench also prints when
  they were served, relative to the broker's stop (``lost_served_from_s``/``_to_s``, to 0.5 s,
  from register values sampled every 0.5 s) and how many units they came from.

Ratios agent / TB are printed for CPU per 1,000 readings and for peak RSS (medians over rounds).
``--sides agent`` measures the agent alone (e.g. to re-run after a change on main).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import mib, tree_cpu_seconds
from support import AgentProcess, Broker, agent_config

ROOT = Path(__file__).resolve().parents[1]

TB_VERSION = "3.8.5"
TB_PYMODBUS = "3.9.2"  # what thingsboard-gateway 3.8.5 pins; it pip-installs it at start if absent
TB_VENV = ROOT / "var" / "tb-venv"
UNITS, REGISTERS, POLL_S = 10, 10, 0.1
NETNS_MARK = "PEER_BENCH_NETNS"
SIDES = ("agent", "tb-memory", "tb-sqlite")
NO_LIMITS = "0:0,"
BROKER_PORT, MODBUS_PORT = 1883, 5020


# -- the peer's venv and the namespace -------------------------------------------------------------

def ensure_tb_venv() -> Path:
    """The gateway's command, installing its venv under var/ first if it is not complete."""
    ready = TB_VENV / ".bench-ready"
    if ready.exists():
        return TB_VENV / "bin" / "thingsboard-gateway"
    pip = [str(TB_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    # its Modbus connector pip-installs what it misses at start (pymodbus at the exact version
    # it pins, pyserial, pyserial-asyncio): in the bench's namespace that would fail, so here
    steps = [[sys.executable, "-m", "venv", str(TB_VENV)],
             [*pip, f"pymodbus=={TB_PYMODBUS}", "pyserial==3.5", "pyserial-asyncio==0.6"],
             [*pip, f"thingsboard-gateway=={TB_VERSION}"]]
    for step in steps:
        print("running:", " ".join(step), flush=True)
        subprocess.run(step, check=True)
    ready.touch()
    return TB_VENV / "bin" / "thingsboard-gateway"


def in_own_netns() -> None:
    """Re-execute this bench in a new network namespace with only ``lo`` (up), unless it is."""
    if os.environ.get(NETNS_MARK):
        return
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    print(f"re-running in a new network namespace: {' '.join(unshare)}", flush=True)
    os.environ[NETNS_MARK] = "1"
    os.execvp(unshare[0], [*unshare, "sh", "-c",
                           'PATH="$PATH:/usr/sbin:/sbin" ip link set lo up && exec "$0" "$@"',
                           sys.executable, *sys.argv])


# -- the workload: 10 units x 10 holding registers, each read adds 1 -----------------------------

class Workload:
    """The Modbus TCP server, on its own event loop thread."""

    def __init__(self) -> None:
        self.port = MODBUS_PORT
        self.registers: dict[int, list[int]] = {}
        """The registers of each unit as the server holds them (its own lists): value = reads."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="modbus-workload")
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> ModbusTcpServer:
        devices = [SimDevice(id=unit, simdata=[SimData(0, count=REGISTERS, values=0,
                                                       datatype=DataType.REGISTERS)],
                             action=self._bump(unit))
                   for unit in range(1, UNITS + 1)]
        server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
        await server.serve_forever(background=True)
        return server

    def _bump(self, unit: int) -> Callable[..., Any]:
        async def action(func_code: int, start: int, address: int, count: int,
                         registers: list[int], values: Any) -> None:
            self.registers[unit] = registers
            if func_code == 3:
                for i in range(address - start, address - start + count):
                    # wraps after 65,535 reads, 1.8 h at 10 reads/s: far beyond a run
                    registers[i] = (registers[i] + 1) & 0xFFFF
        return action

    def snapshot(self) -> dict[tuple[int, int], int]:
        """(unit, register) -> its value now (the number of times it was read)."""
        return {(unit, reg): regs[reg] for unit, regs in self.registers.items()
                for reg in range(REGISTERS)}

    def served(self) -> int:
        return sum(self.snapshot().values())

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# -- the subscriber: counts readings, answers the gateway's getSessionLimits -----------------------

class Tally:
    """Distinct (unit, register, value) readings delivered through the broker, from both kinds of
    message; also the stand-in for ThingsBoard's server side of ``getSessionLimits``."""

    def __init__(self, broker: Broker) -> None:
        self.seen: set[tuple[int, int, int]] = set()
        self.limits_answered = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-peer-tally",
                                  protocol=paho.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.on_connect = lambda c, *a: c.subscribe(
            [("retail/+/events/+/eas.people_count", 1), ("v1/gateway/telemetry", 1),
             ("v1/devices/me/rpc/request/+", 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if msg.topic.startswith("v1/devices/me/rpc/request/"):
            if isinstance(body, dict) and body.get("method") == "getSessionLimits":
                limits = {"messages": NO_LIMITS, "telemetryMessages": NO_LIMITS,
                          "telemetryDataPoints": NO_LIMITS}
                client.publish(msg.topic.replace("/request/", "/response/"), json.dumps(
                    {"maxPayloadSize": 65536, "maxInflightMessages": 100, "rateLimits": limits,
                     "gatewayRateLimits": limits}), qos=1)
                self.limits_answered += 1
            return
        if msg.topic == "v1/gateway/telemetry":
            # {"u3": [{"ts": ..., "values": {"r0": 17, ...}}]}
            new = [(int(device[1:]), int(key[1:]), int(value))
                   for device, entries in body.items()
                   for entry in (entries if isinstance(entries, list) else [entries])
                   for key, value in entry.get("values", entry).items() if key != "ts"]
        else:
            new = [(int(body["deviceid"][1:]), body["data"]["out"], body["data"]["in"])]
        with self._lock:
            self.seen.update(new)

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def delivered_between(self, before: dict[tuple[int, int], int],
                          after: dict[tuple[int, int], int]) -> int:
        """Readings delivered whose value lies in (before, after] of their register."""
        with self._lock:
            seen = list(self.seen)
        return sum(1 for unit, reg, value in seen
                   if before.get((unit, reg), 0) < value <= after.get((unit, reg), 0))

    def missing(self, before: dict[tuple[int, int], int],
                after: dict[tuple[int, int], int]) -> list[tuple[int, int, int]]:
        """Readings served with a value in (before, after] of their register, not delivered."""
        with self._lock:
            return [(unit, reg, value) for (unit, reg), last in after.items()
                    for value in range(before.get((unit, reg), 0) + 1, last + 1)
                    if (unit, reg, value) not in self.seen]

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the sides ------------------------------------------------------------------------------------

class Side:
    """One run of one side: start, the process id to measure, stop."""

    pid: int

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class AgentSide(Side):
    def __init__(self, tmp: Path, broker: Broker, workload: Workload,
                 command: Path | None = None) -> None:
        registers = [{"name": f"r{reg}", "table": "holding", "address": reg,
                      "on_change": {"type": "eas.people_count", "field": "in",
                                    "data": {"out": reg}}} for reg in range(REGISTERS)]
        devices = {f"u{unit}": {"driver": "modbus", "host": "127.0.0.1",
                                "tcp_port": workload.port, "device_id": unit,
                                "poll_interval": POLL_S, "registers": registers}
                   for unit in range(1, UNITS + 1)}
        cfg = agent_config(tmp, broker, devices, buffer={"synchronous": "full"})
        del cfg["agent"]["status_interval"]  # the product's default, not the tests' 2 s
        self.agent = AgentProcess(tmp, cfg)
        if command is not None:
            self.agent.command = (str(command),)

    def start(self) -> None:
        self.agent.start(wait_connected=True, log_level="info")
        assert self.agent.proc is not None
        self.pid = self.agent.proc.pid

    def stop(self) -> None:
        self.agent.stop(30)


class GatewaySide(Side):
    def __init__(self, tmp: Path, broker: Broker, workload: Workload, storage: str,
                 gateway: Path) -> None:
        self.dir = tmp
        self.gateway = gateway
        config = tmp / "config"
        shutil.copytree(TB_VENV.glob("lib/python3*/site-packages/thingsboard_gateway/config")
                        .__next__(), config)
        stores = {
            "memory": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
            "sqlite": {"type": "sqlite", "data_file_path": str(tmp / "data" / "data.db"),
                       "messages_ttl_check_in_hours": 1, "messages_ttl_in_days": 7,
                       "max_read_records_count": 1000},
        }
        (tmp / "data").mkdir()
        main = json.loads((config / "tb_gateway.json").read_text())
        tb = main["thingsboard"]
        tb.update(host=broker.host, port=broker.port, remoteShell=False,
                  remoteConfiguration=False, security={"type": "accessToken",
                                                       "accessToken": "bench-peer"},
                  qos=1, reportStrategy={"type": "ON_RECEIVED"})
        tb["statistics"]["enable"] = False
        for key in ("rateLimits", "dpRateLimits", "messagesRateLimits",
                    "deviceMessagesRateLimits", "deviceRateLimits", "deviceDpRateLimits"):
            tb[key] = NO_LIMITS
        main["storage"] = stores[storage]
        main["grpc"]["enabled"] = False
        main["connectors"] = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
        (config / "tb_gateway.json").write_text(json.dumps(main, indent=2))
        slaves = [{"host": "127.0.0.1", "port": workload.port, "type": "tcp", "method": "socket",
                   "unitId": unit, "deviceName": f"u{unit}", "deviceType": "default",
                   "timeout": 35, "byteOrder": "BIG", "wordOrder": "BIG", "retries": 3,
                   "retryOnEmpty": True, "retryOnInvalid": True,
                   "pollPeriod": int(POLL_S * 1000), "connectAttemptTimeMs": 5000,
                   "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 300000,
                   "attributes": [], "attributeUpdates": [], "rpc": [],
                   "timeseries": [{"tag": f"r{reg}", "type": "16uint", "functionCode": 3,
                                   "objectsCount": 1, "address": reg}
                                  for reg in range(REGISTERS)]}
                  for unit in range(1, UNITS + 1)]
        (config / "modbus.json").write_text(json.dumps({"master": {"slaves": slaves}}, indent=2))
        self.env = {**os.environ, "TB_GW_CONFIG_DIR": str(config)}
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(self.gateway)], cwd=self.dir, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# -- one run of one side --------------------------------------------------------------------------

def wait_for(predicate: Callable[[], Any], timeout: float, what: str, side: Side) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if isinstance(side, GatewaySide) and not side.alive():
            raise RuntimeError(f"the gateway exited; its log: {side.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def run_side(side: Side, name: str, args: argparse.Namespace, broker: Broker,
             workload: Workload, tally: Tally, outage: bool) -> dict[str, float]:
    tally.reset()
    side.start()
    try:
        wait_for(lambda: tally.count() >= UNITS * REGISTERS, 90, f"{name}'s first readings", side)
        time.sleep(args.warmup)
        c0, n0, s0, t0 = tree_cpu_seconds(side.pid), tally.count(), workload.served(), \
            time.monotonic()
        time.sleep(args.seconds)
        c1, n1, s1, t1 = tree_cpu_seconds(side.pid), tally.count(), workload.served(), \
            time.monotonic()
        out = {"cpu_per_1000": (c1 - c0) / (n1 - n0) * 1000, "delivered_per_s": (n1 - n0) / (t1 - t0),
               "served_per_s": (s1 - s0) / (t1 - t0), "cpu_share": (c1 - c0) / (t1 - t0)}
        if outage:
            out.update(measure_outage(side, args, broker, workload, tally))
        out["peak_rss_mib"] = mib(side.pid, "VmHWM")
        return out
    finally:
        side.stop()


def measure_outage(side: Side, args: argparse.Namespace, broker: Broker, workload: Workload,
                   tally: Tally) -> dict[str, float]:
    marks: list[tuple[float, dict[tuple[int, int], int]]] = []
    """(time, register values) every 0.5 s: when a lost reading was served, to that precision."""
    done = threading.Event()

    def mark() -> None:
        while not done.is_set():
            marks.append((time.monotonic(), workload.snapshot()))
            done.wait(0.5)

    sampler = threading.Thread(target=mark, daemon=True)
    before = workload.snapshot()
    sampler.start()
    time.sleep(args.lead_seconds)  # what the side had in flight when the broker went counts too
    stopped = time.monotonic()
    broker.stop()
    time.sleep(args.outage_seconds)
    broker.start()
    time.sleep(args.recover_seconds)
    after = workload.snapshot()
    done.set()
    sampler.join()
    served = sum(after[k] - before.get(k, 0) for k in after)
    delivered, last_change, started = 0, time.monotonic(), time.monotonic()
    while delivered < served and time.monotonic() - last_change < args.settle_seconds:
        time.sleep(1)
        now = tally.delivered_between(before, after)
        if now != delivered:
            delivered, last_change = now, time.monotonic()
    out = {"outage_served": served, "outage_lost": served - delivered,
           "outage_settle_s": time.monotonic() - started}
    if lost := tally.missing(before, after):
        # served by the first mark at which the register had reached the value
        when = [next((t for t, regs in marks if regs[(u, r)] >= v), marks[-1][0]) - stopped
                for u, r, v in lost]
        out.update(lost_served_from_s=min(when), lost_served_to_s=max(when),
                   lost_units=len({u for u, _, _ in lost}))
    return out


# -- the run --------------------------------------------------------------------------------------

def make_side(name: str, tmp: Path, broker: Broker, workload: Workload,
              gateway: Path | None, before: Path | None = None) -> Side:
    if name == "agent":
        return AgentSide(tmp, broker, workload)
    if name == "agent-before":
        return AgentSide(tmp, broker, workload, before)
    assert gateway is not None
    return GatewaySide(tmp, broker, workload, name.removeprefix("tb-"), gateway)


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side] if key in r)

    print(f"\n{UNITS} units x {REGISTERS} holding registers polled every {POLL_S * 1000:.0f} ms, "
          f"{args.rounds} round(s) of {args.seconds:.0f} s per side, medians:")
    print(f"{'side':<12} {'CPU s/1000 readings':>20} {'readings/s':>11} {'served/s':>9} "
          f"{'CPU % core':>10} {'peak RSS MiB':>13} {'lost in outage':>22}")
    for side, rows in results.items():
        lost = [f"{r['outage_lost']:,.0f} of {r['outage_served']:,.0f}" for r in rows
                if "outage_lost" in r]
        print(f"{side:<12} {med(side, 'cpu_per_1000'):>20.3f} {med(side, 'delivered_per_s'):>11,.0f} "
              f"{med(side, 'served_per_s'):>9,.0f} {med(side, 'cpu_share') * 100:>10.1f} "
              f"{max(r['peak_rss_mib'] for r in rows):>13.1f} {', '.join(lost) or '-':>22}")
    print("per round (CPU s/1000 readings, peak RSS MiB):")
    for side, rows in results.items():
        print(f"  {side:<12} " + "; ".join(f"{r['cpu_per_1000']:.3f}, {r['peak_rss_mib']:.1f}"
                                           for r in rows))
    if "agent" in results:
        for peer in ("agent-before", "tb-memory", "tb-sqlite"):
            if peer in results:
                print(f"agent / {peer}: CPU per 1,000 readings "
                      f"{med('agent', 'cpu_per_1000') / med(peer, 'cpu_per_1000'):.2f}, peak RSS "
                      f"{max(r['peak_rss_mib'] for r in results['agent']) / max(r['peak_rss_mib'] for r in results[peer]):.2f}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20, help="CPU window per side and round")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--outage-seconds", type=float, default=30, help="0: no outage")
    parser.add_argument("--outage-rounds", type=int, default=1,
                        help="how many rounds, from the first, include the outage")
    parser.add_argument("--lead-seconds", type=float, default=5,
                        help="loss is counted from this long before the broker stops")
    parser.add_argument("--recover-seconds", type=float, default=10,
                        help="... until this long after it is back")
    parser.add_argument("--settle-seconds", type=float, default=10)
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated, from {', '.join(SIDES)}")
    parser.add_argument("--agent-only", action="store_true", help="same as --sides agent")
    parser.add_argument("--agent-before", type=Path, metavar="AGENT",
                        help="the agent command of another checkout (e.g. main before a change: "
                        "git worktree add ../before COMMIT && ../before/scripts/setup, then "
                        "../before/.venv/bin/agent): measured as the side agent-before, "
                        "alternated with the others")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    sides = ["agent"] if args.agent_only else [s.strip() for s in args.sides.split(",")]
    if args.agent_before is not None:
        sides.insert(0, "agent-before")
    if unknown := set(sides) - {*SIDES, "agent-before"}:
        parser.error(f"unknown side(s) {', '.join(sorted(unknown))}; known: {', '.join(SIDES)}")
    gateway = ensure_tb_venv() if any(s.startswith("tb-") for s in sides) else None
    in_own_netns()

    tmp = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    # Below the ephemeral range: a client retrying a port of that range while its listener is
    # down may be given the same port as its source and connect to itself (TCP simultaneous
    # open), holding the port the broker then cannot bind again. Nothing else listens in the
    # bench's own namespace.
    broker = Broker(tmp / "broker", persistence=True, port=BROKER_PORT).start()
    workload = Workload()
    tally = Tally(broker)
    results: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    started = time.monotonic()
    try:
        for r in range(args.rounds):
            outage = args.outage_seconds > 0 and r < args.outage_rounds
            for name in sides:
                side = make_side(name, tmp / f"{name}-{r}", broker, workload, gateway,
                                 args.agent_before)
                row = run_side(side, name, args, broker, workload, tally, outage)
                results[name].append(row)
                print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:,.3f}" for k, v in row.items()),
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
        report(results, args)
        print(f"wall time {time.monotonic() - started:.0f} s")
    finally:
        tally.close()
        workload.close()
        broker.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"work directory: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
