"""Which serial ports exist, and which one a device's `match` means.

`list_ports()` joins pyserial's list_ports (USB vendor/product id, serial number, manufacturer,
...) with the symlinks in a by-id directory (udev's /dev/serial/by-id), keyed by the tty they
point at now. Symlinks to ttys pyserial does not list (a pseudo-terminal, in tests or with
socat) are listed too, with only their path and names: that is what makes matching by name
testable without USB hardware. `matching()` is pure: ports in, the ports a match selects out.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from serial.tools import list_ports as pyserial_ports

from gateway.config import SerialMatch

DEFAULT_BY_ID = Path("/dev/serial/by-id")


@dataclass(frozen=True, slots=True)
class PortInfo:
    device: str  # the tty as it is now, symlinks resolved: /dev/ttyUSB1
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    manufacturer: str | None = None
    product: str | None = None
    description: str | None = None
    location: str | None = None
    by_id: tuple[str, ...] = field(default=())  # names in the by-id directory that point here

    @property
    def usb_id(self) -> str | None:
        if self.vid is None or self.pid is None:
            return None
        return f"{self.vid:04x}:{self.pid:04x}"


def by_id_links(directory: Path) -> dict[str, list[str]]:
    """tty -> the names of the symlinks in `directory` that point at it (dangling ones are
    skipped: their device is unplugged)."""
    links: dict[str, list[str]] = {}
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):  # no USB serial device plugged in
        return links
    for entry in entries:
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if os.path.exists(target):
                links.setdefault(target, []).append(entry.name)
    return links


def list_ports(by_id_dir: Path = DEFAULT_BY_ID) -> list[PortInfo]:
    links = by_id_links(by_id_dir)
    ports = []
    for p in pyserial_ports.comports():
        device = os.path.realpath(p.device)
        ports.append(
            PortInfo(
                device=device,
                vid=p.vid,
                pid=p.pid,
                serial_number=p.serial_number,
                manufacturer=p.manufacturer,
                product=p.product,
                description=None if p.description == "n/a" else p.description,
                location=p.location,
                by_id=tuple(links.pop(device, ())),
            )
        )
    ports.extend(PortInfo(device=dev, by_id=tuple(names)) for dev, names in links.items())
    return sorted(ports, key=lambda port: port.device)


def _matches(match: SerialMatch, port: PortInfo) -> bool:
    if match.vid is not None and port.vid != int(match.vid, 16):
        return False
    if match.pid is not None and port.pid != int(match.pid, 16):
        return False
    if match.serial_number is not None and port.serial_number != match.serial_number:
        return False
    pattern = match.by_id
    return pattern is None or any(fnmatch.fnmatchcase(name, pattern) for name in port.by_id)


def matching(match: SerialMatch, ports: Iterable[PortInfo]) -> list[PortInfo]:
    """The ports that satisfy every criterion of `match`."""
    return [port for port in ports if _matches(match, port)]


def details(port: PortInfo) -> str:
    """What identifies a port besides its tty: `0403:6001 A50285BI; usb-FTDI_..._A50285BI-...`."""
    parts = [
        " ".join(x for x in (port.usb_id, port.serial_number) if x),
        ", ".join(port.by_id),
    ]
    return "; ".join(p for p in parts if p)


def describe(port: PortInfo) -> str:
    """One line for logs: `/dev/ttyUSB1 (0403:6001 A50285BI; usb-FTDI_..._A50285BI-if00-port0)`."""
    text = details(port)
    return f"{port.device} ({text})" if text else port.device
