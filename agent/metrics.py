"""Prometheus metrics of the running agent, served on ``[metrics] listen`` (off by default).

Figures are read from the agent's own counters at scrape time (one source of truth with
``agent status``); only the publish latency is a histogram fed by the publisher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.health import FLAGS

if TYPE_CHECKING:
    from agent.health import HostHealth
    from agent.runtime import Agent

log = logging.getLogger(__name__)

__all__ = ["PREFIX", "HealthCollector", "Metrics"]

PREFIX = "store_edge_agent"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SELFTEST_RESULTS = ("pass", "fail", "incomplete")


def epoch_of(rfc3339: str) -> float:
    """Epoch seconds of a time the agent published (RFC 3339), for Prometheus timestamps."""
    return datetime.fromisoformat(rfc3339).timestamp()


class HealthCollector(Collector):
    """The host's health as Prometheus gauges, read on every scrape; null fields are left out."""

    def __init__(self, health: HostHealth, prefix: str) -> None:
        self.health = health
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        h = self.health.read()
        p = f"{self.prefix}_host"
        info = GaugeMetricFamily(f"{p}_info", "The host: board, OS, hostname",
                                 labels=["board", "os", "hostname"])
        info.add_metric([h["board"] or "", h["os"] or "", h["hostname"] or ""], 1)
        yield info
        if h["uptime_s"] is not None:
            yield GaugeMetricFamily(f"{p}_uptime_seconds", "Seconds since the host booted",
                                    value=h["uptime_s"])
        if h["cpu_temp_c"] is not None:
            yield GaugeMetricFamily(f"{p}_cpu_temperature_celsius", "CPU temperature",
                                    value=h["cpu_temp_c"])
        if h["throttled"] is not None:
            flags = GaugeMetricFamily(f"{p}_throttled", "1 when the Pi firmware reports the "
                                      "condition (get_throttled)", labels=["condition", "when"])
            known = h["throttled"]
            for name in FLAGS if known["raw"] is not None else ("under_voltage",):
                flags.add_metric([name, "now"], int(name in known["now"]))
                if known["since_boot"] is not None:
                    flags.add_metric([name, "since_boot"], int(name in known["since_boot"]))
            yield flags
        if disk := h["disk"]:
            yield GaugeMetricFamily(f"{p}_data_dir_free_bytes", "Free bytes on data_dir's "
                                    "filesystem (for unprivileged users)", value=disk["free_bytes"])
            yield GaugeMetricFamily(f"{p}_data_dir_size_bytes", "Size of data_dir's filesystem",
                                    value=disk["total_bytes"])
            yield GaugeMetricFamily(f"{p}_data_dir_free_inodes", "Free inodes on data_dir's "
                                    "filesystem", value=disk["free_inodes"])
        if mem := h["memory"]:
            yield GaugeMetricFamily(f"{p}_memory_available_bytes", "MemAvailable",
                                    value=mem["available_bytes"])
            yield GaugeMetricFamily(f"{p}_memory_total_bytes", "MemTotal",
                                    value=mem["total_bytes"])
        yield GaugeMetricFamily(f"{p}_warnings", "Health readings past their threshold "
                                "(agent status lists them)", value=len(h["warnings"]))


