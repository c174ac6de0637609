"""The daemon's lifecycle in named phases over one AsyncExitStack: `serve()` runs `startup()`,
`main_loop()` and `shutdown()`, and the stack unwinds what startup entered, in reverse.

startup   outbox opened (readings of a previous run included) -> signal handlers -> HTTP
          endpoint (/metrics, /healthz, /readyz, /status) -> supervisor (TaskGroup) -> watchdog
          pinger -> every link of the config (`plan_start`) -> READY=1
main      signal handlers only set flags and wake the main loop
          SIGHUP -> reload: `apply(plan_reload(old, new))`, only what changed restarts
shutdown  SIGTERM/SIGINT -> STOPPING=1 -> stop device links (intake) -> let the session
          publish what is queued while connected, bounded by gateway.shutdown_timeout (what
          is left stays in the outbox for the next start) -> stop the session
          (announces offline) -> the stack closes watchdog, supervisor, HTTP, signals, and
          the outbox last (it commits what is still in memory) -> exit 0.
          A second signal skips the wait; if unwinding still hangs, the process exits hard.

The lifecycle knows no device family by name: links come from `gateway.families`, and what a
reload changes from `gateway.reload`. What health reads of it is `health.GatewayView`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.app_config import load_config
from gateway.commands import CommandRouter, CommandTarget
from gateway.config import BatchConfig, Config
from gateway.encoding import Encoder
from gateway.errors import ConfigError, HttpServerError
from gateway.families import FAMILIES, Family, FamilyContext
from gateway.health import (
    Seen,
    liveness,
    readiness,
    refresh_metrics,
    status_document,
    status_line,
)
from gateway.homeassistant.announcer import Announcer
from gateway.intake import Intake
from gateway.limits import CLOSE_RESERVE, FORCED_EXIT_GRACE
from gateway.linknames import SESSION, link_name, stream_link_name
from gateway.logs import config_secrets, set_secrets, setup_logging
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.session import Availability, MqttSession
from gateway.reload import Discovery, ReloadPlan, plan_reload, plan_start
from gateway.supervisor import LinkStatus, Stall, Supervisor
from gateway.systemd import notify, watchdog_timeout
from gateway.watchdog import Watchdog

if TYPE_CHECKING:
    from gateway.http import HttpServer

log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self, cfg: Config, config_path: Path | None = None, metrics: Metrics | None = None
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.outbox: Outbox | None = None
        self.encoder: Encoder | None = None
        self.supervisor: Supervisor | None = None
        self.availability = Availability()
        self.seen = Seen(keep_values=cfg.metrics.sensor_values)
        self.intake = Intake(self.metrics, self.availability, self.seen)
        # Devices with `batch`, looked up per record by the publisher (kept up to date on
        # reload: the same dict, so a running session sees the change).
        self.batches: dict[str, BatchConfig] = {}
        self.families = FamilyContext(
            self.submit,
            self.metrics,
            submit_unknown=self.intake.submit_unknown,
            request_exit=self._exit_for,
        )
        self.exit_code = 0  # non-zero when a component asks for a restart (request_exit)
        self.http: HttpServer | None = None
        self.watchdog: Watchdog | None = None  # its loop-lag probe is on the status page
        self.started = time.time()
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._force: Callable[[], object] = lambda: None

    @property
    def submit(self) -> Callable[[Sequence[Reading]], None]:
        """Where every link hands the readings of a frame (`Intake.submit`)."""
        return self.intake.submit

    @property
    def announcer(self) -> Announcer | None:
        return self.intake.announcer

    # -- signals: only set state -------------------------------------------------------------
    def request_stop(self, signame: str = "stop") -> None:
        if self._stop_requested:
            log.warning("second %s: forcing exit", signame)
            self._force()
            asyncio.get_running_loop().call_later(FORCED_EXIT_GRACE, os._exit, 1)
            return
        log.info("%s received: shutting down", signame)
        self._stop_requested = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def _exit_for(self, reason: str, code: int) -> None:
        """A part gave up (the silent-scanner ladder's last step): exit non-zero, so that
        systemd restarts us."""
        log.error("%s", reason)
        self.exit_code = code
        self.request_stop("fatal failure")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: lambda: self.request_stop("SIGTERM"),
            signal.SIGINT: lambda: self.request_stop("SIGINT"),
            signal.SIGHUP: self.request_reload,
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        try:
            yield
        finally:
            for sig in handlers:
                loop.remove_signal_handler(sig)

    # -- the phases ----------------------------------------------------------------------------
    async def run(self) -> int:
        """startup -> main loop -> shutdown; the exit status."""
        try:
            async with AsyncExitStack() as stack:
                await self.startup(stack)
                await self.main_loop()
                await self.shutdown()
        except HttpServerError as exc:
            log.error("%s", exc)
            return 1
        log.info("gateway stopped")
        return self.exit_code

    async def startup(self, stack: AsyncExitStack, *, signals: bool = True) -> None:
        """Open and enter everything on `stack`, start every link, READY=1."""
        cfg = self.cfg
        outbox = Outbox(cfg.gateway.state_dir / cfg.outbox.file, cfg.outbox, self.metrics)
        self.outbox = outbox
        self.encoder = self.intake.encoder = Encoder(outbox, cfg, self.metrics)
        self._sync_discovery(Discovery.SWITCHED_ON if cfg.homeassistant.discovery else None)
        outbox.open()
        stack.callback(outbox.close)  # last out: commits what is still in memory
        if signals:
            stack.enter_context(self._signals())
        self.http = await stack.enter_async_context(self._http_server())
        self.supervisor = await stack.enter_async_context(
            Supervisor(
                self.metrics,
                on_change=self._links_changed,
                stall_timeout=cfg.gateway.stall_timeout,
                stop_timeout=cfg.gateway.shutdown_timeout,
            )
        )
        self.watchdog = await stack.enter_async_context(
            Watchdog(
                self.supervisor.stalled,
                self.metrics,
                timeout=watchdog_timeout(),
                status=lambda: status_line(self),
            )
        )
        self._update_batches(cfg)
        self._start(plan_start(cfg))
        # Everything made while starting (imported modules, config, metrics) lives as long as
        # the process: keep it out of the cyclic collector's full passes, which otherwise walk
        # it all and stall the loop for milliseconds.
        gc.freeze()
        notify("READY=1", status_line(self))
        log.info("gateway %s started with %d device(s)", cfg.gateway.id, len(cfg.devices))

    async def main_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stop_requested:
                return
            if self._reload_requested:
                self._reload_requested = False
                await self.reload()

    async def shutdown(self) -> None:
        """Stop intake, publish what is queued within the budget, stop the session."""
        notify("STOPPING=1", "STATUS=stopping: publishing what is queued")
        sup, outbox = self.supervisor, self.outbox
        assert sup is not None
        assert outbox is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.gateway.shutdown_timeout
        reserve = min(CLOSE_RESERVE, self.cfg.gateway.shutdown_timeout / 2)
        devices = [n for n in list(sup.status) if n != SESSION and n in sup]
        await asyncio.gather(*(sup.stop(name) for name in devices))
        session = sup.link(SESSION)
        if isinstance(session, MqttSession) and session.connected.is_set():
            # Connected: publish what is queued, within the budget. Not connected: nothing to
            # wait for, the readings are safe in the outbox until the next start.
            async with asyncio.TaskGroup() as tg:
                drain = tg.create_task(self._drain(outbox, deadline - reserve), name="drain")
                self._force = drain.cancel
        if isinstance(session, MqttSession):  # closing gets what is left of the budget
            session.announce_timeout = max(0.0, deadline - loop.time())
        await sup.stop(SESSION)
        if left := len(outbox):
            log.warning(
                "%d reading(s) were not published before shutdown; they stay in the outbox", left
            )

    @staticmethod
    async def _drain(outbox: Outbox, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await outbox.wait_drained()
        except TimeoutError:
            log.warning("shutdown timeout: %d reading(s) still queued", len(outbox))

    # -- links: what a plan starts -------------------------------------------------------------
    def _start(self, plan: ReloadPlan) -> None:
        """Start the plan's links not running yet (a link still closing keeps its name)."""
        sup, cfg = self.supervisor, self.cfg
        assert sup is not None
        for device_id in plan.fresh_devices:
            device = cfg.device(device_id)
            assert device is not None
            self.intake.add_device(device)
        wanted = [n for n in plan.starting if n not in sup]
        if stuck := [n for n in plan.starting if n in sup]:
            # stop() is bounded: a link still closing keeps its name until it is done.
            log.error("reload: not restarted, still closing: %s", ", ".join(stuck))
        timers = {stream_link_name(i): link for i, link in self.intake.stream_links.items()}
        for name in wanted:
            if name == SESSION:
                sup.start(self._make_session(cfg))
            elif name in timers:
                sup.start(timers[name])
        for family in FAMILIES:
            specs = family.link_specs(cfg)
            mine = [n for n in wanted if n in specs]
            for link in family.links(cfg, mine, self.families) if mine else ():
                sup.start(link)
        for device_id in plan.fresh_devices:
            self.availability.set(device_id, online=False)

    def _make_session(self, cfg: Config) -> MqttSession:
        assert self.outbox is not None
        router = CommandRouter(self._command_target, cfg.mqtt.command_ttl)
        session = MqttSession(
            cfg.mqtt,
            cfg.gateway.id,
            self.outbox,
            self.metrics,
            router=router,
            availability=self.availability,
            batching=self.batches.get,
        )
        if self.announcer is not None:
            session.parts.append(self.announcer)
        return session

    def _command_target(self, device_id: str) -> CommandTarget | None:
        device = self.cfg.device(device_id)
        if device is None or self.supervisor is None:
            return None
        link = self.supervisor.link(link_name(device))
        return link if isinstance(link, CommandTarget) else None

    def _update_batches(self, cfg: Config) -> None:
        self.batches.clear()
        self.batches.update({d.id: d.batch for d in cfg.devices if d.batch is not None})

    def _sync_discovery(self, discovery: Discovery | None) -> None:
        """Home Assistant discovery after a start or reload."""
        cfg = self.cfg
        if discovery is Discovery.SWITCHED_ON and self.announcer is None:
            assert self.encoder is not None
            sensor_classes = self.families.sensor_classes
            self.intake.announcer = Announcer(cfg, self.encoder, self.metrics, sensor_classes)
        elif discovery in (Discovery.SWITCHED_ON, Discovery.CONFIGURE):
            assert self.announcer is not None
            self.announcer.configure(cfg)
        elif discovery is Discovery.SWITCHED_OFF and self.announcer is not None:
            self.announcer.clear_all()  # stays a part of the session: it sends the clears

    # -- reload --------------------------------------------------------------------------------
    async def reload(self) -> bool:
        """Re-read the config; apply only the differences. Invalid config changes nothing."""
        notify("RELOADING=1", "STATUS=reloading the config")
        try:
            new = load_config(self.config_path) if self.config_path else None
        except ConfigError as exc:
            new = None
            log.error("reload rejected, keeping the running config:\n%s", exc)
        if new is None:
            self.metrics.reloads.labels("invalid").inc()
            notify("READY=1", status_line(self))
            return False
        await self.apply(plan_reload(self.cfg, new), new)
        self.metrics.reloads.labels("applied").inc()
        notify("READY=1", status_line(self))
        return True

    async def apply(self, plan: ReloadPlan, new: Config) -> None:
        """Go to `new` by the plan: stop what goes or changed, start what comes or changed."""
        sup = self.supervisor
        assert sup is not None
        self.cfg = new
        set_secrets(config_secrets(new))
        if plan.log_changed:
            setup_logging(new.log.level, new.log.format)
        for setting in plan.after_restart:
            log.warning("%s changes take effect after a restart", setting)
        self._apply_sensor_values(new)
        self._sync_discovery(plan.discovery)
        log.info(
            "reload: %d link(s) to stop, %d to (re)start", len(plan.stopping), len(plan.starting)
        )
        await asyncio.gather(*(sup.stop(name) for name in plan.stopping))
        for device_id in plan.changed_devices:
            self.intake.forget(device_id)
            self.seen.forget(device_id, self.metrics)  # removed or changed: no stale series
        for device_id in plan.removed_devices:
            self.availability.forget(device_id)
        self._update_batches(new)
        if self.encoder is not None:
            self.encoder.configure(new)
        self._start(plan)

    def _apply_sensor_values(self, new: Config) -> None:
        self.seen.keep_values = new.metrics.sensor_values
        if not new.metrics.sensor_values:
            self.seen.values.clear()
            self.metrics.sensor_value.clear()

    # -- the read-only view health.py reads (GatewayView) --------------------------------------
    @property
    def links(self) -> Mapping[str, LinkStatus]:
        return self.supervisor.status if self.supervisor else {}

    def link(self, name: str) -> object | None:
        return self.supervisor.link(name) if self.supervisor else None

    def stalled(self) -> Stall | None:
        return self.supervisor.stalled() if self.supervisor else None

    @property
    def loop_lag(self) -> float | None:
        return self.watchdog.lag if self.watchdog else None

    def family_document(self, family: Family, now: float) -> object:
        return family.status_document(self.families, self, now)

    # -- status ------------------------------------------------------------------------------
    def _http_server(self) -> contextlib.AbstractAsyncContextManager[HttpServer | None]:
        """The HTTP endpoint, or nothing when `metrics.enabled` is false (then h11 and the
        endpoint's modules are never imported)."""
        cfg = self.cfg.metrics
        if not cfg.enabled:
            return contextlib.nullcontext(None)
        from gateway.http import Endpoints, HttpLimits, HttpServer, is_loopback  # noqa: PLC0415

        endpoints = Endpoints(
            self.metrics.registry,
            refresh=lambda: refresh_metrics(self),
            liveness=lambda: liveness(self),
            readiness=lambda: readiness(self),
            status=lambda: status_document(self),
            auth=cfg.auth,
        )
        if cfg.auth is None and not is_loopback(cfg.host):  # allow_unauthenticated: true
            log.warning(
                "http: metrics.host %s is reachable from other hosts and metrics.auth is not "
                "set: anyone there can read the status page, /status and /metrics",
                cfg.host,
            )
        return HttpServer(
            cfg.host,
            cfg.port,
            endpoints.application(),
            limits=HttpLimits.from_config(cfg),
            refused=self.metrics.refused,
        )

    def _links_changed(self) -> None:
        for device in self.cfg.devices:
            status = self.links.get(link_name(device))
            if status is not None and status.state != "stopped":
                self.availability.set(device.id, online=status.state == "up")
        notify(status_line(self))
