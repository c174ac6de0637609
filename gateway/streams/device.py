"""One device's sensor streams: a filter chain per sensor, between the decoder and the encoder.

`DeviceStream.feed(frame)` runs each reading of a frame through its sensor's chain and returns
the readings that leave it (synchronous, no I/O: called from the link's callback). Filters that
need time (heartbeat, timeout, throttle_average, debounce) have deadlines; the device's
`StreamLink` (streams/link.py) calls `tick()` when one is due. A value a filter drops is
reported to `on_drop(sensor, filter)` (counted per device, sensor and filter).

Sensors without `filters:` pass straight through, except on a device whose model has a
`republish_period()` (Bluetooth LE adverts' `republish_after`), which adds `or: [{delta: 0},
{heartbeat: republish_after}]` (on change, or every republish_after) after a sensor's own
filters; `signal_strength` (which jitters on every advert) gets `throttle: republish_after`,
and events (a button press) nothing: each one is news.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from pydantic import TypeAdapter

from gateway.config import Device
from gateway.config.filters import FilterSpec
from gateway.decoders.events import is_event
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.streams.chain import Chain, Result, build_chain
from gateway.streams.filters import Filter, Sample

RSSI_SENSOR = "signal_strength"
REPUBLISH_FILTER = "republish_after"  # the filter label of drops by the BLE default chain

DropCallback = Callable[[str, str], None]  # (sensor, filter)


@cache
def _specs() -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[FilterSpec])


def ble_default_filters(republish_after: float, sensor: str) -> list[Any]:
    """The filters `republish_after` stands for (FilterSpec models)."""
    if republish_after <= 0:
        return []
    if sensor == RSSI_SENSOR:
        return _specs().validate_python([{"throttle": republish_after}])
    return _specs().validate_python([{"or": [{"delta": 0}, {"heartbeat": republish_after}]}])


def _timed_anyway(device: Device) -> bool:
    """An availability timeout or the BLE `republish_after` default: a stream with a timer,
    whatever the sensors' own filters."""
    return device.availability.timeout is not None or device.republish_period() > 0


def device_is_timed(device: Device) -> bool:
    """Whether the device's stream needs a timer task (a StreamLink)."""
    return _timed_anyway(device) or any(
        build_chain(spec.filters).timed for spec in device.sensors.values()
    )


class Shorthand:
    """A chain that counts as one filter under one name: what `republish_after` stands for,
    so that its drops are counted as `republish_after`, whatever filters it is made of."""

    def __init__(self, name: str, chain: Chain) -> None:
        self.name = name
        self.timed = chain.timed
        self._chain = chain

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        return self._chain.feed(sample, now).samples

    def deadline(self) -> float | None:
        return self._chain.deadline()

    def tick(self, now: float, wall: float) -> list[Sample]:
        return self._chain.tick(now, wall).samples


class DeviceStream:
    def __init__(self, device: Device, on_drop: DropCallback) -> None:
        self.device = device
        self._on_drop = on_drop
        self._chains: dict[str, Chain | None] = {}  # None: passes straight through
        self._units: dict[str, str | None] = {}
        self._republish = device.republish_period()

    def chain(self, sensor: str) -> Chain | None:
        """The sensor's chain, made on its first value (decoders such as kv name their sensors
        only when they send them)."""
        try:
            return self._chains[sensor]
        except KeyError:
            pass
        spec = self.device.sensors.get(sensor)
        filters: list[Filter] = list(build_chain(spec.filters).filters) if spec else []
        if self._republish > 0 and not is_event(sensor):
            # After the sensor's own filters: an advert comes several times a second, and a
            # user who adds an offset must not flood the broker by doing so.
            default = build_chain(ble_default_filters(self._republish, sensor))
            filters.append(Shorthand(REPUBLISH_FILTER, default))
        chain = Chain(filters) if filters else None
        self._chains[sensor] = chain
        return chain

    def feed(self, readings: Sequence[Reading], now: float) -> list[Reading]:
        """A frame's readings in, the readings that pass out (in the frame's order)."""
        out: list[Reading] = []
        for reading in readings:
            chain = self.chain(reading.sensor)
            if chain is None:
                out.append(reading)
                continue
            self._units[reading.sensor] = reading.unit
            result = chain.feed(Sample(reading.value, reading.ts), now)
            passed = result.samples
            if len(passed) == 1 and not result.dropped_by:
                sample = passed[0]
                if sample.value is reading.value and sample.ts == reading.ts:
                    out.append(reading)  # passed unchanged: no new Reading
                    continue
            self._collect(reading.sensor, result, out)
        return out

    def deadline(self) -> float | None:
        """The earliest time a filter wants `tick()` (monotonic), or None."""
        best = math.inf
        for chain in self._chains.values():
            if chain is not None and (due := chain.deadline()) is not None and due < best:
                best = due
        return None if best == math.inf else best

    def tick(self, now: float, wall: float) -> list[Reading]:
        """What the timed filters emit at `now`."""
        out: list[Reading] = []
        for sensor, chain in self._chains.items():
            if chain is not None and (due := chain.deadline()) is not None and due <= now:
                self._collect(sensor, chain.tick(now, wall), out)
        return out

    def _collect(self, sensor: str, result: Result, out: list[Reading]) -> None:
        device, unit = self.device.id, self._units.get(sensor)
        out.extend(Reading(device, sensor, s.value, unit, s.ts) for s in result.samples)
        for name in result.dropped_by:
            self._on_drop(sensor, name)


def stream_for(device: Device, metrics: Metrics) -> DeviceStream | None:
    """The device's streams, counting what they drop (None: every value passes straight
    through, no stream needed)."""
    if not needs_stream(device):
        return None
    dropped = metrics.filter_dropped
    suppressed = metrics.ble_suppressed.labels(device.id)

    def on_drop(sensor: str, name: str) -> None:
        dropped.labels(device.id, sensor, name).inc()
        if name == REPUBLISH_FILTER:
            suppressed.inc()

    return DeviceStream(device, on_drop)


def needs_stream(device: Device) -> bool:
    """Whether any value of the device goes through a filter or a timer."""
    return _timed_anyway(device) or any(spec.filters for spec in device.sensors.values())
