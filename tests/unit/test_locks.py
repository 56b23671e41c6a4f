"""The dependency locks (requirements/, written by scripts/lock) match pyproject.toml's floors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("linux-aarch64-py311.txt", "linux-x86_64-py311.txt")


def pins(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every requirement in a hashed lock."""
    found: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=\S)", lock.read_text()):
        head = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if head:
            found[canonicalize_name(head[1])] = (head[2], block.count("--hash=sha256:"))
    return found


@pytest.mark.parametrize("lock", LOCKS)
def test_every_dependency_is_locked_within_its_floor_with_hashes(lock):
    locked = pins(ROOT / "requirements" / lock)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in {lock}: run scripts/lock"
        assert req.specifier.contains(locked[name][0]), \
            f"{lock} pins {req.name}=={locked[name][0]}, outside {spec}: run scripts/lock"
    assert all(hashes for _, hashes in locked.values()), "every pin needs its hashes"
    assert "lgpio" not in locked, "lgpio comes from apt (python3-lgpio), not from the lock"
