"""The names of supervised links: the one place they are built.

A link's name is its identity for the supervisor (`link[serial:boiler]`), for reload (the set
difference of names), for `/status` and for the metrics' `link` label, so every part that needs
one asks here instead of formatting its own.
"""

from __future__ import annotations

from typing import Protocol

SESSION = "mqtt"  # the MQTT session: one at a time


class Named(Protocol):
    """A device as far as its name goes (every device config model is one)."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...


def link_name(device: Named) -> str:
    """A device's own link: `<type>:<id>` (`serial:boiler`, `ble_gatt:heart`)."""
    return f"{device.type}:{device.id}"


def stream_link_name(device_id: str) -> str:
    """The timer of a device's sensor streams (only for filters that need time)."""
    return f"stream:{device_id}"


def scanner_link_name(adapter: str) -> str:
    """The Bluetooth scanner of one adapter (`ble_scanner:hci0`)."""
    return f"ble_scanner:{adapter}"


def is_scanner_link(name: str) -> bool:
    return name.startswith("ble_scanner:")
