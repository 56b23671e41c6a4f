"""The driver conformance kit: the checks behind ``agent drivers check`` and ``DriverConformance``."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.driver import ActionError, Conformance, Driver, DriverConfig, HealthCheck
from agent.errors import ConfigError
from agent.events import CATALOGUE
from agent.registry import DriverInfo, discover

__all__ = ["CHECKS", "DriverConformance", "Result", "check_driver", "run_check"]

CHECKS = ("metadata", "sample", "imports", "working", "failing")
"""Every check, in the order ``agent drivers check`` runs them."""

STOP_WITHIN = 2.0
"""``run()`` must end this soon after cancellation (the agent's shutdown budget per device)."""
HEALTH_WITHIN = 2.0
"""``health()`` must answer this soon: self-tests wait on it."""
ONLINE_WITHIN = 10.0
"""The working device must be online, and the failing one offline, this soon after starting."""
EXPECT_WITHIN = 5.0
"""Each expected event type must be committed this soon after the simulate commands."""

FORBIDDEN = ("paho", "sqlite3", "agent.buffer", "agent.pipeline", "agent.publisher",
             "agent.mqtt", "agent.runtime", "agent.testing")
"""Modules a driver never imports: the core owns MQTT and the SQLite buffer (DESIGN.md)."""

DOCS = "docs/writing-drivers.md"


@dataclass(frozen=True)
class Result:
    """One check of one driver: passed when ``problems`` is empty."""

    driver: str
    check: str
    problems: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        """The problems as the lines a vendor reads, or ``ok``."""
        if self.ok:
            return "ok"
        return "\n".join(f"- {p}" for p in self.problems)


def _find(name: str) -> DriverInfo | str:
    info = discover().get(name)
    if info is None:
        return f"no driver called {name!r} is installed in {sys.prefix} (see `agent drivers`)"
    if info.load() is None:
        return f"driver {name!r} from {info.package} cannot be used: {info.error}"
    return info


# -- metadata, sample, imports: no driver running ---------------------------------------------


def check_metadata(info: DriverInfo, cls: type[Driver]) -> list[str]:
    """What is missing or wrong in the class attributes of ``cls``."""
    problems = []
    if cls.name != info.name:
        problems.append(f"name = {cls.name!r}, but the entry point is called {info.name!r}: "
                        "they must match (config files name the driver)")
    if not cls.version or cls.version == Driver.version:
        problems.append("version is not set (e.g. \"1.0.0\")")
    for attr in ("vendor", "description"):
        if not str(getattr(cls, attr)).strip():
            problems.append(f"{attr} is not set")
    if not isinstance(cls.emits, tuple):
        problems.append(f"emits must be a tuple of event types, got {type(cls.emits).__name__}")
    for event_type in cls.emits:
        if event_type not in CATALOGUE:
            problems.append(f"emits {event_type!r}, which is not a catalogue event type "
                            "(`agent schema` lists them)")
        elif event_type.startswith(("agent.", "selftest.")):
            problems.append(f"emits {event_type!r}, which only the agent itself emits")
    if not isinstance(cls.actions, tuple) or not all(isinstance(a, str) for a in cls.actions):
        problems.append("actions must be a tuple of action names")
    elif cls.actions and cls.action is Driver.action:
        problems.append(f"actions {', '.join(cls.actions)} are declared but action() is not "
                        "implemented")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, DriverConfig)):
        problems.append("Config must be a subclass of agent.driver.DriverConfig")
    elif cls.Config.model_config.get("extra") != "forbid":
        problems.append("Config must forbid unknown keys (keep DriverConfig's model_config): a typo "
                        "in agent.toml must be an error")
    if cls.run is Driver.run:
        problems.append("run() is not implemented")
    conf = cls.conformance
    if not isinstance(conf, Conformance):
        problems.append(f"conformance is not declared: set conformance = Conformance(working=..., "
                        f"failing=...) so the kit can run the driver without hardware ({DOCS})")
    else:
        for event_type in conf.expect:
            if event_type not in cls.emits and not event_type.startswith("device."):
                problems.append(f"conformance.expect names {event_type!r}, which is not in emits")
    return problems


def driver_folder(cls: type[Driver]) -> Path:
    """The folder of the module that defines ``cls``: where its ``sample.toml`` lives."""
    return Path(inspect.getfile(cls)).resolve().parent


def check_sample(info: DriverInfo, cls: type[Driver]) -> list[str]:
    """Whether ``sample.toml`` next to the driver loads and configures a device of it."""
    from agent.config import load_config

    sample = driver_folder(cls) / "sample.toml"
    if not sample.is_file():
        return [f"no {sample}: ship a sample agent.toml showing a typical device (as package data)"]
    try:
        config = load_config(sample)
    except ConfigError as err:
        return [f"the sample config is refused: {p}" for p in err.problems]
    if not any(dev.driver.name == info.name for dev in config.devices.values()):
        return [f"{sample} configures no device with driver = {info.name!r}"]
    return []


