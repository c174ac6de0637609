"""Advertisers an adapter hears that no configured device wants: the status page's table.

Bounded (least recently heard forgotten first), in memory only, and made only when Bluetooth is
configured (one per adapter state of the BleHub). Recording is cheap, for every such advert;
what a decoder reads from it (`describe`) is worked out only when the page asks, once per new
advertisement of an address.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.ble.describe import describe, device_entry
from gateway.decoders.ble import Advert
from gateway.limits import MAX_STRANGERS


@dataclass(slots=True)
class Stranger:
    advert: Advert  # the latest advertisement heard from it
    first_seen: float
    last_seen: float
    adverts: int = 1
    #: Told the parser's name when a parser library raises on its advertisement.
    on_fault: Callable[[str], None] | None = field(default=None, repr=False)
    _described: Advert | None = None
    _decoder: str = "-"
    _values: str = ""

    def described(self) -> tuple[str, str]:
        """(decoder, what it reads) of the latest advertisement: `("-", hints)` when no
        installed decoder reads it."""
        if self._described is not self.advert:
            self._decoder, self._values = describe(self.advert, self.on_fault)
            self._described = self.advert
        return self._decoder, self._values

    def snippet(self) -> str:
        """A `devices:` entry to copy, or "" when no decoder reads it."""
        decoder, _ = self.described()
        if decoder == "-":
            return ""
        return "\n".join(device_entry(self.advert.address, decoder))


class Strangers:
    def __init__(
        self, limit: int = MAX_STRANGERS, on_fault: Callable[[str], None] | None = None
    ) -> None:
        self.limit = limit
        self._on_fault = on_fault
        self._by_address: OrderedDict[str, Stranger] = OrderedDict()

    def heard(self, advert: Advert, now: float) -> None:
        known = self._by_address.pop(advert.address, None)
        if known is None:
            known = Stranger(advert, now, now, adverts=0, on_fault=self._on_fault)
        known.advert, known.last_seen = advert, now
        known.adverts += 1
        self._by_address[advert.address] = known
        if len(self._by_address) > self.limit:
            self._by_address.popitem(last=False)

    def recent_first(self) -> list[Stranger]:
        return list(reversed(self._by_address.values()))

    def __len__(self) -> int:
        return len(self._by_address)
