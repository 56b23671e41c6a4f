"""One exit's self-test: preconditions, links, resting state, stimulus or walk test, restore.

Every step ends as ``pass``, ``fail`` or ``skip`` with a detail a technician can act on and,
where something was timed, a latency. A skip is never a pass: an exit whose alarm was neither
stimulated nor walked ends ``incomplete``, not ``pass``. Only the events the stimulus and the
walk passes cause are marked ``test`` (``agent.selftest.marks``); the rest of the exit stays live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.driver import ActionError, HealthCheck
from agent.events import rfc3339, uuid7
from agent.files import write_atomic

if TYPE_CHECKING:
    from agent.config import ExitSection
    from agent.runtime import Agent

__all__ = ["EventWatch", "ExitSelftest", "Operator", "Step"]

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 5.0
"""Seconds a driver's read-only health checks may take."""
SETTLE = 5.0
"""Seconds the exit has to return to rest after the stimulus (relays release, pulses end)."""
HEIGHTS = ("low", "middle", "high")
"""The walk test's three passes: a tag carried out at each height."""


@dataclass
class Step:
    """One step's outcome, as in ``selftest.step`` events and the report."""

    step: str
    result: str  # "pass" | "fail" | "skip"
    detail: str = ""
    latency_ms: float | None = None
    warning: bool = False

    def data(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.warning:
            del out["warning"]
        return out


class Operator(Protocol):
    """Who watches the test: the CLI (a technician), or nobody (schedule, remote request)."""

    interactive: bool

    async def show(self, item: dict[str, Any]) -> None:
        """Progress: ``{"kind": "step"|"prompt"|"started"|"finished", ...}``."""
        ...

    async def ask(self, question: str, timeout: float) -> str | None:
        """A question for the technician; ``None`` when nobody answered in time."""
        ...

    def cannot(self) -> str | None:
        """Why the technician cannot do the instruction shown now, once they said so (the web
        page's "Can't do this step"); ``None`` otherwise. Asked while a walk step waits."""
        ...


class EventWatch:
    """Committed events of some devices, with the moment each was committed (monotonic)."""

    def __init__(self, agent: Agent, devices: set[str]) -> None:
        self.devices = devices
        self._loop = asyncio.get_running_loop()
        self._events: list[tuple[float, dict[str, Any]]] = []
        self._changed = asyncio.Event()
        self._unsubscribe = agent.pipeline.subscribe(self._committed)

    def _committed(self, env: dict[str, Any]) -> None:  # on the buffer's writer thread
        if env["deviceid"] in self.devices:
            self._loop.call_soon_threadsafe(self._add, time.monotonic(), env)

    def _add(self, at: float, env: dict[str, Any]) -> None:
        self._events.append((at, env))
        self._changed.set()

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._unsubscribe()

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], *, after: float,
                       until: float, also: Callable[[], Awaitable[bool]] | None = None
                       ) -> tuple[float, dict[str, Any] | None] | None:
        """The first event committed at or after ``after`` that ``match``es, with its commit
        time; or, when ``also`` is given, the first moment its awaitable result is true (then
        the event is ``None``). ``None`` when neither happened before ``until``."""
        while True:
            for at, env in self._events:
                if at >= after and match(env):
                    return at, env
            if also is not None and await also():
                return time.monotonic(), None
            remaining = until - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                # with ``also`` to poll, wake at least every 20 ms
                await asyncio.wait_for(self._changed.wait(),
                                       remaining if also is None else min(remaining, 0.02))


def _is(event_type: str, device: str, **data: Any) -> Callable[[dict[str, Any]], bool]:
    def match(env: dict[str, Any]) -> bool:
        return (env["type"] == event_type and env["deviceid"] == device
                and all(env["data"].get(k) == v for k, v in data.items()))
    return match


def _checks(checks: list[HealthCheck]) -> str:
    return "; ".join(f"{c.name}: {'ok' if c.ok else 'FAIL'}" + (f" ({c.detail})" if c.detail
                                                                else "") for c in checks)


def probe_writable(directory: Path) -> float:
    """Write (fsynced, renamed) and remove a small file in ``directory``; return the seconds it
    took.

    Raises:
        OSError: the directory is not writable or the disk refuses the write.
    """
    started = time.monotonic()
    path = directory / f".selftest-probe-{os.getpid()}"
    try:
        write_atomic(path, b"self-test probe\n")
    finally:
        path.unlink(missing_ok=True)
    return time.monotonic() - started


