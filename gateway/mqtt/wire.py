"""MQTT 3.1.1 and 5 packets as bytes: pure functions, no I/O (the connection is in client.py).

Only what a gateway needs: CONNECT with a will, PUBLISH both ways at QoS 0-2, the acknowledgement
packets, SUBSCRIBE, PINGREQ and DISCONNECT. MQTT 5 properties are a dict keyed by property id
(user properties, which may repeat, are a list of pairs).

`PacketReader` cuts a byte stream into packets in one pass over what the socket returned: a
PUBACK costs a few byte operations, not a recv call and two objects.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # 3.1.1, and 5 with reason 0 (normal) and no properties
MAX_REMAINING = 268_435_455  # the largest remaining length four varint bytes can say

# MQTT 5 property ids -> their wire type (spec 2.2.2.2).
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES: dict[int, int] = {
    0x01: _BYTE,  # payload format indicator
    0x02: _U32,  # message expiry interval
    0x03: _STR,  # content type
    0x08: _STR,  # response topic
    0x09: _BIN,  # correlation data
    0x0B: _VARINT,  # subscription identifier
    0x11: _U32,  # session expiry interval
    0x12: _STR,  # assigned client identifier
    0x13: _U16,  # server keep alive
    0x15: _STR,  # authentication method
    0x16: _BIN,  # authentication data
    0x17: _BYTE,  # request problem information
    0x18: _U32,  # will delay interval
    0x19: _BYTE,  # request response information
    0x1A: _STR,  # response information
    0x1C: _STR,  # server reference
    0x1F: _STR,  # reason string
    0x21: _U16,  # receive maximum
    0x22: _U16,  # topic alias maximum
    0x23: _U16,  # topic alias
    0x24: _BYTE,  # maximum QoS
    0x25: _BYTE,  # retain available
    0x26: _PAIR,  # user property
    0x27: _U32,  # maximum packet size
    0x28: _BYTE,  # wildcard subscription available
    0x29: _BYTE,  # subscription identifier available
    0x2A: _BYTE,  # shared subscription available
}
RESPONSE_TOPIC, CORRELATION_DATA, ASSIGNED_CLIENT_ID, SERVER_KEEP_ALIVE = 0x08, 0x09, 0x12, 0x13
REASON_STRING, RECEIVE_MAXIMUM, MAXIMUM_QOS, RETAIN_AVAILABLE = 0x1F, 0x21, 0x24, 0x25
USER_PROPERTY, MAXIMUM_PACKET_SIZE = 0x26, 0x27

Properties = dict[int, Any]


class MalformedPacketError(ValueError):
    """The broker sent bytes that are not a valid MQTT packet."""


# -- encoding ------------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"{n} does not fit an MQTT variable byte integer")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def encode_properties(props: Mapping[int, Any] | None) -> bytes:
    body = bytearray()
    for pid, value in (props or {}).items():
        kind = PROPERTY_TYPES[pid]
        for item in value if kind == _PAIR else (value,):
            body += varint(pid)
            body += _encode_property(kind, item)
    return varint(len(body)) + body


def _encode_property(kind: int, value: Any) -> bytes:
    if kind == _BYTE:
        return bytes((value,))
    if kind == _U16:
        return int(value).to_bytes(2, "big")
    if kind == _U32:
        return int(value).to_bytes(4, "big")
    if kind == _VARINT:
        return varint(value)
    if kind in (_STR, _BIN):
        return utf8(value)
    key, val = value
    return utf8(key) + utf8(val)


def packet(first_byte: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return bytes((first_byte,)) + varint(len(body)) + body


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_packet(
    client_id: str,
    *,
    keepalive: int,
    v5: bool,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
    clean: bool = True,
    properties: Mapping[int, Any] | None = None,
) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    payload = [utf8(client_id)]
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if v5:
            payload.append(encode_properties(None))
        payload += [utf8(will.topic), utf8(will.payload)]
    if username is not None:
        payload.append(utf8(username))
    if password is not None:
        payload.append(utf8(password))
    header = utf8("MQTT") + bytes((5 if v5 else 4, flags)) + keepalive.to_bytes(2, "big")
    if v5:
        header += encode_properties(properties)
    return packet(CONNECT << 4, header, *payload)


def publish_packet(
    topic: bytes,
    payload: bytes,
    qos: int,
    packet_id: int,
    *,
    retain: bool = False,
    dup: bool = False,
    properties: bytes = b"",
) -> bytes:
    """`topic` already UTF-8; `properties` already encoded (b"" for 3.1.1, b"\\x00" for none in
    MQTT 5), so the hot path encodes nothing twice."""
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    head = len(topic).to_bytes(2, "big") + topic
    if qos:
        head += packet_id.to_bytes(2, "big")
    size = len(head) + len(properties) + len(payload)
    if size < 128:
        return bytes((first, size)) + head + properties + payload
    return bytes((first,)) + varint(size) + head + properties + payload


def ack_packet(kind: int, packet_id: int, reason: int = 0) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP. Reason 0 is left out (valid in both versions)."""
    first = (kind << 4) | (0x02 if kind == PUBREL else 0)
    if reason:
        return bytes((first, 3)) + packet_id.to_bytes(2, "big") + bytes((reason,))
    return bytes((first, 2)) + packet_id.to_bytes(2, "big")


