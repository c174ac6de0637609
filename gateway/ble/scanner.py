"""The scanner link of one adapter: owns its BleakScanner and watches that it keeps hearing.

Every advertisement goes to the adapter's shared state (hub.AdapterState), which hands it to the
advert links that want it and remembers BLEDevices for the GATT links.

The silent-scanner ladder. While advert devices are configured, no advertisement at all (from
any device: passers-by count) for `ble.silence_timeout` means the scanner is stuck. Each silent
run is a strike; the supervisor re-enters the link with backoff, and entering escalates:
  strikes 1..restarts                      restart the scanner (stop + start)
  the next power_cycles strikes            power-cycle the adapter over D-Bus, then start
  beyond                                   give up: exit non-zero, so systemd restarts us
Each step is logged and counted (gateway_ble_scanner_recoveries_total{step}). A failed start or
power cycle is a strike too. Any advertisement resets the strikes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gateway.ble.adapter import power_cycle
from gateway.ble.errors import FOREIGN_ERRORS, translate
from gateway.ble.hub import AdapterState, AdvertHandler
from gateway.config import BleSection
from gateway.decoders.ble import Advert
from gateway.errors import FatalLinkError, TransientLinkError
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


def to_advert(device: BLEDevice, adv: AdvertisementData) -> Advert:
    """bleak's view of an advertisement -> the decoders' plain data."""
    return Advert(
        address=device.address.upper(),
        name=adv.local_name or device.name,
        rssi=adv.rssi,
        manufacturer_data={k: bytes(v) for k, v in adv.manufacturer_data.items()},
        service_data={k.lower(): bytes(v) for k, v in adv.service_data.items()},
        service_uuids=tuple(u.lower() for u in adv.service_uuids),
        tx_power=adv.tx_power,
    )


class ScannerLink:
    def __init__(
        self,
        adapter: AdapterState,
        section: BleSection,
        metrics: Metrics,
        *,
        on_fatal: Callable[[str], None],
        on_unknown: AdvertHandler | None = None,
    ) -> None:
        self.adapter = adapter
        self.section = section
        self.name = f"ble_scanner:{adapter.name}"
        # Entering may power-cycle the adapter first (two bounded steps and a check).
        self.open_timeout = section.start_timeout + 3 * section.power_timeout
        self.backoff = section.backoff.policy()
        self.strikes = 0  # consecutive silent or failed runs
        self._on_fatal = on_fatal
        self._on_unknown = on_unknown
        self._recoveries = metrics.ble_recoveries
        self._scanner: BleakScanner | None = None

    async def __aenter__(self) -> Self:
        if self._scanner is not None:
            raise RuntimeError(f"{self.name} is already running (links are not reentrant)")
        await self._escalate()
        scanner = BleakScanner(
            detection_callback=self._on_advert,
            scanning_mode="active",
            bluez={"adapter": self.adapter.name},
        )
        try:
            async with asyncio.timeout(self.section.start_timeout):
                await scanner.start()
        except FOREIGN_ERRORS as exc:
            self.strikes += 1
            await self._stop(scanner)  # a start that half happened
            raise translate(exc, f"{self.name}: starting the scan") from exc
        self._scanner = scanner
        self.adapter.on_unknown = self._on_unknown
        log.info("%s: scanning", self.name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.adapter.on_unknown = None
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            await self._stop(scanner)

    async def _stop(self, scanner: BleakScanner) -> None:
        try:
            async with asyncio.timeout(self.section.start_timeout):
                await scanner.stop()
        except (*FOREIGN_ERRORS, AttributeError) as exc:  # bleak: stop() before start()
            log.debug("%s: stopping the scan: %r", self.name, exc)

    async def _escalate(self) -> None:
        """The ladder: decide, from the strikes so far, what to do before (re)starting."""
        s, restarts, cycles = self.strikes, self.section.restarts, self.section.power_cycles
        if s == 0:
            return
        if s <= restarts:
            self._step("restart", f"restarting the scanner (restart {s} of {restarts})")
            return
        if s <= restarts + cycles:
            n = s - restarts
            self._step("power_cycle", f"power-cycling the adapter (cycle {n} of {cycles})")
            try:
                await power_cycle(self.adapter.name, self.section.power_timeout)
            except FOREIGN_ERRORS as exc:
                self.strikes += 1
                raise translate(exc, f"{self.name}: power-cycling") from exc
            return
        message = (
            f"the adapter stayed silent after {restarts} restart(s) and "
            f"{cycles} power cycle(s); exiting so that systemd restarts the gateway"
        )
        self._step("exit", message)
        self._on_fatal(f"{self.name}: {message}")
        raise FatalLinkError(f"{self.name}: {message}", kind="adapter_dead")

    def _step(self, step: str, message: str) -> None:
        log.warning("%s: %s", self.name, message)
        self._recoveries.labels(self.adapter.name, step).inc()

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        # bleak's callback: must never raise.
        self.strikes = 0
        try:
            advert = to_advert(device, adv)
        except Exception:
            log.exception("%s: unreadable advertisement from %s", self.name, device.address)
            return
        self.adapter.dispatch(device, advert, time.time())

    async def run(self) -> None:
        if self._scanner is None:
            raise RuntimeError("run() outside the link's context")
        heard, timeout = self.adapter.heard, self.section.silence_timeout
        while True:
            heard.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await heard.wait()
                continue
            if self.adapter.expecting_adverts:
                self.strikes += 1
                raise TransientLinkError(
                    f"{self.name}: no advertisement for {timeout:g}s",
                    kind="silent",
                    advice=self._next_step(),
                )

    def _next_step(self) -> str:
        s, restarts = self.strikes, self.section.restarts
        if s <= restarts:
            return "restarting the scanner"
        if s <= restarts + self.section.power_cycles:
            return "power-cycling the adapter next"
        return "giving up next: the gateway will exit"