async def rest_report(agent: Agent, roles: dict[str, str]) -> tuple[list[str], list[str]]:
    """Ask each device of ``roles`` whether it is at rest: (those at rest, those not, with why).
    A device without a resting state (``at_rest()`` is ``None``) is in neither list."""
    good: list[str] = []
    bad: list[str] = []
    for role, device in roles.items():
        try:
            check = await asyncio.wait_for(agent.driver(device).at_rest(), HEALTH_TIMEOUT)
        except Exception as err:
            check = HealthCheck("at rest", False, f"{type(err).__name__}: {err}")
        if check is not None:
            (good if check.ok else bad).append(f"{role} {device}: {check.detail or check.name}")
    return good, bad


class ExitSelftest:
    """One run at one exit. ``await run()`` returns the report (also emitted and retained)."""

    def __init__(self, agent: Agent, exit_name: str, *, walk: bool, trigger: str,
                 operator: Operator) -> None:
        self.agent = agent
        self.exit = exit_name
        self.spec: ExitSection = agent.config.exits[exit_name]
        self.walk = walk
        self.trigger = trigger
        self.operator = operator
        self.run_id = uuid7()
        self.steps: list[Step] = []
        self.roles = self.spec.devices()
        self._watch: EventWatch | None = None

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Run every step; never raises for a hardware problem (that is a failed step)."""
        started, t0 = time.time(), time.monotonic()
        devices = set(self.roles.values())
        self._emit("selftest.started", trigger=self.trigger)
        await self.operator.show({"kind": "started", "exit": self.exit, "run_id": self.run_id,
                                  "walk": self.walk, "trigger": self.trigger})
        self._watch = EventWatch(self.agent, devices)
        try:
            await self._preconditions()
            await self._links()
            rest_ok = await self._rest()
            stimulated = False
            if self.spec.test_tag:
                stimulated = await self._stimulus(rest_ok)
            elif not self.walk:
                await self._step("alarm", "skip", "no test_tag output at this exit, so the alarm "
                                 "chain was not tested: run `agent selftest --walk` at the exit")
            if self.walk:
                await self._walk_test(rest_ok)
            if stimulated or self.walk:
                await self._restore()
        except asyncio.CancelledError:
            # The technician pressed Ctrl-C or the session dropped: end cleanly, with a report.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._step("aborted", "fail", "the self-test was stopped before it finished "
                             "(the technician's session ended)")
            await self._restore()
        except Exception as err:  # a bug must still end the run with a report
            log.exception("self-test of %s failed unexpectedly", self.exit)
            await self._step("internal", "fail", f"the self-test itself failed: {err}")
        finally:
            self._watch.close()
            self.agent.marks.release(self.run_id)
        report = self._report(started, time.monotonic() - t0)
        self._emit("selftest.passed" if report["result"] == "pass" else "selftest.failed",
                   result=report["result"], summary=report["summary"], trigger=self.trigger)
        await self.operator.show({"kind": "finished", "report": report})
        return report

    def _report(self, started: float, seconds: float) -> dict[str, Any]:
        counts = {r: sum(s.result == r for s in self.steps) for r in ("pass", "fail", "skip")}
        proof = {"alarm"} | {f"walk {h}" for h in HEIGHTS}  # a tag made the pedestal alarm
        tested = any(s.result == "pass" and s.step in proof for s in self.steps)
        result = "fail" if counts["fail"] else "pass" if tested else "incomplete"
        failed = [s.step for s in self.steps if s.result == "fail"]
        summary = (f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
                   + (f" (failed: {', '.join(failed)})" if failed else "")
                   + ("" if tested or failed else "; the alarm chain was not tested"))
        return {
            "exit": self.exit, "run_id": self.run_id, "result": result, "summary": summary,
            "trigger": self.trigger, "walk": self.walk, "started": rfc3339(started),
            "finished": rfc3339(), "duration_ms": round(seconds * 1000, 1),
            "devices": self.roles, "steps": [s.data() for s in self.steps],
        }

    def _emit(self, event_type: str, **extra: Any) -> None:
        data = {"exit": self.exit, "run_id": self.run_id,
                **{k: v for k, v in extra.items() if v is not None}}
        self.agent.pipeline.emit_agent(event_type, data, subject=self.exit, test=True)

    async def _step(self, name: str, result: str, detail: str = "", *,
                    latency: float | None = None, warning: bool = False) -> Step:
        step = Step(name, result, detail, None if latency is None else round(latency * 1000, 1),
                    warning)
        self.steps.append(step)
        self._emit("selftest.step", **step.data())
        await self.operator.show({"kind": "step", "exit": self.exit, **step.data()})
        return step

    def _offline(self, device: str) -> str:
        """Why ``device`` is offline; empty while it is online."""
        drv = self.agent.driver(device)
        return "" if drv.online else str(drv.state.get("reason") or "unknown reason")

    # -- 1. preconditions ------------------------------------------------------------------------

    async def _preconditions(self) -> None:
        data_dir = self.agent.config.settings.agent.data_dir
        try:
            seconds = await asyncio.to_thread(probe_writable, data_dir)
        except OSError as err:
            await self._step("buffer", "fail", f"cannot write to {data_dir}: {err.strerror or err}"
                             " (events cannot be kept)")
        else:
            error = self.agent.pipeline.last_commit_error
            if error:
                await self._step("buffer", "fail", f"the last buffer commit failed: {error}")
            else:
                await self._step("buffer", "pass", f"probe written and fsynced in {data_dir}",
                                 latency=seconds)
        publisher = self.agent.publisher
        where = publisher.broker
        if publisher.connected:
            await self._step("broker", "pass", f"connected to {where}")
        else:
            why = publisher.last_error or f"broker {where}: not connected"
            await self._step("broker", "pass", f"warning: {why}; results stay in the buffer "
                             "until it is back", warning=True)
        if self.agent.pipeline.clock.synced:
            await self._step("clock", "pass", "NTP-synchronised")
        else:
            await self._step("clock", "pass", "warning: the clock is not NTP-synchronised; "
                             "event times may be wrong", warning=True)

    # -- 2. links ------------------------------------------------------------------------------

    async def _links(self) -> None:
        for role, device in self.roles.items():
            drv = self.agent.driver(device)
            try:
                checks = await asyncio.wait_for(drv.health(), HEALTH_TIMEOUT)
            except TimeoutError:
                checks = [HealthCheck("health checks", False,
                                      f"no answer within {HEALTH_TIMEOUT:g} s")]
            except Exception as err:
                checks = [HealthCheck("health checks", False, f"{type(err).__name__}: {err}")]
            if not drv.online and all(c.ok for c in checks):
                reason = drv.state.get("reason") or "not reported online"
                checks.insert(0, HealthCheck("online", False, str(reason)))
            ok = all(c.ok for c in checks)
            await self._step(f"link {role}", "pass" if ok else "fail",
                             f"{device} ({drv.name}): {_checks(checks)}")

    # -- 3. resting state -----------------------------------------------------------------------

    async def _wait_rest(self, roles: dict[str, str]) -> list[str]:
        """Wait up to ``SETTLE`` for ``roles`` to be at rest; what is still not, with why."""
        deadline = time.monotonic() + SETTLE
        while True:
            _, bad = await rest_report(self.agent, roles)
            if not bad or time.monotonic() >= deadline:
                return bad
            await asyncio.sleep(0.05)

    async def _rest(self) -> bool:
        good, bad = await rest_report(self.agent, self.roles)
        if not good and not bad:
            await self._step("rest", "skip", "no device at this exit reports a resting state")
            return True
        if bad:
            await self._step("rest", "fail", "not at rest: " + "; ".join(bad))
            return False
        await self._step("rest", "pass", "; ".join(good))
        return True

    # -- 4. stimulus: the test-tag coil ------------------------------------------------------------

    async def _stimulus(self, rest_ok: bool) -> bool:
        """Pulse the test tag and time what answers; True when the tag was pulsed."""
        spec, tag_id = self.spec, str(self.spec.test_tag)
        if not rest_ok:
            await self._step("alarm", "skip", "not run: the exit is not at rest (see the rest "
                             "step); a test tag cannot be told from a real alarm now")
            return False
        tag = self.agent.driver(tag_id)
        self._claim_stimulus()
        t0 = time.monotonic()
        try:
            pulsed = await tag.action("pulse", {})
        except ActionError as err:
            await self._step("alarm", "fail", f"could not energise test tag {tag_id}: {err}")
            return False
        length = pulsed.get("for")
        energised = f"energising test tag {tag_id}" + (f" ({length:g} s pulse)" if length else "")
        checks = [self._expect_alarm(t0, energised)]
        if spec.sounder:
            checks.append(self._expect_sounder(t0))
        if spec.camera:
            checks.append(self._expect_motion(t0))
        await asyncio.gather(*checks)
        return True

    def _claim_stimulus(self) -> None:
        """What the test tag causes, each inside its window: the pedestal's one alarm, the
        sounder's answer and release, the camera's motion start and end."""
        spec, claim = self.spec, self.agent.marks.claim
        if spec.eas:
            claim(self.run_id, spec.eas, {"eas.alarm"}, spec.alarm_within)
        if spec.sounder:
            types = set(self.agent.driver(spec.sounder).emits)
            claim(self.run_id, spec.sounder, types, spec.sounder_within + SETTLE, count=2)
        if spec.camera:
            claim(self.run_id, spec.camera, {"camera.motion"}, spec.motion_within + SETTLE,
                  count=2)

    async def _expect_alarm(self, t0: float, energised: str) -> None:
        eas, window = self.roles.get("eas"), self.spec.alarm_within
        if eas is None:
            await self._step("alarm", "skip", "no eas device at this exit to expect an alarm from")
            return
        assert self._watch is not None
        late = window + min(window, 5.0)  # waited beyond the window, to tell late from never
        seen = await self._watch.wait_for(_is("eas.alarm", eas), after=t0, until=t0 + late)
        if seen is None:
            offline = self._offline(eas)
            state = f" The EAS device is offline: {offline}." if offline else ""
            await self._step("alarm", "fail", f"no eas.alarm from {eas} within {window:g} s of "
                             f"{energised} (waited {late:g} s, to tell a late alarm from none): "
                             f"the pedestal did not detect the tag.{state} Check that "
                             "the pedestal is powered and not in fault, the test-tag coil is in "
                             "place, and the alarm wiring to the agent.")
            return
        latency = seen[0] - t0
        if latency > window:
            await self._step("alarm", "fail", f"eas.alarm from {eas} came {latency:.1f} s after "
                             f"{energised}, later than alarm_within {window:g} s: the pedestal "
                             "detects the tag too slowly (sensitivity, coil position)",
                             latency=latency)
            return
        await self._step("alarm", "pass", f"eas.alarm from {eas} {latency * 1000:.0f} ms after "
                         f"{energised} (window {window:g} s)", latency=latency)

    async def _expect_sounder(self, t0: float) -> None:
        sounder, window = str(self.spec.sounder), self.spec.sounder_within
        drv = self.agent.driver(sounder)
        assert self._watch is not None

        async def sounding() -> bool:
            check = await drv.at_rest()
            return check is not None and not check.ok

        def answered(env: dict[str, Any]) -> bool:
            return env["deviceid"] == sounder and not env["type"].startswith("device.")

        seen = await self._watch.wait_for(answered, after=t0, until=t0 + window, also=sounding)
        if seen is None:
            await self._step("sounder", "fail", f"the sounder feedback {sounder} did not answer "
                             f"within {window:g} s of the test tag: check the sounder and its "
                             "feedback wiring")
            return
        await self._step("sounder", "pass", f"{sounder} answered {(seen[0] - t0) * 1000:.0f} ms "
                         f"after the test tag (window {window:g} s)", latency=seen[0] - t0)

    async def _expect_motion(self, t0: float) -> None:
        camera, window = str(self.spec.camera), self.spec.motion_within
        assert self._watch is not None
        seen = await self._watch.wait_for(_is("camera.motion", camera, active=True), after=t0,
                                          until=t0 + window)
        if seen is None:
            offline = self._offline(camera)
            why = f" (camera offline: {offline})" if offline else ""
            await self._step("camera", "fail", f"no camera.motion from {camera} within "
                             f"{window:g} s of the test tag{why}: check the camera's view of the "
                             "exit and its motion rule")
            return
        await self._step("camera", "pass", f"camera.motion from {camera} "
                         f"{(seen[0] - t0) * 1000:.0f} ms after the test tag (window {window:g} s)",
                         latency=seen[0] - t0)

    # -- 5. walk test ------------------------------------------------------------------------------

    async def _prompt(self, text: str, timeout: float) -> float:
        await self.operator.show({"kind": "prompt", "exit": self.exit, "text": text,
                                  "timeout": timeout})
        return time.monotonic()

    async def _walk_wait(self, match: Callable[[dict[str, Any]], bool], t0: float,
                         window: float) -> tuple[float, dict[str, Any] | None] | str | None:
        """What a walk step waits for: the event (with its commit time), the reason the
        technician gave for not doing the step, or ``None`` when the window ran out."""
        assert self._watch is not None
        reasons: list[str] = []

        async def cannot() -> bool:
            if (reason := self.operator.cannot()) is not None:
                reasons.append(reason)
            return bool(reasons)

        seen = await self._watch.wait_for(match, after=t0, until=t0 + window, also=cannot)
        if reasons:  # the step is over: what the device reports from now on is real
            self.agent.marks.release(self.run_id)
            return reasons[0]
        return seen

    async def _walk_test(self, rest_ok: bool) -> None:
        if not self.operator.interactive:
            await self._step("walk", "skip", "a walk test needs a technician at the exit: run "
                             "`agent selftest --walk` there")
            return
        if not rest_ok:
            await self._step("walk", "skip", "not run: the exit is not at rest (see the rest step)")
            return
        eas, window = self.roles.get("eas"), self.spec.walk_within
        assert self._watch is not None
        if self.spec.test_tag:  # end the stimulus' pulse: the pedestal must be quiet again
            await self.agent.driver(self.spec.test_tag).restore()
        if eas is None:
            await self._step("walk", "skip", "no eas device at this exit to expect alarms from")
        else:
            for height in HEIGHTS:
                await self._wait_rest({"eas": eas})  # the last alarm released
                self.agent.marks.claim(self.run_id, eas, {"eas.alarm"}, window)
                t0 = await self._prompt(f"Carry the test tag out through the exit at "
                                        f"{height.upper()} height now.", window)
                seen = await self._walk_wait(_is("eas.alarm", eas), t0, window)
                if isinstance(seen, str):
                    await self._step(f"walk {height}", "skip", f"not done: {seen}")
                elif seen is None:
                    await self._step(f"walk {height}", "fail", f"no eas.alarm from {eas} within "
                                     f"{window:g} s: the pedestal missed a tag at {height} height")
                else:
                    await self._step(f"walk {height}", "pass", f"eas.alarm from {eas}",
                                     latency=seen[0] - t0)
        door = self.roles.get("door")
        if door is not None:
            await self._walk_door(door, window)
        answer = await self.operator.ask("Did the sounder sound and the lights flash at each "
                                         "alarm? [y/n]", window)
        if answer is None or not answer.strip():  # docs/selftest.md: unanswered is skipped
            await self._step("walk sounder and lights", "skip", "no answer from the technician")
        elif answer.strip().lower().startswith("y"):
            await self._step("walk sounder and lights", "pass", "confirmed by the technician")
        else:
            await self._step("walk sounder and lights", "fail", "the technician saw no sounder "
                             "or lights: check the pedestal's sounder and lamp")

    async def _walk_door(self, door: str, window: float) -> None:
        assert self._watch is not None
        drv = self.agent.driver(door)
        held_after = float(getattr(drv.config, "held_open_after", 0) or 0)
        hold = 0 < held_after <= window
        moves = [("door.opened", "Open the exit door" + (" and keep it open" if hold else "") + ".",
                  "walk door opened")]
        if hold:
            moves.append(("door.held_open", f"Keep the door open (about {held_after:g} s).",
                          "walk door held open"))
        moves.append(("door.closed", "Close the exit door.", "walk door closed"))
        opened = True
        for event_type, text, name in moves:
            if not opened:  # nothing to hold open or close: do not keep the technician waiting
                await self._step(name, "skip", "not run: the door never opened")
                continue
            wait = window + (held_after if event_type == "door.held_open" else 0)
            # opening an armed door is also a forced door: the technician's, not a real one
            for claimed in (event_type, "door.forced") if event_type == "door.opened" \
                    else (event_type,):
                self.agent.marks.claim(self.run_id, door, {claimed}, wait)
            t0 = await self._prompt(text, wait)
            seen = await self._walk_wait(_is(event_type, door), t0, wait)
            if seen is None or isinstance(seen, str):
                opened = event_type != "door.opened"
            if isinstance(seen, str):
                await self._step(name, "skip", f"not done: {seen}")
            elif seen is None:
                await self._step(name, "fail", f"no {event_type} from {door} within "
                                 f"{wait:g} s: check the door contact and its wiring")
            else:
                await self._step(name, "pass", f"{event_type} from {door}", latency=seen[0] - t0)

    # -- 6. restore --------------------------------------------------------------------------------

    async def _restore(self) -> None:
        problems: list[str] = []
        done: list[str] = []
        for role, device in self.roles.items():
            try:
                check = await self.agent.driver(device).restore()
            except Exception as err:
                check = HealthCheck("restore", False, f"{type(err).__name__}: {err}")
            if check is not None:
                (done if check.ok else problems).append(f"{role} {device}: "
                                                        f"{check.detail or check.name}")
        bad = await self._wait_rest(self.roles)
        if bad:
            await self._step("restore", "fail", f"not back at rest {SETTLE:g} s after the test: "
                             + "; ".join(problems + bad))
        else:
            await self._step("restore", "pass", "; ".join(done) or "inputs at rest")
