"""What the HTTP endpoints report: liveness, readiness, the status document, scrape-time metrics.

Pure reads of the running gateway (its config, supervisor, outbox, MQTT session); nothing here
changes it. `http.py` serves these; `app.py` owns the parts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from gateway import __version__
from gateway.config import Device
from gateway.logs import redact
from gateway.metrics import Metrics
from gateway.models import Reading, Value
from gateway.mqtt.session import MqttSession, server_label
from gateway.recent import Recent, SensorRecent

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.ble.hub import AdapterState
    from gateway.ble.strangers import Stranger


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
            if isinstance(value, bool | int | float):  # strings have no gauge
                metrics.sensor_value.labels(device, sensor, unit).set(float(value))


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reasons: list[str]

    def document(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "fail", "reasons": self.reasons}


def _session(gw: Gateway) -> MqttSession | None:
    link = gw.supervisor.link(MqttSession.name) if gw.supervisor else None
    return link if isinstance(link, MqttSession) else None


def liveness(gw: Gateway) -> Verdict:
    """The event loop answers (we are running) and the supervisor makes progress."""
    stall = gw.supervisor.stalled() if gw.supervisor else None
    return Verdict(stall is None, [] if stall is None else [stall.detail])


def readiness(gw: Gateway) -> Verdict:
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


def refresh_metrics(gw: Gateway) -> None:
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
        "last_error": None if status.last_error is None else redact(status.last_error),
    }


def status_document(gw: Gateway) -> dict[str, Any]:
    """`/status`: the configured links with their states, each device's last reading and
    values, the outbox, readiness, the broker, BLE scanners. Everything the status page shows;
    never a secret (error texts pass through the log's secret masking)."""
    from gateway.app import link_name  # noqa: PLC0415 - app imports this module
    from gateway.streams.link import stream_link_name  # noqa: PLC0415

    now = time.time()
    statuses: Mapping[str, Any] = gw.supervisor.status if gw.supervisor else {}
    names = [MqttSession.name, *(link_name(d) for d in gw.cfg.devices)]
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
        "mqtt": _mqtt_document(gw, statuses.get(MqttSession.name), now),
        "loop_lag": round(gw.watchdog.lag, 4) if gw.watchdog else None,
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
        "ble": _ble_document(gw, now),
    }


def _mqtt_document(gw: Gateway, status: Any, now: float) -> dict[str, Any]:
    session = _session(gw)
    connected = bool(session and session.connected.is_set())
    reason = None
    if not connected and status is not None:
        reason = redact(status.last_error) if status.last_error else "connecting"
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
    gw: Gateway, device: Device, status: Any, counts: _DeviceCounts, now: float
) -> dict[str, Any]:
    from gateway.app import link_name  # noqa: PLC0415 - app imports this module

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
        "reason": redact(status.last_error) if status and status.last_error else None,
        "retry_in": retry_in,
        "backoff": status.last_delay if status and status.state == "backing_off" else None,
        "availability": gw.availability.states.get(device.id, "offline"),
        "decode_errors": _total(counts.decode_errors.get(device.id, {})),
        "filter_dropped": _total(counts.filter_dropped.get(device.id, {})),
        "sensors": {
            name: _sensor_document(sensor, now)
            for name, sensor in gw.seen.recent.of(device.id).items()
        },
    }


def _sensor_document(sensor: SensorRecent, now: float) -> dict[str, Any]:
    value = sensor.value
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no NaN or infinity
    elif isinstance(value, str):
        value = redact(value)
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


def _ble_document(gw: Gateway, now: float) -> dict[str, Any] | None:
    """The scanner of each adapter and the advertisers heard that no device is configured for;
    None when Bluetooth is not configured (nothing of it is loaded then)."""
    hub = gw.ble_hub
    if hub is None:
        return None
    from gateway.config import BleAdvertDevice  # noqa: PLC0415

    configured = {d.address for d in gw.cfg.devices if isinstance(d, BleAdvertDevice)}
    adapters: dict[str, Any] = {}
    unknown: list[dict[str, Any]] = []
    for name, state in hub.adapters().items():
        adapters[name] = _scanner_document(gw, name, state)
        for stranger in state.strangers.recent_first():
            if stranger.advert.address not in configured:
                unknown.append(_stranger_document(name, stranger, now))
    return {"adapters": adapters, "unknown": unknown}


def _scanner_document(gw: Gateway, name: str, state: AdapterState) -> dict[str, Any]:
    from gateway.ble.scanner import ScannerLink  # noqa: PLC0415 - BLE only when configured

    link = gw.supervisor.link(f"ble_scanner:{name}") if gw.supervisor else None
    status = gw.supervisor.status.get(f"ble_scanner:{name}") if gw.supervisor else None
    scanner = link if isinstance(link, ScannerLink) else None
    return {
        "state": status.state if status else "stopped",
        "mode": scanner.mode if scanner else None,
        "adverts_per_second": round(state.adverts_per_second(time.monotonic()), 2),
        "ladder": scanner.ladder_step() if scanner else "-",
        "reason": redact(status.last_error) if status and status.last_error else None,
    }


def _stranger_document(adapter: str, stranger: Stranger, now: float) -> dict[str, Any]:
    decoder, values = stranger.described()
    advert = stranger.advert
    return {
        "adapter": adapter,
        "address": advert.address,
        "name": advert.name,
        "rssi": advert.rssi,
        "decoder": None if decoder == "-" else decoder,
        "values": values,
        "snippet": stranger.snippet(),
        "last_seen_age": round(max(0.0, now - stranger.last_seen), 3),
        "adverts": stranger.adverts,
    }
