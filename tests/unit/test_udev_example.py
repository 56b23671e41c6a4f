"""The udev example gives every serial adapter a stable name, by serial number or by USB port."""

from __future__ import annotations

import re
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "examples" / "udev" / "99-store-edge-agent-serial.rules"
MATCH = {"SUBSYSTEM", "ENV{ID_VENDOR_ID}", "ENV{ID_MODEL_ID}", "ENV{ID_SERIAL_SHORT}", "ENV{ID_PATH}"}
ASSIGN = {"SYMLINK": "+=", "GROUP": "=", "MODE": "="}


def rules() -> list[dict[str, tuple[str, str]]]:
    out = []
    for line in RULES.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs = re.findall(r'([A-Z_]+(?:\{[A-Z_]+\})?)(==|!=|\+=|=)"([^"]*)"', line)
        assert ", ".join(f'{k}{op}"{v}"' for k, op, v in pairs) == line.strip(), line
        out.append({k: (op, v) for k, op, v in pairs})
    return out


def test_every_rule_matches_a_tty_and_names_it_with_dialout_access():
    found = rules()
    assert found
    for rule in found:
        for key, (op, _) in rule.items():
            assert key in MATCH or key in ASSIGN, key
            assert op == ("==" if key in MATCH else ASSIGN[key]), (key, op)
        assert rule["SUBSYSTEM"] == ("==", "tty")
        assert rule["GROUP"] == ("=", "dialout")
        # identified by its own serial number, or (no serial number) by the USB port
        assert ("ENV{ID_SERIAL_SHORT}" in rule) != ("ENV{ID_PATH}" in rule)
    names = [rule["SYMLINK"][1] for rule in found]
    assert len(set(names)) == len(names)
    assert any("ENV{ID_PATH}" in rule for rule in found), "the cheap-adapter case"
