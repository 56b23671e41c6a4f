"""The configured outputs of a running agent: built from ``[outputs.<name>]``, started, stopped,
reported in status and metrics, and tested one at a time (``agent outputs test NAME``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent.events import rfc3339, uuid7
from agent.outputs import KINDS, OutputConfig
from agent.outputs.base import DeliveryError
from agent.outputs.worker import OutputWorker

if TYPE_CHECKING:
    from agent.buffer import Buffer, Dropped
    from agent.pipeline import Pipeline

log = logging.getLogger(__name__)

STOP_TIMEOUT = 2.0
"""Seconds each output's thread gets to finish a send when the agent stops (its sockets time out
on their own after ``timeout``; what was not delivered is sent after the restart)."""


class Outputs:
    """Every output's worker. Build before the pipeline starts; start after it has."""

    def __init__(self, configs: dict[str, OutputConfig], pipeline: Pipeline, buffer: Buffer
                 ) -> None:
        """Raises:
            ConfigError: an output cannot be built (its secret file cannot be read).
        """
        self.pipeline = pipeline
        self.workers = {name: OutputWorker(KINDS[cfg.kind](name, cfg), pipeline, buffer)
                        for name, cfg in configs.items()}
        pipeline.on_output_loss = self._lost
        pipeline.wake_outputs = self.wake

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        for name, worker in self.workers.items():
            log.info("output %s (%s) to %s: from seq %d on", name, worker.output.kind,
                     worker.output.config.target(), worker.cursor)

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.request_stop()  # all at once: each may be waiting for its target
        for worker in self.workers.values():
            worker.stop(STOP_TIMEOUT)

    def wake(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    def _lost(self, name: str, lost: Dropped) -> None:
        if (worker := self.workers.get(name)) is not None:
            worker.lost(lost)

    def status(self) -> dict[str, Any]:
        return {name: worker.status() for name, worker in self.workers.items()}

    def test(self, name: str, store_id: str) -> dict[str, Any]:
        """Send a labelled test alarm through output ``name`` now (not through the buffer, not
        to MQTT); returns what the target answered.

        Raises:
            KeyError: no such output.
        """
        worker = self.workers[name]
        cfg = worker.output.config
        exit_name = next(iter(cfg.exits), "test")
        event_type = "eas.alarm" if "eas.alarm" in cfg.types else cfg.types[0]
        env = {
            "specversion": "1.0", "id": uuid7(),
            "source": f"urn:store-edge-agent:{store_id}:agent", "type": event_type,
            "time": rfc3339(), "datacontenttype": "application/json", "storeid": store_id,
            "deviceid": "agent", "seq": 0, "bootid": self.pipeline.bootid,
            "clocksynced": self.pipeline.clock.synced, "test": True, "subject": exit_name,
            "data": {"direction": "unknown", "raw": "agent outputs test"}
            if event_type == "eas.alarm" else {},
        }
        result: dict[str, Any] = {"output": name, "kind": worker.output.kind,
                                  "target": cfg.target(), "exit": exit_name,
                                  "camera": cfg.exits.get(exit_name, exit_name)}
        try:
            result["answer"] = worker.send(env, label=True)
            result["delivered"] = True
        except DeliveryError as err:
            result["answer"] = str(err)
            result["delivered"] = False
        log.info("output %s test: %s: %s", name,
                 "delivered" if result["delivered"] else "NOT delivered", result["answer"])
        return result
