"""``agent run``: builds the pipeline, the publisher and the drivers, and stops them in order."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from typing import TYPE_CHECKING, Any

from paho.mqtt.properties import Properties

from agent import __version__
from agent.buffer import Buffer
from agent.commands import CommandError, Commands, RateLimit, RequestLimits, parse_request
from agent.config import Config, Device
from agent.context import Context
from agent.control import ANSWERS_KEY, PROGRESS_KEY, ControlServer
from agent.driver import ActionError, Driver
from agent.errors import ConfigError
from agent.events import rfc3339
from agent.files import restrict_modes
from agent.health import HostHealth
from agent.homeassistant import discovery_messages
from agent.instance import InstanceLock
from agent.pipeline import Pipeline
from agent.publisher import Publisher
from agent.selftest import Operator, QueueOperator, Selftests, SilentOperator
from agent.selftest.guard import Refused, SelftestGuard
from agent.selftest.marks import TestMarks
from agent.selftest.schedule import SelftestSchedule
from agent.status import RateMeter
from agent.supervisor import Supervisor
from agent.watchdog import ServiceWatch
from agent.web import OFF as WEB_OFF

if TYPE_CHECKING:
    from agent.metrics import Metrics
    from agent.outputs.manager import Outputs
    from agent.web.server import WebServer

log = logging.getLogger(__name__)

REMOTE_COMMANDS = ("selftest", "status")
"""What ``<root>/agent/request/<command>`` may ask; ``action`` and ``sim`` drive hardware and
stay on the control socket (owner and group only)."""
COMMAND_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""What a request topic's last level must look like to be answered at all (it is echoed)."""


