"""A serial command's template + payload -> bytes (`links/serial_commands.py`), fuzzed: only the
gateway's own `CommandRefusedError` comes out, and a payload taken as text never brings a control
character or a terminator into what is written."""

from __future__ import annotations

import unicodedata
from typing import Any

from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import SerialDevice
from gateway.errors import CommandRefusedError
from gateway.links.serial_commands import render_command

COMMANDS: dict[str, Any] = {
    "sp": "SP {payload}",
    "fmt": "F {payload!r} {payload:>6}",  # a conversion and a format spec, in the text form
    "label": {"template": "L {payload}", "payload": "text"},
    "blob": {"template": "B{payload}{{x}}{payload}", "payload": "bytes"},
    "plain": "RESET",
}
TEXT = {"sp", "fmt", "label"}

DEVICES = [
    SerialDevice.model_validate(
        {"id": "d", "type": "serial", "port": "/dev/null", "commands": COMMANDS, **extra}
    )
    for extra in (
        {},
        {"raw_commands": True},
        {"terminator": "\r\n", "encoding": "latin-1"},
        {"terminator": ";", "encoding": "ascii"},
        {"terminator": "\n", "encoding": "utf-16-le"},
        {"framing": {"type": "delimiter", "delimiter": "7e"}, "raw_commands": True},
    )
]

PAYLOADS = (
    st.binary(max_size=64)
    | st.text(max_size=32).map(str.encode)
    | st.sampled_from([b"21", b"21\nRESET", b"21\r\n", b"a;b", b"\x1b[2J", b"\xc2\x85"])
)


@FUZZ
@given(
    device=st.sampled_from(DEVICES),
    command=st.sampled_from([*COMMANDS, "raw", "nope"]),
    payload=PAYLOADS,
)
def test_only_refusals_come_out_and_a_text_payload_writes_one_clean_command(
    device: SerialDevice, command: str, payload: bytes
) -> None:
    refused: CommandRefusedError | None = None
    try:
        data = render_command(device, command, payload)
    except CommandRefusedError as exc:
        refused = exc
    if refused is not None:
        assert refused.reason.isidentifier()  # a fixed word, fit for a metric label
        return
    assert len(data) <= 64 + 2 * len(payload)  # the template's size plus the payload, twice
    if command not in TEXT:
        return
    body = data.decode(device.encoding)
    if device.framing == "line":
        assert body.endswith(device.terminator)
        body = body.removesuffix(device.terminator)
        assert device.terminator not in body
    assert not [c for c in body if unicodedata.category(c) == "Cc"], body
