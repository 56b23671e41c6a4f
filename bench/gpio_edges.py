"""GPIO input figures on gpiozero's MockFactory: edge-to-commit latency, and a chattering contact's cost."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.testing import DriverHarness
from drivers.gpio_common import factory

RELAY = {"pin": "GPIO17", "pull": "up",
         "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}},
         "on_inactive": {"event": "door.input_trouble", "data": {"condition": "open"}}}


async def latency(tmp: Path, debounce: str, rounds: int) -> list[float]:
    """Seconds from driving the pin to the event's buffer commit, ``rounds`` activations."""
    out = []
    async with DriverHarness("gpio_input", RELAY | {"debounce": debounce}, tmp_path=tmp) as h:
        await h.wait_state(lambda s: s.get("online") is True)
        pin = factory.current()[1].pin("GPIO17")
        # Timed on the buffer's writer thread at commit, not by polling the harness.
        committed: dict[str, float] = {}
        h.pipeline.subscribe(lambda env: committed.setdefault(env["id"], time.perf_counter()))
        for n in range(1, rounds + 1):
            start = time.perf_counter()
            pin.drive_low()
            alarm = await h.wait_for("eas.alarm", count=n, timeout=10)
            out.append(committed[alarm["id"]] - start)
            pin.drive_high()
            await h.wait_for("door.input_trouble", count=n, timeout=10)
    return out


async def chatter(tmp: Path, edges: int) -> tuple[float, float, int]:
    """A contact bouncing ``edges`` times: wall and CPU seconds until it settled, events given."""
    async with DriverHarness("gpio_input", RELAY, tmp_path=tmp) as h:
        await h.wait_state(lambda s: s.get("online") is True)
        pin = factory.current()[1].pin("GPIO17")
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(edges // 2):
            pin.drive_low()
            pin.drive_high()
        pin.drive_low()
        await h.wait_for("eas.alarm", timeout=60)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await asyncio.sleep(0.2)
        return wall, cpu, len(h.of_type("eas.alarm")) + len(h.of_type("door.input_trouble"))


async def main(work: Path, rounds: int, edges: int) -> None:
    for i, debounce in enumerate(("0ms", "50ms")):
        samples = await latency(work / f"l{i}", debounce, rounds)
        ms = sorted(s * 1000 for s in samples)
        print(f"edge -> committed event, debounce {debounce}: n={rounds} "
              f"median {statistics.median(ms):.2f} ms, p95 {ms[int(len(ms) * 0.95) - 1]:.2f} ms, "
              f"max {ms[-1]:.2f} ms")
    wall, cpu, events = await chatter(work / "c", edges)
    print(f"chattering contact: {edges} edges in one burst -> {events} event(s); settled after "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU ({edges / cpu / 1000:.0f}k edges per CPU second)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        for sub in ("l0", "l1", "c"):
            (Path(d) / sub).mkdir()
        asyncio.run(main(Path(d), int(sys.argv[1]) if len(sys.argv) > 1 else 200,
                         int(sys.argv[2]) if len(sys.argv) > 2 else 100_000))
