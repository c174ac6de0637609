"""Shared BLE state of one gateway, per adapter: which devices the scanner heard (the BLEDevice
a GATT link connects with), who wants each advertisement, and the connection slots.

Plain state, no handles: the scanner link (which owns the BleakScanner) feeds it, the advert
and GATT links read it. One BleHub per Gateway, passed explicitly (no module-level singleton).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bleak.backends.device import BLEDevice

from gateway.ble.counters import ReplayCounters
from gateway.ble.slots import ConnectionSlots
from gateway.ble.strangers import Strangers
from gateway.config import BleAdvertDevice, BleGattDevice, BleSection
from gateway.decoders.ble import Advert
from gateway.limits import RATE_SAMPLES, RATE_WINDOW
from gateway.metrics import Metrics
from gateway.models import SensorClasses

log = logging.getLogger(__name__)

AdvertHandler = Callable[[Advert, float], None]


@dataclass(frozen=True, slots=True)
class AdvertSink:
    """An advert link's subscription: by address, or by a pattern on the advertised name."""

    key: str
    address: str | None
    name_pattern: str | None
    handler: AdvertHandler

    def wants(self, advert: Advert) -> bool:
        if self.address is not None:
            return advert.address == self.address
        return (
            advert.name is not None
            and self.name_pattern is not None
            and fnmatch.fnmatchcase(advert.name, self.name_pattern)
        )


def parser_faults(metrics: Metrics) -> Callable[[str], None]:
    """Where a parser library's error on an advertisement is counted, per parser."""

    def count(parser: str) -> None:
        metrics.ble_parser_errors.labels(parser).inc()

    return count


class AdapterState:
    def __init__(self, name: str, max_connections: int, metrics: Metrics) -> None:
        self.name = name
        self.slots = ConnectionSlots(name, max_connections, metrics)
        self.heard = asyncio.Event()  # set by every advert; the scanner's watchdog clears it
        self.on_unknown: AdvertHandler | None = None  # set while the scanner runs
        # Unconfigured advertisers heard (the status page's), described by the parsers.
        self.strangers = Strangers(on_fault=parser_faults(metrics))
        self.adverts_heard = 0
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=RATE_SAMPLES)
        self._adverts = metrics.ble_adverts.labels(name)
        self._by_address: dict[str, list[AdvertSink]] = {}
        self._by_name: list[AdvertSink] = []
        # The last BLEDevice of each address a GATT link asked for (bounded by the config).
        self._wanted: set[str] = set()
        self._devices: dict[str, BLEDevice] = {}
        self._device_waiters: dict[str, set[asyncio.Future[BLEDevice]]] = {}

    # -- advertisement subscriptions ---------------------------------------------------------
    @property
    def expecting_adverts(self) -> bool:
        return bool(self._by_address or self._by_name)

    def subscribe(self, sink: AdvertSink) -> None:
        if sink.address is not None:
            self._by_address.setdefault(sink.address, []).append(sink)
        else:
            self._by_name.append(sink)

    def unsubscribe(self, key: str) -> None:
        for address, sinks in list(self._by_address.items()):
            sinks[:] = [s for s in sinks if s.key != key]
            if not sinks:
                del self._by_address[address]
        self._by_name = [s for s in self._by_name if s.key != key]

    def dispatch(self, device: BLEDevice, advert: Advert, now: float) -> None:
        """Called by the scanner for every advertisement; never raises into bleak."""
        self.heard.set()
        self._adverts.inc()
        self.adverts_heard += 1
        if advert.address in self._wanted:
            self._devices[advert.address] = device
            for waiter in self._device_waiters.pop(advert.address, ()):
                if not waiter.done():
                    waiter.set_result(device)
        sinks = [*self._by_address.get(advert.address, ()), *self._by_name]
        handled = False
        for sink in sinks:
            if sink.wants(advert):
                handled = True
                self._call(sink.handler, advert, now, sink.key)
        if not handled:
            self.strangers.heard(advert, now)
            if self.on_unknown is not None:
                self._call(self.on_unknown, advert, now, "unknown devices")

    def adverts_per_second(self, now: float) -> float:
        """Adverts heard per second since the oldest of the last few calls (each status read
        takes a sample), over at least RATE_WINDOW seconds when the samples reach that far."""
        samples = self._rate_samples
        samples.append((now, self.adverts_heard))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        then, count = samples[0]
        span = now - then
        return (self.adverts_heard - count) / span if span > 0 else 0.0

    @staticmethod
    def _call(handler: AdvertHandler, advert: Advert, now: float, who: str) -> None:
        try:
            handler(advert, now)
        except Exception:  # a bug in one handler must not stop the scanner's callbacks
            log.exception("%s: advertisement handler crashed on %s", who, advert.address)

    # -- devices for GATT links --------------------------------------------------------------
    async def wait_device(self, address: str) -> BLEDevice:
        """The BLEDevice of `address` as the scanner last heard it; waits for an advert if it
        has not been heard yet (the caller bounds the wait)."""
        self._wanted.add(address)
        if (device := self._devices.get(address)) is not None:
            return device
        waiter: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()
        self._device_waiters.setdefault(address, set()).add(waiter)
        try:
            return await waiter
        finally:
            waiters = self._device_waiters.get(address)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._device_waiters[address]

    def forget_device(self, address: str) -> None:
        """Drop a BLEDevice BlueZ no longer knows: the next connect waits for a fresh advert."""
        self._devices.pop(address, None)


class BleHub:
    """Per-adapter state for one gateway; `configure` follows config reloads."""

    def __init__(
        self,
        section: BleSection,
        metrics: Metrics,
        sensor_classes: SensorClasses | None = None,
        counters: ReplayCounters | None = None,
    ) -> None:
        self.section = section
        self.metrics = metrics
        #: Encrypted devices' counters, kept across restarts (None: in memory only).
        self.counters = counters
        #: What advert decoders said each sensor is; the gateway's, shared with discovery.
        self.sensor_classes: SensorClasses = {} if sensor_classes is None else sensor_classes
        self._adapters: dict[str, AdapterState] = {}

    def configure(self, section: BleSection) -> None:
        if self._adapters and section.max_connections != self.section.max_connections:
            log.warning("ble.max_connections changes take effect after a restart")
        self.section = section

    def adapter(self, name: str) -> AdapterState:
        state = self._adapters.get(name)
        if state is None:
            state = AdapterState(name, self.section.max_connections, self.metrics)
            self._adapters[name] = state
        return state

    def adapters(self) -> dict[str, AdapterState]:
        """The adapters in use so far, by name."""
        return dict(self._adapters)

    def adapter_of(self, device: BleAdvertDevice | BleGattDevice) -> AdapterState:
        return self.adapter(device.adapter or self.section.adapter)
