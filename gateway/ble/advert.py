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
import time
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import Self

from gateway.ble.counters import ReplayCounters, key_fingerprint
from gateway.ble.describe import unknown_device_id
from gateway.ble.errors import NOT_FOUND_ADVICE
from gateway.ble.guard import PacketGuard
from gateway.ble.hub import AdapterState, AdvertSink, parser_faults
from gateway.ble.readings import ble_readings
from gateway.ble.throttle import Throttle
from gateway.config import BleAdvertDevice, BleSection
from gateway.decoders.ble import Advert, Decoded, detect, make_advert_parser
from gateway.errors import DecodeError, TransientLinkError
from gateway.limits import ADVERT_SUBSCRIBE_TIMEOUT as SUBSCRIBE_TIMEOUT
from gateway.limits import UNKNOWN_TRACKED
from gateway.linknames import link_name
from gateway.links.decode_errors import DecodeErrors
from gateway.metrics import Metrics
from gateway.models import UNKNOWN_DEVICES, SensorClass, Submit
from gateway.streams.device import RSSI_SENSOR

log = logging.getLogger(__name__)

UNKNOWN_LABEL = UNKNOWN_DEVICES  # the `device` label of their metrics


class AdvertLink:
    def __init__(
        self,
        device: BleAdvertDevice,
        adapter: AdapterState,
        submit: Submit,
        metrics: Metrics,
        classes: dict[str, SensorClass] | None = None,
        *,
        counters: ReplayCounters | None = None,
    ) -> None:
        self.device = device
        self.name = link_name(device)
        self._errors = DecodeErrors(metrics, device.id, self.name)
        self.open_timeout = SUBSCRIBE_TIMEOUT
        self.backoff = device.backoff.policy()
        self._adapter = adapter
        self._submit = submit
        self._metrics = metrics
        self._parse = make_advert_parser(device, parser_faults(metrics))
        # What the decoder says each sensor is (the parser libraries): Home Assistant
        # discovery reads it for the sensors it learns (BleHub.sensor_classes).
        self._classes = {} if classes is None else classes
        # Encryption counters are kept across restarts, per device and key (counters.py).
        self._counters = counters
        self._fingerprint = (
            None
            if device.bindkey is None
            else key_fingerprint(bytes.fromhex(device.bindkey.get_secret_value()))
        )
        floor = None
        if counters is not None and self._fingerprint is not None:
            floor = counters.floor(device.id, self._fingerprint)
        self._guard = PacketGuard(
            encrypted=device.bindkey is not None,
            repeat_window=device.repeat_window,
            counter=floor,
        )
        self._warned: str | None = None  # the drop reason last logged, until a packet passes
        self._received = metrics.readings_received.labels(device.id)
        self._dropped = metrics.ble_adverts_dropped
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
        counter, fingerprint = self._guard.counter, self._fingerprint
        if self._counters is not None and fingerprint is not None and counter is not None:
            self._counters.settle(self.device.id, fingerprint, counter)  # the exact one

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
            decoded = self._parse(advert)
        except DecodeError as exc:
            # Devices often alternate formats (pvvx + BTHome + MiBeacon): count, do not shout.
            self._errors.count("decode", f"advertisement not decoded: {exc}")
            return
        if (reason := self._guard.check(decoded, now)) is not None:
            self._drop(reason, decoded)
            return
        if decoded.counter is not None and self._counters is not None and self._fingerprint:
            # Kept (reserved ahead) before its readings go out: a restart refuses it.
            self._counters.accepting(d.id, self._fingerprint, decoded.counter)
        self._warned = None
        self._classes.update(decoded.classes)
        values = dict(decoded.values)
        if d.rssi and advert.rssi is not None:
            values[RSSI_SENSOR] = advert.rssi
        try:
            # Unchanged values are held back by the device's sensor stream (republish_after);
            # events pass it always: each one is news (repeats were dropped above).
            readings = ble_readings(
                d.id, {**values, **decoded.events}, d.sensors, now, decoded.classes
            )
        except DecodeError as exc:  # a configured type coercion failed
            self._errors.count("decode", f"advertisement not decoded: {exc}")
            return
        self._received.inc(len(readings))
        if readings:
            self._submit(readings)

    def _drop(self, reason: str, decoded: Decoded) -> None:
        self._dropped.labels(self.device.id, reason).inc()
        if reason in ("repeat", self._warned):
            return
        self._warned = reason  # once per run of drops: an attack must not flood the log
        if reason == "replay":
            log.warning(
                "%s: dropped an advertisement with encryption counter %s, below the last "
                "accepted %s: a replay, or the device restarted its counter (kept across "
                "restarts: see docs/ble.md to accept it again)",
                self.name,
                decoded.counter,
                self._guard.counter,
            )
        else:
            log.warning(
                "%s: dropped an unencrypted BTHome advertisement: the device has a bindkey, "
                "so only encrypted ones are accepted",
                self.name,
            )


class RateLimit:
    """A token bucket: `rate` items a second on average, bursts of one second's worth. A batch
    passes while a token is left and may overdraw (an advert's readings go together); the debt
    is paid before the next one passes."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._at = clock()

    def take(self, items: int) -> bool:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= items
        return True


class UnknownDevices:
    """`ble.unknown_devices: publish`: what a built-in decoder reads from an unconfigured
    device is published as device `ble_<address>` (limited by `ble.allow`), with repeats
    dropped and values throttled like a configured device's (default settings).

    Addresses are free to spoof, so passers-by are bounded as a whole, not per address: the
    per-address state is a bounded LRU (a spoofer cycling through more addresses resets it,
    which only brings the rate limit into play), `ble.unknown_devices_rate` bounds their
    readings together, and `submit` (Intake.submit_unknown) takes them as one account."""

    def __init__(self, section: BleSection, submit: Submit, metrics: Metrics) -> None:
        self._allow = [pattern.upper() for pattern in section.allow]
        self._rate = RateLimit(section.unknown_devices_rate)
        self._refused = metrics.refused.labels("ble", "unknown_rate")
        fields = BleAdvertDevice.model_fields
        self._interval: float = fields["republish_after"].default
        self._window: float = fields["repeat_window"].default
        self._submit = submit
        self._metrics = metrics
        self._tracked: OrderedDict[str, tuple[Throttle, PacketGuard]] = OrderedDict()

    def __call__(self, advert: Advert, now: float) -> None:
        address = advert.address
        if self._allow and not any(fnmatch.fnmatchcase(address, p) for p in self._allow):
            return
        found = detect(advert)
        if found is None:
            return
        throttle, guard = self._track(address)
        decoded = found[1]
        if (reason := guard.check(decoded, now)) is not None:
            # One label for all of them: passers-by must not grow the metrics without bound.
            self._metrics.ble_adverts_dropped.labels(UNKNOWN_LABEL, reason).inc()
            return
        due = {**throttle.due(decoded.values, now), **decoded.events}
        readings = ble_readings(unknown_device_id(address), due, {}, now)
        self._metrics.readings_received.labels(UNKNOWN_LABEL).inc(len(readings))
        if not readings:
            return
        if not self._rate.take(len(readings)):
            self._refused.inc()  # an advert's readings, refused together
            return
        self._submit(readings)

    def _track(self, address: str) -> tuple[Throttle, PacketGuard]:
        """This device's state, most recently heard last; the least recent is forgotten."""
        state = self._tracked.pop(address, None) or (
            Throttle(self._interval),
            PacketGuard(encrypted=False, repeat_window=self._window),
        )
        self._tracked[address] = state
        while len(self._tracked) > UNKNOWN_TRACKED:
            self._tracked.popitem(last=False)
        return state