class AgentCollector(Collector):
    """Reads the live counters of one ``Agent`` on every scrape."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        pipeline, publisher = agent.pipeline, agent.publisher
        info = GaugeMetricFamily(f"{PREFIX}_info", "The running agent", labels=[
            "version", "store", "bootid", "config_hash"])
        info.add_metric([__version__, agent.config.settings.agent.store_id, pipeline.bootid,
                         agent.config.hash], 1)
        yield info
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since the agent started",
                                value=time.time() - agent.started_at)
        yield GaugeMetricFamily(f"{PREFIX}_clock_synced",
                                "1 when the system clock is NTP-synchronised",
                                value=int(pipeline.clock.synced))

        # dict() copies a Counter in one step under the GIL while its thread updates it.
        emitted = CounterMetricFamily(
            f"{PREFIX}_events_emitted", "Events accepted (committed to the buffer)",
            labels=["device", "type"])
        for (device, event_type), n in sorted(dict(pipeline.emitted).items()):
            emitted.add_metric([device, event_type], n)
        yield emitted
        published = CounterMetricFamily(
            f"{PREFIX}_events_published", "Events acknowledged by the broker",
            labels=["device", "type"])
        for (device, event_type), n in sorted(dict(publisher.published_by).items()):
            published.add_metric([device, event_type], n)
        yield published
        dropped = CounterMetricFamily(
            f"{PREFIX}_events_dropped", "Events the buffer dropped (full or too old)",
            labels=["device", "type", "reason"])
        for (device, event_type, reason), n in sorted(dict(pipeline.dropped_by).items()):
            dropped.add_metric([device, event_type, reason], n)
        yield dropped

        stats = agent.buffer.stats()
        yield GaugeMetricFamily(f"{PREFIX}_buffer_events", "Events waiting in the buffer",
                                value=stats.depth)
        yield GaugeMetricFamily(f"{PREFIX}_buffer_bytes", "Bytes the buffer counts against "
                                "max_bytes", value=stats.bytes)
        yield GaugeMetricFamily(f"{PREFIX}_buffer_storage_ok", "1 while the buffer can be "
                                "written, 0 on a full disk, I/O error or read-only filesystem",
                                value=0 if agent.pipeline.storage_problem else 1)
        yield GaugeMetricFamily(f"{PREFIX}_buffer_held_events", "Events held in memory, not yet "
                                "committed", value=len(agent.pipeline.spill))
        yield GaugeMetricFamily(f"{PREFIX}_buffer_oldest_age_seconds",
                                "Age of the oldest waiting event (0 when empty)",
                                value=stats.oldest_age or 0.0)
        limits = agent.config.settings.buffer
        yield GaugeMetricFamily(f"{PREFIX}_buffer_max_bytes", "The buffer's size limit "
                                "(buffer.max_bytes): beyond it the lowest priority is dropped",
                                value=limits.max_bytes)
        yield GaugeMetricFamily(f"{PREFIX}_buffer_max_age_seconds", "Older events are dropped "
                                "(buffer.max_age)", value=limits.max_age)

        yield GaugeMetricFamily(f"{PREFIX}_broker_connected", "1 while connected to the broker",
                                value=int(publisher.connected))
        yield CounterMetricFamily(f"{PREFIX}_broker_reconnects",
                                  "Connections to the broker lost after being established",
                                  value=publisher.reconnects)
        broker = GaugeMetricFamily(f"{PREFIX}_broker_info", "The broker in use (or being "
                                   "tried); position 1 is the preferred one of mqtt.hosts",
                                   labels=["broker", "position"])
        brokers = [f"{h}:{p}" for h, p in publisher.brokers]
        broker.add_metric([publisher.broker, str(brokers.index(publisher.broker) + 1)], 1)
        yield broker
        if publisher.cert_days_left is not None:
            yield GaugeMetricFamily(f"{PREFIX}_tls_client_cert_days_left",
                                    "Days until the client certificate (mqtt.cert_file) expires",
                                    value=publisher.cert_days_left)

        up = GaugeMetricFamily(f"{PREFIX}_device_up", "1 while the device is online",
                               labels=["device", "driver"])
        restarts = CounterMetricFamily(f"{PREFIX}_device_restarts",
                                       "Times the device's driver failed and was restarted",
                                       labels=["device", "driver"])
        for drv in agent.drivers:
            up.add_metric([drv.device_id, drv.name], int(drv.online))
            restarts.add_metric([drv.device_id, drv.name],
                                agent.supervisor.restarts.get(drv.device_id, 0))
        yield up
        yield restarts
        yield from self._selftests()
        yield from _output_metrics(self.agent)

    def _selftests(self) -> Iterator[Metric]:
        """Each configured exit's last self-test: which result (one series per result, 1 for the
        one it had) and when it finished; 0 everywhere for an exit never tested."""
        result = GaugeMetricFamily(
            f"{PREFIX}_selftest_last_result", "1 for the result of the exit's last self-test "
            "(pass, fail, incomplete); all 0 when it was never tested", labels=["exit", "result"])
        finished = GaugeMetricFamily(
            f"{PREFIX}_selftest_last_timestamp_seconds", "When the exit's last self-test "
            "finished (epoch seconds; 0 when never)", labels=["exit"])
        last = self.agent.selftests.last
        for name in sorted(self.agent.config.exits):
            report = last.get(name, {})
            for value in SELFTEST_RESULTS:
                result.add_metric([name, value], int(report.get("result") == value))
            finished.add_metric([name], epoch_of(report["finished"]) if report.get("finished")
                               else 0.0)
        yield result
        yield finished



def _output_metrics(agent: Agent) -> Iterator[Metric]:
    """Per ``[outputs.<name>]``: connected, lag, delivered and dropped."""
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "connected": GaugeMetricFamily(f"{PREFIX}_output_connected", "1 while the output's last "
                                       "delivery worked", labels=["output", "kind"]),
        "lag_events": GaugeMetricFamily(f"{PREFIX}_output_lag_events", "Events committed after "
                                        "the output's cursor", labels=["output", "kind"]),
        "lag_s": GaugeMetricFamily(f"{PREFIX}_output_lag_seconds", "Age of the oldest event the "
                                   "output has not passed (0 when caught up)",
                                   labels=["output", "kind"]),
        "delivered": CounterMetricFamily(f"{PREFIX}_output_delivered", "Events the output "
                                         "delivered", labels=["output", "kind"]),
        "dropped": CounterMetricFamily(f"{PREFIX}_output_dropped", "Events the buffer dropped "
                                       "before the output delivered them",
                                       labels=["output", "kind"]),
    }
    for name, state in (agent.outputs.status() if agent.outputs else {}).items():
        for key, family in families.items():
            family.add_metric([name, state["kind"]], float(state[key] or 0))
    yield from families.values()


class Metrics:
    """The endpoint: a registry with the collector and the latency histogram, and its server."""

    def __init__(self, agent: Agent) -> None:
        # Series named by the exposition format only: no `_created` sample beside each
        # histogram and counter, which dashboards would take for a metric of its own.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(agent))
        self.registry.register(HealthCollector(agent.health, PREFIX))
        ProcessCollector(registry=self.registry)  # process_cpu_seconds, memory, fds, start time
        self.latency = Histogram(
            f"{PREFIX}_publish_latency_seconds",
            "From handing an event to the broker to its PUBACK", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        agent.publisher.observe_latency = self.latency.observe
        self.address = agent.config.settings.metrics.address
        self._server: WSGIServer | None = None

    @classmethod
    def start_for(cls, agent: Agent) -> Metrics | None:
        """Serve metrics if ``[metrics] listen`` is set; a port that cannot be bound is logged
        and the agent runs on without metrics."""
        if agent.config.settings.metrics.address is None:
            return None
        metrics = cls(agent)
        metrics.start()
        return metrics

    def start(self) -> None:
        assert self.address is not None
        host, port = self.address
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            log.error("metrics endpoint %s:%d unavailable, running without it: %s",
                      host, port, err)
            return
        port = self._server.server_port  # the one the system chose, for port 0
        log.info("metrics on http://%s/metrics", f"[{host}]:{port}" if ":" in host
                 else f"{host}:{port}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
