"""What the HTTP endpoints report: liveness, readiness, the status document, scrape-time metrics.

Pure reads of a `GatewayView`: the small read-only face of the running gateway (its config,
what was seen, and a `Report`: each component's status as the component reports it: the
supervisor its links, the MQTT session its connection, the outbox its stats, the metrics their
per-device counts). Health composes those reports; it knows no component's class and changes
nothing. `http.py` serves these; `wiring.Graph` is the view.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway import __version__
from gateway.config import Config, Device
from gateway.controls import controls_document
from gateway.families import FAMILIES, Family, family_of
from gateway.linknames import SESSION, link_name, stream_link_name
from gateway.metrics import DeviceCounts, Metrics
from gateway.models import Reading, Value
from gateway.mqtt.session import SessionStatus, server_label
from gateway.recent import Recent, SensorRecent, as_number

if TYPE_CHECKING:
    from gateway.mqtt.availability import Availability
    from gateway.supervisor import LinkStatus, Stall


@dataclass(slots=True)
class Seen:
    """The latest reading time of each device, each sensor's last value and short history (for
    the status page) and, when exported, each sensor's latest value as a gauge.

    Updated on every reading (dict stores), turned into gauges only on a scrape."""

    last_seen: dict[str, float] = field(default_factory=dict)
    values: dict[tuple[str, str, str], Value | None] = field(default_factory=dict)
    keep_values: bool = False
    recent: Recent = field(default_factory=Recent)

    def record(self, reading: Reading) -> None:
        self.last_seen[reading.device] = reading.ts
        self.recent.record(reading)
        if self.keep_values:
            self.values[(reading.device, reading.sensor, reading.unit or "")] = reading.value

    def forget(self, device: str, metrics: Metrics) -> None:
        self.last_seen.pop(device, None)
        self.recent.forget(device)
        for key in [k for k in self.values if k[0] == device]:
            del self.values[key]
        metrics.forget_device(device)

    def export(self, metrics: Metrics) -> None:
        for device, ts in self.last_seen.items():
            metrics.last_reading.labels(device).set(ts)
        for (device, sensor, unit), value in self.values.items():
            # Strings have no gauge; nor has an int no float holds (it made the scrape a 500).
            number = float(value) if isinstance(value, bool) else as_number(value)
            if number is not None:
                metrics.sensor_value.labels(device, sensor, unit).set(number)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reasons: list[str]

    def document(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "fail", "reasons": self.reasons}


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """What the outbox reports of itself."""

    records: int
    bytes: int
    inflight: int
    oldest_age: float
    mode: str  # disk, memory, recovering
    degraded: bool  # not writing to disk as configured
    mode_reason: str  # why it is in its mode
    unreadable: str | None  # why its backlog on disk cannot be read (None: it can)


@dataclass(frozen=True, slots=True)
class Report:
    """The running gateway's components, each as it reports itself, read once per answer."""

    links: Mapping[str, LinkStatus]  # the supervisor's, by link name
    stall: Stall | None  # the supervisor's: why it makes no progress
    session: SessionStatus | None  # None while no MQTT session runs
    outbox: OutboxStatus | None  # None before the gateway is wired
    loop_lag: float | None  # the watchdog's probe (None: not running)


class GatewayView(Protocol):
    """What the endpoints read of the running gateway (`wiring.Graph` is one)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def seen(self) -> Seen: ...
    @property
    def availability(self) -> Availability: ...
    @property
    def started(self) -> float: ...
    def report(self) -> Report:
        """Each component's own status, composed."""

    def family_document(self, family: Family, now: float) -> object:
        """A family's own section of `/status` (`ble`: scanners, unknown advertisers)."""


def liveness(gw: GatewayView) -> Verdict:
    """The event loop answers (we are running) and the supervisor makes progress."""
    stall = gw.report().stall
    return Verdict(stall is None, [] if stall is None else [stall.detail])


def readiness(gw: GatewayView, report: Report | None = None) -> Verdict:
    """Delivering: connected to the broker and the outbox below its high-water mark."""
    report = report or gw.report()
    reasons = []
    if report.session is None or not report.session.connected:
        reasons.append("mqtt not connected")
    outbox = report.outbox
    queued = outbox.records if outbox else 0
    high_water = gw.cfg.metrics.outbox_high_water
    if queued > high_water:
        reasons.append(f"outbox holds {queued} readings (high-water mark {high_water})")
    if outbox is not None and outbox.degraded:
        reasons.append(f"outbox in {outbox.mode} mode ({outbox.mode_reason})")
    if outbox is not None and outbox.unreadable:
        reasons.append(f"outbox cannot read its backlog on disk ({outbox.unreadable}); retrying")
    return Verdict(not reasons, reasons)


def refresh_metrics(gw: GatewayView) -> None:
    """Gauges that are cheaper to compute when scraped than on every reading (the outbox's own
    gauges, oldest age included, are read on scrape by the outbox itself)."""
    gw.seen.export(gw.metrics)


def _link_document(status: Any, now: float) -> dict[str, Any]:
    return {
        "state": status.state,
        "since": round(status.since, 3),
        "for_seconds": round(now - status.since, 3),
        "starts": status.starts,
        "failures": status.failures,
        "last_error": status.last_error,
    }


