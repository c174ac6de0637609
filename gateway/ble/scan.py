"""`gateway scan`: listen on an adapter for a while and show every device heard, with the
decoder that reads its advertisements (built in, or an installed parser library of the
`ble-parsers` extra) and what it reads, then a config snippet for the devices it recognised.
A user finds their sensors' addresses and decoders with it.

Everything printed that came from the air (names, addresses, what a decoder read: a BTHome
text object is any text) goes through `printable`: an advertised name with ANSI escapes, a
carriage return or a bidi override shows as its escapes instead of acting on the terminal."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gateway.ble.describe import config_snippet, describe
from gateway.ble.errors import FOREIGN_ERRORS, translate
from gateway.ble.scanner import to_advert
from gateway.decoders.ble import Advert
from gateway.limits import SCAN_START_TIMEOUT as START_TIMEOUT
from gateway.logs import printable

__all__ = ["config_snippet", "describe", "render", "run_scan", "scan"]


def render(adverts: list[Advert]) -> str:
    rows = [("ADDRESS", "NAME", "RSSI", "DECODER", "VALUES")]
    for a in sorted(adverts, key=lambda a: -(a.rssi if a.rssi is not None else -999)):
        decoder, values = describe(a)
        rssi = "" if a.rssi is None else str(a.rssi)
        name = printable(a.name or "")[:24]
        rows.append((printable(a.address), name, rssi, decoder, printable(values)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(col.ljust(w) for col, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    )


async def scan(adapter: str, seconds: float, out: TextIO = sys.stdout) -> int:
    seen: dict[str, Advert] = {}
    started = time.monotonic()

    def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
        advert = to_advert(device, adv)
        if advert.address not in seen:
            decoder, values = describe(advert)
            elapsed = time.monotonic() - started
            line = f"{advert.address} {advert.name or ''} {decoder} {values}"
            print(f"[{elapsed:5.1f}s] {printable(line)}", file=out, flush=True)
        seen[advert.address] = advert

    scanner = BleakScanner(detection_callback=on_advert, bluez={"adapter": adapter})
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await scanner.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            async with asyncio.timeout(START_TIMEOUT):
                await scanner.stop()
    except FOREIGN_ERRORS as exc:
        print(f"gateway scan: {translate(exc, f'scanning on {adapter}')}", file=sys.stderr)
        return 1
    print(f"\n{len(seen)} device(s) heard on {adapter} in {seconds:g}s:", file=out)
    print(render(list(seen.values())), file=out)
    if snippet := config_snippet(list(seen.values())):
        print(f"\nConfig for the devices recognised (name them as you like):\n{snippet}", file=out)
    return 0


def run_scan(adapter: str, seconds: float) -> int:
    return asyncio.run(scan(adapter, seconds))
