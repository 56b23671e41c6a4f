"""onvif driver without a camera: topic mapping, camera clocks, snapshot triggers and retention."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.events import validate_data
from agent.testing import write_config
from drivers.onvif.mapping import EventMapper, Message, TopicRule, normalise_topic, parse_bool
from drivers.onvif.snapshots import SnapshotStore, is_trigger
from drivers.onvif.timesync import (
    camera_epoch,
    correct_time,
    measure_offset,
    parse_duration,
    parse_utc,
)

SAMPLE = Path(__file__).parents[2] / "drivers" / "onvif" / "sample.toml"


def msg(topic: str, data: dict[str, str], source: dict[str, str] | None = None,
        operation: str | None = "Changed", utc: object = "2026-11-23T10:00:00Z") -> Message:
    return Message(topic, utc, operation, source or {}, data)


@pytest.mark.parametrize(("topic", "data", "source", "expected"), [
    ("tns1:VideoSource/MotionAlarm", {"State": "true"}, {"Source": "VideoSource_1"},
     ("camera.motion", {"active": True, "topic": "tns1:VideoSource/MotionAlarm",
                        "source": "VideoSource_1"})),
    ("tns1:RuleEngine/CellMotionDetector/Motion", {"IsMotion": "false"},
     {"VideoSourceConfigurationToken": "vsc", "Rule": "MyMotion"},
     ("camera.motion", {"active": False, "topic": "tns1:RuleEngine/CellMotionDetector/Motion",
                        "source": "vsc/MyMotion"})),
    ("tns1:VideoSource/GlobalSceneChange/ImagingService", {"State": "true"}, {},
     ("camera.tamper", {"active": True, "kind": "scene_change",
                        "topic": "tns1:VideoSource/GlobalSceneChange/ImagingService"})),
    ("tns1:VideoSource/ImageTooDark/AnalyticsService", {"State": "1"}, {},
     ("camera.tamper", {"active": True, "kind": "too_dark",
                        "topic": "tns1:VideoSource/ImageTooDark/AnalyticsService"})),
    ("tns1:VideoSource/ImageTooBright/ImagingService", {"State": "true"}, {},
     ("camera.tamper", {"active": True, "kind": "too_bright",
                        "topic": "tns1:VideoSource/ImageTooBright/ImagingService"})),
    ("tns1:VideoSource/ImageTooBlurry/ImagingService", {"State": "false"}, {},
     ("camera.tamper", {"active": False, "kind": "too_blurry",
                        "topic": "tns1:VideoSource/ImageTooBlurry/ImagingService"})),
    ("tns1:VideoSource/GlobalSceneChange", {"State": "true"}, {},
     ("camera.tamper", {"active": True, "kind": "scene_change",
                        "topic": "tns1:VideoSource/GlobalSceneChange"})),
    ("tns1:VideoSource/SignalLoss", {"State": "true"}, {},
     ("camera.tamper", {"active": True, "kind": "signal_loss", "topic": "tns1:VideoSource/SignalLoss"})),
    ("tns1:Device/Trigger/DigitalInput", {"LogicalState": "true"}, {"InputToken": "DI_2"},
     ("camera.input", {"input": "DI_2", "active": True})),
    # Another prefix for the ONVIF topic namespace, and a trailing slash, as some cameras send.
    ("tns:VideoSource/MotionAlarm/", {"State": "true"}, {},
     ("camera.motion", {"active": True, "topic": "tns:VideoSource/MotionAlarm/"})),
])
def test_catalogue_mapping_gives_valid_events(topic, data, source, expected):
    mapped = EventMapper().map(msg(topic, data, source))
    assert mapped is not None
    assert (mapped.type, mapped.data) == expected
    validate_data(mapped.type, mapped.data)  # raises if the catalogue would refuse it


def test_unmapped_and_unparsable_topics_are_counted_not_emitted():
    mapper = EventMapper()
    assert mapper.map(msg("tns1:Monitoring/ProcessorUsage", {"Value": "12"})) is None
    assert mapper.map(msg("tns1:Monitoring/ProcessorUsage", {"Value": "13"})) is None
    assert mapper.map(msg("tns1:VideoSource/MotionAlarm", {"State": "maybe", "X": "1"})) is None
    assert mapper.unmapped == {"tns1:Monitoring/ProcessorUsage": 2}
    assert mapper.unparsable == {"tns1:VideoSource/MotionAlarm": 1}


def test_configured_rules_extend_and_override_the_defaults():
    mapper = EventMapper((
        TopicRule("tnsacme:RuleEngine/Loitering//.", "camera.motion", state=("IsLoitering",)),
        TopicRule("tns1:VideoSource/SignalLoss", "camera.tamper", "video_lost"),
        TopicRule("tns1:Monitoring/*", "ignore"),
    ))
    loiter = mapper.map(msg("tnsacme:RuleEngine/Loitering/Zone1", {"IsLoitering": "true"}))
    assert loiter is not None
    assert loiter.type == "camera.motion"
    assert loiter.data["active"] is True
    lost = mapper.map(msg("tns1:VideoSource/SignalLoss", {"State": "true"}))
    assert lost is not None
    assert lost.data["kind"] == "video_lost"
    assert mapper.map(msg("tns1:Monitoring/ProcessorUsage", {"Value": "1"})) is None
    assert mapper.ignored == 1
    assert not mapper.unmapped


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match=r"camera\.tamper needs a kind"):
        TopicRule("tns1:X", "camera.tamper")
    with pytest.raises(ValueError, match="event must be one of"):
        TopicRule("tns1:X", "door.opened")


def test_initialized_state_is_emitted_only_when_it_is_news():
    mapper = EventMapper()
    motion = "tns1:VideoSource/MotionAlarm"
    assert mapper.map(msg(motion, {"State": "false"}, operation="Initialized")) is None
    assert mapper.map(msg(motion, {"State": "true"}, operation="Initialized")) is not None
    assert mapper.map(msg(motion, {"State": "true"}, operation="Initialized")) is None
    assert mapper.map(msg(motion, {"State": "true"})) is not None  # Changed: always
    assert mapper.map(msg(motion, {"State": "false"}, operation="Deleted")) is None


def test_topic_normalisation_and_booleans():
    assert normalise_topic("tns1:RuleEngine/tnsaxis:Cell/Motion//.") == "RuleEngine/Cell/Motion"
    assert [parse_bool(v) for v in ("true", "1", "FALSE", "0", "x")] == [True, True, False, False,
                                                                          None]


def test_durations():
    assert parse_duration("PT60S") == 60
    assert parse_duration("PT1M30.5S") == 90.5
    assert parse_duration("P1DT1H") == 90000
    for bad in ("60", "PT", "P1Y", ""):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_camera_clock_tolerates_zero_and_garbage():
    assert camera_epoch([2026, 11, 23, 10, 0, 0]) == 1795428000.0
    assert camera_epoch([0, 0, 0, 0, 0, 0]) is None
    assert camera_epoch([1970, 1, 1, 0, 0, 0]) is None  # a camera that lost its clock
    assert camera_epoch(["x", None, 1, 1, 1, 1]) is None
    assert camera_epoch([2026, 13, 40, 25, 0, 0]) is None
    assert camera_epoch([2026, 11]) is None
    assert measure_offset(1000.0, 969.0, 971.0) == pytest.approx(30.5)


def test_event_times_are_corrected_by_the_offset_or_fall_back_to_receive_time():
    received = 1795428000.0
    assert correct_time("2026-11-23T10:00:29Z", 30.0, received) == (received - 1, True)
    assert parse_utc("2026-11-23T10:00:00.250Z") == received + 0.25
    for garbage in (None, "", "0", "1970-01-01T00:00:00Z", "garbage", "2026-13-01T00:00:00Z"):
        assert correct_time(garbage, 30.0, received) == (received, False)
    assert correct_time("2026-11-23T10:00:00Z", None, received) == (received, False)  # no offset
    assert correct_time("2026-11-20T10:00:00Z", 0.0, received) == (received, False)  # too old


def test_snapshot_triggers():
    alarm = {"type": "eas.alarm", "subject": "exit1", "deviceid": "eas1", "test": False}
    kw = {"device_id": "cam1", "exit_name": "exit1", "include_test": False}
    assert is_trigger(alarm, ["eas.alarm"], **kw)
    assert not is_trigger({**alarm, "subject": "exit2"}, ["eas.alarm"], **kw)
    assert not is_trigger(alarm, ["door.forced"], **kw)
    assert not is_trigger({**alarm, "test": True}, ["eas.alarm"], **kw)
    assert is_trigger({**alarm, "test": True}, ["eas.alarm"], **{**kw, "include_test": True})
    assert not is_trigger({**alarm, "deviceid": "cam1"}, ["eas.alarm"], **kw)
    assert not is_trigger(alarm, ["eas.alarm"], **{**kw, "exit_name": None})


def test_snapshot_retention_by_count_bytes_and_age(tmp_path):
    store = SnapshotStore(tmp_path, keep=3, max_bytes=10_000, max_age=3600)
    saved = [store.save(b"\xff\xd8" + bytes(1000), f"trigger{i:04d}", 1795428000 + i)
             for i in range(5)]
    assert [p.name for p, _, _ in store.files()] == [s.path.name for s in saved[2:]]
    assert saved[0].bytes == 1002
    assert len(saved[0].sha256) == 64

    store.max_bytes = 2500
    store.prune()
    assert len(store.files()) == 2
    old = store.files()[0][0]
    os.utime(old, (0, 1))
    assert store.prune() == 1
    assert not old.exists()


@pytest.mark.parametrize(("options", "problem"), [
    ({}, "host is required"),
    ({"host": "cam", "password_file": "missing.txt"}, "no such file"),
    ({"host": "cam", "snapshot_on": ["camera.snapshot"]}, "would loop"),
    ({"host": "cam", "snapshot_on": ["eas.alarmm"]}, "not a catalogue event type"),
    ({"host": "cam", "topics": {"tns1:X": {"event": "camera.tamper"}}}, "needs a kind"),
    ({"host": "cam", "pull_timeout": "2m"}, "pull_timeout"),
])
def test_bad_config_names_the_key(tmp_path, options, problem):
    path = write_config(tmp_path / "agent.toml", {
        "agent": {"store_id": "t", "data_dir": str(tmp_path)},
        "devices": {"cam1": {"driver": "onvif", **options}},
    })
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert problem in str(err.value)
    assert "devices.cam1" in str(err.value)


def test_loading_the_driver_does_not_import_the_onvif_stack():
    code = ("import sys, drivers.onvif, agent.registry; agent.registry.discover(); "
            "print(sorted(m for m in ('onvif', 'zeep', 'lxml', 'aiohttp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_shows_the_sample():
    readme = (SAMPLE.parent / "README.md").read_text()
    assert SAMPLE.read_text() in readme
