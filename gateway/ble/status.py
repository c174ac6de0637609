"""The `ble` section of `/status`: each adapter's scanner, and the advertisers heard that no
device is configured for (with a config snippet). Read only once Bluetooth is configured."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from gateway.ble.hub import AdapterState, BleHub
from gateway.ble.scanner import ScannerLink
from gateway.ble.strangers import Stranger
from gateway.config import BleAdvertDevice, Config
from gateway.linknames import scanner_link_name
from gateway.supervisor import LinkStatus


class LinkView(Protocol):
    """What this section reads of the running gateway (health's GatewayView is one)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def links(self) -> Mapping[str, LinkStatus]: ...
    def link(self, name: str) -> object | None: ...


def ble_document(hub: BleHub, gw: LinkView, now: float) -> dict[str, Any]:
    """The scanner of each adapter and the advertisers heard that no device is configured for."""
    configured = {d.address for d in gw.cfg.devices if isinstance(d, BleAdvertDevice)}
    adapters: dict[str, Any] = {}
    unknown: list[dict[str, Any]] = []
    for name, state in hub.adapters().items():
        adapters[name] = _scanner_document(gw, name, state)
        for stranger in state.strangers.recent_first():
            if stranger.advert.address not in configured:
                unknown.append(_stranger_document(name, stranger, now))
    return {"adapters": adapters, "unknown": unknown}


def _scanner_document(gw: LinkView, name: str, state: AdapterState) -> dict[str, Any]:
    link = gw.link(scanner_link_name(name))
    status = gw.links.get(scanner_link_name(name))
    scanner = link if isinstance(link, ScannerLink) else None
    return {
        "state": status.state if status else "stopped",
        "mode": scanner.mode if scanner else None,
        "adverts_per_second": round(state.adverts_per_second(time.monotonic()), 2),
        "ladder": scanner.ladder_step() if scanner else "-",
        "reason": status.last_error if status and status.last_error else None,
    }


def _stranger_document(adapter: str, stranger: Stranger, now: float) -> dict[str, Any]:
    decoder, values = stranger.described()
    advert = stranger.advert
    return {
        "adapter": adapter,
        "address": advert.address,
        "name": advert.name,
        "rssi": advert.rssi,
        "decoder": None if decoder == "-" else decoder,
        "values": values,
        "snippet": stranger.snippet(),
        "last_seen_age": round(max(0.0, now - stranger.last_seen), 3),
        "adverts": stranger.adverts,
    }