def subscribe_packet(packet_id: int, topics: list[tuple[str, int]], *, v5: bool) -> bytes:
    parts = [packet_id.to_bytes(2, "big")]
    if v5:
        parts.append(encode_properties(None))
    for topic, qos in topics:
        parts += [utf8(topic), bytes((qos,))]
    return packet((SUBSCRIBE << 4) | 0x02, *parts)


# -- decoding ------------------------------------------------------------------------------------
class PacketReader:
    """Bytes from the socket -> (type, flags, body) per complete packet; keeps the partial one."""

    def __init__(self, max_size: int = MAX_REMAINING) -> None:
        self.max_size = max_size
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buf + data if self._buf else data
        packets: list[tuple[int, int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first = buf[pos]
            size = buf[pos + 1]
            start = pos + 2
            if size & 0x80:
                size, start = self._long_length(buf, pos + 1)
                if start < 0:
                    break  # the length itself is not complete yet
            if start + size > end:
                break
            packets.append((first >> 4, first & 0x0F, buf[start : start + size]))
            pos = start + size
        self._buf = buf[pos:]
        return packets

    def _long_length(self, buf: bytes, pos: int) -> tuple[int, int]:
        size, shift = 0, 0
        for i in range(pos, min(pos + 4, len(buf))):
            size |= (buf[i] & 0x7F) << shift
            shift += 7
            if not buf[i] & 0x80:
                if size > self.max_size:
                    raise MalformedPacketError(f"a {size}-byte packet is over the limit")
                return size, i + 1
        if len(buf) - pos >= 4:
            raise MalformedPacketError("remaining length longer than four bytes")
        return 0, -1


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for i in range(pos, min(pos + 4, len(buf))):
        value |= (buf[i] & 0x7F) << shift
        shift += 7
        if not buf[i] & 0x80:
            return value, i + 1
    raise MalformedPacketError("bad variable byte integer")


def decode_properties(buf: bytes, pos: int) -> tuple[Properties, int]:
    length, pos = decode_varint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise MalformedPacketError("properties run past the packet")
    props: Properties = {}
    while pos < end:
        pid, pos = decode_varint(buf, pos)
        kind = PROPERTY_TYPES.get(pid)
        if kind is None:
            raise MalformedPacketError(f"unknown property 0x{pid:02x}")
        value, pos = _decode_property(kind, buf, pos)
        if kind == _PAIR:
            props.setdefault(pid, []).append(value)
        else:
            props[pid] = value
    if pos != end:
        raise MalformedPacketError("properties run past their length")
    return props, end


def _decode_property(kind: int, buf: bytes, pos: int) -> tuple[Any, int]:  # noqa: PLR0911
    try:
        if kind == _BYTE:
            return buf[pos], pos + 1
        if kind == _U16:
            return struct.unpack_from("!H", buf, pos)[0], pos + 2
        if kind == _U32:
            return struct.unpack_from("!I", buf, pos)[0], pos + 4
    except (IndexError, struct.error) as exc:
        raise MalformedPacketError("property runs past the packet") from exc
    if kind == _VARINT:
        return decode_varint(buf, pos)
    if kind == _STR:
        return _decode_str(buf, pos)
    if kind == _BIN:
        return _decode_bin(buf, pos)
    key, pos = _decode_str(buf, pos)
    value, pos = _decode_str(buf, pos)
    return (key, value), pos


def _decode_bin(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf):
        raise MalformedPacketError("string length runs past the packet")
    end = pos + 2 + int.from_bytes(buf[pos : pos + 2], "big")
    if end > len(buf):
        raise MalformedPacketError("string runs past the packet")
    return bytes(buf[pos + 2 : end]), end


def _decode_str(buf: bytes, pos: int) -> tuple[str, int]:
    data, end = _decode_bin(buf, pos)
    try:
        return data.decode(), end
    except UnicodeDecodeError as exc:
        raise MalformedPacketError("string is not UTF-8") from exc


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    code: int
    properties: Properties = field(default_factory=dict)


def parse_connack(body: bytes, *, v5: bool) -> Connack:
    if len(body) < 2:
        raise MalformedPacketError("CONNACK too short")
    props: Properties = {}
    if v5 and len(body) > 2:
        props, _ = decode_properties(body, 2)
    return Connack(bool(body[0] & 0x01), body[1], props)


def parse_ack(body: bytes) -> tuple[int, int]:
    """PUBACK/PUBREC/PUBREL/PUBCOMP -> (packet id, reason code); 3.1.1 has no reason (0)."""
    if len(body) < 2:
        raise MalformedPacketError("acknowledgement too short")
    return (body[0] << 8) | body[1], body[2] if len(body) > 2 else 0


def parse_suback(body: bytes, *, v5: bool) -> tuple[int, list[int]]:
    if len(body) < 3:
        raise MalformedPacketError("SUBACK too short")
    pos = 2
    if v5:
        _, pos = decode_properties(body, pos)
    return (body[0] << 8) | body[1], list(body[pos:])


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    packet_id: int = 0
    properties: Properties = field(default_factory=dict)


def parse_publish(flags: int, body: bytes, *, v5: bool) -> Message:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacketError("PUBLISH with QoS 3")
    topic, pos = _decode_str(body, 0)
    packet_id = 0
    if qos:
        if pos + 2 > len(body):
            raise MalformedPacketError("PUBLISH without its packet id")
        packet_id = (body[pos] << 8) | body[pos + 1]
        pos += 2
    props: Properties = {}
    if v5:
        props, pos = decode_properties(body, pos)
    return Message(topic, bytes(body[pos:]), qos, bool(flags & 0x01), packet_id, props)


def parse_disconnect(body: bytes, *, v5: bool) -> tuple[int, str | None]:
    """A broker's DISCONNECT (MQTT 5 only) -> (reason code, reason string)."""
    if not v5 or not body:
        return 0, None
    reason = None
    if len(body) > 1:
        props, _ = decode_properties(body, 1)
        reason = props.get(REASON_STRING)
    return body[0], reason


# Reason codes worth a name in logs (CONNACK 3.1.1 return codes and MQTT 5 reason codes).
CONNACK_3_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
REASONS_5 = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x90: "topic name invalid",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}


def reason_text(code: int, *, v5: bool) -> str:
    table = REASONS_5 if v5 else CONNACK_3_REASONS
    return f"{table.get(code, 'error')} (code {code:#04x})"
