"""Self-test reports for people (a table printed as steps happen) and machines (JUnit XML)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from agent.units import format_clock

__all__ = ["ProgressPrinter", "junit_xml"]

def _latency(ms: float | None) -> str:
    """One unit for every row, so that latencies compare at a glance."""
    return "" if ms is None else f"{ms:.0f} ms"


class ProgressPrinter:
    """Prints the progress items of ``agent selftest`` as they arrive, one line per step."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def __call__(self, item: dict[str, Any]) -> None:
        kind = item.get("kind")
        if kind == "started":
            how = "walk test" if item.get("walk") else "self-test"
            self.write(f"\n{item['exit']}: {how} {item['run_id']} ({item.get('trigger')})")
            self.write(f"  {'STEP':<24} {'RESULT':<6} {'LATENCY':>8}  DETAIL")
        elif kind == "step":
            result = item["result"].upper() if item["result"] == "fail" else item["result"]
            if item.get("warning"):
                result = "warn"
            self.write(f"  {item['step']:<24} {result:<6} {_latency(item.get('latency_ms')):>8}"
                       f"  {item.get('detail', '')}")
        elif kind == "prompt":
            until = ""
            if item.get("timeout"):
                until = (f" ({item['timeout']:g} s, until "
                         f"{format_clock(time.time() + item['timeout'])})")
            self.write(f"\n  >>> {item['text']}{until}")
        elif kind == "stopping":
            self.write("\n  stopping the self-test: the exit is put back at rest first "
                       "(Ctrl-C again to leave at once)")
        elif kind == "finished":
            report = item["report"]
            self.write(f"{report['exit']}: {report['result'].upper()} "
                       f"({report['summary']}) in {report['duration_ms'] / 1000:.1f} s")


def junit_xml(reports: list[dict[str, Any]]) -> str:
    """One ``testsuite`` per exit, one ``testcase`` per step (fail: ``failure``, skip:
    ``skipped``); an incomplete run gets a failing ``alarm chain tested`` case."""
    suites = ET.Element("testsuites", name="store-edge-agent selftest")
    for report in reports:
        steps = report["steps"]
        incomplete = report["result"] == "incomplete"
        suite = ET.SubElement(suites, "testsuite", {
            "name": f"exit {report['exit']}",
            "tests": str(len(steps) + incomplete),
            "failures": str(sum(s["result"] == "fail" for s in steps) + incomplete),
            "skipped": str(sum(s["result"] == "skip" for s in steps)),
            "time": f"{report['duration_ms'] / 1000:.3f}",
            "timestamp": report["started"],
            "id": report["run_id"],
        })
        for step in steps:
            case = ET.SubElement(suite, "testcase", {
                "classname": f"selftest.{report['exit']}", "name": step["step"],
                "time": f"{(step.get('latency_ms') or 0) / 1000:.3f}",
            })
            if step["result"] == "fail":
                ET.SubElement(case, "failure", message=step.get("detail", "")).text = \
                    step.get("detail", "")
            elif step["result"] == "skip":
                ET.SubElement(case, "skipped", message=step.get("detail", ""))
            elif step.get("detail"):
                ET.SubElement(case, "system-out").text = step["detail"]
        if incomplete:
            case = ET.SubElement(suite, "testcase", {"classname": f"selftest.{report['exit']}",
                                                     "name": "alarm chain tested"})
            ET.SubElement(case, "failure", message=report["summary"]).text = report["summary"]
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")
