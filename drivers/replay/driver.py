"""The replay driver: paces recorded events into the pipeline, as recorded or at a fixed rate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pydantic import Field, field_validator

from agent.config import ConfigPath
from agent.driver import Conformance, Driver, DriverConfig
from agent.events import CATALOGUE
from agent.units import Duration
from drivers.replay.recording import read_recording

HERE = Path(__file__).parent


class ReplayConfig(DriverConfig):
    file: ConfigPath = Field(description="JSON Lines: {\"type\", \"data\", \"delay\"?, \"subject\"?}")
    rate: float | None = Field(
        default=None, ge=0,
        description="events per second; unset replays each line's delay; 0 is as fast as possible",
    )
    loop: bool = False
    count: int | None = Field(default=None, ge=1, description="stop after this many events")
    start_delay: Duration = 0.0

    @field_validator("file")
    @classmethod
    def _exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value


class ReplayDriver(Driver):
    """Emits the events of a recording; finishes when the recording (or ``count``) is done."""

    name = "replay"
    version = "1.0.0"
    vendor = "store-edge-agent"
    description = "Replays recorded events from a JSON Lines file"
    emits = tuple(t for t in CATALOGUE if not t.startswith(("agent.", "selftest.")))
    Config = ReplayConfig
    conformance = Conformance(
        working={"file": str(HERE / "sample.jsonl"), "rate": 50, "loop": True},
        failing={"file": str(HERE / "no-events.jsonl")},
        expect=("door.opened", "eas.alarm", "door.closed", "eas.people_count"),
    )
    config: ReplayConfig

    async def run(self) -> None:
        cfg = self.config
        try:
            events, errors = await asyncio.to_thread(read_recording, cfg.file)
        except OSError as err:  # removed or unreadable since the config was checked
            self.set_offline(f"cannot read {cfg.file}: {err.strerror or err}")
            return
        for message in errors:
            self.log.error("skipping line: %s", message)
        if not events:
            self.set_offline(f"no replayable events in {cfg.file}")
            return
        await asyncio.sleep(cfg.start_delay)
        self.set_online()
        self.update_state(file=str(cfg.file), emitted=0)
        emitted = 0
        start = time.monotonic()
        while True:
            for rec in events:
                if cfg.rate is None:
                    await asyncio.sleep(rec.delay)
                elif cfg.rate > 0:
                    # Pace against the start time so that the mean rate holds at high rates.
                    ahead = start + emitted / cfg.rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                elif emitted % 200 == 0:
                    await asyncio.sleep(0)  # as fast as possible, but let the loop breathe
                    await self.context.room()  # and no faster than the buffer commits
                self.emit(rec.type, rec.data, subject=rec.subject)
                emitted += 1
                if cfg.count is not None and emitted >= cfg.count:
                    self.update_state(emitted=emitted, finished=True)
                    return
            if not cfg.loop:
                self.update_state(emitted=emitted, finished=True)
                return
