"""What the HTTP endpoints report: liveness, readiness, the status document, scrape-time metrics.

Pure reads of a `GatewayView`: the small read-only face of the running gateway (its config,
its links' states, the outbox, what was seen). Nothing here changes it, and nothing here imports
the lifecycle that fills it. `http.py` serves these.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter

from gateway import __version__
from gateway.config import Config, Device
from gateway.controls import controls_document
from gateway.families import FAMILIES, Family, family_of
from gateway.linknames import SESSION, link_name, stream_link_name
from gateway.metrics import Metrics
from gateway.models import Reading, Value
from gateway.mqtt.session import MqttSession, server_label
from gateway.recent import Recent, SensorRecent, as_number

if TYPE_CHECKING:
    from gateway.mqtt.availability import Availability
    from gateway.outbox import Outbox
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


class GatewayView(Protocol):
    """What the endpoints read of the running gateway; the lifecycle is one (structurally)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def outbox(self) -> Outbox | None: ...
    @property
    def seen(self) -> Seen: ...
    @property
    def availability(self) -> Availability: ...
    @property
    def started(self) -> float: ...
    @property
    def loop_lag(self) -> float | None: ...
    def family_document(self, family: Family, now: float) -> object:
        """A family's own section of `/status` (`ble`: scanners, unknown advertisers)."""

    @property
    def links(self) -> Mapping[str, LinkStatus]: ...
    def link(self, name: str) -> object | None: ...
    def stalled(self) -> Stall | None: ...


def _session(gw: GatewayView) -> MqttSession | None:
    link = gw.link(SESSION)
    return link if isinstance(link, MqttSession) else None


def liveness(gw: GatewayView) -> Verdict:
    """The event loop answers (we are running) and the supervisor makes progress."""
    stall = gw.stalled()
    return Verdict(stall is None, [] if stall is None else [stall.detail])


def readiness(gw: GatewayView) -> Verdict:
    """Delivering: connected to the broker and the outbox below its high-water mark."""
    reasons = []
    session = _session(gw)
    if session is None or not session.connected.is_set():
        reasons.append("mqtt not connected")
    queued = len(gw.outbox) if gw.outbox else 0
    high_water = gw.cfg.metrics.outbox_high_water
    if queued > high_water:
        reasons.append(f"outbox holds {queued} readings (high-water mark {high_water})")
    if gw.outbox is not None and gw.outbox.degraded:
        reasons.append(f"outbox in {gw.outbox.mode.value} mode ({gw.outbox.mode_reason})")
    if gw.outbox is not None and (unread := gw.outbox.unreadable_reason):
        reasons.append(f"outbox cannot read its backlog on disk ({unread}); retrying")
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
    statuses: Mapping[str, Any] = gw.links
    names = [SESSION, *(link_name(d) for d in gw.cfg.devices)]
    names += [stream_link_name(d.id) for d in gw.cfg.devices]  # present if its filters need time
    links = {n: _link_document(statuses[n], now) for n in names if n in statuses}
    counts = _DeviceCounts.of(gw.metrics)
    devices = {
        d.id: _device_document(gw, d, statuses.get(link_name(d)), counts, now)
        for d in gw.cfg.devices
    }
    outbox = gw.outbox
    ready = readiness(gw)
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
        "mqtt": _mqtt_document(gw, statuses.get(SESSION), now),
        "loop_lag": None if gw.loop_lag is None else round(gw.loop_lag, 4),
        "links": links,
        "devices": devices,
        "outbox": {
            "records": len(outbox) if outbox else 0,
            "bytes": outbox.bytes if outbox else 0,
            "inflight": outbox.inflight if outbox else 0,
            "oldest_age": round(outbox.oldest_age(), 3) if outbox else 0.0,
            "degraded": bool(outbox and outbox.degraded),
            "mode": outbox.mode.value if outbox else "disk",
            "mode_reason": outbox.mode_reason if outbox and outbox.degraded else None,
            "unreadable": outbox.unreadable_reason if outbox else None,
            "high_water": gw.cfg.metrics.outbox_high_water,
        },
        **{f.status_key: gw.family_document(f, now) for f in FAMILIES if f.status_key},
    }


def _mqtt_document(gw: GatewayView, status: Any, now: float) -> dict[str, Any]:
    session = _session(gw)
    connected = bool(session and session.connected.is_set())
    reason = None
    if not connected and status is not None:
        reason = status.last_error or "connecting"
    servers = gw.cfg.mqtt.server_list()
    # The broker connected to; while not connected, the one tried next.
    current = (session.server or session.servers[session.next_index]) if session else servers[0]
    return {
        "connected": connected,
        "host": current.host,
        "port": current.port,
        "server": server_label(session.server) if session and session.server else None,
        "servers": [server_label(s) for s in servers],
        "tls": gw.cfg.mqtt.tls is not None,
        "state": status.state if status else "starting",
        "since": round(status.since, 3) if status else None,
        "reason": reason,
        "reconnects": max(0, status.starts - 1) if status else 0,
        "failures": status.failures if status else 0,
    }


def _device_document(
    gw: GatewayView, device: Device, status: Any, counts: _DeviceCounts, now: float
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


@dataclass(frozen=True, slots=True)
class _DeviceCounts:
    """Per device, counts by kind read from the counters (one pass over each per document)."""

    decode_errors: dict[str, dict[str, int]]
    filter_dropped: dict[str, dict[str, int]]

    @classmethod
    def of(cls, metrics: Metrics) -> _DeviceCounts:
        decode = _by_device(metrics.frame_errors, "reason")
        for device, by in _by_device(metrics.modbus_errors, "reason").items():
            mine = decode.setdefault(device, {})
            for reason, n in by.items():
                mine[reason] = mine.get(reason, 0) + n
        return cls(decode, _by_device(metrics.filter_dropped, "filter"))


def _by_device(counter: Counter, kind: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                by = out.setdefault(sample.labels["device"], {})
                key = sample.labels[kind]
                by[key] = by.get(key, 0) + int(sample.value)
    return out


def status_line(gw: GatewayView) -> str:
    """systemd's `STATUS=2/3 links up (down: serial:boiler), mqtt 10.0.0.5:1883, outbox 0`:
    what an operator needs first (the broker while connected)."""
    running = [s for s in gw.links.values() if s.state != "stopped"]
    up = sum(s.state == "up" for s in running)
    down = [s.name for s in running if s.state != "up"]
    line = f"STATUS={up}/{len(running)} links up"
    if down:
        line += f" (down: {', '.join(down[:3])}{', ...' if len(down) > 3 else ''})"
    session = _session(gw)
    if session is not None and session.server is not None:
        line += f", mqtt {server_label(session.server)}"
    line += f", outbox {len(gw.outbox) if gw.outbox else 0}"
    if gw.outbox is not None and gw.outbox.degraded:
        line += " (disk failing: memory only)"
    return line
