"""eas_serial line framing and rules, without I/O: edge cases and a hypothesis fuzz."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import load_config
from agent.errors import ConfigError
from agent.events import validate_data
from agent.testing import write_config
from drivers.eas_serial.config import EasSerialConfig, profile_names
from drivers.eas_serial.parsing import (
    BadFrame,
    CompiledRule,
    LineFramer,
    LineParser,
    Matched,
    Unmatched,
    normalise_direction,
)

SAMPLE = Path(__file__).parents[2] / "drivers" / "eas_serial" / "sample.toml"


def parser_for(profile: str = "pipe-events", **options) -> LineParser:
    cfg = EasSerialConfig(port="/dev/null", profile=profile, **options)
    return LineParser(cfg.compiled_rules(), terminator=cfg.terminator.encode(),
                      encoding=cfg.encoding, max_line=cfg.max_line)


def events(parser: LineParser, data: bytes) -> list[tuple[str | None, dict]]:
    return [(o.type, o.data) for o in parser.feed(data) if isinstance(o, Matched)]


def test_pipe_profile_lines_become_catalogue_events():
    p = parser_for()
    got = events(p, b"ALARM|OUT|3|2\r\nINHIBIT|ON|45\r\nFAULT|antenna 2 open\r\n"
                    b"COUNT|12|9|60\r\nHB\r\nALARM|?\r\n")
    assert got == [
        ("eas.alarm", {"direction": "out", "level": 3, "pedestal": 2, "raw": "ALARM|OUT|3|2"}),
        ("eas.interference", {"inhibit": True, "level": 45}),
        ("eas.fault", {"reason": "antenna 2 open", "raw": "FAULT|antenna 2 open"}),
        ("eas.people_count", {"in": 12, "out": 9, "interval_s": 60}),
        (None, {}),  # heartbeat: recognised, no event
        ("eas.alarm", {"direction": "unknown", "raw": "ALARM|?"}),
    ]
    for event_type, data in got:
        if event_type:
            validate_data(event_type, data)
    assert (p.frames, p.matched, p.unmatched, p.bad_frames) == (6, 6, 0, 0)


def test_polled_profile_maps_vendor_direction_codes_and_keeps_fault_codes_as_text():
    p = parser_for("polled-kv")
    got = events(p, b"EV=ALM DIR=I PED=2 LVL=71\r\nEV=FLT CODE=E12 TXT=tx overload\r\n"
                    b"EV=ALM DIR=O\r\nSTATUS OK\r\n")
    assert got == [
        ("eas.alarm", {"direction": "in", "pedestal": 2, "level": 71}),
        ("eas.fault", {"code": "E12", "reason": "tx overload"}),
        ("eas.alarm", {"direction": "out"}),
        (None, {}),
    ]


def test_device_rules_come_before_profile_rules_and_first_match_wins():
    p = parser_for(rules=[{"match": r"^ALARM\|OUT\|9", "type": "eas.fault",
                           "data": {"reason": "stuck antenna reports level 9"}}])
    assert events(p, b"ALARM|OUT|9|1\r\nALARM|OUT|2|1\r\n") == [
        ("eas.fault", {"reason": "stuck antenna reports level 9"}),
        ("eas.alarm", {"direction": "out", "level": 2, "pedestal": 1, "raw": "ALARM|OUT|2|1"}),
    ]


def test_unmatched_text_and_bad_frames_are_counted_separately():
    p = parser_for()
    out = p.feed(b"HELLO WORLD\r\n\xff\xfe\x80\r\nA\x01B\r\n\r\n   \r\n")
    assert [type(o) for o in out] == [Unmatched, BadFrame, BadFrame]
    assert "not utf-8" in out[1].reason
    assert "control characters" in out[2].reason
    assert (p.frames, p.unmatched, p.bad_frames) == (3, 1, 2)


def test_lines_split_across_reads_and_terminators_split_across_reads():
    p = parser_for()
    assert events(p, b"ALAR") == []
    assert events(p, b"M|IN|1|1\r") == []
    assert events(p, b"\nCOUNT|1|") == [
        ("eas.alarm", {"direction": "in", "level": 1, "pedestal": 1, "raw": "ALARM|IN|1|1"})]
    assert events(p, b"2\r\n") == [("eas.people_count", {"in": 1, "out": 2})]


def test_endless_line_is_dropped_once_and_memory_stays_bounded():
    framer = LineFramer(b"\r\n", max_line=64)
    bad = []
    for _ in range(1000):
        bad += framer.feed(b"x" * 100)
        assert framer.pending <= 64
    assert len(bad) == 1
    assert isinstance(bad[0], BadFrame)
    # The tail of the overlong line up to the next terminator is skipped, then framing resumes.
    assert framer.feed(b"yyy\r\nOK\r\n") == [b"OK"]


def test_terminator_split_after_overflow_is_still_found():
    framer = LineFramer(b"\r\n", max_line=16)
    assert isinstance(framer.feed(b"z" * 20 + b"\r")[0], BadFrame)
    assert framer.feed(b"\nNEXT\r\n") == [b"NEXT"]


@pytest.mark.parametrize(("word", "expected"), [
    ("OUT", "out"), ("exit", "out"), (">", "out"), ("O", "out"), ("In", "in"), ("ENTRY", "in"),
    ("", "unknown"), ("sideways", "unknown"), ("?", "unknown"),
])
def test_direction_words_normalise(word, expected):
    assert normalise_direction(word) == expected


def test_value_that_the_catalogue_refuses_is_left_for_the_driver_to_report():
    rule = CompiledRule(re.compile(r"^INH (?P<inhibit>\w+)$"), "eas.interference")
    assert rule.apply("INH maybe") == {"inhibit": "maybe"}
    with pytest.raises(ValueError, match="inhibit"):
        validate_data("eas.interference", rule.apply("INH maybe"))


# -- config errors name the rule and key -----------------------------------------------------

def check(tmp_path: Path, device: dict) -> list[str]:
    table = {"driver": "eas_serial", "port": "/dev/ttyUSB0", **device}
    doc = {"agent": {"store_id": "t", "data_dir": str(tmp_path)},
           "devices": {"exit1-eas": {k: v for k, v in table.items() if v is not None}}}
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path / "agent.toml", doc))
    return info.value.problems


def test_bad_regex_names_rule_index_and_key(tmp_path):
    problems = check(tmp_path, {"rules": [{"match": "^OK$", "ignore": True},
                                          {"match": "ALARM(", "type": "eas.alarm"}]})
    assert len(problems) == 1
    assert "devices.exit1-eas.rules.1.match" in problems[0]
    assert "not a valid regular expression" in problems[0]


def test_type_outside_catalogue_names_rule_and_key(tmp_path):
    problems = check(tmp_path, {"rules": [{"match": "X", "type": "eas.alarmm"}]})
    assert "devices.exit1-eas.rules.0.type" in problems[0]
    assert "eas.alarm" in problems[0]  # lists what is accepted


def test_rule_missing_a_required_field_says_how_to_provide_it(tmp_path):
    problems = check(tmp_path, {"rules": [{"match": "^FAULT$", "type": "eas.fault"}]})
    assert "devices.exit1-eas.rules.0" in problems[0]
    assert "(?P<reason>" in problems[0]


def test_unknown_profile_lists_known_ones(tmp_path):
    problems = check(tmp_path, {"profile": "sensormatic-xyz"})
    assert "devices.exit1-eas" in problems[0]
    for name in profile_names():
        assert name in problems[0]


def test_no_rules_and_no_port_are_errors(tmp_path):
    assert "no rules" in check(tmp_path, {})[0]
    doc_problem = check(tmp_path, {"port": None, "profile": "pipe-events"})
    assert any("port is required" in p for p in doc_problem)


def test_sample_config_is_valid_and_has_two_profiles():
    config = load_config(SAMPLE)
    assert {d.driver.name for d in config.devices.values()} == {"eas_serial"}
    assert len(profile_names()) >= 2
    exit1 = config.devices["exit1-eas"].config
    assert exit1.resources() == [f"serial:{exit1.port}"]


# -- fuzz --------------------------------------------------------------------------------------

LINES = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"ALARM|OUT|3|2", b"ALARM|IN", b"COUNT|1|2", b"INHIBIT|OFF",
                     b"FAULT|x", b"HB", b"\xff\xfe", b"ALARM|OUT|99999999999999999999|x"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=30), st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_fuzz_any_bytes_in_any_chunking_never_crash_and_stay_bounded(lines, cuts):
    """Whatever arrives, however it is split: no exception, bounded memory, every complete
    well-formed line gives the same outcome as when it arrives whole."""
    stream = b"\r\n".join(lines) + b"\r\n"
    whole = parser_for()
    expected = whole.feed(stream)
    chunked = parser_for()
    got: list = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got += chunked.feed(stream[pos:pos + step])
        assert chunked.framer.pending <= chunked.framer.max_line
        pos, i = pos + step, i + 1
    assert got == expected
    assert whole.frames == whole.matched + whole.unmatched + whole.bad_frames


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_noise_without_terminator_holds_at_most_max_line(noise):
    p = parser_for(max_line=64)
    p.feed(noise.replace(b"\n", b""))
    assert p.framer.pending <= 64


@settings(max_examples=300, deadline=None)
@given(direction=st.sampled_from(["IN", "OUT", "in", "Out", "?", ""]),
       level=st.one_of(st.none(), st.integers(0, 10**6), st.floats(0, 1000, allow_nan=False)),
       pedestal=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)),
       noise=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=40))
def test_fuzz_well_formed_alarm_lines_always_give_valid_alarms(direction, level, pedestal, noise):
    """Any alarm line of the pipe profile's grammar, amid arbitrary text lines, gives exactly one
    catalogue-valid eas.alarm with the line's direction."""
    line = f"ALARM|{direction}"
    if level is not None:
        line += f"|{level:.2f}" if isinstance(level, float) else f"|{level}"
        if pedestal is not None:
            line += f"|{pedestal}"
    p = parser_for()
    out = p.feed(f"{noise}\r\n{line}\r\n".encode())
    alarms = [o for o in out if isinstance(o, Matched) and o.line == line]
    assert len(alarms) == 1
    data = validate_data("eas.alarm", alarms[0].data)
    assert data["direction"] == normalise_direction(direction)
    assert data["raw"] == line


def test_a_pedestal_id_that_looks_like_a_float_stays_text():
    """Found by the fuzz test: "1E20" became 1e+20, which eas.alarm's pedestal (text or integer)
    refuses, so the alarm was not emitted."""
    p = parser_for()
    out = p.feed(b"ALARM|IN|0|1E20\r\nALARM|IN|0|007\r\n")
    pedestals = [o.data["pedestal"] for o in out if isinstance(o, Matched)]
    assert pedestals == ["1E20", 7]
    for o in out:
        validate_data("eas.alarm", o.data)
