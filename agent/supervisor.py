"""Runs each device's driver as a task and restarts it with backoff when it fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.backoff import Backoff
from agent.driver import Driver

log = logging.getLogger(__name__)

STOP_GRACE = 2.0
"""Seconds a driver gets to finish after cancellation (the conformance kit checks it)."""
STABLE_AFTER = 60.0
"""A driver that ran this long before failing starts its backoff afresh."""


class Supervisor:
    """One task per driver; a crash is logged, reported offline and retried, never fatal."""

    def __init__(self, drivers: list[Driver], *, restart_min: float = 1.0,
                 restart_max: float = 60.0) -> None:
        self.drivers = {d.device_id: d for d in drivers}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._restart = (restart_min, restart_max)
        self.restarts: dict[str, int] = dict.fromkeys(self.drivers, 0)
        self.finished: set[str] = set()

    def start(self) -> None:
        for driver in self.drivers.values():
            self._start(driver)

    def _start(self, driver: Driver) -> None:
        self._tasks[driver.device_id] = asyncio.create_task(
            self._keep_running(driver), name=f"driver:{driver.device_id}"
        )

    def add(self, driver: Driver) -> None:
        """Supervise one more driver (a device added or changed by a reload) and start it."""
        device_id = driver.device_id
        if device_id in self._tasks:
            raise ValueError(f"device {device_id!r} is already supervised")
        self.drivers[device_id] = driver
        self.restarts[device_id] = 0
        self.finished.discard(device_id)
        self._start(driver)

    async def remove(self, device_id: str) -> Driver:
        """Stop one driver (as ``stop()`` does) and forget it; return it.

        Raises:
            KeyError: no such device.
        """
        driver = self.drivers.pop(device_id)
        self.restarts.pop(device_id, None)
        self.finished.discard(device_id)
        task = self._tasks.pop(device_id, None)
        if task is not None:
            await self._cancel([task])
        return driver

    async def _keep_running(self, driver: Driver) -> None:
        backoff = Backoff(initial=self._restart[0], cap=self._restart[1])
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await driver.run()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if loop.time() - started > STABLE_AFTER:
                    backoff.reset()
                delay = backoff.next()
                self.restarts[driver.device_id] += 1
                driver.log.exception("driver failed; restarting in %.1f s", delay)
                try:
                    driver.set_offline(f"driver error: {type(err).__name__}: {err}"[:200])
                except Exception:
                    driver.log.exception("reporting the failure failed")
                await asyncio.sleep(delay)
            else:
                self.finished.add(driver.device_id)
                driver.log.info("driver finished")
                return

    def problems(self) -> list[str]:
        """Devices that are no longer supervised although their driver did not finish."""
        if len(self._tasks) != len(self.drivers):
            return [f"{len(self.drivers) - len(self._tasks)} driver tasks were never started"]
        return [f"the task of device {dev} has ended" for dev, task in self._tasks.items()
                if task.done() and dev not in self.finished]

    async def stop(self) -> None:
        """Cancel every driver and wait up to ``STOP_GRACE`` seconds for them."""
        await self._cancel(list(self._tasks.values()))

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in pending:
            log.warning("driver task %s did not stop within %.0f s", task.get_name(), STOP_GRACE)
        for task in done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
