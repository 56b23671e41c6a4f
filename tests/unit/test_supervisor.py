"""A driver that crashes is reported offline and restarted with backoff; the agent keeps going."""

from __future__ import annotations

import asyncio
import json

from agent.buffer import Buffer
from agent.config import load_config
from agent.driver import Driver
from agent.pipeline import Pipeline
from agent.registry import DriverInfo
from agent.supervisor import Supervisor
from agent.testing import write_config


class Flaky(Driver):
    """Crashes on its first two runs, then works."""

    name = "flaky"
    version = "1"
    emits = ("door.opened",)
    runs = 0

    async def run(self) -> None:
        type(self).runs += 1
        if type(self).runs <= 2:
            raise RuntimeError(f"port exploded (run {type(self).runs})")
        self.set_online()
        self.emit("door.opened")
        await asyncio.Event().wait()


async def test_crashing_driver_is_restarted_and_reported(tmp_path):
    path = write_config(tmp_path / "agent.toml", {
        "agent": {"store_id": "t", "data_dir": str(tmp_path / "data")},
        "devices": {"d1": {"driver": "flaky"}},
    })
    info = DriverInfo("flaky", "tests", "0", "tests:Flaky", cls=Flaky)
    config = load_config(path, drivers={"flaky": info})
    buffer = Buffer(tmp_path / "buffer.db", max_bytes=10**7, max_age=3600,
                    on_dropped=lambda r: pipeline.dropped_event(r))
    pipeline = Pipeline(config, buffer)
    buffer.open()
    pipeline.start()
    driver = Flaky("d1", config.devices["d1"].config, pipeline)
    supervisor = Supervisor([driver], restart_min=0.01, restart_max=0.05)
    supervisor.start()
    for _ in range(500):
        if driver.online:
            break
        await asyncio.sleep(0.01)
    await supervisor.stop()
    pipeline.stop()
    assert supervisor.restarts["d1"] == 2
    types = [json.loads(r.payload) for r in buffer.fetch(0, 100)]
    offline = [e for e in types if e["type"] == "device.offline"]
    assert offline and "RuntimeError: port exploded" in offline[0]["data"]["reason"]
    assert [e["type"] for e in types][-2:] == ["device.online", "door.opened"]
    buffer.close()
