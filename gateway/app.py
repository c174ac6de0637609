"""The daemon's lifecycle: start the links, wait for signals, reload, shut down in order.

startup   config loaded -> queue -> supervisor(TaskGroup) -> MQTT session + device links
          -> READY=1
main      signal handlers only set flags and wake the main loop
          SIGHUP -> reload (validate, diff, restart only what changed)
shutdown  SIGTERM/SIGINT -> STOPPING=1 -> stop device links (intake) -> let the session
          publish what is queued, bounded by gateway.shutdown_timeout -> stop the session
          (announces offline) -> every handle closed -> exit 0.
          A second signal skips the wait; if unwinding still hangs, the process exits hard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway.config import Config, Device, SerialDevice, load_config
from gateway.errors import ConfigError
from gateway.links.serial import SerialLink
from gateway.logs import setup_logging
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.session import MqttSession
from gateway.queue import ReadingQueue
from gateway.supervisor import Link, Supervisor
from gateway.systemd import notify

log = logging.getLogger(__name__)

CLOSE_RESERVE = 2.0  # seconds of the shutdown budget kept for closing the MQTT session
FORCED_EXIT_GRACE = 3.0  # after a second signal, exit hard if unwinding takes longer


def make_link(device: Device, submit: Callable[[Reading], None], metrics: Metrics) -> Link:
    match device:
        case SerialDevice():
            return SerialLink(device, submit, metrics)
    raise AssertionError(f"no link for device type {device.type}")  # pragma: no cover


class Gateway:
    def __init__(
        self, cfg: Config, config_path: Path | None = None, metrics: Metrics | None = None
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.queue: ReadingQueue | None = None
        self.supervisor: Supervisor | None = None
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._force: Callable[[], object] = lambda: None

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

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        cfg = self.cfg
        self.queue = ReadingQueue(cfg.gateway.queue.size, cfg.gateway.queue.overflow, self.metrics)
        with self._signals():
            async with Supervisor(self.metrics, on_change=self._report_status) as sup:
                self.supervisor = sup
                sup.start(self._make_session(cfg))
                for device in cfg.devices:
                    sup.start(make_link(device, self.queue.put, self.metrics))
                notify("READY=1", self._status_line())
                log.info("gateway %s started with %d device(s)", cfg.gateway.id, len(cfg.devices))
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    if self._stop_requested:
                        break
                    if self._reload_requested:
                        self._reload_requested = False
                        await self.reload()
                notify("STOPPING=1")
                await self._shutdown(sup, self.queue)
        log.info("gateway stopped")
        return 0

    def _make_session(self, cfg: Config) -> MqttSession:
        assert self.queue is not None
        return MqttSession(cfg.mqtt, cfg.gateway.id, self.queue, self.metrics)

    async def _shutdown(self, sup: Supervisor, queue: ReadingQueue) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.gateway.shutdown_timeout
        reserve = min(CLOSE_RESERVE, self.cfg.gateway.shutdown_timeout / 2)
        devices = [n for n in list(sup.status) if n != MqttSession.name and n in sup]
        await asyncio.gather(*(sup.stop(name) for name in devices))
        queue.close()
        async with asyncio.TaskGroup() as tg:
            drain = tg.create_task(self._drain(queue, deadline - reserve), name="drain")
            self._force = drain.cancel
        session = sup.link(MqttSession.name)
        if isinstance(session, MqttSession):  # closing gets what is left of the budget
            session.announce_timeout = max(0.0, deadline - loop.time())
        await sup.stop(MqttSession.name)
        if lost := len(queue) + queue.inflight:
            log.warning("%d reading(s) were not published before shutdown", lost)

    @staticmethod
    async def _drain(queue: ReadingQueue, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await queue.wait_drained()
        except TimeoutError:
            log.warning("shutdown timeout: %d reading(s) still queued", len(queue))

    # -- reload ------------------------------------------------------------------------------
    async def reload(self) -> bool:
        """Re-read the config; apply only the differences. Invalid config changes nothing."""
        notify("RELOADING=1")
        try:
            new = load_config(self.config_path) if self.config_path else None
        except ConfigError as exc:
            new = None
            log.error("reload rejected, keeping the running config:\n%s", exc)
        if new is None:
            self.metrics.reloads.labels("invalid").inc()
            notify("READY=1", self._status_line())
            return False
        await self._apply(new)
        self.metrics.reloads.labels("applied").inc()
        notify("READY=1", self._status_line())
        return True

    async def _apply(self, new: Config) -> None:
        old, sup = self.cfg, self.supervisor
        assert sup is not None
        assert self.queue is not None
        self.cfg = new
        if new.log != old.log:
            setup_logging(new.log.level, new.log.format)
        if new.gateway.queue != old.gateway.queue:
            log.warning("gateway.queue changes take effect after a restart")
        restart: list[Link] = []
        if new.mqtt != old.mqtt or new.gateway.id != old.gateway.id:
            restart.append(self._make_session(new))
        old_devices = {d.id: d for d in old.devices}
        new_devices = {d.id: d for d in new.devices}
        removed = [i for i in old_devices if i not in new_devices]
        for device_id, device in new_devices.items():
            if old_devices.get(device_id) != device:
                restart.append(make_link(device, self.queue.put, self.metrics))
        stop_names = [f"{old_devices[i].type}:{i}" for i in removed] + [
            link.name for link in restart
        ]
        log.info("reload: %d link(s) to stop, %d to (re)start", len(stop_names), len(restart))
        await asyncio.gather(*(sup.stop(name) for name in stop_names))
        for link in restart:
            sup.start(link)

    # -- status ------------------------------------------------------------------------------
    def _status_line(self) -> str:
        sup = self.supervisor
        states = list(sup.status.values()) if sup else []
        running = [s for s in states if s.state != "stopped"]
        up = sum(s.state == "up" for s in running)
        queued = len(self.queue) if self.queue else 0
        return f"STATUS={up}/{len(running)} links up, queue {queued}"

    def _report_status(self) -> None:
        notify(self._status_line())


def run(config_path: Path) -> int:
    """Load the config and run the daemon; exit code 2 for an unusable config."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(cfg.log.level, cfg.log.format)
    return asyncio.run(Gateway(cfg, config_path).run())
