"""Framers: pure, incremental splitting of a byte stream into frames.

`line` splits at a text terminator, `delimiter` at delimiter bytes, `fixed` and `binary` cut
packets with a start marker, a length (fixed or from a length field) and a checksum. Every
framer bounds its memory and counts what it skips by reason; `make_framer(device)` builds the
one a device's config asks for.
"""

from __future__ import annotations

from gateway.config import BinaryFraming, DelimiterFraming, FixedFraming, SerialDevice, hex_bytes
from gateway.framing.base import Framer
from gateway.framing.checksums import Checksum, checksum
from gateway.framing.line import LineFramer
from gateway.framing.packet import LengthField, PacketFramer


def _checksum(spec: FixedFraming | BinaryFraming) -> Checksum | None:
    return None if spec.checksum == "none" else checksum(spec.checksum, spec.checksum_endian)


def make_framer(device: SerialDevice) -> Framer:
    spec = device.framing
    match spec:
        case DelimiterFraming():
            return LineFramer(hex_bytes(spec.delimiter), spec.max_frame, strip_cr=False)
        case FixedFraming():
            return PacketFramer(
                hex_bytes(spec.start),
                frame_size=spec.length,
                checksum=_checksum(spec),
                checksum_includes_start=spec.checksum_includes_start,
            )
        case BinaryFraming():
            return PacketFramer(
                hex_bytes(spec.start),
                length=LengthField(spec.length_size, spec.length_endian, spec.length_adjust),
                checksum=_checksum(spec),
                checksum_includes_start=spec.checksum_includes_start,
                max_frame=spec.max_frame,
            )
    return LineFramer(device.terminator.encode(device.encoding), device.max_line)


__all__ = ["Framer", "LengthField", "LineFramer", "PacketFramer", "make_framer"]
