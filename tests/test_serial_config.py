"""The serial device's config: the flat keys of 0.1 keep working; match, framing, decoder and
poll objects validate at load time with errors that point at the line and say what to write."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import (
    BinaryFraming,
    CsvDecoder,
    SerialCommand,
    SerialDevice,
    StructDecoder,
    load_config,
)
from gateway.errors import ConfigError

pytestmark = pytest.mark.timeout(10)

HEAD = """\
gateway:
  id: gw1
devices:
  - id: dev
    type: serial
"""


def load_device(tmp_path: Path, body: str) -> SerialDevice:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(body), "    "), encoding="utf-8")
    [device] = load_config(path, env={}).devices
    assert isinstance(device, SerialDevice)
    return device


def problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_device(tmp_path, body)
    path = tmp_path / "config.yaml"
    return [p.removeprefix(f"{path}:") for p in info.value.problems]


def test_flat_keys_of_version_0_1_keep_their_meaning(tmp_path: Path) -> None:
    device = load_device(
        tmp_path,
        """\
        port: /dev/ttyUSB0
        baudrate: 115200
        decoder: json
        terminator: "\\r"
        max_line: 100
        """,
    )
    assert (device.port, device.decoder, device.framing) == ("/dev/ttyUSB0", "json", "line")
    assert (device.terminator, device.max_line, device.match, device.poll) == (
        "\r",
        100,
        None,
        None,
    )
    assert (device.rtscts, device.xonxoff) == (False, False)


def test_a_full_binary_polled_device(tmp_path: Path) -> None:
    device = load_device(
        tmp_path,
        """\
        match: {vid: "0403", pid: "0x6001", serial_number: A50285BI}
        rtscts: true
        framing: {type: binary, start: "aa", length_size: 1, checksum: crc16_modbus}
        decoder:
          type: struct
          format: ">BHH"
          fields: [null, {name: voltage, scale: 0.1, unit: V}, current]
        poll: {query_hex: "aa 01 01 c1 e0", interval: 2, timeout: 0.5}
        """,
    )
    assert device.port is None
    assert device.match is not None
    assert (device.match.vid, device.match.pid) == ("0403", "6001")
    assert isinstance(device.framing, BinaryFraming)
    assert device.framing.checksum == "crc16_modbus"
    assert isinstance(device.decoder, StructDecoder)
    assert [f and f.name for f in device.decoder.field_specs()] == [None, "voltage", "current"]
    assert device.poll is not None
    assert device.poll.interval == 2
    assert device.match_text == "vid=0403 pid=6001 serial_number=A50285BI"


def test_csv_decoder_object(tmp_path: Path) -> None:
    device = load_device(tmp_path, "port: /dev/x\ndecoder: {type: csv, columns: [temp, ~, hum]}\n")
    assert device.decoder == CsvDecoder(type="csv", columns=["temp", None, "hum"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("baudrate: 9600\n", "4:5: devices[0].port: Field required"),
        (
            "port: /dev/x\nmatch: {by_id: x}\n",
            "6:5: devices[0].port: Value error, give either port or match, not both",
        ),
        ("match: {}\n", "6:5: devices[0].match: Value error, give at least one of vid, pid"),
        (
            "match: {vid: 0403}\n",
            "6:13: devices[0].match.vid: Value error, write USB ids in quotes",
        ),
        (
            "match: {vid: 6001}\n",
            "6:13: devices[0].match.vid: Value error, write USB ids in quotes",
        ),
        ("match: {vid: '04x3'}\n", "6:13: devices[0].match.vid: Value error, '04x3' is not a USB"),
        (
            "match: {by_id: /dev/serial/by-id/x}\n",
            "6:13: devices[0].match.by_id: Value error, give the name in by_id_dir",
        ),
        ("port: x\ndecoder: kvv\n", "7:5: devices[0].decoder: decoder must be kv, json, nmea"),
        ("port: x\ndecoder: csv\n", "7:5: devices[0].decoder: decoder must be kv, json, nmea"),
        ("port: x\ndecoder: {type: csv}\n", "7:5: devices[0].decoder.columns: Field required"),
        (
            "port: x\ndecoder: {type: regex, pattern: 'a(b'}\n",
            "7:28: devices[0].decoder.pattern: Value error, not a regular expression",
        ),
        (
            "port: x\ndecoder: {type: regex, pattern: '\\d+'}\n",
            "7:28: devices[0].decoder.pattern: Value error, needs at least one named group",
        ),
        (
            "port: x\ndecoder: {type: struct, format: 'HH', fields: [a, b]}\n",
            "7:29: devices[0].decoder.format: Value error, start with the byte order",
        ),
        (
            "port: x\ndecoder: {type: struct, format: '>HH', fields: [a]}\n",
            "7:5: devices[0].decoder: Value error, '>HH' unpacks 2 value(s) but fields has 1",
        ),
        ("port: x\nframing: lines\n", "7:5: devices[0].framing: framing must be `line` or"),
        (
            "port: x\nframing: {type: binary, start: 'zz'}\n",
            "7:29: devices[0].framing.start: Value error, 'zz' is not hex bytes",
        ),
        (
            "port: x\nframing: {type: fixed, length: 3, start: aa, checksum: crc16_modbus}\n",
            "7:5: devices[0].framing: Value error, length leaves no payload",
        ),
        (
            "port: x\npoll: {query: 'READ\\r\\n', query_hex: '01'}\n",
            "7:5: devices[0].poll: Value error, give either query or query_hex",
        ),
        (
            "port: x\npoll: {query: 'READ', interval: 1, timeout: 2}\n",
            "7:5: devices[0].poll: Value error, timeout must not be longer than interval",
        ),
        ("port: x\nencoding: utf-9\n", "7:5: devices[0].encoding: Value error, unknown encoding"),
        ("port: x\nencoding: base64\n", "7:5: devices[0].encoding: Value error, unknown encoding"),
        (
            "port: x\ncommands: {sp: 'SP {value}'}\n",
            "7:16: devices[0].commands.sp.template: Value error, unknown field {value}",
        ),
        (
            "port: x\ncommands: {sp: 'SP {payload'}\n",
            "7:16: devices[0].commands.sp.template: Value error, not a template",
        ),
        (
            "port: x\ncommands: {sp: {template: 'SP {payload!r}', payload: bytes}}\n",
            "7:16: devices[0].commands.sp.object: Value error, with payload: bytes, write",
        ),
        (
            "port: x\ncommands: {sp: {template: 'SP {payload}', payload: binary}}\n",
            "7:16: devices[0].commands.sp.object.payload: Input should be 'text' or 'bytes'",
        ),
    ],
)
def test_mistakes_are_located_and_explained(tmp_path: Path, body: str, expected: str) -> None:
    [problem] = problems(tmp_path, body)
    assert problem.startswith(expected), problem


def test_commands_keep_their_string_form_and_raw_is_opt_in(tmp_path: Path) -> None:
    device = load_device(
        tmp_path,
        """\
        port: /dev/ttyUSB0
        commands:
          power: "PWR {payload}"
          blob: {template: "B{payload}", payload: bytes}
          label: {template: "L {payload}"}
        """,
    )
    assert device.commands["power"] == "PWR {payload}"  # the string form, unchanged
    assert device.commands["blob"] == SerialCommand(template="B{payload}", payload="bytes")
    assert device.commands["label"] == SerialCommand(template="L {payload}", payload="text")
    assert device.raw_commands is False
    assert load_device(tmp_path, "port: x\nraw_commands: true\n").raw_commands is True


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(?P<a>\d)\1", "backreference"),
        (r"(?P<a>x)(?P=a)", "backreference"),
        (r"(?P<a>\d+)(?=C)", "lookaround"),
        (r"(?P<a>\d+)(?!C)", "lookaround"),
        (r"(?<=T)(?P<a>\d+)", "lookaround"),
        (r"(?<!T)(?P<a>\d+)", "lookaround"),
    ],
)
def test_a_pattern_re2_cannot_run_is_an_error_at_its_line_that_says_why(
    tmp_path: Path, pattern: str, why: str
) -> None:
    """Issue 21, item 19: user patterns run on RE2 (linear time, no backtracking), which has
    no backreferences and no lookaround; the config says so where the pattern is."""
    [problem] = problems(tmp_path, f"port: x\ndecoder: {{type: regex, pattern: '{pattern}'}}\n")
    assert problem.startswith("7:28: devices[0].decoder.pattern: Value error, "), problem
    assert "RE2" in problem
    assert why in problem


def test_without_re2_a_regex_decoder_is_an_error_at_its_line_that_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-re2 is prebuilt for x86_64 and aarch64 only: on a 32-bit Raspberry Pi the gateway
    installs without it, and a `regex` decoder (which must not run on Python's backtracking
    `re`) is refused where it is configured, with what to do."""
    monkeypatch.setitem(sys.modules, "re2", None)  # `import re2` raises ImportError
    [problem] = problems(tmp_path, "port: x\ndecoder: {type: regex, pattern: 't=(?P<t>.*)'}\n")
    assert problem.startswith("7:28: devices[0].decoder.pattern: Value error, "), problem
    assert "needs google-re2" in problem
    assert "libre2-dev" in problem
    # The other decoders load as before.
    assert load_device(tmp_path, "port: x\ndecoder: kv\n").decoder == "kv"
