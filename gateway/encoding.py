"""The encode stage: readings that left their sensor streams -> outbox records.

Each device's `payload` mode decides the message: `sensor` (default) one message per reading to
`<prefix>/<device>/<sensor>`; `device` one JSON object per frame to `<prefix>/<device>`, holding
the device's latest value of every sensor (so that a consumer, Home Assistant's templates
included, always finds every key) with the frame's `ts` and the device's `seq`. The outbox
gives the seq and keeps the record until the broker acknowledges it.

A device-mode object is bounded: at most `max_sensors` names besides the configured ones (a
decoder that names sensors from the data would otherwise grow it with every new key), and a
name not seen for `sensor_expire_after` seconds leaves it. A value JSON cannot carry (NaN, an
infinity, an int no float holds: decoders refuse them, this is the last guard) is counted and
left out, never published as invalid JSON.

The encoder makes a message's topic and fields (gateway.mqtt.topics); the outbox gives the seq
and keeps the record until the broker acknowledges it; the payload is rendered at take time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.config import Config, Device
from gateway.limits import UNKNOWN_OUTBOX_SHARE
from gateway.metrics import Metrics
from gateway.models import UNKNOWN_DEVICES, Reading, Value
from gateway.mqtt.topics import device_fields, device_topic, reading_fields, reading_topic
from gateway.outbox import Outbox
from gateway.recent import as_number
from gateway.throttle import LogThrottle

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DeviceState:
    """A `payload: device` object's values, and when each name was last seen (oldest first)."""

    max_sensors: int
    expire_after: float | None
    configured: frozenset[str]
    values: dict[str, Value | None] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, device: Device) -> DeviceState:
        return cls(device.max_sensors, device.sensor_expire_after, frozenset(device.sensors))

    def update(self, reading: Reading) -> bool:
        """Take the reading's value; False if its name is new and there is no room for it."""
        name, seen = reading.sensor, self.seen
        if (
            name not in seen
            and name not in self.configured
            and len(seen) - len(self.configured & seen.keys()) >= self.max_sensors
        ):
            return False
        seen.pop(name, None)  # to the end: `seen` stays ordered by last seen
        seen[name] = reading.ts
        self.values[name] = reading.value
        return True

    def expire(self, now: float) -> None:
        """Forget the names not seen for `expire_after` seconds before `now` (a frame's time).
        `seen` is ordered by last seen: the scan stops at the first fresh name."""
        if self.expire_after is None:
            return
        horizon = now - self.expire_after
        seen = self.seen
        while seen and (oldest := next(iter(seen.items())))[1] < horizon:
            del seen[oldest[0]]
            del self.values[oldest[0]]


def json_safe(value: Value | None) -> bool:
    """Whether JSON (and a consumer reading numbers as doubles) can carry the value."""
    if type(value) is float or type(value) is int:  # the hot path: no isinstance chain
        return as_number(value) is not None
    return True


class Encoder:
    def __init__(self, outbox: Outbox, cfg: Config, metrics: Metrics) -> None:
        self._outbox = outbox
        self._dropped = metrics.readings_dropped
        self._throttle = LogThrottle(log)
        self._state: dict[str, DeviceState] = {}
        self.configure(cfg)

    def configure(self, cfg: Config) -> None:
        """Take a (reloaded) config: prefix, qos, payload modes."""
        self._prefix = cfg.topic_prefix
        self._qos = cfg.mqtt.qos
        self._device_mode = {d.id: d for d in cfg.devices if d.payload == "device"}
        for device in list(self._state):
            if device not in self._device_mode:
                del self._state[device]

    def forget(self, device: str) -> None:
        """A removed or changed device: its state starts afresh."""
        self._state.pop(device, None)

    def publish(self, readings: Sequence[Reading]) -> None:
        """One frame's readings (all of one device) into the outbox."""
        if not readings:
            return
        device = readings[0].device
        if device in self._device_mode:
            self._publish_object(device, readings)
            return
        outbox, prefix = self._outbox, self._prefix
        for reading in readings:
            if not json_safe(reading.value):
                self._refuse(reading, "not_a_number")
                continue
            try:
                fields = reading_fields(reading)
            except ValueError:  # the payload's json.dumps(allow_nan=False): the last guard
                self._refuse(reading, "not_a_number")
                continue
            sensor = reading.sensor
            topic = f"{prefix}/{device}/{sensor}"  # reading_topic, inlined: the hot path
            outbox.put(device, topic, sensor, fields, self._qos, reading.ts)

    def publish_unknown(self, readings: Sequence[Reading]) -> int:
        """Readings of unconfigured devices, each to its own topic, all numbered as one device
        (`UNKNOWN_DEVICES`: one seqs row, one metric label). They may fill only a share of the
        outbox, so `drop_oldest` never drops a configured device's reading to make room for
        one of theirs. Returns how many were refused for want of that room."""
        outbox, prefix, qos = self._outbox, self._prefix, self._qos
        room = int(outbox.cfg.max_bytes * UNKNOWN_OUTBOX_SHARE)
        refused = 0
        for reading in readings:
            if outbox.bytes >= room:
                refused += 1
                continue
            if not json_safe(reading.value):  # counted under their one label, never per address
                self._dropped.labels(UNKNOWN_DEVICES, "not_a_number").inc()
                continue
            topic = reading_topic(prefix, reading)
            fields = reading_fields(reading)
            outbox.put(UNKNOWN_DEVICES, topic, reading.sensor, fields, qos, reading.ts)
        return refused

    def _publish_object(self, device: str, readings: Sequence[Reading]) -> None:
        state = self._state.get(device)
        if state is None:
            state = self._state[device] = DeviceState.of(self._device_mode[device])
        state.expire(readings[0].ts)
        taken = 0
        for reading in readings:
            if not json_safe(reading.value):
                self._refuse(reading, "not_a_number")
            elif not state.update(reading):
                self._refuse(reading, "too_many_sensors")
            else:
                taken += 1
        if not taken:  # nothing new: no message
            return
        topic = device_topic(self._prefix, device)
        ts = max(r.ts for r in readings)
        try:
            fields = device_fields((state.values, ts))
        except ValueError:  # (json_safe let every value in: a last guard)
            self._dropped.labels(device, "not_a_number").inc(taken)
            return
        self._outbox.put(device, topic, None, fields, self._qos, ts)

    def _refuse(self, reading: Reading, reason: str) -> None:
        """Count a reading left out and say so, at most once a minute per device and reason."""
        device = reading.device
        self._dropped.labels(device, reason).inc()
        if reason == "too_many_sensors":
            limit = self._device_mode[device].max_sensors
            self._throttle.warning(
                (device, reason),
                "%s: new sensor %r refused: the object holds max_sensors=%d already",
                device,
                reading.sensor[:64],
                limit,
            )
        else:
            self._throttle.warning(
                (device, reason), "%s: %s has no JSON form: left out", device, reading.sensor
            )
