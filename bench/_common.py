"""Helpers the benchmarks share: CPU time and memory of processes, read from /proc."""

from __future__ import annotations

import os
import re
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def mib(pid: int, key: str) -> float:
    """A size line of /proc/<pid>/status (``VmRSS``, ``VmHWM``...) in MiB."""
    match = re.search(rf"{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants (from the parent pid of every process: not every
    kernel has /proc/<pid>/task/<tid>/children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its living descendants (a child that exited is not counted)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            total += cpu_seconds(p)
        except FileNotFoundError:
            continue
    return total
