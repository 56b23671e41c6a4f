"""Log lines as journald and a technician see them: levels, device context, repeat limiting."""

from __future__ import annotations

import io
import logging
import os

import pytest

from agent import logs


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _logger(stream: io.StringIO | object, *, journald: bool = False, clock: Clock | None = None,
            ) -> logging.Logger:
    handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(logs.ContextFormatter(journald=journald))
    handler.addFilter(logs.RepeatFilter(clock=clock or Clock()))
    log = logging.getLogger(f"test.logs.{id(handler)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


def test_device_context_is_on_the_first_line_even_with_a_traceback():
    out = io.StringIO()
    log = logging.LoggerAdapter(_logger(out), {"device": "exit1-eas", "driver": "eas_serial"})
    try:
        raise OSError("port vanished")
    except OSError:
        log.exception("serial port lost")
    lines = out.getvalue().splitlines()
    assert " ERROR test.logs." in lines[0]
    assert lines[0].endswith(": serial port lost [device=exit1-eas driver=eas_serial]")
    assert lines[-1] == "OSError: port vanished"


def test_terminal_lines_carry_a_timestamp_journald_lines_a_priority_instead():
    out = io.StringIO()
    _logger(out).warning("broker unreachable")
    assert out.getvalue()[:4].isdigit()  # 2026-...

    journal = io.StringIO()
    log = _logger(journal, journald=True)
    log.info("connected")
    log.warning("slow")
    try:
        raise ValueError("bad frame")
    except ValueError:
        log.exception("parse failed")
    log.debug("detail")
    lines = journal.getvalue().splitlines()
    assert lines[0].startswith("<6>INFO test.logs.")
    assert lines[1].startswith("<4>WARNING ")
    assert lines[2].startswith("<3>ERROR ")
    # every traceback line keeps the error priority, so `journalctl -p err` shows all of it
    assert lines[3] == "<3>Traceback (most recent call last):"
    assert lines[-2] == "<3>ValueError: bad frame"
    assert lines[-1].startswith("<7>DEBUG ")


def test_journald_is_detected_from_journal_stream_naming_the_stream(tmp_path, monkeypatch):
    with (tmp_path / "journal").open("w") as stream, (tmp_path / "other").open("w") as other:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.under_journald(stream)
        assert not logs.under_journald(other)  # e.g. StandardError=file: keep timestamps
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not logs.under_journald(stream)
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not logs.under_journald(stream)


def test_setup_under_journald_writes_priorities_without_timestamps(tmp_path, monkeypatch,
                                                                  restore_root_logger):
    path = tmp_path / "journal"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.setup("info", stream=stream)
        logging.getLogger("agent.test").error("disk full")
        logging.getLogger("agent.test").debug("not at info level")
    assert path.read_text() == "<3>ERROR agent.test: disk full\n"


def test_a_flapping_port_logs_its_error_a_few_times_per_window_then_counts():
    clock = Clock()
    out = io.StringIO()
    log = logging.LoggerAdapter(_logger(out, clock=clock), {"device": "exit1-eas"})

    def port_lost() -> None:  # one place in the code, as in a driver's reconnect loop
        log.error("serial port lost")

    for _ in range(100):
        port_lost()
        clock.now += 0.1  # 100 errors in 10 s
    assert out.getvalue().count("serial port lost") == logs.REPEAT_LIMIT

    clock.now += logs.REPEAT_WINDOW
    port_lost()
    last = out.getvalue().splitlines()[-1]
    assert f"({100 - logs.REPEAT_LIMIT} similar messages were suppressed before this one)" in last
    port_lost()
    assert out.getvalue().count("serial port lost") == logs.REPEAT_LIMIT + 2


def test_repeat_limit_is_per_device_and_never_hides_info():
    clock = Clock()
    out = io.StringIO()
    base = _logger(out, clock=clock)
    a = logging.LoggerAdapter(base, {"device": "a"})
    b = logging.LoggerAdapter(base, {"device": "b"})
    def flap(log: logging.LoggerAdapter) -> None:
        log.warning("offline")
        log.info("reconnected")

    for _ in range(10):
        flap(a)
        flap(b)
    text = out.getvalue()
    assert text.count("offline [device=a]") == logs.REPEAT_LIMIT
    assert text.count("offline [device=b]") == logs.REPEAT_LIMIT
    assert text.count("reconnected [device=a]") == 10
