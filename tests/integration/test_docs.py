"""docs/writing-drivers.md cannot drift: its code is excerpts of tested files, its commands run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from support import AGENT_BIN

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-drivers.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(*langs: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(DOC.read_text()) if lang in langs]


def test_every_code_block_is_an_excerpt_of_a_file_the_tests_run():
    excerpts = blocks("python", "toml")
    assert len(excerpts) >= 10
    for body in excerpts:
        first, _, code = body.partition("\n")
        assert first.startswith("# "), f"a code block must start with '# <file>': {first!r}"
        source = ROOT / first[2:]
        assert source.is_file(), f"{DOC.name}: no such file {first[2:]}"
        assert code in source.read_text(), f"{DOC.name}: this excerpt is no longer in {source}:\n{code}"


def test_every_command_shown_runs():
    commands = [line[2:] for body in blocks("console") for line in body.splitlines()
                if line.startswith("$ ")]
    assert {"agent drivers", "agent drivers check acme_eas"} <= set(commands)
    setup = (ROOT / "scripts" / "setup").read_text()
    for command in commands:
        argv = shlex.split(command)
        if argv[:3] == ["pip", "install", "-e"]:  # the set-up does it, into the tests' .venv
            assert f" {argv[3]};" in setup and 'pip install --disable-pip-version-check -e "$target"' \
                in setup
            continue
        assert argv[0] == "agent", f"{DOC.name} shows a command the test does not know: {command}"
        proc = subprocess.run([AGENT_BIN, *argv[1:]], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "AGENT_CONFIG": str(ROOT / "no-such.toml")})
        assert proc.returncode == 0, f"$ {command}\n{proc.stdout}{proc.stderr}"
        assert "acme_eas" in proc.stdout


def test_the_package_tree_shown_exists():
    (tree,) = blocks("text")
    root = ROOT / "examples" / "acme-eas-driver"
    folder = root
    for line in tree.splitlines()[1:]:
        name = line.split()[0]
        if name.endswith("/"):
            folder = root / name.rstrip("/")
            assert folder.is_dir(), name
        else:
            assert (folder / name).is_file() or (root / name).is_file(), name
