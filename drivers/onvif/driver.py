"""The onvif driver: camera events by PullPoint, evidence snapshots, and the camera's clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.backoff import Backoff
from agent.driver import ActionError, Conformance, Driver, HealthCheck, timestamp
from agent.units import format_clock
from drivers.onvif.config import OnvifConfig
from drivers.onvif.mapping import EventMapper, parse_bool
from drivers.onvif.snapshots import SnapshotStore, is_trigger
from drivers.onvif.timesync import correct_time

if TYPE_CHECKING:
    from drivers.onvif.camera import Camera
    from drivers.onvif.simulator import FakeCamera

SLACK = 5.0
"""Seconds between writing a snapshot and emitting its ``camera.snapshot``, at most."""

SIM_PASSWORD = "simulated"  # noqa: S105 - the built-in fake camera's password when none is set
MIN_EMPTY_PULL = 1.0
"""An empty PullMessages answer sooner than this (or the timeout) is followed by a pause."""
_TAMPER_TOPICS = {
    "scene_change": "tns1:VideoSource/GlobalSceneChange/ImagingService",
    "too_dark": "tns1:VideoSource/ImageTooDark/ImagingService",
    "too_bright": "tns1:VideoSource/ImageTooBright/ImagingService",
    "too_blurry": "tns1:VideoSource/ImageTooBlurry/ImagingService",
    "signal_loss": "tns1:VideoSource/SignalLoss",
}


class OnvifDriver(Driver):
    """Pulls events from one ONVIF camera, maps them to the catalogue, and takes snapshots.

    One PullPoint subscription, renewed at 80% of its lifetime. Any loss (unreachable camera,
    refused credentials, a reboot that forgot the subscription) is ``device.offline`` with
    that reason, then a full reconnect with backoff (slow retries for ``auth``) and
    ``device.online`` once a new subscription is live.

    On stop the subscription is left to expire rather than unsubscribed: some cameras drop
    every client's subscription on one Unsubscribe (``unsubscribe_on_stop`` changes this).
    """

    name = "onvif"
    version = "1.0.0"
    vendor = "store-edge-agent"
    description = "ONVIF cameras: motion, tamper and digital inputs by PullPoint; snapshots"
    emits = ("camera.motion", "camera.tamper", "camera.input", "camera.snapshot")
    Config = OnvifConfig
    conformance = Conformance(
        working={"simulate": True},
        failing={"host": "127.0.0.1", "port": 1, "request_timeout": "2s"},  # refused at once
        simulate=[("motion", {"active": "true"})],
        expect=("camera.motion",),
    )
    config: OnvifConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.camera: Camera | None = None
        self.fake: FakeCamera | None = None
        self.mapper = EventMapper(self.config.rules())
        self.counts = {"events": 0, "pulls": 0, "camera_time_unusable": 0, "subscriptions": 0,
                       "snapshots": 0, "snapshots_failed": 0, "snapshots_skipped": 0}
        self._clock_condition: str | None = None
        self._last_pull_ok: float | None = None
        self._last_state = 0.0
        self._triggers: asyncio.Queue[dict[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- run ----------------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        host, port, username = await self._endpoint()
        from drivers.onvif import camera as camera_mod  # the ONVIF stack only when configured

        worker = unsubscribe = None
        if cfg.snapshot_on and self.context.exit_of(self.device_id) is None:
            self.log.warning("snapshot_on is set but %s is in no [exits.*] table: no event "
                             "will concern its exit, so it takes no snapshot", self.device_id)
        if cfg.snapshot_on:
            self._triggers = asyncio.Queue(cfg.snapshot_queue)
            worker = asyncio.create_task(self._snapshot_worker(), name=f"snapshots:{self.device_id}")
            unsubscribe = self.context.subscribe(self._on_committed)
        backoff = Backoff(initial=cfg.retry_min, cap=cfg.retry_max)
        refused = 0  # consecutive auth failures
        self.update_state(host=host, port=port, subscription=None, clock_offset_s=None)

        def healthy() -> None:
            nonlocal refused
            refused = 0
            backoff.reset()

        try:
            while True:
                try:
                    await self._session(host, port, username, on_live=healthy)
                except camera_mod.CameraError as err:
                    self._lost(err.reason, err.detail)
                    refused = refused + 1 if err.reason == camera_mod.AUTH else 0
                    # One refusal may be a glitch (a replayed nonce after a dropped connection,
                    # a clock step); refused twice in a row, the credentials are wrong: retry
                    # slowly so that the camera does not lock the account.
                    delay = cfg.auth_retry if refused >= 2 else backoff.next()
                    self.log.warning("camera %s:%s: %s; retrying in %.1f s", host, port, err, delay)
                    await asyncio.sleep(delay)
        finally:
            self.camera = None
            if unsubscribe is not None:
                unsubscribe()
            if worker is not None:
                worker.cancel()
                await asyncio.wait({worker}, timeout=0.3)
            if self.fake is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.fake.stop(), 0.5)  # the 2 s stop budget
                self.fake = None

    async def _session(self, host: str, port: int, username: str, *,
                       on_live: Callable[[], None]) -> None:
        """Connect, subscribe and pull until something fails; ``on_live`` after the first pull
        (a camera that subscribes but faults every pull must not reset the backoff).

        Raises:
            CameraError: whatever ended the session; its reason is the offline reason.
        """
        from drivers.onvif.camera import Camera

        cfg = self.config
        # Read for every attempt: a corrected password file needs no agent restart.
        cam = Camera(host, port, username, await self._password(),
                     request_timeout=cfg.request_timeout, lifetime=cfg.subscription_lifetime,
                     xml_max_bytes=int(cfg.xml_max_bytes))
        self.log.debug("connecting to camera %s:%s as %r", host, port, username or "(anonymous)")
        try:
            await cam.connect(want_profiles=bool(cfg.snapshot_on))
            self._clock(cam.offset)
            await cam.subscribe()
            self.camera = cam
            self.counts["subscriptions"] += 1
            self._last_pull_ok = time.time()  # the camera just answered: live until a pull fails
            self.set_online()
            self.log.info("subscribed to events of %s %s at %s:%s (pull point %s)",
                          cam.info.get("Manufacturer", "?"), cam.info.get("Model", "?"), host,
                          port, cam.address)
            self._publish(force=True, device=cam.info, last_error=None,
                          subscription={"address": cam.address, "terminates": timestamp(cam.terminates)})
            await self._pull_loop(cam, on_live)
        except asyncio.CancelledError:
            if cfg.unsubscribe_on_stop and self.camera is cam:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(cam.unsubscribe(), 0.5)
            raise
        finally:
            self.camera = None
            await cam.close()

    async def _password(self) -> str:
        """The password from ``password_file`` (stripped); "" when none is configured.

        Raises:
            CameraError: the file cannot be read (reported as ``auth``).
        """
        path = self.config.password_file
        if self.fake is not None:
            return self.fake.password
        if path is None:
            return ""
        try:
            return (await asyncio.to_thread(path.read_text, encoding="utf-8")).strip()
        except (OSError, UnicodeDecodeError) as err:
            from drivers.onvif.camera import AUTH, CameraError

            raise CameraError(AUTH, f"cannot read password_file {path}: {err}") from err

    async def _endpoint(self) -> tuple[str, int, str]:
        """Host, port and user name: the configured camera, or a built-in fake one."""
        cfg = self.config
        if not cfg.simulate:
            return cfg.host, cfg.port, cfg.username
        from drivers.onvif.simulator import FakeCamera

        password = await self._password() or SIM_PASSWORD
        self.fake = await FakeCamera(username=cfg.username or "admin", password=password).start()
        self.log.info("simulated camera on %s", self.fake.base)
        return self.fake.host, self.fake.port, self.fake.username

    async def _pull_loop(self, cam: Camera, on_live: Callable[[], None]) -> None:
        cfg = self.config
        first = True
        while True:
            assert cam.renew_at is not None
            if time.monotonic() >= cam.renew_at:
                await cam.renew()
                with contextlib.suppress(Exception):  # a fresh offset is nice, not needed
                    self._clock(await cam.measure_clock())
            timeout = max(0.0, min(cfg.pull_timeout, cam.renew_at - time.monotonic()))
            started = time.monotonic()
            messages = await cam.pull(timeout, cfg.message_limit)
            received = time.time()
            self._last_pull_ok = received
            self.counts["pulls"] += 1
            if first:
                on_live()
                first = False
            early = min(timeout, MIN_EMPTY_PULL) - (time.monotonic() - started)
            if not messages and early > 0:
                # Some cameras answer at once instead of waiting for Timeout: do not spin.
                await asyncio.sleep(early)
            for msg in messages:
                mapped = self.mapper.map(msg)
                if mapped is None:
                    continue
                when, usable = correct_time(mapped.utc_time, cam.offset, received,
                                            max_age=cfg.event_max_age)
                if not usable:
                    self.counts["camera_time_unusable"] += 1
                self.emit(mapped.type, mapped.data, time=when)
                self.counts["events"] += 1
            self._publish(subscription={"address": cam.address, "terminates": timestamp(cam.terminates)})

    def _lost(self, reason: str, detail: str) -> None:
        self.set_offline(reason)
        self._publish(force=True, subscription=None, last_error=detail)

    def _clock(self, offset: float | None) -> None:
        """Record the camera's offset; warn when it goes over ``clock_warn`` or unknown."""
        warn = offset is not None and abs(offset) > self.config.clock_warn
        condition = "unknown" if offset is None else "off" if warn else "ok"
        if condition != self._clock_condition:
            if condition == "off":
                self.log.warning("camera clock is %+.1f s off ours (over %.0f s): event times "
                                 "are corrected by it; set up NTP on the camera", offset,
                                 self.config.clock_warn)
            elif condition == "unknown":
                self.log.warning("camera reports no usable time: events get the time we "
                                 "receive them")
            elif self._clock_condition is not None:
                self.log.info("camera clock is back within %.0f s of ours", self.config.clock_warn)
        self._clock_condition = condition
        self.update_state(clock_offset_s=None if offset is None else round(offset, 2),
                          clock_warning=warn or offset is None)

    def _publish(self, *, force: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        if not force and now - self._last_state < self.config.state_interval:
            return
        self._last_state = now
        unmapped = dict(self.mapper.unmapped.most_common(20))
        self.update_state(**fields, counts=dict(self.counts), unmapped_topics=unmapped,
                          last_pull=timestamp(self._last_pull_ok))

    # -- snapshots ----------------------------------------------------------------------------

    def _on_committed(self, env: dict[str, Any]) -> None:
        """On the buffer's writer thread: pick triggers cheaply and hand them to our loop."""
        cfg = self.config
        if self._loop is None or not is_trigger(
            env, cfg.snapshot_on, device_id=self.device_id,
            exit_name=self.context.exit_of(self.device_id), include_test=cfg.snapshot_test,
        ):
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while stopping
            self._loop.call_soon_threadsafe(self._queue_trigger, env)

    def _queue_trigger(self, env: dict[str, Any]) -> None:
        assert self._triggers is not None
        try:
            self._triggers.put_nowait(env)
        except asyncio.QueueFull:
            self.counts["snapshots_skipped"] += 1
            self.log.warning("snapshot for %s %s skipped: %d already waiting", env["type"],
                             env["id"], self._triggers.qsize())

    async def _snapshot_worker(self) -> None:
        cfg = self.config
        assert self._triggers is not None
        store = SnapshotStore(self.context.data_dir(self.device_id) / "snapshots",
                              keep=cfg.snapshot_keep, max_bytes=int(cfg.snapshot_store_bytes),
                              max_age=cfg.snapshot_max_age)
        while True:
            env = await self._triggers.get()
            try:
                await self._snapshot(store, env)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # never let one snapshot stop the next
                self.counts["snapshots_failed"] += 1
                self.log.warning("snapshot for %s %s failed: %s", env["type"], env["id"], err)

    async def _snapshot(self, store: SnapshotStore, env: dict[str, Any]) -> None:
        cam = self.camera
        if cam is None:
            raise RuntimeError("camera offline")
        cfg = self.config
        image = await cam.snapshot(cfg.snapshot_profile, cfg.snapshot_timeout,
                                   int(cfg.snapshot_max_bytes))
        taken = time.time()
        since = await asyncio.to_thread(self.context.undelivered_since)
        # A snapshot saved since the oldest unpublished event may be what one of them names
        # (its camera.snapshot is emitted just after the file is written, hence the slack).
        saved = await asyncio.to_thread(store.save, image, env["id"], taken,
                                        keep_since=None if since is None else since - SLACK)
        self.emit("camera.snapshot", {"path": str(saved.path), "sha256": saved.sha256,
                                      "bytes": saved.bytes, "trigger_id": env["id"]}, time=taken)
        self.counts["snapshots"] += 1
        self._publish(force=True, last_snapshot=str(saved.path))

    # -- health and simulation ----------------------------------------------------------------

    async def health(self) -> list[HealthCheck]:
        state = self.state
        offset = state.get("clock_offset_s")
        cam = self.camera
        live = cam is not None and cam.terminates is not None and cam.terminates > time.time()
        recent = self._last_pull_ok is not None and \
            time.time() - self._last_pull_ok < self.config.pull_timeout + 2 * self.config.request_timeout
        return [
            HealthCheck("camera reachable", self.online,
                        "" if self.online else str(state.get("last_error") or state.get("reason"))),
            HealthCheck("clock offset", offset is not None and abs(offset) < self.config.clock_warn,
                        "unknown" if offset is None else f"{offset:+.1f} s"),
            HealthCheck("event subscription", live and recent,
                        f"live until {format_clock(cam.terminates)}"
                        if live and cam and cam.terminates else "none"),
        ]

    async def simulate(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """``motion active=``, ``tamper kind= active=``, ``input input= active=``,
        ``reboot [down_for=]``, ``skew seconds=`` on the built-in fake camera."""
        fake = self.fake
        if fake is None:
            raise ActionError(f"device {self.device_id!r} is a real camera (simulate = false)")
        from drivers.onvif.simulator import MOTION_TOPIC, Notification

        if command == "reboot":
            await fake.reboot(float(params.get("down_for", 0)))
        elif command == "skew":
            fake.skew = float(params.get("seconds", 0))
        elif command in ("motion", "tamper", "input"):
            if command == "motion":
                topic, item, source = MOTION_TOPIC, "State", {"Source": "VideoSource_1"}
            elif command == "input":
                topic, item = "tns1:Device/Trigger/DigitalInput", "LogicalState"
                source = {"InputToken": str(params.get("input", "1"))}
            else:
                kind = str(params.get("kind", "scene_change"))
                if kind not in _TAMPER_TOPICS:
                    raise ActionError(f"kind must be one of {', '.join(_TAMPER_TOPICS)}")
                topic, item, source = _TAMPER_TOPICS[kind], "State", {"Source": "VideoSource_1"}
            active = bool(parse_bool(params.get("active", "true")))
            notes = {a: Notification(topic, {item: str(a).lower()}, source) for a in (True, False)}
            fake.inject(notes[active])
            if "for" in params:  # ``--for 3s``: active, then back after the duration
                asyncio.get_running_loop().call_later(float(params["for"]), fake.inject,
                                                      notes[not active])
        else:
            raise ActionError("commands: motion, tamper, input, reboot, skew")
        return {"command": command, **params}
