"""Finding ports: pyserial's list joined with a by-id directory of real symlinks to real ptys,
the pure matching rules, and `gateway ports`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli

from gateway.config import SerialMatch
from gateway.links.serial_ports import PortInfo, by_id_links, describe, list_ports, matching
from gateway.ports_cli import format_table

pytestmark = pytest.mark.timeout(20)

FTDI = PortInfo(
    "/dev/ttyUSB0",
    vid=0x0403,
    pid=0x6001,
    serial_number="A50285BI",
    manufacturer="FTDI",
    product="FT232R USB UART",
    by_id=("usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",),
)
FTDI_2 = PortInfo(
    "/dev/ttyUSB1",
    vid=0x0403,
    pid=0x6001,
    serial_number="B7777",
    by_id=("usb-FTDI_FT232R_USB_UART_B7777-if00-port0",),
)
ARDUINO = PortInfo("/dev/ttyACM0", vid=0x2341, pid=0x0043, serial_number="7543")
PORTS = [FTDI, FTDI_2, ARDUINO]


@pytest.fixture
def ptys() -> Iterator[list[str]]:
    """Two real pseudo-terminals (device side paths)."""
    fds = [os.openpty() for _ in range(2)]
    yield [os.ttyname(device) for _, device in fds]
    for controller, device in fds:
        os.close(controller)
        os.close(device)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({"vid": "0403"}, [FTDI, FTDI_2]),
        ({"vid": "0403", "pid": "6001", "serial_number": "B7777"}, [FTDI_2]),
        ({"vid": "2341", "serial_number": "A50285BI"}, []),  # every criterion must hold
        ({"pid": "0043"}, [ARDUINO]),
        ({"by_id": "usb-FTDI_*_A50285BI-*"}, [FTDI]),
        ({"by_id": "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"}, [FTDI]),
        ({"by_id": "usb-FTDI_*"}, [FTDI, FTDI_2]),
        ({"by_id": "*", "vid": "2341"}, []),  # the Arduino has no by-id name here
    ],
)
def test_matching(criteria: dict[str, str], expected: list[PortInfo]) -> None:
    assert matching(SerialMatch.model_validate(criteria), PORTS) == expected


def test_by_id_directory_of_real_symlinks(tmp_path: Path, ptys: list[str]) -> None:
    (tmp_path / "usb-Meter_1-if00").symlink_to(ptys[0])
    (tmp_path / "usb-Meter_1-if00-alias").symlink_to(ptys[0])
    (tmp_path / "usb-Gone-if00").symlink_to(tmp_path / "ttyUSB9")  # dangling: unplugged
    (tmp_path / "not-a-link").write_text("")
    assert by_id_links(tmp_path) == {ptys[0]: ["usb-Meter_1-if00", "usb-Meter_1-if00-alias"]}
    assert by_id_links(tmp_path / "missing") == {}  # no USB serial device: no directory

    ports = {p.device: p for p in list_ports(tmp_path)}
    assert ports[ptys[0]].by_id == ("usb-Meter_1-if00", "usb-Meter_1-if00-alias")
    assert ptys[1] not in ports  # pyserial does not list ptys; only the by-id names bring them

    # The symlink now points elsewhere (the device came back as another tty): found there.
    (tmp_path / "usb-Meter_1-if00").unlink()
    (tmp_path / "usb-Meter_1-if00").symlink_to(ptys[1])
    match = SerialMatch(by_id="usb-Meter_1-if00")
    [found] = matching(match, list_ports(tmp_path))
    assert found.device == ptys[1]


def test_describe_and_table() -> None:
    assert describe(FTDI) == (
        "/dev/ttyUSB0 (0403:6001 A50285BI; usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0)"
    )
    assert describe(PortInfo("/dev/pts/3")) == "/dev/pts/3"
    table = format_table([FTDI, ARDUINO]).splitlines()
    assert table[0].split() == ["PORT", "VID:PID", "SERIAL", "MANUFACTURER", "PRODUCT", "BY-ID"]
    assert table[1].startswith("/dev/ttyUSB0  0403:6001  A50285BI  FTDI ")
    assert table[2].split() == ["/dev/ttyACM0", "2341:0043", "7543", "-", "-", "-"]


def test_ports_command(tmp_path: Path, ptys: list[str]) -> None:
    (tmp_path / "usb-Sim_Meter_42-if00-port0").symlink_to(ptys[0])
    result = run_cli("ports", "--json", "--by-id-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    ports = [json.loads(line) for line in result.stdout.splitlines()]
    [sim] = [p for p in ports if p["device"] == ptys[0]]
    assert sim["by_id"] == ["usb-Sim_Meter_42-if00-port0"]
    assert sim["vid"] is None
