"""modbus register maps without I/O: read plans, decoding, counters, edges and config errors."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import load_config
from agent.errors import ConfigError
from agent.testing import write_config
from drivers.modbus.config import ModbusConfig
from drivers.modbus.registers import (
    MAX_COUNT,
    EventRule,
    Point,
    Tracker,
    counter_delta,
    decode,
    plan_reads,
)

SAMPLE = Path(__file__).parents[2] / "drivers" / "modbus" / "sample.toml"


def test_contiguous_and_nearby_values_share_one_request_per_table():
    points = [Point(0, "input", 0, "uint16"), Point(1, "input", 2, "uint32"),
              Point(2, "input", 4, "uint32"), Point(3, "input", 6, "uint16"),
              Point(4, "discrete_input", 1, "bool"), Point(5, "discrete_input", 0, "bool"),
              Point(6, "input", 100, "uint16")]
    blocks = plan_reads(points, max_gap=8)
    assert [(b.table, b.start, b.count) for b in blocks] == [
        ("discrete_input", 0, 2), ("input", 0, 7), ("input", 100, 1)]
    assert [p.key for p in blocks[1].points] == [0, 1, 2, 3]


def test_gap_limit_and_protocol_limit_split_requests():
    assert len(plan_reads([Point(0, "holding", 0, "uint16"), Point(1, "holding", 10, "uint16")],
                          max_gap=8)) == 2
    assert len(plan_reads([Point(0, "holding", 0, "uint16"), Point(1, "holding", 9, "uint16")],
                          max_gap=8)) == 1
    far = [Point(i, "holding", i * 5, "uint32") for i in range(60)]
    blocks = plan_reads(far, max_gap=8)
    assert all(b.count <= MAX_COUNT["holding"] for b in blocks)
    assert sum(len(b.points) for b in blocks) == 60


@given(st.lists(st.tuples(st.sampled_from(["coil", "holding", "input"]),
                          st.integers(0, 600), st.sampled_from(["uint16", "uint32"])),
                max_size=40), st.integers(0, 20))
def test_fuzz_every_value_lies_inside_its_block(entries, gap):
    points = [Point(i, t, a, "bool" if t == "coil" else vt) for i, (t, a, vt) in
              enumerate(entries)]
    blocks = plan_reads(points, gap)
    assert sorted(p.key for b in blocks for p in b.points) == list(range(len(points)))
    for b in blocks:
        assert b.count <= MAX_COUNT[b.table]
        for p in b.points:
            width = 2 if p.type == "uint32" and b.table != "coil" else 1
            assert b.start <= p.address
            assert p.address + width <= b.start + b.count


def test_decoding_types_and_word_orders():
    f_hi, f_lo = struct.unpack(">HH", struct.pack(">f", 21.5))
    regs = [0xFFFE, 0x0001, 0x0002, f_hi, f_lo, 0b1000_0000_0000_0100]
    assert decode(regs, 0, "uint16") == 65534
    assert decode(regs, 0, "int16") == -2
    assert decode(regs, 1, "uint32") == 0x0001_0002
    assert decode(regs, 1, "uint32", word_order="little") == 0x0002_0001
    assert decode(regs, 3, "float32") == 21.5
    assert decode(regs, 0, "int32") == struct.unpack(">i", bytes.fromhex("fffe0001"))[0]
    assert decode(regs, 5, "bool", bit=2) is True
    assert decode(regs, 5, "bool", bit=3) is False
    assert decode(regs, 5, "bool", bit=15) is True
    assert decode([False, True], 1, "bool") is True
    with pytest.raises(IndexError):
        decode([1], 0, "uint32")


@pytest.mark.parametrize(("old", "new", "bits", "expected"), [
    (5, 8, 16, (3, "up")),            # an alarm counter up by 3 is 3 alarms
    (8, 8, 16, (0, "same")),
    (65534, 1, 16, (3, "wrap")),      # 65535, 0, 1
    (0xFFFF_FFFF, 0, 32, (1, "wrap")),
    (4000, 2, 16, (2, "restart")),    # a reboot: counting again from 0, 2 since
    (4000, 0, 16, (0, "restart")),
    (10, 5000, 16, (0, "jump")),      # not believable: new baseline
])
def test_counter_steps(old, new, bits, expected):
    step = counter_delta(old, new, bits, max_step=1000)
    assert (step.delta, step.kind) == expected


def test_tracker_baseline_then_increments_give_one_event_per_count():
    t = Tracker(value_type="uint16", on_increment=EventRule("eas.alarm", {"direction": "out"}))
    assert t.observe(41) == []  # baseline: what happened before the agent ran is unknown
    assert [e.data for e in t.observe(44)] == [{"direction": "out"}] * 3
    assert t.observe(44) == []
    assert len(t.observe(1)) == 1  # 44 -> 1 is no wrap: a restart, and 1 alarm since


def test_tracker_increment_into_a_field_gives_one_event():
    t = Tracker(value_type="uint32",
                on_increment=EventRule("eas.people_count", {"out": 0}, field="in"))
    t.observe(100)
    assert [(e.type, e.data) for e in t.observe(107)] == [("eas.people_count",
                                                           {"out": 0, "in": 7})]


def test_tracker_edges_and_changes_with_value_map_and_ignore():
    t = Tracker(value_type="bool",
                on_rise=EventRule("eas.interference", {"inhibit": True}),
                on_fall=EventRule("eas.interference", {"inhibit": False}))
    assert t.observe(False) == []
    assert [e.data for e in t.observe(True)] == [{"inhibit": True}]
    assert [e.data for e in t.observe(False)] == [{"inhibit": False}]
    fault = Tracker(value_type="uint16", on_change=EventRule(
        "eas.fault", field="reason", values={"1": "antenna fault"}, ignore=("0",)))
    assert fault.observe(0) == []
    assert [e.data for e in fault.observe(1)] == [{"reason": "antenna fault"}]
    assert [e.data for e in fault.observe(9)] == [{"reason": 9}]  # unmapped: the raw value
    assert fault.observe(0) == []  # back to "no fault": ignored


# -- config ----------------------------------------------------------------------------------

def problems(tmp_path: Path, device: dict) -> list[str]:
    doc = {"agent": {"store_id": "t", "data_dir": str(tmp_path)},
           "devices": {"ctl": {"driver": "modbus", "host": "127.0.0.1", **device}}}
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path / "agent.toml", doc))
    return info.value.problems


ALARMS = {"name": "alarms", "table": "input", "address": 0,
          "on_increment": {"type": "eas.alarm", "data": {"direction": "out"}}}


def test_config_errors_name_the_register_entry_and_key(tmp_path):
    got = problems(tmp_path, {"registers": [ALARMS, {**ALARMS, "name": "x",
                                                    "on_increment": {"type": "eas.alrm"}}]})
    assert "devices.ctl.registers.1.on_increment.type" in got[0]
    got = problems(tmp_path, {"registers": [{**ALARMS, "table": "coil", "type": "uint16"}]})
    assert "devices.ctl.registers.0" in got[0]
    assert "type must be bool" in got[0]
    got = problems(tmp_path, {"registers": [{**ALARMS, "on_increment": {"type": "eas.fault"}}]})
    assert "reason" in got[0]
    assert "on_increment" in got[0]
    got = problems(tmp_path, {"registers": [{**ALARMS, "type": "float32"}]})
    assert "on_increment is for counters" in got[0]
    got = problems(tmp_path, {"registers": [ALARMS, ALARMS]})
    assert "unique" in got[0]


def test_transport_must_be_exactly_one(tmp_path):
    got = problems(tmp_path, {"port": "/dev/ttyUSB0", "registers": [ALARMS]})
    assert "exactly one" in got[0]


def test_sample_config_is_valid():
    config = load_config(SAMPLE)
    assert {d.driver.name for d in config.devices.values()} == {"modbus"}
    io = config.devices["exit2-io"].config
    assert isinstance(io, ModbusConfig)
    assert io.resources() == [f"serial:{io.port}"]


@given(st.integers(0, 0xFFFF), st.lists(st.integers(0, 1000), max_size=50),
       st.sampled_from([16, 32]))
def test_fuzz_counted_total_equals_what_the_controller_counted(start, steps, bits):
    """However the increments fall across wrap-arounds, the counts add up (steps <= max_step)."""
    t = Tracker(value_type=f"uint{bits}", on_increment=EventRule("eas.alarm"), max_step=1000)
    value = start
    t.observe(value)
    counted = 0
    for step in steps:
        value = (value + step) % (1 << bits)
        counted += len(t.observe(value))
    assert counted == sum(steps)
