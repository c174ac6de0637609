"""The daemon's lifecycle: start the links, wait for signals, reload, shut down in order.

startup   config loaded -> outbox opened (readings of a previous run included)
          -> HTTP endpoint (/metrics, /healthz, /readyz, /status) -> supervisor(TaskGroup)
          -> watchdog pinger -> MQTT session + device links -> READY=1
main      signal handlers only set flags and wake the main loop
          SIGHUP -> reload (validate, diff, restart only what changed)
shutdown  SIGTERM/SIGINT -> STOPPING=1 -> stop device links (intake) -> let the session
          publish what is queued while connected, bounded by gateway.shutdown_timeout (what
          is left stays in the outbox for the next start) -> stop the session
          (announces offline) -> every handle closed -> exit 0.
          A second signal skips the wait; if unwinding still hangs, the process exits hard.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.commands import CommandRouter, CommandTarget
from gateway.config import (
    BatchConfig,
    BleAdvertDevice,
    BleGattDevice,
    Config,
    Device,
    ModbusDevice,
    SerialDevice,
    load_config,
)
from gateway.encoding import Encoder
from gateway.errors import ConfigError, HttpServerError
from gateway.health import Seen, liveness, readiness, refresh_metrics, status_document
from gateway.links.serial import SerialLink
from gateway.logs import config_secrets, set_secrets, setup_logging
from gateway.metrics import Metrics
from gateway.models import Reading, SensorClasses, Submit
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.session import Availability, MqttSession, server_label
from gateway.streams.device import DeviceStream, device_is_timed, stream_for
from gateway.streams.link import StreamLink, stream_link_name
from gateway.supervisor import Link, Supervisor
from gateway.systemd import notify, watchdog_timeout
from gateway.watchdog import Watchdog

if TYPE_CHECKING:
    from gateway.ble.hub import BleHub
    from gateway.homeassistant.announcer import Announcer
    from gateway.http import HttpServer
    from gateway.modbus.bus import ModbusBuses

log = logging.getLogger(__name__)

CLOSE_RESERVE = 2.0  # seconds of the shutdown budget kept for closing the MQTT session
FORCED_EXIT_GRACE = 3.0  # after a second signal, exit hard if unwinding takes longer


def make_link(
    device: Device,
    submit: Submit,
    metrics: Metrics,
    ble: BleHub | None = None,
    modbus: ModbusBuses | None = None,
) -> Link:
    match device:
        case SerialDevice():
            return SerialLink(device, submit, metrics)
        case ModbusDevice():  # Modbus RTU: devices on one port share its bus
            if modbus is None:
                raise ValueError("modbus devices need the gateway's ModbusBuses")
            from gateway.modbus.link import ModbusLink  # noqa: PLC0415 - the `modbus` extra

            return ModbusLink(device, modbus.bus_for(device), submit, metrics)
        case BleAdvertDevice() | BleGattDevice():  # Bluetooth LE: the adapters' shared state
            if ble is None:
                raise ValueError(f"{device.type} devices need the gateway's BleHub")
            from gateway.ble.links import device_link  # noqa: PLC0415 - see Gateway.ble

            return device_link(ble, device, submit)
    raise AssertionError(f"no link for device type {device.type}")  # pragma: no cover


def is_ble(device: Device) -> bool:
    return isinstance(device, BleAdvertDevice | BleGattDevice)


def uses_ble(config: Config | None) -> bool:
    return config is not None and any(is_ble(d) for d in config.devices)


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this host only (`localhost` included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def link_name(device: Device) -> str:
    return f"{device.type}:{device.id}"


class Gateway:
    def __init__(
        self, cfg: Config, config_path: Path | None = None, metrics: Metrics | None = None
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.outbox: Outbox | None = None
        self.supervisor: Supervisor | None = None
        self.availability = Availability()
        self.encoder: Encoder | None = None
        self.announcer: Announcer | None = None  # Home Assistant discovery, once enabled
        # Devices whose values go through filters (sensor streams), and the timers of those
        # that need time; both replaced with the device on reload.
        self.streams: dict[str, DeviceStream] = {}
        self.stream_links: dict[str, StreamLink] = {}
        # Devices with `batch`, looked up per record by the publisher (kept up to date on
        # reload: the same dict, so a running session sees the change).
        self.batches: dict[str, BatchConfig] = {}
        self._ble: BleHub | None = None
        self._modbus: ModbusBuses | None = None
        # What decoders said each sensor is (BLE parser libraries), for Home Assistant.
        self.sensor_classes: SensorClasses = {}
        self.exit_code = 0  # non-zero when a component asks for a restart (see _ble_gave_up)
        self.seen = Seen(keep_values=cfg.metrics.sensor_values)
        self.http: HttpServer | None = None
        self.watchdog: Watchdog | None = None  # its loop-lag probe is on the status page
        self.started = time.time()
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
        outbox = Outbox(cfg.gateway.state_dir / cfg.outbox.file, cfg.outbox, self.metrics)
        self.outbox = outbox
        self.encoder = Encoder(outbox, cfg)
        self._sync_discovery(None)
        outbox.open()
        try:
            with self._signals():
                async with (
                    self._http_server() as self.http,
                    Supervisor(
                        self.metrics,
                        on_change=self._links_changed,
                        stall_timeout=cfg.gateway.stall_timeout,
                        stop_timeout=cfg.gateway.shutdown_timeout,
                    ) as sup,
                    Watchdog(
                        sup.stalled,
                        self.metrics,
                        timeout=watchdog_timeout(),
                        status=self._status_line,
                    ) as self.watchdog,
                ):
                    self.supervisor = sup
                    sup.start(self._make_session(cfg))
                    for device in cfg.devices:
                        self._start_device(sup, device)
                    await self._sync_ble_scanners(sup, None)
                    # Everything made while starting (imported modules, config, metrics) lives
                    # as long as the process: keep it out of the cyclic collector's full passes,
                    # which otherwise walk it all and stall the loop for milliseconds.
                    gc.freeze()
                    notify("READY=1", self._status_line())
                    log.info(
                        "gateway %s started with %d device(s)", cfg.gateway.id, len(cfg.devices)
                    )
                    await self._main_loop()
                    notify("STOPPING=1", "STATUS=stopping: publishing what is queued")
                    await self._shutdown(sup, outbox)
        except HttpServerError as exc:
            log.error("%s", exc)
            return 1
        finally:
            outbox.close()  # commits what is still in memory (SIGTERM path)
        log.info("gateway stopped")
        return self.exit_code

    async def _main_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stop_requested:
                return
            if self._reload_requested:
                self._reload_requested = False
                await self.reload()

    def submit(self, readings: Sequence[Reading]) -> None:
        """Where every link hands the readings of a frame: through the device's sensor streams
        (if it has any) into the durable outbox, never blocking."""
        if not readings:
            return
        device = readings[0].device
        stream = self.streams.get(device)
        if stream is not None:
            now = time.monotonic()
            readings = stream.feed(readings, now)
            if (timer := self.stream_links.get(device)) is not None:
                timer.decoded(now)
        self.emit(readings)

    def emit(self, readings: Sequence[Reading]) -> None:
        """Readings that left their streams (a frame's, or what a timed filter emits)."""
        assert self.encoder is not None
        self.encoder.publish(readings)
        for reading in readings:
            self.seen.record(reading)
        if self.announcer is not None:
            self.announcer.seen(readings)

    def _http_server(self) -> contextlib.AbstractAsyncContextManager[HttpServer | None]:
        """The HTTP endpoint, or nothing when `metrics.enabled` is false."""
        cfg = self.cfg.metrics
        if not cfg.enabled:
            return contextlib.nullcontext(None)
        from gateway.http import Endpoints, HttpServer  # noqa: PLC0415 - aiohttp: ~12 MB

        endpoints = Endpoints(
            self.metrics.registry,
            refresh=lambda: refresh_metrics(self),
            liveness=lambda: liveness(self),
            readiness=lambda: readiness(self),
            status=lambda: status_document(self),
            auth=cfg.auth,
        )
        if cfg.auth is None and not is_loopback(cfg.host):
            log.warning(
                "http: metrics.host %s is reachable from other hosts and metrics.auth is not "
                "set: anyone there can read the status page, /status and /metrics",
                cfg.host,
            )
        return HttpServer(cfg.host, cfg.port, endpoints.application())

    def _start_device(self, sup: Supervisor, device: Device) -> None:
        ble = self.ble if is_ble(device) else None
        modbus = self.modbus if isinstance(device, ModbusDevice) else None
        self._start_stream(sup, device)
        sup.start(make_link(device, self.submit, self.metrics, ble=ble, modbus=modbus))
        self.availability.set(device.id, online=False)

    def _start_stream(self, sup: Supervisor, device: Device) -> None:
        """The device's sensor streams (none if every value passes straight through) and,
        if they need time, their timer link."""
        stream = stream_for(device, self.metrics)
        if stream is None:
            return
        self.streams[device.id] = stream
        if device_is_timed(device):
            availability = self.availability
            link = StreamLink(
                device,
                stream,
                lambda readings: self._emit_timed(device.id, readings),
                lambda fresh: availability.set_fresh(device.id, fresh),
            )
            self.stream_links[device.id] = link
            sup.start(link)

    def _emit_timed(self, device_id: str, readings: Sequence[Reading]) -> None:
        """What timed filters emit. While the device is offline, values are held back (a
        heartbeat must not present the last value of a device that is gone as current);
        a `timeout`'s null still goes out: it says exactly that."""
        if not self.availability.online(device_id):
            held = [r for r in readings if r.value is not None]
            for reading in held:
                self.metrics.filter_dropped.labels(device_id, reading.sensor, "offline").inc()
            readings = [r for r in readings if r.value is None]
        if readings:
            self.emit(readings)

    def _forget_stream(self, device_id: str) -> None:
        self.streams.pop(device_id, None)
        self.stream_links.pop(device_id, None)
        self.availability.set_fresh(device_id, True)
        if self.encoder is not None:
            self.encoder.forget(device_id)

    def _make_session(self, cfg: Config) -> MqttSession:
        assert self.outbox is not None
        self._update_batches(cfg)
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

    def _sync_discovery(self, old: Config | None) -> bool:
        """Home Assistant discovery after a start or reload; True when the session must be
        restarted (discovery switched on: its subscriptions are made at connect)."""
        cfg = self.cfg
        if self.announcer is None:
            if not cfg.homeassistant.discovery:
                return False
            from gateway.homeassistant.announcer import Announcer  # noqa: PLC0415

            assert self.encoder is not None
            self.announcer = Announcer(cfg, self.encoder, self.metrics, self.sensor_classes)
            return old is not None
        if cfg.homeassistant.discovery:
            self.announcer.configure(cfg)
        elif old is not None and old.homeassistant.discovery:
            self.announcer.clear_all()  # stays a part of the session: it sends the clears
        return False

    def _update_batches(self, cfg: Config) -> None:
        self.batches.clear()
        self.batches.update({d.id: d.batch for d in cfg.devices if d.batch is not None})

    def _command_target(self, device_id: str) -> CommandTarget | None:
        device = self.cfg.device(device_id)
        if device is None or self.supervisor is None:
            return None
        link = self.supervisor.link(link_name(device))
        return link if isinstance(link, CommandTarget) else None

    async def _shutdown(self, sup: Supervisor, outbox: Outbox) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.gateway.shutdown_timeout
        reserve = min(CLOSE_RESERVE, self.cfg.gateway.shutdown_timeout / 2)
        devices = [n for n in list(sup.status) if n != MqttSession.name and n in sup]
        await asyncio.gather(*(sup.stop(name) for name in devices))
        session = sup.link(MqttSession.name)
        if isinstance(session, MqttSession) and session.connected.is_set():
            # Connected: publish what is queued, within the budget. Not connected: nothing to
            # wait for, the readings are safe in the outbox until the next start.
            async with asyncio.TaskGroup() as tg:
                drain = tg.create_task(self._drain(outbox, deadline - reserve), name="drain")
                self._force = drain.cancel
        if isinstance(session, MqttSession):  # closing gets what is left of the budget
            session.announce_timeout = max(0.0, deadline - loop.time())
        await sup.stop(MqttSession.name)
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

    # -- reload ------------------------------------------------------------------------------
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
            notify("READY=1", self._status_line())
            return False
        await self._apply(new)
        self.metrics.reloads.labels("applied").inc()
        notify("READY=1", self._status_line())
        return True

    async def _apply(self, new: Config) -> None:
        old, sup = self.cfg, self.supervisor
        assert sup is not None
        self.cfg = new
        set_secrets(config_secrets(new))
        if new.log != old.log:
            setup_logging(new.log.level, new.log.format)
        if new.outbox != old.outbox or new.gateway.state_dir != old.gateway.state_dir:
            log.warning("outbox and gateway.state_dir changes take effect after a restart")
        self._apply_metrics(old, new)
        restart_session = self._session_changed(old, new)
        old_devices = {d.id: d for d in old.devices}
        new_devices = {d.id: d for d in new.devices}
        changed = [i for i, d in old_devices.items() if new_devices.get(i) != d]
        stop = [link_name(old_devices[i]) for i in changed]
        stop += [stream_link_name(i) for i in changed if i in self.stream_links]
        start = [d for i, d in new_devices.items() if old_devices.get(i) != d]
        if restart_session:
            stop.append(MqttSession.name)
        log.info(
            "reload: %d link(s) to stop, %d to (re)start", len(stop), len(start) + restart_session
        )
        await asyncio.gather(*(sup.stop(name) for name in stop))
        for device_id in changed:
            self._forget_stream(device_id)
        for device_id in old_devices.keys() - new_devices.keys():
            self.availability.forget(device_id)
        for device_id, device in old_devices.items():
            if new_devices.get(device_id) != device:  # removed or changed: no stale series
                self.seen.forget(device_id, self.metrics)
        self._update_batches(new)
        if self.encoder is not None:
            self.encoder.configure(new)
        if stuck := [name for name in stop if name in sup]:
            # stop() is bounded: a link still closing keeps its name until it is done.
            log.error("reload: not restarted, still closing: %s", ", ".join(stuck))
        if restart_session and MqttSession.name not in sup:
            sup.start(self._make_session(new))
        for device in start:
            if link_name(device) not in sup and stream_link_name(device.id) not in sup:
                self._start_device(sup, device)
        await self._sync_ble_scanners(sup, old)

    @property
    def modbus(self) -> ModbusBuses:
        """The Modbus RTU buses (one per port). Made on first use: pymodbus is an optional
        extra, imported only when a Modbus device is configured (the config check says when
        it is missing)."""
        if self._modbus is None:
            from gateway.modbus.bus import ModbusBuses  # noqa: PLC0415

            self._modbus = ModbusBuses()
        return self._modbus

    # -- Bluetooth LE (issue 5) ----------------------------------------------------------------
    @property
    def ble_hub(self) -> BleHub | None:
        """The BLE state if Bluetooth is configured (or was, before a reload), else None: for
        reading it (the status page) without loading the BLE libraries."""
        return self._ble

    @property
    def ble(self) -> BleHub:
        """Bluetooth LE state shared by its links. Made on first use: bleak, dbus-fast and
        cryptography cost about half a second of start-up and their memory, which a gateway
        with serial devices only does not need to pay."""
        if self._ble is None:
            from gateway.ble.hub import BleHub  # noqa: PLC0415

            self._ble = BleHub(self.cfg.ble, self.metrics, self.sensor_classes)
        return self._ble

    async def _sync_ble_scanners(self, sup: Supervisor, old: Config | None) -> None:
        """One scanner link per adapter that BLE devices use (advert and GATT devices are
        ordinary device links, see make_link). On reload, the scanners restart only if the
        `ble` section or the set of adapters changed."""
        if not uses_ble(self.cfg) and not uses_ble(old):
            return  # no Bluetooth configured, before or now: do not even load its libraries
        from gateway.ble.links import scanner_links, scanners_changed  # noqa: PLC0415

        if old is not None and not scanners_changed(old, self.cfg):
            return
        running = [n for n in list(sup.status) if n.startswith("ble_scanner:") and n in sup]
        await asyncio.gather(*(sup.stop(name) for name in running))
        for link in scanner_links(self.ble, self.cfg, self.submit, self._ble_gave_up):
            sup.start(link)

    def _ble_gave_up(self, reason: str) -> None:
        """The silent-scanner ladder's last step: exit non-zero, so that systemd restarts us."""
        from gateway.ble.links import EXIT_ADAPTER_DEAD  # noqa: PLC0415

        log.error("%s", reason)
        self.exit_code = EXIT_ADAPTER_DEAD
        self.request_stop("Bluetooth adapter failure")

    # -- end of Bluetooth LE -------------------------------------------------------------------

    def _session_changed(self, old: Config, new: Config) -> bool:
        """Whether a reload restarts the MQTT session: its settings, the gateway's id, or new
        subscriptions (Home Assistant's topics, discovery switched on)."""
        restart = new.mqtt != old.mqtt or new.gateway.id != old.gateway.id
        restart |= self._sync_discovery(old)
        ha_topics = ("prefix", "status_topic")
        ha_old, ha_new = old.homeassistant, new.homeassistant
        return restart or any(getattr(ha_old, k) != getattr(ha_new, k) for k in ha_topics)

    def _apply_metrics(self, old: Config, new: Config) -> None:
        listener = ("enabled", "host", "port")
        if any(getattr(old.metrics, k) != getattr(new.metrics, k) for k in listener):
            log.warning("metrics.enabled, .host and .port changes take effect after a restart")
        if new.gateway.stall_timeout != old.gateway.stall_timeout:
            log.warning("gateway.stall_timeout changes take effect after a restart")
        self.seen.keep_values = new.metrics.sensor_values
        if not new.metrics.sensor_values:
            self.seen.values.clear()
            self.metrics.sensor_value.clear()

    # -- status ------------------------------------------------------------------------------
    def _status_line(self) -> str:
        """`STATUS=2/3 links up (down: serial:boiler), mqtt 10.0.0.5:1883, outbox 0`: what an
        operator needs first (the broker while connected)."""
        sup = self.supervisor
        states = list(sup.status.values()) if sup else []
        running = [s for s in states if s.state != "stopped"]
        up = sum(s.state == "up" for s in running)
        down = [s.name for s in running if s.state != "up"]
        queued = len(self.outbox) if self.outbox else 0
        line = f"STATUS={up}/{len(running)} links up"
        if down:
            line += f" (down: {', '.join(down[:3])}{', ...' if len(down) > 3 else ''})"
        session = sup.link(MqttSession.name) if sup else None
        if isinstance(session, MqttSession) and session.server is not None:
            line += f", mqtt {server_label(session.server)}"
        line += f", outbox {queued}"
        if self.outbox is not None and self.outbox.degraded:
            line += " (disk failing: memory only)"
        return line

    def _links_changed(self) -> None:
        sup = self.supervisor
        if sup is not None:
            for device in self.cfg.devices:
                status = sup.status.get(link_name(device))
                if status is not None and status.state != "stopped":
                    self.availability.set(device.id, online=status.state == "up")
        notify(self._status_line())


def run(config_path: Path) -> int:
    """Load the config and run the daemon; exit code 2 for an unusable config."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    set_secrets(config_secrets(cfg))
    setup_logging(cfg.log.level, cfg.log.format)
    # A watchdog abort (SIGABRT) or a crash prints every thread's Python stack to stderr (the
    # journal): where the event loop was stuck.
    faulthandler.enable()
    return asyncio.run(Gateway(cfg, config_path).run())
