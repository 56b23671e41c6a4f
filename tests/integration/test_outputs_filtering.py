"""Templates, test labelling and the type filter, on a real pipeline, buffer and fake VMS."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import make_tls, wait_until
from vms_fakes import FakeHttp, FakeTcp

from agent.buffer import Buffer
from agent.config import load_config
from agent.errors import ConfigError
from agent.outputs.manager import Outputs
from agent.pipeline import Pipeline
from agent.testing import write_config


def running(tmp: Path, outputs: dict[str, Any]) -> Iterator[tuple[Pipeline, Outputs]]:
    path = write_config(tmp / "agent.toml", {
        "agent": {"store_id": "t1", "data_dir": str(tmp / "data")},
        "exits": {"exit1": {}, "exit2": {}}, "outputs": outputs})
    config = load_config(path, drivers={})
    buffer = Buffer(tmp / "data" / "buffer.db", max_bytes=10**7, max_age=86400,
                    on_dropped=lambda r: pipeline.dropped_event(r), outputs=config.outputs)
    pipeline = Pipeline(config, buffer)
    outs = Outputs(config.outputs, pipeline, buffer)
    pipeline.start()
    outs.start()
    try:
        yield pipeline, outs
    finally:
        outs.stop()
        pipeline.stop()
        buffer.close()


@pytest.fixture
def vms() -> Iterator[FakeTcp]:
    server = FakeTcp().start()
    yield server
    server.stop()


def test_labelled_tests_skipped_tests_type_filter_and_data_fields(tmp_path, vms):
    template = "{label}SEA {type} {camera} dir={data.direction} test={test}"
    outputs = {
        "label": {"kind": "milestone_generic", "host": "127.0.0.1", "port": vms.port,
                  "template": template, "test_events": "label", "test_label": "WALKTEST",
                  "exits": {"exit1": "Front"}, "types": ["eas.alarm", "door.opened"]},
        "skip": {"kind": "milestone_generic", "host": "127.0.0.1", "port": vms.port,
                 "template": "SKIP {type} {exit}"},
    }
    for pipeline, _ in running(tmp_path, outputs):
        pipeline.emit("eas1", "eas.alarm", {"direction": "out"}, subject="exit1")
        pipeline.emit("eas1", "eas.alarm", {"direction": "in"}, subject="exit1", test=True)
        pipeline.emit("door1", "door.opened", {}, subject="exit2")
        pipeline.emit("eas1", "eas.interference", {"inhibit": True}, subject="exit1")
        pipeline.emit("eas1", "eas.alarm", {"direction": "out"}, subject="exit2")
        wait_until(lambda: len(vms.lines()) >= 6, 10, "the events at the VMS")
    lines = vms.lines()
    assert [x for x in lines if not x.startswith("SKIP")] == [
        "SEA eas.alarm Front dir=out test=false",
        "WALKTEST SEA eas.alarm Front dir=in test=true",
        "SEA door.opened exit2 dir= test=false",  # no camera mapped: the exit's own name
        "SEA eas.alarm exit2 dir=out test=false",
    ]
    assert [x for x in lines if x.startswith("SKIP")] == [
        "SKIP eas.alarm exit1", "SKIP eas.alarm exit2"], "test events skipped; default types"


def test_a_template_without_label_gets_the_label_in_front(tmp_path, vms):
    outputs = {"x": {"kind": "exacq_serial", "host": "127.0.0.1", "port": vms.port,
                     "template": "{type} {exit}", "test_events": "label"}}
    for pipeline, _ in running(tmp_path, outputs):
        pipeline.emit("eas1", "eas.alarm", {"direction": "out"}, subject="exit1", test=True)
        wait_until(lambda: len(vms.lines()) >= 3, 10, "the transaction")
    assert vms.lines() == ["SEA BEGIN", "TEST eas.alarm exit1", "SEA END"]


def test_an_unreadable_webhook_secret_is_a_config_error_naming_the_file(tmp_path):
    hook = FakeHttp()
    try:
        with pytest.raises(ConfigError) as err:
            next(running(tmp_path, {"h": {"kind": "webhook", "url": hook.url,
                                          "secret_file": str(tmp_path / "missing")}}))
        assert str(tmp_path / "missing") in str(err.value.problems)
        assert "output h" in str(err.value.problems)
    finally:
        hook.stop()


def test_webhook_over_https_with_a_private_ca_and_without_it(tmp_path):
    tls = make_tls(tmp_path / "tls")
    hook = FakeHttp(tls=tls, secret=b"k")
    (tmp_path / "k").write_text("k\n")
    outputs = {
        "trusted": {"kind": "webhook", "url": hook.url, "ca_file": str(tls["ca"]),
                    "secret_file": str(tmp_path / "k"), "timeout": "2s"},
        "untrusted": {"kind": "webhook", "url": hook.url, "timeout": "2s"},
    }
    try:
        for _, outs in running(tmp_path, outputs):
            ok = outs.test("trusted", "t1")
            refused = outs.test("untrusted", "t1")
        assert ok["delivered"] is True and ok["answer"] == "HTTP 200 OK: ok"
        assert hook.events()[0]["test"] is True
        assert refused["delivered"] is False
        assert "TLS with 127.0.0.1" in refused["answer"] and "CERTIFICATE_VERIFY_FAILED" in \
            refused["answer"]
    finally:
        hook.stop()


def test_analytics_over_tcp_to_a_server_that_answers_and_keeps_the_connection_open(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        sock, _ = listener.accept()
        held.append(sock)
        data = b""
        while b"</AnalyticsEvent>" not in data:
            data += sock.recv(4096)
        sock.sendall(b"<AnalyticsEventReply>OK</AnalyticsEventReply>")  # and keeps it open

    threading.Thread(target=serve, daemon=True).start()
    outputs = {"xp": {"kind": "milestone_analytics", "transport": "tcp", "host": "127.0.0.1",
                      "port": listener.getsockname()[1], "timeout": "5s",
                      "exits": {"exit1": "Front"}}}
    try:
        for _, outs in running(tmp_path, outputs):
            began = time.monotonic()
            result = outs.test("xp", "t1")
            took = time.monotonic() - began
        assert result["delivered"] is True
        assert result["answer"].endswith("it answered: <AnalyticsEventReply>OK"
                                         "</AnalyticsEventReply>")
        assert took < 2, f"waited {took:.1f} s for a server that keeps the connection open"
    finally:
        listener.close()
        for sock in held:
            sock.close()
