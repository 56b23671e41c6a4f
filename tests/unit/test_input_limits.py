"""Pure checks behind the input limits: JSON depth before parsing, the snapshot URI pinning."""

from __future__ import annotations

import pytest

from agent.commands import CommandError, RequestLimits, json_depth, parse_request
from drivers.onvif.fetch import FetchRefused, pin_uri


@pytest.mark.parametrize(("text", "depth"), [
    (b'{"id": "a"}', 1),
    (b'{"a": [[{"b": []}]]}', 5),
    (b'{"a": "[[[[{{{{"}', 1),  # brackets inside strings do not count
    (b'{"a": "\\"[[[["}', 1),  # nor after an escaped quote
    (b'{"a": "\\\\", "b": [[1]]}', 3),  # an escaped backslash ends before the quote
    (b"[" * 100_000, 17),  # counting stops past the limit
])
def test_json_depth(text, depth):
    assert json_depth(text, 16) == depth


def test_a_request_is_checked_before_it_is_parsed():
    limits = RequestLimits(max_bytes=100, id_max=4, max_depth=3)
    assert parse_request(b'{"id": "abcd", "x": [[1]]}', limits)[0] == "abcd"
    for payload, message in ((b'{"id": "' + b"x" * 200 + b'"}', "more than limits.request_max_bytes 100"),
                             (b'{"id": "abcde"}', 'request "id" is 5 characters'),
                             (b'{"id": "a", "x": [[[1]]]}', "deeper than limits.request_max_depth 3")):
        with pytest.raises(CommandError, match=message.replace("(", r"\(")) as err:
            parse_request(payload, limits)
        assert "xxxx" not in str(err.value) and "abcde" not in str(err.value)


@pytest.mark.parametrize(("uri", "pinned"), [
    ("http://10.1.2.3:8080/snap.jpg?ch=1", "http://10.1.2.3:8080/snap.jpg?ch=1"),  # itself
    ("http://192.168.0.64/snap.jpg", "http://10.1.2.3:8080/snap.jpg"),  # behind NAT
    ("http://admin:pw@127.0.0.1:80/s.jpg", "http://10.1.2.3:8080/s.jpg"),  # no userinfo
    ("http://[fe80::1]:80/s.jpg", "http://10.1.2.3:8080/s.jpg"),  # link-local IPv6
    ("https://10.1.2.3:8080/s.jpg", "https://10.1.2.3:8080/s.jpg"),
])
def test_snapshot_uris_are_pinned_to_the_camera(uri, pinned):
    assert pin_uri(uri, "10.1.2.3", 8080) == pinned


@pytest.mark.parametrize(("uri", "message"), [
    ("http://nvr.example/snap.jpg", "another host (nvr.example:80) than the camera 10.1.2.3:8080"),
    ("http://8.8.8.8/snap.jpg", "another host (8.8.8.8:80)"),
    ("file:///etc/shadow", "scheme 'file' refused"),
    ("ftp://10.1.2.3/snap.jpg", "scheme 'ftp' refused"),
])
def test_snapshot_uris_elsewhere_are_refused(uri, message):
    with pytest.raises(FetchRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        pin_uri(uri, "10.1.2.3", 8080)


def test_a_reload_keeps_the_limits_the_agent_started_with(tmp_path):
    from agent.config import load_config
    from agent.reload import diff, effective
    from agent.testing import write_config

    def config(name: str, **limits: object):
        return load_config(write_config(tmp_path / f"{name}.toml", {
            "agent": {"store_id": "t1", "data_dir": str(tmp_path / "data")},
            "limits": limits}))

    old, new = config("old"), config("new", requests_per_minute=6000)
    assert diff(old, new).restart_only == {"limits.requests_per_minute": (60, 6000)}
    assert effective(old, new).settings.limits.requests_per_minute == 60
