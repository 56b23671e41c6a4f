"""scripts/bundle and `scripts/install --bundle`: an install without the network (`unshare -n`).

The bundle is built for this machine (x86_64 here); the Pis get the aarch64 one, whose wheels
this machine can download but not run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import Broker, system_root

from agent.testing import write_config

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install"
ARCH = platform.machine()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the installer runs as root (useradd, chown)"),
    pytest.mark.skipif(any(shutil.which(c) is None for c in ("useradd", "systemctl", "unshare",
                                                             "ip", "mosquitto_sub")),
                       reason="needs useradd, systemctl, unshare, ip and mosquitto-clients"),
    pytest.mark.skipif(ARCH not in ("x86_64", "aarch64"), reason="locks exist for these two"),
]


def bundle(out: Path, arch: str = ARCH, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "scripts" / "bundle"), "--arch", arch, "-o", str(out),
                           *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def this_machines_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "agent.tar.gz"
    built = bundle(out)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "every dependency is a wheel" in subprocess.run(
        ["tar", "-xzOf", str(out), "--wildcards", "*/BUNDLE.txt"], capture_output=True,
        text=True, check=True).stdout
    return out


def locked_pins(lock: Path) -> set[str]:
    return {f"{m[1].lower().replace('_', '-')}=={m[2]}"
            for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", lock.read_text(), re.M)}


def test_the_bundle_installs_and_runs_without_any_network(this_machines_bundle, tmp_path):
    root = system_root(tmp_path / "root")
    broker = Broker(tmp_path / "broker")  # its config only: it runs inside the namespace
    config = write_config(tmp_path / "agent.toml", {
        "agent": {"store_id": "0042", "data_dir": str(tmp_path / "data"),
                  "control_socket": str(tmp_path / "control.sock")},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
    })
    venv = root / "opt/store-edge-agent/venv"
    topic = "retail/0042/agent/status"  # retained: no race with the subscription
    script = f"""
