"""What an installed decoder reads from an advertiser, and a config snippet for it: the columns
of `gateway scan` and of the status page's table of unknown advertisers. Pure: no scanner."""

from __future__ import annotations

from collections.abc import Callable

from gateway.decoders.ble import Advert, auto_parser, unit_of
from gateway.decoders.ble.advert import BASE_UUID_SUFFIX
from gateway.errors import DecodeError
from gateway.logs import printable


def unknown_device_id(address: str) -> str:
    """The device id of an unconfigured advertiser (`ble.unknown_devices: publish`, snippets)."""
    return "ble_" + address.replace(":", "").lower()


def describe(advert: Advert, on_fault: Callable[[str], None] | None = None) -> tuple[str, str]:
    """(decoder, values) columns for one advertisement. `on_fault(parser)`: a parser library
    raised on it (contained: that parser does not read it)."""
    parser = auto_parser(on_fault=on_fault)
    try:
        decoded = parser(advert)
    except DecodeError:
        decoded = None
    if decoded is not None and parser.last is not None:
        values = {**decoded.values, **decoded.events}
        units = {k: c.unit for k, c in decoded.classes.items()}
        parts = [f"{k}={v}{units.get(k) or unit_of(k) or ''}" for k, v in values.items()]
        return parser.last, " ".join(parts)
    hints = [f"mfr 0x{k:04X}" for k in advert.manufacturer_data]
    hints += [f"data {_short(u)}" for u in advert.service_data]
    hints += [f"service {_short(u)}" for u in advert.service_uuids if u not in advert.service_data]
    return "-", ", ".join(hints)


def _short(uuid: str) -> str:
    """0000180d-0000-1000-8000-00805f9b34fb -> 180d; other UUIDs stay whole."""
    return uuid[4:8] if uuid.startswith("0000") and uuid.endswith(BASE_UUID_SUFFIX) else uuid


def config_snippet(adverts: list[Advert]) -> str:
    """`devices:` entries for the advertisers a decoder recognised."""
    lines = []
    for a in sorted(adverts, key=lambda a: a.address):
        decoder, _ = describe(a)
        if decoder != "-":
            lines += device_entry(a.address, decoder)
    return "\n".join(["devices:", *lines]) if lines else ""


def device_entry(address: str, decoder: str) -> list[str]:
    """The lines of one `devices:` entry for an advertiser that `decoder` reads."""
    return [
        f"  - id: {unknown_device_id(address)}",
        "    type: ble_advert",
        f"    address: {printable(address)}",
        f"    decoder: {decoder}",
    ]
