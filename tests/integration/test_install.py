"""scripts/install into a scratch root: user, venv, config, unit; twice; then uninstall."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from support import system_root

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the installer runs as root (useradd, chown)"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("systemctl") is None,
                       reason="needs useradd and systemctl"),
]


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=600)


def account(root: Path, db: str, name: str) -> list[str] | None:
    for line in (root / "etc" / db).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return system_root(tmp_path / "root")


def test_install_twice_then_uninstall_keeps_data_unless_purged(root: Path):
    first = install(root)
    assert first.returncode == 2
    assert "--store-id" in first.stderr  # a first install must name its store

    first = install(root, "--store-id", "0042")
    assert first.returncode == 0, first.stdout + first.stderr

    # the user: unprivileged, in the groups that own serial ports and GPIO
    user = account(root, "passwd", "store-edge-agent")
    assert user is not None
    assert user[6] == "/usr/sbin/nologin"
    assert int(user[2]) != 0
    for group in ("dialout", "gpio"):
        assert "store-edge-agent" in account(root, "group", group)[3].split(",")
    # the venv and the command on the PATH
    agent = root / "opt/store-edge-agent/venv/bin/agent"
    assert subprocess.run([str(agent), "--version"], capture_output=True, text=True,
                          check=True).stdout.startswith("store-edge-agent ")
    assert os.readlink(root / "usr/local/bin/agent") == "/opt/store-edge-agent/venv/bin/agent"
    # the config: from the example, this store, no demo device, readable by the agent only
    config = root / "etc/store-edge-agent/agent.toml"
    settings = tomllib.loads(config.read_text())
    assert settings["agent"]["store_id"] == "0042"
    assert "devices" not in settings
    assert config.stat().st_mode & 0o777 == 0o640
    assert config.stat().st_gid == int(account(root, "group", "store-edge-agent")[2])
    check = subprocess.run([str(agent), "--config", str(config), "config", "check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # the unit, enabled
    unit = root / "etc/systemd/system/store-edge-agent.service"
    assert unit.read_text() == (REPO / "systemd/store-edge-agent.service").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/store-edge-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/store-edge-agent.service"
    state = root / "var/lib/store-edge-agent"
    assert state.stat().st_uid == int(user[2])

    venv = root / "opt/store-edge-agent/venv"
    first_release = os.readlink(venv)
    assert first_release.startswith("releases/")

    # a technician's edit survives a second run (an upgrade); nothing is duplicated
    config.write_text(config.read_text().replace('host = "localhost"', 'host = "broker.lan"'))
    (state / "buffer.db").write_bytes(b"events")
    again = install(root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert 'host = "broker.lan"' in config.read_text()
    second_release = os.readlink(venv)
    assert second_release != first_release
    releases = sorted(p.name for p in (root / "opt/store-edge-agent/releases").iterdir())
    assert releases == sorted(Path(r).name for r in (first_release, second_release))

    # an upgrade that cannot run with this config changes nothing that is installed
    good = config.read_text()
    config.write_text(good.replace("[buffer]", "[buffer]\nmax_byts = 1"))
    refused = install(root)
    assert refused.returncode == 2
    assert "buffer.max_byts" in refused.stderr
    assert "installed version is unchanged" in refused.stderr
    assert os.readlink(venv) == second_release
    assert sorted(p.name for p in (root / "opt/store-edge-agent/releases").iterdir()) == releases
    config.write_text(good)
    for db in ("passwd", "group"):
        lines = (root / "etc" / db).read_text().splitlines()
        assert sum(1 for line in lines if line.startswith("store-edge-agent:")) == 1

    removed = install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert not wants.exists()
    assert not (root / "opt/store-edge-agent").exists()
    assert not (root / "usr/local/bin/agent").is_symlink()
    assert config.exists()
    assert (state / "buffer.db").read_bytes() == b"events"
    assert account(root, "passwd", "store-edge-agent") is not None

    purged = install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not config.parent.exists()
    assert not state.exists()
    assert account(root, "passwd", "store-edge-agent") is None
    assert account(root, "group", "store-edge-agent") is None
    assert account(root, "group", "dialout") is not None  # shared groups stay