set -u
ip link set lo up
python3 -c 'import socket; socket.create_connection(("1.1.1.1", 443), timeout=3)' 2>/dev/null \\
    && echo "NETWORK REACHABLE"
{INSTALL} --root {root} --bundle {this_machines_bundle} --store-id 0042 --no-start || exit 10
{venv}/bin/pip --disable-pip-version-check freeze --all > {tmp_path}/freeze.txt
mosquitto -c {broker.conf} & broker=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{broker.port}) 2>/dev/null && break; sleep 0.1; done
{venv}/bin/agent --config {config} run > {tmp_path}/agent.log 2>&1 & agent=$!
mosquitto_sub -h 127.0.0.1 -p {broker.port} -t {topic} -C 1 -W 60 > {tmp_path}/status.json
got=$?
kill -TERM $agent; wait $agent; echo "agent exit $?"
kill $broker; wait $broker
exit $got
"""
    result = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True,
                            text=True, timeout=600)
    out = result.stdout + result.stderr
    assert "NETWORK REACHABLE" not in out, "the namespace must have no network"
    assert result.returncode == 0, out + (tmp_path / "agent.log").read_text()
    assert "GPIO: none (no /dev/gpiochip* here)" in out
    assert "agent exit 0" in out
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["storeid"] == "0042"
    assert status["version"] == subprocess.run(
        [str(venv / "bin/agent"), "--version"], capture_output=True, text=True,
        check=True).stdout.split()[-1]
    # exactly the locked versions, nothing resolved on the day
    installed = {line.lower().replace("_", "-")
                 for line in (tmp_path / "freeze.txt").read_text().splitlines()}
    lock = REPO / "requirements" / f"linux-{ARCH}-py311.txt"
    assert locked_pins(lock) <= installed, locked_pins(lock) - installed
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()


def test_a_pi_without_python3_lgpio_is_told_what_to_install(this_machines_bundle, tmp_path):
    root = system_root(tmp_path / "root")
    (root / "dev").mkdir()
    (root / "dev" / "gpiochip0").touch()  # what a Pi has; this machine's python3 has no lgpio
    result = subprocess.run([str(INSTALL), "--root", str(root), "--bundle",
                             str(this_machines_bundle), "--store-id", "0042", "--no-start"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "this machine has GPIO chips but python3 cannot import lgpio" in result.stderr
    assert "sudo apt-get install python3-lgpio" in result.stderr
    assert not (root / "opt/store-edge-agent").exists()
    # a Pi without GPIO devices may say so
    result = subprocess.run([str(INSTALL), "--root", str(root), "--bundle",
                             str(this_machines_bundle), "--store-id", "0042", "--no-start",
                             "--gpio", "none"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_with_python3_lgpio_the_venv_sees_it_and_keeps_every_locked_package(
        this_machines_bundle, tmp_path):
    root = system_root(tmp_path / "root")
    (root / "dev").mkdir()
    (root / "dev" / "gpiochip0").touch()
    # Where apt's python3-lgpio would be for python3: a stand-in module on its path (this
    # machine has no lgpio build); the installer only asks whether python3 imports it.
    dist = tmp_path / "dist-packages"
    dist.mkdir()
    (dist / "lgpio.py").write_text("LGPIO_PY_VERSION = 0x00020200\n")
    result = subprocess.run([str(INSTALL), "--root", str(root), "--bundle",
                             str(this_machines_bundle), "--store-id", "0042", "--no-start"],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(dist)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GPIO: lgpio 131584 from python3-lgpio, seen by the venv (--system-site-packages)" \
        in result.stdout
    venv = root / "opt/store-edge-agent/venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    # every locked package is the venv's own (--ignore-installed), not the system's
    own = {d.name.lower().replace("_", "-").removesuffix(".dist-info")
           for d in (venv / "lib/python3.11/site-packages").glob("*.dist-info")}
    lock = REPO / "requirements" / f"linux-{ARCH}-py311.txt"
    assert {pin.replace("==", "-") for pin in locked_pins(lock)} <= own


def test_a_bundle_for_another_machine_is_refused_by_name(tmp_path):
    other = "aarch64" if ARCH == "x86_64" else "x86_64"
    built = bundle(tmp_path / "other.tar.gz", other)
    assert built.returncode == 0, built.stdout + built.stderr
    result = subprocess.run([str(INSTALL), "--root", str(system_root(tmp_path / "root")),
                             "--bundle", str(tmp_path / "other.tar.gz"), "--store-id", "0042"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert f"is for linux {other} Python 3.11; this machine is {ARCH}" in result.stderr


def test_a_dependency_without_a_wheel_is_listed_and_built_by_the_offline_install(tmp_path):
    # docopt 0.6.2 exists on PyPI only as a source release
    lock = tmp_path / "lock.txt"
    lock.write_text((REPO / "requirements" / f"linux-{ARCH}-py311.txt").read_text()
                    + "docopt==0.6.2 \\\n    --hash=sha256:"
                    "49b3a825280bd66b3aa83585ef59c4a8c82f2c8a522dbe754a8bc8d08c85c491\n")
    built = bundle(tmp_path / "agent.tar.gz", ARCH, "--lock", str(lock))
    assert built.returncode == 0, built.stdout + built.stderr
    assert "no wheel for linux " + ARCH + ", so scripts/install builds these on the target " \
        "(needs build-essential python3-dev there): docopt==0.6.2" in built.stdout
    manifest = subprocess.run(["tar", "-xzOf", str(tmp_path / "agent.tar.gz"), "--wildcards",
                               "*/BUNDLE.txt"], capture_output=True, text=True, check=True).stdout
    assert "\n  docopt==0.6.2\n" in manifest
    root = system_root(tmp_path / "root")
    result = subprocess.run(
        ["unshare", "-n", str(INSTALL), "--root", str(root), "--bundle",
         str(tmp_path / "agent.tar.gz"), "--store-id", "0042", "--no-start"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    venv = root / "opt/store-edge-agent/venv/bin/python"
    subprocess.run([str(venv), "-c", "import docopt"], check=True)
