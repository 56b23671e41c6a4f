"""``[outputs.<name>]`` at config load: each problem names the output and the key or field."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import GOOD, check, write

from agent.cli import main
from agent.config import load_config


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    (tmp_path / "rec.jsonl").write_text('{"type": "door.opened"}\n')
    return tmp_path


def test_a_good_output_table_loads_with_the_defaults(cfg_dir: Path) -> None:
    path = write(cfg_dir, GOOD + '[outputs.vms]\nkind = "milestone_generic"\nhost = "10.0.0.5"\n'
                 '[outputs.vms.exits]\nexit1 = "Cam Exit 1"\n')
    out = load_config(path).outputs["vms"]
    assert out.port == 1234 and out.protocol == "tcp" and out.test_events == "skip"
    assert out.types == ["eas.alarm", "door.forced", "door.held_open", "camera.tamper",
                         "selftest.failed"]
    assert out.exits == {"exit1": "Cam Exit 1"}


@pytest.mark.parametrize(("table", "expected"), [
    ('kind = "genetec"', 'outputs.vms.kind: got \'genetec\': unknown output kind; accepted: '
     'exacq_serial, milestone_analytics, milestone_generic, webhook'),
    ('host = "h"', "outputs.vms.kind: required key is missing; accepted: exacq_serial"),
    ('kind = "milestone_generic"\nhost = "h"\ntemplate = "SEA {type} {door}"',
     "outputs.vms.template: got 'SEA {type} {door}': unknown field {door}; accepted: id, seq"),
    ('kind = "exacq_serial"\nhost = "h"\nport = 5000\ntemplate = "{data.colour}"',
     "outputs.vms.template: got '{data.colour}': unknown field {data.colour}"),
    ('kind = "milestone_analytics"\nhost = "h"\nmessage = "{type"',
     "outputs.vms.message: got '{type': not a valid template"),
    ('kind = "webhook"\nurl = "ftp://x/"', "outputs.vms.url: got 'ftp://x/': expected an http"),
    ('kind = "webhook"\nurl = "https://u:pw@x/"', "outputs.vms.url: no credentials in a URL"),
    ('kind = "webhook"\nurl = "http://x/"\ntypes = ["eas.alarm", "eas.alrm"]',
     "outputs.vms.types: got ['eas.alarm', 'eas.alrm']: unknown event type 'eas.alrm'"),
    ('kind = "webhook"\nurl = "http://x/"\ntest_events = "count"',
     "outputs.vms.test_events: got 'count': accepted: 'skip' or 'label'"),
    ('kind = "webhook"\nurl = "http://x/"\nsecret = "inline"',
     "outputs.vms.secret: unknown key (a typo?)"),
    ('kind = "webhook"\nurl = "http://x/"\n[outputs.vms.exits]\nexit9 = "Cam 9"',
     "outputs.vms.exits.exit9: got 'exit9': no such exit in [exits]"),
])
def test_a_bad_output_is_a_config_error_naming_output_and_key(
        cfg_dir: Path, capsys: pytest.CaptureFixture[str], table: str, expected: str) -> None:
    path = write(cfg_dir, GOOD + "[outputs.vms]\n" + table + "\n")
    code, out = check(path, capsys)
    assert code == 2
    assert f"{path}: {expected}" in out, out
    assert "pw@" not in out


def test_outputs_test_without_a_running_agent_exits_3(cfg_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write(cfg_dir, GOOD.replace('data_dir = "data"', 'data_dir = "data"\n'
                                       'control_socket = "nobody.sock"'))
    code = main(["--config", str(path), "outputs", "test", "vms"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.startswith("agent outputs: ") and "nobody.sock" in err
