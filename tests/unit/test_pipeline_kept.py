"""A driver's kept state and the events counted from it reach the buffer in one transaction:
whatever instant a crash picks, the buffer holds both or neither."""

from __future__ import annotations

import asyncio
import json
import random
import re
import sqlite3
import sys
import threading
import time
from pathlib import Path

from agent.buffer import Buffer
from agent.config import load_config
from agent.pipeline import Pipeline
from agent.testing import write_config


def started(tmp_path: Path) -> tuple[Pipeline, Buffer]:
    path = write_config(tmp_path / "agent.toml", {
        "agent": {"store_id": "t", "data_dir": str(tmp_path / "data")}})
    config = load_config(path, drivers={})
    buffer = Buffer(tmp_path / "buffer.db", max_bytes=10**8, max_age=3600,
                    on_dropped=lambda r: pipeline.dropped_event(r))
    pipeline = Pipeline(config, buffer)
    buffer.open()
    pipeline.start()
    return pipeline, buffer


async def test_a_crash_at_any_instant_finds_the_state_matching_the_events(tmp_path):
    pipeline, buffer = started(tmp_path)
    stop, seen = threading.Event(), []

    def snapshot(db: sqlite3.Connection) -> tuple[int, int | None]:
        """What a restart would find: the alarms and the kept count, in one transaction."""
        db.execute("BEGIN")
        events = db.execute("SELECT count(*) FROM events WHERE type = 'eas.alarm'").fetchone()
        kept = db.execute("SELECT value FROM kept").fetchone()
        db.execute("COMMIT")
        return events[0], kept and json.loads(kept[0])["value"]

    def crash_snapshots() -> None:
        db = sqlite3.connect(tmp_path / "buffer.db", isolation_level=None)
        while not stop.is_set():
            seen.append(snapshot(db))
        db.close()

    reader = threading.Thread(target=crash_snapshots)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave anywhere, as a loaded Pi makes them
    reader.start()
    try:
        rng, counted = random.Random(3), 0
        for _ in range(1000):  # a poll: the alarms counted, then the counter's new value
            await pipeline.room()  # as a polling driver does
            await asyncio.sleep(0.0001)  # the next request to the controller
            with pipeline.together():
                for _ in range(rng.randint(1, 4)):
                    pipeline.emit("exit1-ctl", "eas.alarm", {"direction": "out"})
                    counted += 1
                pipeline.keep("exit1-ctl", "counters", {"value": counted})
        assert pipeline.wait_committed(10)
    finally:
        sys.setswitchinterval(switch)
        stop.set()
        reader.join()
        pipeline.stop()


    apart = [(events, kept) for events, kept in seen if events and events != kept]
    assert not pipeline.dropped, "the hold never filled: nothing was dropped"
    assert len(seen) > 100 and not apart, f"{len(apart)} of {len(seen)} snapshots: {apart[:5]}"
    with sqlite3.connect(tmp_path / "buffer.db", isolation_level=None) as db:
        assert snapshot(db) == (counted, counted)
    buffer.close()


def test_a_stop_waits_for_an_open_group_and_commits_it(tmp_path):
    pipeline, buffer = started(tmp_path)
    group = pipeline.spill.begin()
    pipeline.emit("exit1-ctl", "eas.alarm", {"direction": "out"})
    pipeline.keep("exit1-ctl", "counters", {"value": 1})
    threading.Timer(0.2, pipeline.spill.end, (group,)).start()
    pipeline.stop()
    assert [json.loads(r.payload)["type"] for r in buffer.fetch(0, 10)] == ["eas.alarm"]
    assert json.loads(buffer.kept("exit1-ctl/counters") or "{}") == {"value": 1}
    buffer.close()


def test_what_a_group_that_never_ends_holds_is_announced_lost_at_stop(tmp_path, caplog):
    pipeline, buffer = started(tmp_path)
    pipeline.spill.begin()
    pipeline.emit("exit1-ctl", "eas.alarm", {"direction": "out"})
    pipeline.stop()
    assert "stopping with 1 events held in memory that could not be written (a driver's " \
        "together() block never ended): they are lost" in caplog.text
    buffer.close()


def test_a_together_block_held_open_long_is_said_in_the_log(tmp_path, caplog):
    pipeline, buffer = started(tmp_path)
    with pipeline.together():
        pipeline.emit("exit1-ctl", "eas.alarm", {"direction": "out"})
        time.sleep(0.6)  # a vendor driver awaiting a device inside the block
    assert pipeline.wait_committed(5)
    assert re.search(r"a driver's together\(\) block was open for \d+\.\d s: every "
                     r"device's events waited for it; keep it short, with no await inside",
                     caplog.text)
    pipeline.stop()
    buffer.close()