class Agent:
    """The running service. ``await run()`` until SIGTERM/SIGINT or ``request_stop()``."""

    def __init__(self, config: Config, *, service: bool = True) -> None:
        self.config = config
        self.service = service
        """False for ``agent selftest`` run in-process while the service is not running: no
        control socket, metrics, schedule or lifecycle events."""
        settings = config.settings
        self.started_at = time.time()
        self.instance = InstanceLock(settings.agent.data_dir,
                                     role="agent run" if service else "agent selftest")
        self.buffer = Buffer(
            settings.agent.data_dir / "buffer.db",
            max_bytes=settings.buffer.max_bytes,
            max_age=settings.buffer.max_age,
            synchronous=settings.buffer.synchronous,
            reserve_bytes=settings.buffer.reserve,
            on_dropped=lambda report: self.pipeline.dropped_event(report),
            outputs=config.outputs,
        )
        self.pipeline = Pipeline(config, self.buffer)
        self.outputs = self._new_outputs()
        self.commands = Commands()
        self.commands.register("status", self._status_command)
        self.commands.register("action", self._action_command)
        self.commands.register("sim", self._sim_command)
        self.commands.register("selftest", self._selftest_command)
        self.commands.register("outputs_test", self._outputs_test_command)
        self._metrics: Metrics | None = None
        self.publisher = self._new_publisher()
        self.pipeline.on_state = lambda dev, state: self.publisher.retain(
            self.publisher.topics.state(dev), state
        )
        self.marks = TestMarks()
        self._context = Context(self.pipeline, self.marks)
        self.drivers: list[Driver] = [self.new_driver(dev) for dev in config.devices.values()]
        self.supervisor = Supervisor(self.drivers)
        limits = settings.limits
        self.control = ControlServer(
            settings.agent.control_socket, self.commands, max_clients=limits.control_clients,
            first_line=limits.control_first_line, idle=limits.control_idle,
            max_depth=limits.request_max_depth)
        self.selftests = Selftests(self)
        self.guard = SelftestGuard(settings)
        self.pipeline.subscribe(self.guard.committed)
        self.web = self._new_web()
        self.commands.register("web", self._web_command)
        self.schedule = SelftestSchedule(self.selftests, self.guard, config.exits)
        self.publish_rate = RateMeter()
        self.health = HostHealth(settings.agent.data_dir)
        self._health_warnings: set[str] = set()
        self.request_limits = RequestLimits(limits.request_max_bytes, limits.request_id_max,
                                            limits.request_max_depth)
        self.request_rate = RateLimit(limits.requests_per_minute)
        self._rate_logged = 0.0
        self._stop = asyncio.Event()
        self._stopping = False
        self._started = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: ServiceWatch | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _new_publisher(self) -> Publisher:
        """A publisher for ``[mqtt]`` of the current config, wired to the pipeline."""
        settings = self.config.settings
        publisher = Publisher(
            settings.mqtt, settings.agent.store_id, self.buffer,
            ack=self.pipeline.ack, on_request=self._on_mqtt_request,
        )
        self.pipeline.on_commit = publisher.wake
        publisher.on_connected = lambda: self._in_loop(self.publish_status)
        if self._metrics is not None:
            publisher.observe_latency = self._metrics.latency.observe
        return publisher

    def _new_outputs(self) -> Outputs | None:
        """The ``[outputs.<name>]`` workers, if any; agent/outputs is imported only then."""
        if not self.config.outputs:
            return None
        from agent.outputs.manager import Outputs

        return Outputs(self.config.outputs, self.pipeline, self.buffer)

    def _new_web(self) -> WebServer | None:
        """The web page's server when ``[web] listen`` is set, as the service; aiohttp is imported
        only then."""
        if not self.service or self.config.settings.web.address is None:
            return None
        from agent.web.server import WebServer

        return WebServer(self)

    async def _web_command(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.web is None:
            raise CommandError(WEB_OFF)
        return await self.web.command(params)

    def _start_metrics(self) -> Metrics | None:
        """Serve ``[metrics]`` when it is set, as the service; prometheus_client is imported
        only then."""
        if not self.service or self.config.settings.metrics.address is None:
            return None
        from agent.metrics import Metrics

        return Metrics.start_for(self)

    def new_driver(self, device: Device) -> Driver:
        """The driver object of one configured device (not started)."""
        return device.driver(device.id, device.config, self._context)

    @property
    def _lifecycle(self) -> dict[str, Any]:
        """``agent.started`` and ``agent.stopping`` data."""
        return {"version": __version__, "config_hash": self.config.hash}

    # -- lifecycle --------------------------------------------------------------------------

    def _in_loop(self, func: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(func)

    def request_stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> int:
        """Run the service until SIGTERM/SIGINT or ``request_stop()``; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        await self.start()
        await self._stop.wait()
        await self.stop()
        return 0

    def request_reload(self) -> None:
        """SIGHUP (``systemctl reload``): read the config file again and apply what changed
        (agent/reload.py). Reloads run one after the other; none starts once stopping."""
        if self._stopping:
            log.warning("SIGHUP ignored: the agent is stopping")
            return
        task = asyncio.get_running_loop().create_task(self._reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        from agent.reload import reload

        await self._started.wait()  # a SIGHUP during start-up applies once everything runs
        async with self._reload_lock:
            if self._stopping:
                return
            try:
                await reload(self)
            except Exception:
                log.exception("reloading the configuration failed; the agent runs on")

    def replace_publisher(self) -> None:
        """``[mqtt]`` changed: disconnect from the broker and connect anew with the new section.
        Events the old connection had not had acknowledged are sent again (same ids).

        Blocks the event loop while the old publisher stops (a few seconds at most) on purpose:
        the watchdog's progress check must never look at its stopped threads.
        """
        self.publisher.stop()
        self.publisher = self._new_publisher()
        for drv in self.drivers:
            self.publisher.retain(self.publisher.topics.state(drv.device_id), drv.state)
        for name, report in self.selftests.last.items():
            self.publisher.retain(self.publisher.topics.selftest(name), report)
        self.publisher.start()

    def restart_schedule(self) -> None:
        """``[exits]`` changed: schedule the exits' self-tests anew (postponements are reset)."""
        self.schedule.stop()
        self.guard.reconfigure(self.config.settings)
        self.schedule = SelftestSchedule(self.selftests, self.guard, self.config.exits)
        if self.service:
            self.schedule.start()

    def restart_metrics(self) -> None:
        """``[metrics]`` changed: serve on the new address, or stop serving."""
        if self._metrics is not None:
            self._metrics.stop()
        self._metrics = self._start_metrics()

    async def start(self) -> None:
        """Lock the data_dir, open the buffer, connect, start the drivers; as the service
        (``service=True``) also the control socket, metrics, systemd notification, the schedule
        and lifecycle events.

        Raises:
            InstanceLocked: another agent (or in-process self-test) runs on this data_dir;
                nothing was started.
        """
        self._loop = asyncio.get_running_loop()
        settings = self.config.settings
        self.instance.acquire()
        self.pipeline.start()  # opens the buffer
        try:
            restrict_modes(self.buffer.path)
        except OSError as err:  # a read-only or failing disk: the storage faults say more
            log.warning("cannot set mode 0640 on %s: %s", self.buffer.path, err)
        self.selftests.load()
        # Before the broker connection, so that "connected" in the log means the endpoint is
        # settled (serving, or reported unavailable).
        self._metrics = self._start_metrics()
        self.publisher.start()
        if self.service and self.outputs is not None:
            self.outputs.start()
        if self.service:
            try:
                await self.control.start()
            except OSError as err:
                log.error("control socket %s unavailable (agent status and selftest cannot "
                          "reach this agent): %s", settings.agent.control_socket, err)
            await self._start_web()
            self.pipeline.emit_agent("agent.started", self._lifecycle)
            for topic, config in discovery_messages(self.config):  # [homeassistant]
                self.publisher.retain(topic, config)
        self.supervisor.start()
        log.info(
            "agent %s %s: store %s, %d devices, buffer %s (%d events waiting)",
            __version__, "started" if self.service else "running in-process",
            settings.agent.store_id, len(self.drivers), self.buffer.path,
            self.buffer.stats().depth,
        )
        if self.service:
            self.schedule.start()
            # systemd READY/STATUS/WATCHDOG (agent/watchdog)
            self._watch = ServiceWatch.for_agent(self)
            self._watch.start()
            self._tasks = [asyncio.create_task(self._status_loop(), name="status"),
                           asyncio.create_task(self._clock_loop(), name="clock")]
        self._started.set()

    async def wait_online(self, devices: set[str], timeout: float) -> bool:
        """Wait until every driver of ``devices`` reports online (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not all(d.online for d in self.drivers if d.device_id in devices):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        """Stop drivers, flush to the broker for ``shutdown_flush``, close the buffer."""
        settings = self.config.settings
        self._stopping = True
        async with self._reload_lock:  # a reload under way finishes first
            pass
        log.info("stopping: drivers first, then flushing events to the broker")
        if self._watch is not None:
            self._watch.stop()
        self.schedule.stop()
        if self.web is not None:
            await self.web.stop()  # ends the page's test runs while their drivers still run
        if self.service:
            self.pipeline.emit_agent("agent.stopping", self._lifecycle)
        for task in self._tasks:
            task.cancel()
        await self.supervisor.stop()
        flush = settings.agent.shutdown_flush
        await asyncio.to_thread(self.pipeline.wait_committed, flush)
        if self.publisher.connected:
            drained = await asyncio.to_thread(self.publisher.wait_drained, flush)
            if not drained:
                log.warning("broker did not take every event within %.0f s; they stay buffered",
                            flush)
        if self.service:
            self.publish_status()
            await self.control.stop()
        await asyncio.to_thread(self.publisher.stop)
        if self.outputs is not None:  # before the writer's last flush of cursors
            await asyncio.to_thread(self.outputs.stop)
        await asyncio.to_thread(self.pipeline.stop)
        if self._metrics is not None:
            self._metrics.stop()
        self.buffer.close()
        self.instance.release()
        log.info("stopped")

    async def _start_web(self) -> None:
        """The web page (agent/web), when ``[web] listen`` is set; a failure is logged, not fatal:
        the agent's events matter more than the page."""
        if self.web is None:
            return
        try:
            await self.web.start()
        except (OSError, ConfigError) as err:
            log.error("web page on %s unavailable: %s", self.config.settings.web.listen, err)

    async def _status_loop(self) -> None:
        while True:
            self.publish_status()
            await asyncio.sleep(self.config.settings.agent.status_interval)

    async def _clock_loop(self) -> None:
        """Announce the moment an unsynchronised clock becomes NTP-synchronised."""
        if self.pipeline.clock.synced:
            return
        log.warning("system clock is not NTP-synchronised: events carry clocksynced=false")
        while not self.pipeline.clock.synced:
            await asyncio.sleep(5)
        log.info("system clock is now NTP-synchronised")
        self.pipeline.emit_agent("agent.clock_synced")

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``agent status`` and the retained ``agent/status`` topic show."""
        stats = self.buffer.stats()
        pub = self.publisher
        return {
            "version": __version__,
            "storeid": self.config.settings.agent.store_id,
            "bootid": self.pipeline.bootid,
            "config_hash": self.config.hash,
            "started": rfc3339(self.started_at),
            "uptime_s": round(time.time() - self.started_at, 1),
            "clocksynced": self.pipeline.clock.synced,
            "broker": {
                "connected": pub.connected,
                "host": pub.broker,
                "brokers": [f"{h}:{p}" for h, p in pub.brokers],
                "cert_days_left": None if pub.cert_days_left is None
                else round(pub.cert_days_left, 1),
                "published": pub.published,
                "reconnects": pub.reconnects,
                "rate_per_s": round(self.publish_rate.rate(pub.published), 2),
                "last_error": pub.last_error,
                "refusal": pub.refusal,
            },
            "buffer": {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "oldest_age_s": round(stats.oldest_age, 1) if stats.oldest_age else None,
                "next_seq": stats.next_seq,
                "dropped": dict(self.pipeline.dropped),
                "last_error": self.pipeline.last_commit_error,
                "storage": self.pipeline.storage_problem or "ok",
                "held": len(self.pipeline.spill),
                "reserve": self.buffer.reserve.held,
            },
            "devices": {
                d.device_id: {
                    "driver": d.name,
                    "driver_version": d.version,
                    "online": d.online,
                    "restarts": self.supervisor.restarts.get(d.device_id, 0),
                    "finished": d.device_id in self.supervisor.finished,
                    "state": d.state,
                }
                for d in self.drivers
            },
            **({"outputs": self.outputs.status()} if self.outputs else {}),
            "last_selftest": self.selftests.summary(),
            "selftest_schedule": self._schedule_status(),
            "limits": {  # floods show here, not only in the log (docs/security.md)
                "requests_dropped": self.request_rate.refused,
                "control_clients": self.control.clients,
                "control_refused": self.control.refused,
            },
            "host": self._host_health(),
            **({"web": web} if self.web and (web := self.web.status()) else {}),
        }

    def _host_health(self) -> dict[str, Any]:
        """The host's health; a warning is logged when it appears and when it clears."""
        host = self.health.read()
        now = set(host["warnings"])
        for warning in sorted(now - self._health_warnings):
            log.warning("host: %s", warning)
        for warning in sorted(self._health_warnings - now):
            log.info("host: no longer: %s", warning)
        self._health_warnings = now
        return host

    def _schedule_status(self) -> dict[str, Any]:
        """Each scheduled exit: its cron, the next run, a postponement in force."""
        upcoming = self.schedule.next_runs()
        return {name: {"schedule": ex.schedule, "next": upcoming.get(name),
                       **({"postponed": self.schedule.postponed[name]}
                          if name in self.schedule.postponed else {})}
                for name, ex in self.config.exits.items() if ex.schedule}

    def publish_status(self) -> None:
        self.publisher.retain(self.publisher.topics.status, self.status())

    async def _status_command(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"agent": self.status()}

    async def _outputs_test_command(self, params: dict[str, Any]) -> dict[str, Any]:
        """``agent outputs test NAME``: a labelled test alarm through one output."""
        name = params.get("output")
        if self.outputs is None or name not in self.outputs.workers:
            known = ", ".join(self.outputs.workers if self.outputs else ()) or "none configured"
            raise CommandError(f"no output {name!r} (outputs: {known})")
        result = await asyncio.to_thread(self.outputs.test, str(name),
                                         self.config.settings.agent.store_id)
        return {"result": result}

    def driver(self, device_id: Any) -> Driver:
        """The running driver of ``device_id``.

        Raises:
            CommandError: no such device.
        """
        for drv in self.drivers:
            if drv.device_id == device_id:
                return drv
        known = ", ".join(d.device_id for d in self.drivers) or "none"
        raise CommandError(f"no device {device_id!r} (configured: {known})")

    async def _action_command(self, params: dict[str, Any]) -> dict[str, Any]:
        drv = self.driver(params.get("device"))
        name = str(params.get("action", ""))
        if name not in drv.actions:
            raise CommandError(f"device {drv.device_id!r} ({drv.name}) has no action {name!r}; "
                               f"it accepts: {', '.join(drv.actions) or 'none'}")
        try:
            return {"result": await drv.action(name, dict(params.get("params") or {}))}
        except ActionError as err:
            raise CommandError(str(err)) from err

    async def _sim_command(self, params: dict[str, Any]) -> dict[str, Any]:
        drv = self.driver(params.get("device"))
        kind = str(params.get("kind", ""))
        # The kind is the driver's name or the family of what it emits: a Modbus pedestal
        # controller is an `eas` device as much as a `modbus` one.
        kinds = {drv.name.split("_")[0], drv.name} | {t.split(".")[0] for t in drv.emits}
        if kind and kind not in kinds:
            raise CommandError(f"device {drv.device_id!r} is a {drv.name} device "
                               f"({', '.join(sorted(kinds))}), not {kind}")
        try:
            result = await drv.simulate(str(params.get("sim", "")),
                                        dict(params.get("params") or {}))
        except ActionError as err:
            raise CommandError(str(err)) from err
        return {"result": result}

    async def _selftest_command(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{"exit": name or all, "walk": bool}``; from the control socket the technician sees
        progress and answers questions, from MQTT nobody does (no walk test)."""
        exit_name = params.get("exit")
        if exit_name is not None and not isinstance(exit_name, str):
            raise CommandError('"exit" must be an exit name (a string)')
        walk = bool(params.get("walk", False))
        progress, answers = params.get(PROGRESS_KEY), params.get(ANSWERS_KEY)
        operator: Operator = SilentOperator()
        if progress is not None and answers is not None:
            operator = QueueOperator(progress, answers)
        elif walk:
            raise CommandError("a walk test needs a technician at the exit: run `agent selftest "
                               "--walk` there")
        names = self.selftests.exits(exit_name)
        trigger = "cli" if operator.interactive else "remote"
        if not any(n in self.selftests.running for n in names):  # busy: run() says so
            self.guard.admit(names, trigger)
        reports = await self.selftests.run(names, walk=walk, trigger=trigger, operator=operator)
        results = {r["result"] for r in reports}
        overall = "fail" if "fail" in results else "incomplete" if "incomplete" in results \
            else "pass"
        return {"result": overall, "reports": reports}

    # -- remote requests -----------------------------------------------------------------------

    def _on_mqtt_request(self, command: str, payload: bytes, props: Properties | None) -> None:
        """Called on the MQTT thread: over the rate limit drop it (unanswered: answering a
        flood would feed it), else hand over to the event loop."""
        if self._loop is None:
            return
        if not self.request_rate.allow():
            now = time.monotonic()
            if now - self._rate_logged >= 60:
                self._rate_logged = now
                log.warning("MQTT requests over limits.requests_per_minute %d are dropped "
                            "unanswered (%d so far)", self.config.settings.limits.requests_per_minute,
                            self.request_rate.refused)
            return
        asyncio.run_coroutine_threadsafe(self._answer(command, payload, props), self._loop)

    def _response_topic(self, command: str, props: Properties | None) -> tuple[str, str | None]:
        """Where to answer, and why a requested MQTT 5 response topic was refused."""
        default = self.publisher.topics.response(command)
        wanted = getattr(props, "ResponseTopic", None) if props is not None else None
        if not wanted:
            return default, None
        allowed = self.publisher.topics.response("")
        if wanted.startswith(allowed) and len(wanted) > len(allowed) and \
                not any(c in wanted for c in "+#\0") and len(wanted.encode()) <= 1024:
            return wanted, None
        return default, f"response topic refused: only topics under {allowed} are answered"

    async def _answer(self, command: str, payload: bytes, props: Properties | None) -> None:
        if not COMMAND_NAME.fullmatch(command):
            log.warning("MQTT request on an invalid command name dropped (%d characters)",
                        len(command))
            return
        topic, refused = self._response_topic(command, props)
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        if correlation is not None and len(correlation) > self.request_limits.id_max:
            correlation, refused = None, (f"correlation data longer than "
                                          f"limits.request_id_max {self.request_limits.id_max}")
        request_id: str | None = None
        try:
            request_id, params = parse_request(payload, self.request_limits)
            if refused:
                raise CommandError(refused)
            if command not in REMOTE_COMMANDS:
                raise CommandError(f"command {command!r} is not allowed over MQTT; allowed: "
                                   f"{', '.join(REMOTE_COMMANDS)}")
            result = await self.commands.call(command, params)
            reply = {"id": request_id, "status": "ok", **result}
        except Refused as err:
            reply = {"id": request_id, "status": "error", "error": str(err),
                     "retry_at": rfc3339(err.retry_at)}
        except CommandError as err:
            reply = {"id": request_id, "status": "error", "error": str(err)}
        except Exception as err:
            log.exception("remote command %s failed", command)
            reply = {"id": request_id, "status": "error", "error": f"internal error: {err}"}
        self.publisher.respond(topic, reply, correlation)
