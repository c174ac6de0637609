"""`gateway ports`: the serial ports there are, with what a device's `match:` can use."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from gateway.links.serial_ports import DEFAULT_BY_ID, PortInfo, list_ports

_COLUMNS = ("PORT", "VID:PID", "SERIAL", "MANUFACTURER", "PRODUCT", "BY-ID")


def _row(port: PortInfo) -> tuple[str, ...]:
    return (
        port.device,
        port.usb_id or "-",
        port.serial_number or "-",
        port.manufacturer or "-",
        port.product or port.description or "-",
        " ".join(port.by_id) or "-",
    )


def format_table(ports: list[PortInfo]) -> str:
    rows = [_COLUMNS, *(_row(p) for p in ports)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    # The last column (by-id names) is left unpadded: it is long and needs no alignment.
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    ]
    return "\n".join(lines)


def as_dict(port: PortInfo) -> dict[str, object]:
    data = dataclasses.asdict(port)
    data["by_id"] = list(port.by_id)
    data["vid"] = None if port.vid is None else f"{port.vid:04x}"  # as lsusb and `match:` say
    data["pid"] = None if port.pid is None else f"{port.pid:04x}"
    return data


def print_ports(by_id_dir: Path | None, *, as_json: bool = False) -> int:
    ports = list_ports(by_id_dir or DEFAULT_BY_ID)
    if as_json:
        for port in ports:
            print(json.dumps(as_dict(port), ensure_ascii=False))
    elif ports:
        print(format_table(ports))
    else:
        print("no serial ports found")
    return 0
