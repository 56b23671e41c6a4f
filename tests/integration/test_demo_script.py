"""scripts/demo as a technician runs it: events on the screen, and Ctrl-C or SIGTERM stops the
broker, the agent and the tail it started, the agent before the broker, with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except FileNotFoundError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_demo_stops_everything_it_started(how: str) -> None:
    # As from a terminal: a test run started in the background (`cmd &` in a script) has SIGINT
    # ignored, which bash would inherit and then could not trap. A Python handler is not
    # inherited: the script starts with the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        demo = subprocess.Popen(
            [str(ROOT / "scripts" / "demo")], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "DEMO_PORT": str(free_port())},
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    started: set[int] = set()
    try:
        assert demo.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while not any(" #" in line for line in seen):  # an event with its seq
            assert time.monotonic() < deadline, "".join(seen)
            line = demo.stdout.readline()
            assert line, f"scripts/demo ended early: {''.join(seen)}"
            seen.append(line)
        started = _descendants(demo.pid)
        names = {Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ") for p in started}
        assert any("mosquitto" in n for n in names), names
        assert any("agent run" in n for n in names), names
        assert any("agent tail" in n for n in names), names
        if how == "ctrl-c":  # the terminal sends SIGINT to the whole foreground process group
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
        wait_until(lambda: not any(_alive(p) for p in started), 10, "every process of the demo")
    finally:
        # The broker and the agent run in sessions of their own (setsid): once the script is
        # gone they are no longer its descendants, and one left running holds the demo's data
        # directory and ports for the next test. Taken before the script is killed.
        leftover = started | _descendants(demo.pid)
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        for pid in leftover:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    log = (ROOT / "var" / "demo" / "agent.log").read_text()
    run = log[log.rindex("agent.runtime: agent "):]  # this run's lines
    assert "agent.runtime: stopped" in run
    assert " ERROR " not in run, run
