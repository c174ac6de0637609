"""Where every link hands the readings of a frame: the device's sensor streams, then the encoder.

link -> `Intake.submit` -> stream (filters, if the device has any) -> `emit` -> encoder (topic,
payload) -> outbox. What timed filters emit enters at `emit` too, from the device's stream timer
(`stream:<device>`). Nothing here waits: a link calls it from its transport's callback.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from gateway.config import Device
from gateway.models import UNKNOWN_DEVICES, Reading
from gateway.streams.device import DeviceStream, device_is_timed, stream_for
from gateway.streams.link import StreamLink

if TYPE_CHECKING:
    from gateway.health import Seen
    from gateway.homeassistant.announcer import Announcer
    from gateway.metrics import Metrics
    from gateway.mqtt.availability import Availability


class Encode(Protocol):
    """The next stage: readings -> messages into the outbox (`encoding.Encoder`)."""

    def publish(self, readings: Sequence[Reading]) -> None: ...
    def publish_unknown(self, readings: Sequence[Reading]) -> int: ...
    def forget(self, device: str) -> None: ...


class Intake:
    def __init__(
        self,
        metrics: Metrics,
        availability: Availability,
        seen: Seen,
        encoder: Encode,
        announcer: Announcer | None = None,
    ) -> None:
        self.metrics = metrics
        self.availability = availability
        self.seen = seen
        self.encoder = encoder
        # Home Assistant discovery while it is on (a reload that switches it on sets it:
        # `wiring.Graph.sync_discovery`).
        self.announcer = announcer
        # Devices whose values go through filters (sensor streams), and the timers of those
        # that need time; both replaced with the device on reload.
        self.streams: dict[str, DeviceStream] = {}
        self.stream_links: dict[str, StreamLink] = {}

    def submit(self, readings: Sequence[Reading]) -> None:
        """Through the device's sensor streams (if it has any) into the outbox, never blocking."""
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

    def submit_unknown(self, readings: Sequence[Reading]) -> None:
        """Readings of an unconfigured device (BLE `unknown_devices: publish`): straight to the
        encoder, as one account; no streams, no status page entry, no gauges per address
        (spoofed addresses are unbounded). What the outbox has no room for is counted."""
        assert self.encoder is not None
        if refused := self.encoder.publish_unknown(readings):
            self.metrics.readings_dropped.labels(UNKNOWN_DEVICES, "outbox_share").inc(refused)

    def emit(self, readings: Sequence[Reading]) -> None:
        """Readings that left their streams (a frame's, or what a timed filter emits)."""
        self.encoder.publish(readings)
        for reading in readings:
            self.seen.record(reading)
        if self.announcer is not None:
            self.announcer.seen(readings)

    def add_device(self, device: Device) -> None:
        """The device's sensor streams (none if every value passes straight through) and,
        if they need time, their timer link (started by the lifecycle, by its name)."""
        stream = stream_for(device, self.metrics)
        if stream is None:
            return
        self.streams[device.id] = stream
        if device_is_timed(device):
            availability = self.availability
            self.stream_links[device.id] = StreamLink(
                device,
                stream,
                lambda readings: self._emit_timed(device.id, readings),
                lambda fresh: availability.set_fresh(device.id, fresh),
            )

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

    def forget(self, device_id: str) -> None:
        """A device removed or changed: its streams, timer and encoder state go."""
        self.streams.pop(device_id, None)
        self.stream_links.pop(device_id, None)
        self.availability.set_fresh(device_id, True)
        self.encoder.forget(device_id)
