"""`gateway simulate serial`: each profile, as a subprocess on a real pty, sends what the
gateway's framers and decoders read (the meter answers polls and can miss some)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_path

from gateway.config import SerialDevice
from gateway.decoders import make_decoder
from gateway.framing import make_framer
from gateway.simdevices import METER_FORMAT, METER_FRAMING, METER_QUERY

pytestmark = pytest.mark.timeout(20)


def simulate(*args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "gateway", "simulate", "serial", *args]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE)


def read_for(fd: int, size: int, timeout: float) -> bytes:
    """Read until `size` bytes came or nothing came for `timeout` seconds (or the far end
    closed)."""
    data = b""
    while len(data) < size and select.select([fd], [], [], timeout)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the simulator closed its end
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    """(our end, the path the simulator plays on)."""
    controller, device = os.openpty()
    tty.setraw(controller)
    yield controller, os.ttyname(device)
    os.close(controller)
    os.close(device)


@pytest.mark.parametrize(
    ("profile", "sensors"),
    [
        ("kv", {"temp", "hum", "seq"}),
        ("json", {"pm25", "pm10", "seq"}),
        ("nmea", {"lat", "lon", "alt", "fix_quality", "satellites", "hdop", "speed", "course"}),
    ],
)
def test_line_profiles_on_an_existing_port(
    pty: tuple[int, str], profile: str, sensors: set[str]
) -> None:
    fd, path = pty
    with simulate("--profile", profile, "--port", path, "--count", "3", "--rate", "50") as sim:
        assert sim.wait(10) == 0
        assert sim.stderr is not None
        assert b"wrote 3 lines" in sim.stderr.read()
    device = SerialDevice(id="d", type="serial", port=path, decoder=profile)
    framer, decode = make_framer(device), make_decoder(device)
    frames = framer.feed(read_for(fd, 1 << 16, timeout=0.2))
    assert len(frames) == (9 if profile == "nmea" else 3)  # GGA, RMC and GSV per fix
    seen = {name for frame in frames for name in decode(frame)}
    assert seen == sensors


def test_meter_answers_polls_and_misses_every_nth(tmp_path: Path) -> None:
    link = tmp_path / "ttyMETER"
    device = SerialDevice.model_validate(
        {
            "id": "meter",
            "type": "serial",
            "port": str(link),
            "framing": METER_FRAMING,
            "decoder": {"type": "struct", "format": METER_FORMAT, "fields": list("xvcep")},
        }
    )
    framer, decode = make_framer(device), make_decoder(device)
    answers: list[bytes] = []
    with simulate("--profile", "meter", "--link", str(link), "--miss-every", "2") as sim:
        wait_path(str(link))
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            os.write(fd, METER_QUERY * 3)  # the second goes unanswered
            while len(answers) < 2 and (data := read_for(fd, 1, timeout=5)):
                answers += framer.feed(data)
            answers += framer.feed(read_for(fd, 1, timeout=0.2))  # and nothing more comes
        finally:
            os.close(fd)
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(10) == 0
    assert len(answers) == 2
    for answer in answers:
        fields = decode(answer)
        assert fields["x"] == 0x81
        assert 2150 <= int(fields["v"]) <= 2450  # 0.1 V
    assert framer.errors == {}
