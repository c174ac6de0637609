"""What the HTTP endpoints report: liveness, readiness, the status document, scrape-time metrics.

Pure reads of the running gateway (its config, supervisor, outbox, MQTT session); nothing here
changes it. `http.py` serves these; `app.py` owns the parts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.metrics import Metrics
from gateway.models import Reading, Value
from gateway.mqtt.session import MqttSession

if TYPE_CHECKING:
    from gateway.app import Gateway


@dataclass(slots=True)
class Seen:
    """The latest reading time of each device and, when exported, each sensor's latest value.

    Updated on every reading (a dict store, nothing more), turned into gauges only on a scrape."""

    last_seen: dict[str, float] = field(default_factory=dict)
    values: dict[tuple[str, str, str], Value | None] = field(default_factory=dict)
    keep_values: bool = False

    def record(self, reading: Reading) -> None:
        self.last_seen[reading.device] = reading.ts
        if self.keep_values:
            self.values[(reading.device, reading.sensor, reading.unit or "")] = reading.value

    def forget(self, device: str, metrics: Metrics) -> None:
        self.last_seen.pop(device, None)
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
        "last_error": status.last_error,
    }


def status_document(gw: Gateway) -> dict[str, Any]:
    """`/status`: the configured links with their states, each device's last reading, the
    outbox, readiness."""
    from gateway.app import link_name  # noqa: PLC0415 - app imports this module
    from gateway.streams.link import stream_link_name  # noqa: PLC0415

    now = time.time()
    statuses: Mapping[str, Any] = gw.supervisor.status if gw.supervisor else {}
    names = [MqttSession.name, *(link_name(d) for d in gw.cfg.devices)]
    names += [stream_link_name(d.id) for d in gw.cfg.devices]  # present if its filters need time
    links = {n: _link_document(statuses[n], now) for n in names if n in statuses}
    devices = {}
    for device in gw.cfg.devices:
        last = gw.seen.last_seen.get(device.id)
        state = links.get(link_name(device), {}).get("state", "starting")
        devices[device.id] = {
            "link": link_name(device),
            "state": state,
            "last_seen": None if last is None else round(last, 3),
            "last_seen_age": None if last is None else round(max(0.0, now - last), 3),
        }
    outbox = gw.outbox
    session = _session(gw)
    ready = readiness(gw)
    return {
        "gateway": {"id": gw.cfg.gateway.id, "version": __version__, "time": round(now, 3)},
        "ready": ready.ok,
        "not_ready": ready.reasons,
        "mqtt": {"connected": bool(session and session.connected.is_set())},
        "links": links,
        "devices": devices,
        "outbox": {
            "records": len(outbox) if outbox else 0,
            "bytes": outbox.bytes if outbox else 0,
            "inflight": outbox.inflight if outbox else 0,
            "oldest_age": round(outbox.oldest_age(), 3) if outbox else 0.0,
            "degraded": bool(outbox and outbox.degraded),
            "mode": outbox.mode.value if outbox else "disk",
            "high_water": gw.cfg.metrics.outbox_high_water,
        },
    }
