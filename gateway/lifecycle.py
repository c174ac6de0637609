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

The lifecycle only runs phases. What runs is built in one place, `wiring.build` (the graph:
outbox, encoder, intake, families, supervisor, watchdog, endpoint, each made with its
collaborators); the links a plan names are made by the graph (`Graph.links_for`); what a reload
changes is `gateway.reload`'s pure plan. The lifecycle knows no device family by name, and
health reads the graph, not the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.app_config import load_config
from gateway.config import Config
from gateway.errors import ConfigError, HttpServerError
from gateway.health import Seen, status_line
from gateway.limits import CLOSE_RESERVE, FORCED_EXIT_GRACE
from gateway.linknames import SESSION
from gateway.logs import config_secrets, set_secrets, setup_logging
from gateway.metrics import Metrics
from gateway.mqtt.session import MqttSession
from gateway.reload import ReloadPlan, plan_reload, plan_start
from gateway.supervisor import LinkStatus, Supervisor
from gateway.systemd import notify
from gateway.wiring import Graph, build

if TYPE_CHECKING:
    from gateway.families import FamilyContext
    from gateway.outbox import Outbox

log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self, cfg: Config, config_path: Path | None = None, metrics: Metrics | None = None
    ) -> None:
        self.config_path = config_path
        self.exit_code = 0  # non-zero when a component asks for a restart (request_exit)
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._force: Callable[[], object] = lambda: None
        self.graph: Graph = build(
            cfg,
            metrics=metrics,
            request_exit=self._exit_for,
            on_links_changed=self._links_changed,
        )

    # -- what tests and tools read of the running gateway ------------------------------------
    @property
    def cfg(self) -> Config:
        return self.graph.cfg

    @property
    def metrics(self) -> Metrics:
        return self.graph.metrics

    @property
    def outbox(self) -> Outbox:
        return self.graph.outbox

    @property
    def supervisor(self) -> Supervisor:
        return self.graph.supervisor

    @property
    def seen(self) -> Seen:
        return self.graph.seen

    @property
    def families(self) -> FamilyContext:
        return self.graph.families

    @property
    def links(self) -> Mapping[str, LinkStatus]:
        return self.graph.supervisor.status

    def _links_changed(self) -> None:
        notify(status_line(self.graph))

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
        """Enter everything of the graph on `stack`, start every link, READY=1."""
        graph = self.graph
        # Last out: it commits what is still in memory; its committer task is its own.
        await stack.enter_async_context(graph.outbox)
        if signals:
            stack.enter_context(self._signals())
        if graph.http is not None:
            await stack.enter_async_context(graph.http)
        await stack.enter_async_context(graph.supervisor)
        await stack.enter_async_context(graph.watchdog)
        self._start(plan_start(graph.cfg))
        # Everything made while starting (imported modules, config, metrics) lives as long as
        # the process: keep it out of the cyclic collector's full passes, which otherwise walk
        # it all and stall the loop for milliseconds.
        gc.freeze()
        notify("READY=1", status_line(graph))
        cfg = graph.cfg
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
        sup, outbox = self.graph.supervisor, self.graph.outbox
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
        graph = self.graph
        sup, cfg = graph.supervisor, graph.cfg
        for device in cfg.devices:
            if device.id in plan.fresh_devices:
                graph.intake.add_device(device)
        wanted = [n for n in plan.starting if n not in sup]
        if stuck := [n for n in plan.starting if n in sup]:
            # stop() is bounded: a link still closing keeps its name until it is done.
            log.error("reload: not restarted, still closing: %s", ", ".join(stuck))
        for link in graph.links_for(wanted):
            sup.start(link)
        for device_id in plan.fresh_devices:
            graph.availability.set(device_id, online=False)

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
            notify("READY=1", status_line(self.graph))
            return False
        await self.apply(plan_reload(self.cfg, new), new)
        self.metrics.reloads.labels("applied").inc()
        notify("READY=1", status_line(self.graph))
        return True

    async def apply(self, plan: ReloadPlan, new: Config) -> None:
        """Go to `new` by the plan: stop what goes or changed, start what comes or changed."""
        graph = self.graph
        set_secrets(config_secrets(new))
        if plan.log_changed:
            setup_logging(new.log.level, new.log.format)
        for setting in plan.after_restart:
            log.warning("%s changes take effect after a restart", setting)
        graph.configure(new, plan.discovery)
        log.info(
            "reload: %d link(s) to stop, %d to (re)start", len(plan.stopping), len(plan.starting)
        )
        await asyncio.gather(*(graph.supervisor.stop(name) for name in plan.stopping))
        for device_id in plan.changed_devices:
            graph.intake.forget(device_id)
            graph.seen.forget(device_id, graph.metrics)  # removed or changed: no stale series
        for device_id in plan.removed_devices:
            graph.availability.forget(device_id)
        self._start(plan)
