"""`agent schema` is one JSON Schema 2020-12 document: checked with the `jsonschema` library."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from support import AGENT_BIN

from agent.events import CATALOGUE


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(subprocess.run([AGENT_BIN, "schema"], capture_output=True, text=True,
                                       check=True).stdout)
    Draft202012Validator.check_schema(schema)  # a valid 2020-12 schema, not just any JSON
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


ALARM: dict[str, Any] = {
    "specversion": "1.0", "id": "0199c3a2-7f1e-7b3c-9a51-3f6d2c1b8e40",
    "source": "urn:store-edge-agent:0042:exit1-eas", "type": "eas.alarm",
    "time": "2026-11-23T06:02:11.482Z", "subject": "exit1", "datacontenttype": "application/json",
    "storeid": "0042", "deviceid": "exit1-eas", "seq": 4711,
    "bootid": "5f0c6a38-2d41-4f6e-9c07-6a1b2c3d4e5f", "clocksynced": True, "test": False,
    "data": {"direction": "out", "level": 3, "raw": "ALARM|OUT|3"},
}


def errors(validator: Draft202012Validator, event: Any) -> list[str]:
    return [e.message for e in validator.iter_errors(event)]


def changed(**fields: Any) -> dict[str, Any]:
    event = copy.deepcopy(ALARM)
    event.update(fields)
    return event


def test_the_readme_example_is_valid(validator):
    assert errors(validator, ALARM) == []


@pytest.mark.parametrize("junk", [{"nonsense": 1}, 42, "eas.alarm", [], None, {}])
def test_junk_is_rejected(validator, junk):
    assert errors(validator, junk)


def test_an_unknown_type_is_rejected(validator):
    assert any("is not one of" in e for e in errors(validator, changed(type="eas.explosion")))


@pytest.mark.parametrize(("event_type", "data", "why"), [
    ("eas.alarm", {"direction": "sideways"}, "'sideways' is not one of"),
    ("eas.people_count", {"in": -1, "out": 2}, "-1 is less than the minimum of 0"),
    ("eas.people_count", {"out": 2}, "'in' is a required property"),
    ("door.held_open", {}, "'open_for_s' is a required property"),
    ("device.offline", {"reason": 5}, "5 is not of type 'string'"),
    ("selftest.step", {"exit": "e", "run_id": "r", "step": "s", "result": "maybe"},
     "'maybe' is not one of"),
    ("agent.events_dropped", {"count": 3, "first_seq": 1, "last_seq": 3},
     "'reason' is a required property"),
])
def test_data_that_does_not_fit_its_type_is_rejected(validator, event_type, data, why):
    assert any(why in e for e in errors(validator, changed(type=event_type, data=data)))


@pytest.mark.parametrize(("fields", "why"), [
    ({"seq": 0}, "0 is less than the minimum of 1"),
    ({"time": "2026-11-23T06:02:11Z"}, "does not match"),   # no milliseconds
    ({"time": 1764482531.482}, "is not of type 'string'"),   # epoch seconds
    ({"deviceid": "Exit 1"}, "does not match"),
    ({"specversion": "0.3"}, "'1.0' was expected"),
    ({"colour": "red"}, "Additional properties are not allowed"),
    ({"data": None}, "None is not of type 'object'"),
])
def test_a_bad_envelope_is_rejected(validator, fields, why):
    assert any(why in e for e in errors(validator, changed(**fields)))


def test_vendor_fields_in_data_are_accepted(validator):
    """DESIGN.md: `data` fields may grow; the catalogue's fields are still checked."""
    assert errors(validator, changed(data={"direction": "in", "zone": "left"})) == []


def test_every_catalogue_type_has_its_own_definition(validator):
    schema = validator.schema
    assert set(CATALOGUE) <= set(schema["$defs"])
    chosen = {rule["if"]["properties"]["type"]["const"] for rule in schema["allOf"]}
    assert chosen == set(CATALOGUE)
    assert errors(validator, changed(type="door.forced", data={})) == []
