"""sd_notify datagrams and the watchdog's progress checks, against a real datagram socket."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from support import NotifySocket, wait_until

from agent.supervisor import Supervisor
from agent.systemd import Notifier
from agent.testing import DriverHarness
from agent.watchdog import Heartbeat, ServiceWatch


@pytest.fixture
def abstract_socket():
    ns = NotifySocket()
    yield ns
    ns.sock.close()


def test_notify_sends_one_datagram_with_every_field_to_an_abstract_socket(abstract_socket):
    notifier = Notifier({"NOTIFY_SOCKET": abstract_socket.env})
    assert notifier.enabled
    assert notifier.notify(READY=1, STATUS="up\nand running")
    assert abstract_socket.recv() == {"READY": "1", "STATUS": "up and running"}


def test_notify_to_a_socket_path(tmp_path):
    ns = NotifySocket(tmp_path / "notify")
    try:
        assert Notifier({"NOTIFY_SOCKET": ns.env}).notify(WATCHDOG=1)
        assert ns.recv() == {"WATCHDOG": "1"}
    finally:
        ns.sock.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify(READY=1) is False
    assert notifier.watchdog_interval is None


def test_a_vanished_socket_is_reported_not_raised(tmp_path, caplog):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify(READY=1) is False
    assert notifier.notify(READY=1) is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(env, interval):
    assert Notifier(env).watchdog_interval == interval


def test_heartbeat_reports_a_thread_that_stops_going_round_and_one_that_died():
    release = threading.Event()
    beat = Heartbeat("worker")
    assert beat.problem(1.0) == "worker thread was never started"

    def work() -> None:
        beat.beat()
        release.wait(10)  # stuck, as if blocked on a dead disk

    thread = threading.Thread(target=work)
    beat.attach(thread)
    thread.start()
    assert beat.problem(60.0) is None
    # stale 0.2 s after the thread's one beat (whenever the loaded machine gave it the CPU)
    stuck = wait_until(lambda: beat.problem(0.2), 10, "the heartbeat to go stale")
    assert "worker thread stuck for" in stuck
    release.set()
    thread.join()
    assert beat.problem(60.0) == "worker thread has died"


def test_a_heartbeat_that_need_not_beat_only_checks_the_thread_is_alive():
    release = threading.Event()
    beat = Heartbeat("network", must_beat=False)
    thread = threading.Thread(target=release.wait, args=(10,))
    beat.attach(thread)
    thread.start()
    time.sleep(0.1)
    assert beat.problem(0.01) is None
    release.set()
    thread.join()
    assert beat.problem(0.01) == "network thread has died"


def test_watch_pings_only_while_every_check_passes(abstract_socket):
    notifier = Notifier({"NOTIFY_SOCKET": abstract_socket.env, "WATCHDOG_USEC": "2000000"})
    problem: list[str] = []
    watch = ServiceWatch(notifier, [lambda: problem[0] if problem else None,
                                    lambda: None], lambda: "store t1: fine")
    assert watch.tick == 1.0
    watch.step()
    assert abstract_socket.recv() == {"WATCHDOG": "1", "STATUS": "store t1: fine"}
    watch.step()
    assert abstract_socket.recv() == {"WATCHDOG": "1"}  # STATUS only when it changes

    problem.append("buffer-writer thread stuck for 20 s")
    watch.step()
    assert abstract_socket.recv() == {"STATUS": "STALLED: buffer-writer thread stuck for 20 s"}
    watch.step()
    assert abstract_socket.pending() == []  # no ping, and nothing new to say

    problem.clear()
    watch.step()
    assert abstract_socket.recv() == {"WATCHDOG": "1", "STATUS": "store t1: fine"}
    assert watch.pings == 3


def test_a_check_that_raises_withholds_the_ping(abstract_socket):
    notifier = Notifier({"NOTIFY_SOCKET": abstract_socket.env, "WATCHDOG_USEC": "2000000"})

    def broken() -> str | None:
        raise RuntimeError("boom")

    watch = ServiceWatch(notifier, [broken], lambda: "fine")
    assert watch.problems() == ["progress check failed: RuntimeError: boom"]
    watch.step()
    assert "WATCHDOG" not in abstract_socket.recv()


async def test_start_sends_ready_and_stop_sends_stopping(abstract_socket):
    notifier = Notifier({"NOTIFY_SOCKET": abstract_socket.env})
    watch = ServiceWatch(notifier, [], lambda: "store t1: broker connected")
    watch.start()
    assert abstract_socket.recv() == {"READY": "1", "STATUS": "store t1: broker connected"}
    watch.stop()
    assert abstract_socket.recv()["STOPPING"] == "1"


async def test_status_follows_a_broker_or_device_change_at_once(abstract_socket):
    notifier = Notifier({"NOTIFY_SOCKET": abstract_socket.env})  # no watchdog: 10 s ticks
    state = {"connected": False}
    watch = ServiceWatch(notifier, [], lambda: "broker " + (
        "connected" if state["connected"] else "DISCONNECTED"), lambda: state["connected"])
    assert watch.tick == 10.0
    watch.start()
    assert abstract_socket.recv()["STATUS"] == "broker DISCONNECTED"
    state["connected"] = True
    started = time.monotonic()
    assert await asyncio.to_thread(abstract_socket.recv) == {"STATUS": "broker connected"}
    assert time.monotonic() - started < 2.0  # not at the next 10 s tick
    watch.stop()


async def test_supervisor_reports_driver_tasks_that_are_gone(tmp_path):
    rec = tmp_path / "rec.jsonl"
    rec.write_text('{"type": "door.opened", "data": {}}\n')
    async with DriverHarness("replay", {"file": str(rec), "count": 1}, tmp_path=tmp_path) as h:
        device = h.config.devices["dev1"]
        finishing = device.driver("dev1", device.config, h.pipeline)
        supervisor = Supervisor([finishing])
        assert supervisor.problems() == ["1 driver tasks were never started"]
        supervisor.start()

        async def finished() -> None:
            while "dev1" not in supervisor.finished:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(finished(), 10)
        assert supervisor.problems() == []  # a driver that finished on its own is fine

        looping = device.driver("dev2", device.config.model_copy(update={"count": None,
                                                                          "loop": True,
                                                                          "rate": 10.0}),
                                h.pipeline)
        running = Supervisor([looping])
        running.start()
        await asyncio.sleep(0.1)
        assert running.problems() == []
        task = running._tasks["dev2"]
        task.cancel()  # as if the supervisor lost it
        await asyncio.wait({task})
        assert running.problems() == ["the task of device dev2 has ended"]