_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def _source_files(module: str) -> Iterator[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return
    origin = Path(spec.origin)
    if spec.submodule_search_locations is None:
        yield origin
        return
    for path in sorted(origin.parent.rglob("*.py")):
        # A package's own test-suite may use the harness; it is not imported by the agent.
        if not {"tests", "test"} & set(path.relative_to(origin.parent).parts[:-1]):
            yield path


def check_imports(info: DriverInfo, cls: type[Driver]) -> list[str]:
    """Whether importing the driver pulls in MQTT or SQLite code, run and read.

    Imports the entry point's module in a fresh interpreter and lists what it loaded, and scans
    the package's own sources for imports that only run later (inside functions).
    """
    module = info.entry_point.partition(":")[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return [f"importing {module} in a fresh interpreter failed: {last}"]
    problems = [f"importing {module} loads {m}: drivers never touch MQTT or SQLite, the core does"
                for m in json.loads(proc.stdout) if m in FORBIDDEN]
    for path in _source_files(module):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, SyntaxError, ValueError) as err:
            problems.append(f"{path}: cannot be read: {err}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            bad = next((n for n in names if _forbidden(n)), None)
            if bad is not None:
                problems.append(f"{path}:{node.lineno} imports {bad}: drivers never touch MQTT or "
                                "SQLite, the core does")
    return problems


# -- working and failing: the driver runs on the real pipeline ----------------------------------


def _sections(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


async def _call(what: str, coro: Coroutine[Any, Any, Any], within: float) -> tuple[Any, str | None]:
    """Await ``coro`` for at most ``within`` s; ``(result, None)`` or ``(None, problem)``."""
    start = time.monotonic()
    try:
        result = await asyncio.wait_for(coro, within)
    except TimeoutError:
        return None, f"{what} did not answer within {within:g} s"
    except Exception as err:
        return None, f"{what} raised {type(err).__name__}: {err}"
    took = time.monotonic() - start
    if took > within:  # it blocked the event loop, so wait_for could not interrupt it
        return None, f"{what} took {took:.1f} s (over {within:g} s): blocking I/O belongs in a thread"
    return result, None


async def _health(h: Any) -> list[str]:
    checks, problem = await _call("health()", h.driver.health(), HEALTH_WITHIN)
    if problem:
        return [problem]
    if not isinstance(checks, list) or not all(isinstance(c, HealthCheck) for c in checks):
        return [f"health() must return a list of HealthCheck, got {checks!r}"]
    # The self-test hooks answer as fast, with one HealthCheck or None (docs/selftest.md).
    rest, problem = await _call("at_rest()", h.driver.at_rest(), HEALTH_WITHIN)
    if problem:
        return [problem]
    if rest is not None and not isinstance(rest, HealthCheck):
        return [f"at_rest() must return a HealthCheck or None, got {rest!r}"]
    return []


async def _stop(h: Any, problems: list[str]) -> list[str]:
    """Cancel the driver: a slow stop is a problem, and a crash not reported yet."""
    try:
        await h.stop()
    except AssertionError as err:
        return [f"run() {str(err).removeprefix('driver ')}"]
    except Exception as err:
        crash = f"run() raised {type(err).__name__}: {err}"
        return [] if any(p.startswith(crash) for p in problems) else [crash]
    return []


def _committed(h: Any, cls: type[Driver]) -> list[str]:
    problems = [f"an emit was refused: {r}" for r in dict.fromkeys(h.rejected)]
    undeclared = {e["type"] for e in h.events
                  if e["type"] not in cls.emits and not e["type"].startswith("device.")}
    problems += [f"emitted {t}, which is not declared in emits" for t in sorted(undeclared)]
    return problems


async def _working(h: Any, conf: Conformance) -> list[str]:
    problems: list[str] = []
    try:
        await h.wait_state(lambda s: s.get("online") is True, timeout=ONLINE_WITHIN)
    except TimeoutError:
        return [f"not online within {ONLINE_WITHIN:g} s (set_online() never called); "
                f"events: {[(e['type'], e['data']) for e in h.events][-5:]}"]
    except Exception as err:
        return [f"run() raised {type(err).__name__}: {err}"]
    for command, params in conf.simulate:
        _, problem = await _call(f"simulate({command!r})", h.driver.simulate(command, dict(params)),
                                 HEALTH_WITHIN)
        problems += [problem] if problem else []
    for event_type in conf.expect:
        try:
            await h.wait_for(event_type, timeout=EXPECT_WITHIN)
        except TimeoutError:
            problems.append(f"no {event_type} within {EXPECT_WITHIN:g} s of the simulate commands")
        except Exception as err:
            problems.append(f"run() raised {type(err).__name__}: {err}")
            break
    problems += await _health(h)
    _, problem = await _call("action('no-such-action')", h.driver.action("no-such-action", {}),
                             HEALTH_WITHIN)
    if problem is None:
        problems.append("action() accepted an unknown action; it must raise ActionError")
    elif "raised" in problem and not problem.startswith(f"action('no-such-action') raised "
                                                        f"{ActionError.__name__}"):
        problems.append(f"{problem}; an unknown action must raise ActionError")
    problems += [f"went offline on the simulated transport: {e['data'].get('reason')}"
                 for e in h.of_type("device.offline")]
    return problems


async def _failing(h: Any, conf: Conformance) -> list[str]:
    try:
        offline = await h.wait_for("device.offline", timeout=ONLINE_WITHIN)
    except TimeoutError:
        return [f"no device.offline within {ONLINE_WITHIN:g} s: the failing options must make the "
                "transport fail at once"]
    except Exception as err:
        return [f"run() raised {type(err).__name__}: {err}, instead of reporting device.offline "
                "and retrying"]
    problems = await _health(h)
    if not offline["data"].get("reason", "").strip():
        problems.append("device.offline has an empty reason: say what failed")
    return problems


Probe = Callable[[Any, Conformance], Coroutine[Any, Any, list[str]]]


async def _run_case(case: str, info: DriverInfo, cls: type[Driver], tmp: Path, probe: Probe
                    ) -> list[str]:
    """Run the device of ``conformance.<case>`` on the real pipeline, probe it, and stop it."""
    from agent.testing import DriverHarness

    conf = cls.conformance
    assert conf is not None
    options = conf.working if case == "working" else conf.failing
    layers = [conf.settings] + ([conf.failing_settings] if case == "failing" else [])
    try:
        h = DriverHarness(info.name, dict(options), tmp_path=tmp, stop_within=STOP_WITHIN,
                          settings=_sections(*layers))
    except ConfigError as err:
        return [f"conformance.{case} is refused: {p}" for p in err.problems]
    problems: list[str] = []
    await h.__aenter__()
    try:
        problems += await probe(h, conf)
    finally:
        problems += await _stop(h, problems)
        problems += _committed(h, cls)
    return problems


_STATIC: dict[str, Callable[[DriverInfo, type[Driver]], list[str]]] = {
    "metadata": check_metadata,
    "sample": check_sample,
    "imports": check_imports,
}
_RUNNING = {"working": _working, "failing": _failing}


def run_check(name: str, check: str, workdir: Path | None = None) -> Result:
    """Run one of ``CHECKS`` on the installed driver ``name``; never raises for a bad driver.

    ``workdir`` holds the device's config and buffer (a temporary directory when None).

    Raises:
        ValueError: ``check`` is not one of ``CHECKS``.
    """
    if check not in CHECKS:
        raise ValueError(f"no check {check!r}; checks: {', '.join(CHECKS)}")
    start = time.monotonic()
    found = _find(name)
    if isinstance(found, str):
        return Result(name, check, (found,), 0.0)
    info, cls = found, found.cls
    assert cls is not None
    if check in _STATIC:
        problems = _STATIC[check](info, cls)
    elif not isinstance(cls.conformance, Conformance):
        problems = [f"cannot run without hardware: conformance is not declared ({DOCS})"]
    else:
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        scratch = (contextlib.nullcontext(str(workdir)) if workdir is not None
                   else tempfile.TemporaryDirectory(prefix=f"conformance-{name}-"))
        with scratch as tmp:
            problems = asyncio.run(_run_case(check, info, cls, Path(tmp), _RUNNING[check]))
    return Result(name, check, tuple(problems), time.monotonic() - start)


def check_driver(name: str, checks: tuple[str, ...] = CHECKS) -> list[Result]:
    """Every check in ``checks`` on the installed driver ``name``."""
    return [run_check(name, check) for check in checks]


class DriverConformance:
    """The kit as pytest tests: subclass it in your test suite, naming your driver::

        class TestAcmeEasConformance(DriverConformance):
            driver = "acme_eas"

    Each check is its own test, failing with the problems found.
    """

    driver: str = ""

    def _run(self, check: str, tmp_path: Path | None = None) -> None:
        if not self.driver:
            raise AssertionError(f"{type(self).__name__}: set driver = \"<entry point name>\"")
        result = run_check(self.driver, check, tmp_path)
        if not result.ok:
            raise AssertionError(f"{self.driver}: {check}:\n{result.report()}")

    def test_metadata(self) -> None:
        """Name, version, vendor, description, emits, actions, Config and conformance are right."""
        self._run("metadata")

    def test_sample(self) -> None:
        """``sample.toml`` next to the driver is a valid config with a device of the driver."""
        self._run("sample")

    def test_imports(self) -> None:
        """The driver imports no MQTT or SQLite code."""
        self._run("imports")

    def test_working(self, tmp_path: Path) -> None:
        """On its simulated transport: online, expected events, only declared types, valid data,
        health in time, stops within 2 s."""
        self._run("working", tmp_path)

    def test_failing(self, tmp_path: Path) -> None:
        """On a failing transport: device.offline with a reason, no crash, stops within 2 s."""
        self._run("failing", tmp_path)
