"""What an MQTT command writes to a serial port: the device's template, filled with the payload.

Pure: (device, command, payload) -> bytes, or `CommandRefusedError` before anything is written. A
payload taken as text is checked first: a control character (the line terminator among them)
would let one command write another one (`21\nRESET_FACTORY` is two lines), so it is refused. A
template that says it takes bytes (`{template: ..., payload: bytes}`) gets them as they come, and
`raw` writes the payload itself, only on a device that opted in (`raw_commands: true`).
"""

from __future__ import annotations

import string
import unicodedata

from gateway.config import SerialCommand, SerialDevice
from gateway.errors import CommandRefusedError


def render_command(device: SerialDevice, command: str, payload: bytes) -> bytes:
    """The bytes `command` with `payload` writes to the device's port, terminator included for
    a line-framed device (unless the bytes already end with it)."""
    spec = device.commands.get(command)
    if spec is None:
        data = _raw(device, command, payload)
    elif isinstance(spec, str):
        data = _fill_text(device, spec, payload)
    elif spec.payload == "text":
        data = _fill_text(device, spec.template, payload)
    else:
        data = _fill_bytes(device, spec, payload)
    if device.framing == "line":
        terminator = device.terminator.encode(device.encoding)
        if not data.endswith(terminator):
            data += terminator
    return data


def _raw(device: SerialDevice, command: str, payload: bytes) -> bytes:
    if command != "raw":
        known = sorted({*device.commands, *(["raw"] if device.raw_commands else [])})
        raise CommandRefusedError(
            f"unknown command {command!r} (known: {', '.join(known) or 'none'})",
            reason="unknown_command",
        )
    if not device.raw_commands:
        raise CommandRefusedError(
            "`raw` is off for this device (set raw_commands: true to write payloads as they are)",
            reason="raw_off",
        )
    return payload


def _fill_text(device: SerialDevice, template: str, payload: bytes) -> bytes:
    text = payload_text(device, payload)
    try:
        return template.format(payload=text).encode(device.encoding)
    except UnicodeEncodeError as exc:
        raise CommandRefusedError(
            f"payload refused: {device.encoding} cannot write it: {exc.reason}", reason="encoding"
        ) from None


def payload_text(device: SerialDevice, payload: bytes) -> str:
    """The payload as text in the device's encoding, if it is one line of printable text."""
    try:
        text = payload.decode(device.encoding)
    except UnicodeDecodeError:
        raise CommandRefusedError(
            f"payload refused: not {device.encoding} text (a command with payload: bytes takes "
            "any bytes)",
            reason="encoding",
        ) from None
    if device.framing == "line" and device.terminator in text:
        raise CommandRefusedError(
            f"payload refused: it contains the line terminator {device.terminator!r}, which "
            "would end the command there and start another",
            reason="terminator",
        )
    for char in text:
        if unicodedata.category(char) == "Cc":  # C0, DEL and C1: what a terminal acts upon
            raise CommandRefusedError(
                f"payload refused: control character U+{ord(char):04X} (a command with "
                "payload: bytes takes any bytes)",
                reason="control",
            )
    return text


def _fill_bytes(device: SerialDevice, spec: SerialCommand, payload: bytes) -> bytes:
    # The config allows only a plain {payload} here: each field is the payload's bytes.
    out = bytearray()
    try:
        for literal, field, _, _ in string.Formatter().parse(spec.template):
            out += literal.encode(device.encoding)
            if field is not None:
                out += payload
    except UnicodeEncodeError as exc:
        raise CommandRefusedError(
            f"the template is not {device.encoding} text: {exc.reason}", reason="encoding"
        ) from None
    return bytes(out)
