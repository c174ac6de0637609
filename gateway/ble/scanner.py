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

Scanning mode. Active by default; `passive` registers an advertisement monitor with BlueZ
(patterns from patterns.py). Where BlueZ cannot (no monitor API: experimental features off;
NotSupported; patterns rejected; nothing to match), every start falls back to active scanning
in the same entry, with a warning that says why (once per reason) and a count in
gateway_ble_passive_fallbacks_total{reason}: a configuration BlueZ cannot serve must not
become a crash loop.
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
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gateway.ble.adapter import power_cycle
from gateway.ble.errors import FOREIGN_ERRORS, passive_unsupported, translate
from gateway.ble.hub import AdapterState, AdvertHandler
from gateway.ble.patterns import ScanPlan
from gateway.config import BleSection, ScanningMode
from gateway.decoders.ble import Advert
from gateway.errors import FatalLinkError, TransientLinkError
from gateway.linknames import scanner_link_name
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

FALLBACK_WHY = {
    "no_monitor_api": "BlueZ offers no advertisement monitor (AdvertisementMonitorManager1)",
    "not_supported": "BlueZ does not support advertisement monitors here",
    "rejected": "BlueZ rejected the advertisement monitor",
    "no_patterns": "nothing to match",
}
PASSIVE_ADVICE = (
    "Passive scanning needs BlueZ >= 5.56 with its experimental features on (bluetoothd "
    "--experimental, or Experimental = true in /etc/bluetooth/main.conf) and Linux >= 5.10"
)
NO_PATTERNS_ADVICE = "Give ble.passive_patterns to scan passively for GATT devices only"


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
        plan: ScanPlan,
        on_fatal: Callable[[str], None],
        *,
        on_unknown: AdvertHandler | None = None,
    ) -> None:
        self.adapter = adapter
        self.section = section
        self.plan = plan
        self.name = scanner_link_name(adapter.name)
        # Entering may power-cycle the adapter first (two bounded steps and a check), and may
        # start twice (passive, then active when BlueZ cannot scan passively).
        self.open_timeout = 2 * section.start_timeout + 3 * section.power_timeout
        self.backoff = section.backoff.policy()
        self.strikes = 0  # consecutive silent or failed runs
        self.mode: ScanningMode | None = None  # how it scans while it runs
        self._on_fatal = on_fatal
        self._on_unknown = on_unknown
        self._recoveries = metrics.ble_recoveries
        self._passive_gauge = metrics.ble_scanner_passive.labels(adapter.name)
        self._fallbacks = metrics.ble_passive_fallbacks
        self._warned: set[str] = set()  # fallback reasons already logged as warnings
        self._scanner: BleakScanner | None = None

    async def __aenter__(self) -> Self:
        if self._scanner is not None:
            raise RuntimeError(f"{self.name} is already running (links are not reentrant)")
        await self._escalate()
        self._scanner = await self._start()
        self.adapter.on_unknown = self._on_unknown
        self._passive_gauge.set(1 if self.mode == "passive" else 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.adapter.on_unknown = None
        self._passive_gauge.set(0)
        self.mode = None
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            await self._stop(scanner)

    async def _start(self) -> BleakScanner:
        """Passive where configured and BlueZ can, else active."""
        plan = self.plan
        if plan.mode == "passive" and not plan.patterns:
            self._fall_back("no_patterns", "no advert device and no passive_patterns")
        elif plan.mode == "passive":
            self._warn_unmatched()
            try:
                return await self._start_scanner("passive")
            except FOREIGN_ERRORS as exc:
                reason = passive_unsupported(exc)
                if reason is None:
                    raise translate(exc, f"{self.name}: starting the passive scan") from exc
                self._fall_back(reason, str(exc))
        return await self._start_scanner("active")

    async def _start_scanner(self, mode: ScanningMode) -> BleakScanner:
        """A started BleakScanner; a failed start counts as a strike of the ladder, except
        a passive one that BlueZ does not support (the caller falls back)."""
        bluez: BlueZScannerArgs = {"adapter": self.adapter.name}
        if mode == "passive":
            bluez["or_patterns"] = [
                OrPattern(p.start, AdvertisementDataType(p.ad_type), p.data)
                for p in self.plan.patterns
            ]
        scanner = BleakScanner(self._on_advert, scanning_mode=mode, bluez=bluez)
        try:
            async with asyncio.timeout(self.section.start_timeout):
                await scanner.start()
        except FOREIGN_ERRORS as exc:
            await self._stop(scanner)  # a start that half happened
            if mode == "active" or passive_unsupported(exc) is None:
                self.strikes += 1
            if mode == "active":
                raise translate(exc, f"{self.name}: starting the scan") from exc
            raise
        self.mode = mode
        patterns = ", ".join(map(str, self.plan.patterns)) if mode == "passive" else ""
        log.info("%s: scanning (%s%s)", self.name, mode, f": {patterns}" if patterns else "")
        return scanner

    def _fall_back(self, reason: str, detail: str) -> None:
        self._fallbacks.labels(self.adapter.name, reason).inc()
        message = f"{self.name}: passive scanning is not available ({FALLBACK_WHY[reason]}: "
        message += f"{detail}); scanning actively instead"
        if reason in self._warned:
            log.info("%s", message)
            return
        self._warned.add(reason)
        advice = NO_PATTERNS_ADVICE if reason == "no_patterns" else PASSIVE_ADVICE
        log.warning("%s. %s", message, advice)

    def _warn_unmatched(self) -> None:
        """GATT devices are connected only once heard, and some decoders have no pattern;
        passively, only a pattern hears them."""
        if not self.plan.unmatched or "unmatched" in self._warned:
            return
        self._warned.add("unmatched")
        log.warning(
            "%s: passive scanning hears only advertisements that match its patterns; %s must "
            "match one to be found: add one to ble.passive_patterns, or scan actively",
            self.name,
            ", ".join(self.plan.unmatched),
        )

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

    def ladder_step(self) -> str:
        """Where the silent-scanner ladder stands, for the status page: `ok` (hearing), `restart
        1/2`, `power_cycle 1/1` (the step the latest silent run led to) or `exit`."""
        s, restarts, cycles = self.strikes, self.section.restarts, self.section.power_cycles
        if s == 0:
            return "ok"
        if s <= restarts:
            return f"restart {s}/{restarts}"
        if s <= restarts + cycles:
            return f"power_cycle {s - restarts}/{cycles}"
        return "exit"

    def _next_step(self) -> str:
        s, restarts = self.strikes, self.section.restarts
        if s <= restarts:
            return "restarting the scanner"
        if s <= restarts + self.section.power_cycles:
            return "power-cycling the adapter next"
        return "giving up next: the gateway will exit"
