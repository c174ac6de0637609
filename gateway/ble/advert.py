"""Advertising devices: one link per configured device, and the handler for unknown ones.

An AdvertLink owns a subscription to its adapter's advertisements (no radio handle: the scanner
link owns that). Entering subscribes, leaving unsubscribes; `run()` stays up while the device is
heard and fails (`not_heard`, retried with backoff) after `stale_after` seconds of silence, so
the device's availability and link metrics say whether it is in range.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import Self

from gateway.ble.errors import NOT_FOUND_ADVICE
from gateway.ble.hub import AdapterState, AdvertSink
from gateway.ble.readings import ble_readings
from gateway.ble.throttle import Throttle
from gateway.config import BleAdvertDevice, BleSection
from gateway.decoders.ble import Advert, detect, make_advert_decoder
from gateway.errors import DecodeError, TransientLinkError
from gateway.metrics import Metrics
from gateway.models import Reading

log = logging.getLogger(__name__)

RSSI_SENSOR = "signal_strength"
SUBSCRIBE_TIMEOUT = 1.0  # entering only registers a callback
UNKNOWN_TRACKED = 256  # unknown devices whose last values we remember (LRU)
UNKNOWN_LABEL = "ble_unknown"  # the `device` label of their metrics


class AdvertLink:
    def __init__(
        self,
        device: BleAdvertDevice,
        adapter: AdapterState,
        submit: Callable[[Reading], None],
        metrics: Metrics,
    ) -> None:
        self.device = device
        self.name = f"{device.type}:{device.id}"
        self.open_timeout = SUBSCRIBE_TIMEOUT
        self.backoff = device.backoff.policy()
        self._adapter = adapter
        self._submit = submit
        self._metrics = metrics
        self._decode = make_advert_decoder(device)
        self._throttle = Throttle(device.republish_after, sticky={RSSI_SENSOR})
        self._received = metrics.readings_received.labels(device.id)
        self._suppressed = metrics.ble_suppressed.labels(device.id)
        self._heard = asyncio.Event()
        self._subscribed = False

    async def __aenter__(self) -> Self:
        if self._subscribed:
            raise RuntimeError(f"{self.name} is already subscribed (links are not reentrant)")
        d = self.device
        self._adapter.subscribe(AdvertSink(self.name, d.address, d.name, self._on_advert))
        self._subscribed = True
        log.info(
            "%s: listening for %s on %s (decoder %s)",
            self.name,
            d.address or f"name {d.name!r}",
            self._adapter.name,
            d.decoder,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._adapter.unsubscribe(self.name)
        self._subscribed = False

    async def run(self) -> None:
        stale = self.device.stale_after
        while True:
            self._heard.clear()
            try:
                async with asyncio.timeout(stale):
                    await self._heard.wait()
            except TimeoutError:
                raise TransientLinkError(
                    f"{self.name}: not heard for {stale:g}s",
                    kind="not_heard",
                    advice=NOT_FOUND_ADVICE,
                ) from None

    def _on_advert(self, advert: Advert, now: float) -> None:
        self._heard.set()
        d = self.device
        try:
            values = self._decode(advert)
            if d.rssi and advert.rssi is not None:
                values[RSSI_SENSOR] = advert.rssi
            due = self._throttle.due(values, now)
            readings = ble_readings(d.id, due, d.sensors, now)
        except DecodeError as exc:
            # Devices often alternate formats (pvvx + BTHome + MiBeacon): count, do not shout.
            self._metrics.frame_errors.labels(d.id, "decode").inc()
            log.debug("%s: advertisement not decoded: %s", self.name, exc)
            return
        if skipped := len(values) - len(due):
            self._suppressed.inc(skipped)
        self._received.inc(len(readings))
        for reading in readings:
            self._submit(reading)


def unknown_device_id(address: str) -> str:
    return "ble_" + address.replace(":", "").lower()


class UnknownDevices:
    """`ble.unknown_devices: publish`: what a built-in decoder reads from an unconfigured
    device is published as device `ble_<address>` (limited by `ble.allow`), throttled like a
    configured device with the default `republish_after`."""

    def __init__(
        self, section: BleSection, submit: Callable[[Reading], None], metrics: Metrics
    ) -> None:
        self._allow = [pattern.upper() for pattern in section.allow]
        self._interval: float = BleAdvertDevice.model_fields["republish_after"].default
        self._submit = submit
        self._metrics = metrics
        self._throttles: OrderedDict[str, Throttle] = OrderedDict()

    def __call__(self, advert: Advert, now: float) -> None:
        address = advert.address
        if self._allow and not any(fnmatch.fnmatchcase(address, p) for p in self._allow):
            return
        found = detect(advert)
        if found is None:
            return
        throttle = self._throttles.pop(address, None) or Throttle(self._interval)
        self._throttles[address] = throttle  # most recently heard last
        while len(self._throttles) > UNKNOWN_TRACKED:
            self._throttles.popitem(last=False)
        device_id = unknown_device_id(address)
        readings = ble_readings(device_id, throttle.due(found[1], now), {}, now)
        # One label for all of them: passers-by must not grow the metrics without bound.
        self._metrics.readings_received.labels(UNKNOWN_LABEL).inc(len(readings))
        for reading in readings:
            self._submit(reading)
