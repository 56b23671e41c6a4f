"""Durations, sizes, the envelope helpers and the catalogue's validation."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import EventError
from agent.events import json_schema, priority_of, rfc3339, uuid7, validate_data
from agent.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("3s", 3), ("10m", 600), ("2h", 7200), ("7d", 604800), (5, 5.0), ("1.5s", 1.5),
    ("30", 30.0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["3 fortnights", "-1s", "", "fast", True, None, -2])
def test_bad_durations_say_what_is_accepted(bad):
    with pytest.raises(ValueError, match="'500ms'"):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "size"), [
    ("256MiB", 256 * 1024**2), ("1GiB", 1024**3), ("512kB", 512_000), (4096, 4096), ("10B", 10),
])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_bad_size():
    with pytest.raises(ValueError, match="256MiB"):
        parse_size("lots")


def test_format_duration():
    assert format_duration(0.25) == "250ms"
    assert format_duration(90) == "1.5m"
    assert format_duration(7 * 86400) == "7d"


def test_uuid7_is_version_7_and_time_ordered():
    first = uuid.UUID(uuid7())
    time.sleep(0.002)
    second = uuid.UUID(uuid7())
    assert first.version == 7 and first.variant == uuid.RFC_4122
    assert str(first) < str(second)
    assert abs((first.int >> 80) - time.time() * 1000) < 5000


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_rfc3339_has_milliseconds_and_z(ts):
    text = rfc3339(ts)
    assert len(text) == 24 and text.endswith("Z") and text[19] == "."


def test_catalogue_validation():
    assert validate_data("eas.alarm", {"direction": "out", "level": 3}) == {
        "direction": "out", "level": 3.0}
    assert validate_data("eas.people_count", {"in": 3, "out": 1}) == {"in": 3, "out": 1}
    assert validate_data("eas.alarm", {"direction": "out", "vendor_code": "X1"})["vendor_code"] == "X1"
    with pytest.raises(EventError, match="not in the catalogue"):
        validate_data("eas.alrm", {})
    with pytest.raises(EventError, match="direction"):
        validate_data("eas.alarm", {"direction": "sideways"})
    with pytest.raises(EventError, match="open_for_s"):
        validate_data("door.held_open", {})


def test_priorities_keep_alarms_longest():
    assert priority_of("eas.people_count") < priority_of("door.opened") < priority_of(
        "eas.fault") < priority_of("eas.alarm") == priority_of("selftest.failed")


def test_schema_covers_every_type():
    schema = json_schema()
    assert "seq" in schema["properties"]
    assert "in" in schema["$defs"]["eas.people_count"]["properties"]
    json.dumps(schema)