def status_document(gw: GatewayView) -> dict[str, Any]:
    """`/status`: the configured links with their states, each device's last reading and
    values, the outbox, readiness, the broker, BLE scanners. Everything the status page shows;
    never a secret, by construction: no config field that holds one (`SecretStr`, `password`,
    `bind_key`, ...) is in it, and no error text of ours quotes one. Nothing is masked by
    comparing values: a value shown as `***` because it equals a secret would confirm a guess
    (a device's string value, say, is whatever its sender chose)."""
    now = time.time()
    report = gw.report()
    statuses = report.links
    names = [SESSION, *(link_name(d) for d in gw.cfg.devices)]
    names += [stream_link_name(d.id) for d in gw.cfg.devices]  # present if its filters need time
    links = {n: _link_document(statuses[n], now) for n in names if n in statuses}
    counts = gw.metrics.device_counts()
    devices = {
        d.id: _device_document(gw, d, statuses.get(link_name(d)), counts, now)
        for d in gw.cfg.devices
    }
    ready = readiness(gw, report)
    lag = report.loop_lag
    return {
        "gateway": {
            "id": gw.cfg.gateway.id,
            "version": __version__,
            "time": round(now, 3),
            "started": round(gw.started, 3),
            "uptime": round(max(0.0, now - gw.started), 3),
        },
        "ready": ready.ok,
        "not_ready": ready.reasons,
        "mqtt": _mqtt_document(gw.cfg, report.session, statuses.get(SESSION)),
        "loop_lag": None if lag is None else round(lag, 4),
        "links": links,
        "devices": devices,
        "outbox": _outbox_document(report.outbox, gw.cfg.metrics.outbox_high_water),
        **{f.status_key: gw.family_document(f, now) for f in FAMILIES if f.status_key},
    }


def _outbox_document(outbox: OutboxStatus | None, high_water: int) -> dict[str, Any]:
    return {
        "records": outbox.records if outbox else 0,
        "bytes": outbox.bytes if outbox else 0,
        "inflight": outbox.inflight if outbox else 0,
        "oldest_age": round(outbox.oldest_age, 3) if outbox else 0.0,
        "degraded": bool(outbox and outbox.degraded),
        "mode": outbox.mode if outbox else "disk",
        "mode_reason": outbox.mode_reason if outbox and outbox.degraded else None,
        "unreadable": outbox.unreadable if outbox else None,
        "high_water": high_water,
    }


def _mqtt_document(cfg: Config, session: SessionStatus | None, status: Any) -> dict[str, Any]:
    connected = bool(session and session.connected)
    reason = None
    if not connected and status is not None:
        reason = status.last_error or "connecting"
    servers = cfg.mqtt.server_list()
    # The broker connected to; while not connected, the one tried next.
    current = session.server if session else servers[0]
    return {
        "connected": connected,
        "host": current.host,
        "port": current.port,
        "server": session.connected_to if session else None,
        "servers": [server_label(s) for s in servers],
        "tls": cfg.mqtt.tls is not None,
        "state": status.state if status else "starting",
        "since": round(status.since, 3) if status else None,
        "reason": reason,
        "reconnects": max(0, status.starts - 1) if status else 0,
        "failures": status.failures if status else 0,
    }


def _device_document(
    gw: GatewayView, device: Device, status: Any, counts: DeviceCounts, now: float
) -> dict[str, Any]:
    last = gw.seen.last_seen.get(device.id)
    retry_in = None
    if status is not None and status.state == "backing_off" and status.deadline is not None:
        retry_in = round(max(0.0, status.deadline - time.monotonic()), 3)
    return {
        "link": link_name(device),
        "state": status.state if status else "starting",
        "last_seen": None if last is None else round(last, 3),
        "last_seen_age": None if last is None else round(max(0.0, now - last), 3),
        "name": device.name,
        "family": device.type,
        "since": round(status.since, 3) if status else None,
        "reason": status.last_error if status and status.last_error else None,
        "retry_in": retry_in,
        "backoff": status.last_delay if status and status.state == "backing_off" else None,
        "availability": gw.availability.states.get(device.id, "offline"),
        "decode_errors": _total(counts.decode_errors.get(device.id, {})),
        "filter_dropped": _total(counts.filter_dropped.get(device.id, {})),
        "sensors": {
            name: _sensor_document(sensor, now)
            for name, sensor in gw.seen.recent.of(device.id).items()
        },
        "controls": controls_document(
            family_of(device).controls(device),
            {name: sensor.value for name, sensor in gw.seen.recent.of(device.id).items()},
        ),
    }


def _sensor_document(sensor: SensorRecent, now: float) -> dict[str, Any]:
    value = sensor.value
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no NaN or infinity
    return {
        "value": value,
        "unit": sensor.unit,
        "ts": round(sensor.ts, 3),
        "age": round(max(0.0, now - sensor.ts), 3),
        "history": [[round(ts, 3), v] for ts, v in sensor.ring],
    }


def _total(by_kind: dict[str, int]) -> dict[str, Any]:
    return {"total": sum(by_kind.values()), "by": by_kind}


def status_line(gw: GatewayView) -> str:
    """systemd's `STATUS=2/3 links up (down: serial:boiler), mqtt 10.0.0.5:1883, outbox 0`:
    what an operator needs first (the broker while connected)."""
    report = gw.report()
    running = [s for s in report.links.values() if s.state != "stopped"]
    up = sum(s.state == "up" for s in running)
    down = [s.name for s in running if s.state != "up"]
    line = f"STATUS={up}/{len(running)} links up"
    if down:
        line += f" (down: {', '.join(down[:3])}{', ...' if len(down) > 3 else ''})"
    if report.session is not None and report.session.connected_to is not None:
        line += f", mqtt {report.session.connected_to}"
    outbox = report.outbox
    line += f", outbox {outbox.records if outbox else 0}"
    if outbox is not None and outbox.degraded:
        line += " (disk failing: memory only)"
    return line
