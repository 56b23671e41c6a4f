"""The walk test as a technician meets it: `agent selftest --walk` in a real pseudo-terminal,
through the running service, answered, left silent, and stopped with Ctrl-C."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import termios
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support import AGENT_BIN, AgentProcess
from test_selftest import config, exit1, start


def _controlling_terminal() -> None:  # in the child, after setsid: Ctrl-C on the pty is SIGINT
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # ... and SIGINT does what it does for a command typed at a shell, even when these tests run
    # in the background of a non-interactive shell (`.ci/run &`), which starts them ignoring it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """A pseudo-terminal running one command: what the screen shows, keys typed into it."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True, preexec_fn=_controlling_terminal)  # noqa: PLW1509
        os.close(slave)
        self.master = master
        self.screen = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the command ended
                return
            if not chunk:
                return
            with self._lock:
                self.screen += chunk.decode(errors="replace").replace("\r\n", "\n")

    def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            assert time.monotonic() < deadline, f"{text!r} not shown within {timeout} s:\n" \
                f"{self.screen}"
            time.sleep(0.05)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.2)  # the last bytes
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminals():
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def walk(agent: AgentProcess, terminals: list[Terminal], junit: Path) -> Terminal:
    term = Terminal([AGENT_BIN, "--config", str(agent.config_path), "selftest", "--walk",
                     "--junit", str(junit)])
    terminals.append(term)
    return term


def row(screen: str, step: str) -> str:
    match = re.search(rf"^  {re.escape(step)}\s+(.*)$", screen, re.MULTILINE)
    assert match, f"no {step!r} row:\n{screen}"
    return match.group(1)


def test_a_walk_nobody_answers_still_ends_with_its_report(tmp_path, broker, agents, terminals):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1(), walk_within="2s"))
    junit = tmp_path / "walk.xml"
    term = walk(agent, terminals, junit)
    term.expect(">>> Carry the test tag out through the exit at LOW height now. (2 s, until ")
    term.expect("??? Did the sounder sound", timeout=30)  # nobody walks, nobody answers
    term.expect("(no answer within 2 s)", timeout=10)
    assert term.wait(15) == 1
    screen = term.screen
    assert "1 exit tested (the running agent): exit1 FAIL" in screen
    # a door that never opened is not held open or closed: the walk does not drag on
    assert row(screen, "walk door opened").startswith("FAIL")
    assert row(screen, "walk door closed").startswith("skip") and "never opened" in screen
    assert ">>> Close the exit door" not in screen
    assert row(screen, "walk sounder and lights").startswith("skip")
    assert "Broken pipe" not in screen and "Traceback" not in screen
    cases = {c.get("name") for c in ET.parse(junit).getroot().iter("testcase")}
    assert {"walk low", "walk sounder and lights", "restore"} <= cases


def test_ctrl_c_through_the_service_shows_aborted_restore_and_verdict(tmp_path, broker, agents,
                                                                      terminals):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1(), walk_within="30s"))
    junit = tmp_path / "walk.xml"
    term = walk(agent, terminals, junit)
    term.expect(">>> Carry the test tag out through the exit at LOW height now.")
    assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0  # left open
    time.sleep(0.3)
    term.type("\x03")  # Ctrl-C
    term.expect("stopping the self-test")
    assert term.wait(20) == 1
    screen = term.screen
    assert row(screen, "aborted").startswith("FAIL")
    assert row(screen, "restore").startswith("FAIL") and "exit1-door" in row(screen, "restore")
    assert "exit1: FAIL" in screen and "1 exit tested (the running agent): exit1 FAIL" in screen
    assert junit.exists() and "aborted" in junit.read_text()
    assert "Traceback" not in screen
    log = agent.output()
    assert " ERROR " not in log and "ConnectionResetError" not in log, log


def test_a_bare_enter_skips_the_question_and_latencies_share_one_unit(tmp_path, broker, agents,
                                                                     terminals):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1(), walk_within="10s"))
    term = walk(agent, terminals, tmp_path / "walk.xml")
    for prompt, sim in (("LOW height", ("gpio", "exit1-eas", "pulse")),
                        ("MIDDLE height", ("gpio", "exit1-eas", "pulse")),
                        ("HIGH height", ("gpio", "exit1-eas", "pulse")),
                        ("Open the exit door", ("gpio", "exit1-door", "open")),
                        ("Close the exit door", ("gpio", "exit1-door", "close"))):
        term.expect(f">>> {prompt}" if "door" in prompt else prompt)
        assert agent.run_cli("sim", *sim).returncode == 0
    term.expect("??? Did the sounder sound")
    term.type("\r")  # Enter, nothing else
    assert term.wait(20) == 0, term.screen
    screen = term.screen
    answer = row(screen, "walk sounder and lights")
    assert answer.split()[0] == "skip" and answer.endswith("no answer from the technician")
    latencies = re.findall(r"^  \S.{23} \S+\s+(\d+(?:\.\d+)? \S+)  ", screen, re.MULTILINE)
    assert latencies and all(lat.endswith(" ms") for lat in latencies), latencies


def test_ctrl_c_in_process_at_the_question_ends_with_the_report(tmp_path, broker, terminals):
    from agent.testing import write_config

    path = tmp_path / "agent.toml"
    write_config(path, config(tmp_path, broker, exit1(), walk_within="1s"))
    term = Terminal([AGENT_BIN, "--config", str(path), "selftest", "--walk"])
    terminals.append(term)
    term.expect("running the self-test in-process")
    term.expect("??? Did the sounder sound", timeout=30)  # nobody walked: 1 s per step
    term.type("\x03")
    assert term.wait(20) == 1
    screen = term.screen
    assert "(Ctrl-C)" in screen  # the open question is closed on its line
    assert row(screen, "aborted").startswith("FAIL") and row(screen, "restore")
    assert "1 exit tested (in-process): exit1 FAIL" in screen
    assert "Traceback" not in screen and "ERROR" not in screen
