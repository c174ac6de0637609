"""The MQTT codec (gateway/mqtt/wire.py) and the reading payload: pure functions, no broker.

Packets are checked against the byte layouts of the MQTT 3.1.1 and 5.0 specifications, and the
stream reader against every way TCP can split a stream."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.models import Reading
from gateway.mqtt import wire
from gateway.mqtt.topics import reading_payload


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_varint_matches_the_spec_examples(n: int, encoded: bytes) -> None:
    assert wire.varint(n) == encoded
    assert wire.decode_varint(encoded, 0) == (n, len(encoded))


def test_varint_refuses_what_four_bytes_cannot_hold() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        wire.varint(268_435_456)


def test_connect_3_1_1_with_will_and_credentials() -> None:
    data = wire.connect_packet(
        "gw",
        keepalive=30,
        v5=False,
        username="u",
        password="p",
        will=wire.Will("gw/status", b"offline", qos=1, retain=True),
    )
    body = (
        b"\x00\x04MQTT\x04"
        + bytes([0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02])  # user, pass, retain, qos1, will, clean
        + b"\x00\x1e"
        + b"\x00\x02gw"
        + b"\x00\x09gw/status"
        + b"\x00\x07offline"
        + b"\x00\x01u\x00\x01p"
    )
    assert data == b"\x10" + bytes([len(body)]) + body


def test_connect_5_has_empty_property_blocks() -> None:
    data = wire.connect_packet(
        "gw", keepalive=5, v5=True, will=wire.Will("s", b"x", qos=0, retain=False)
    )
    # header: protocol name, level 5, flags (will + clean), keepalive, no properties;
    # payload: client id, will properties (none), will topic, will payload
    assert data[2:] == b"\x00\x04MQTT\x05\x06\x00\x05\x00" + b"\x00\x02gw\x00\x00\x01s\x00\x01x"


def test_publish_layouts() -> None:
    assert wire.publish_packet(b"a/b", b"hi", 0, 0) == b"\x30\x07\x00\x03a/bhi"
    assert wire.publish_packet(b"a/b", b"hi", 1, 7) == b"\x32\x09\x00\x03a/b\x00\x07hi"
    assert (
        wire.publish_packet(b"t", b"", 2, 258, retain=True, dup=True, properties=b"\x00")
        == b"\x3d\x06\x00\x01t\x01\x02\x00"
    )
    big = wire.publish_packet(b"t", b"x" * 200, 1, 1)
    assert big[:3] == b"\x32\xcd\x01"  # 205 = 0x4d | 0x80, 0x01
    assert len(big) == 3 + 205


def test_acks_and_subscribe() -> None:
    assert wire.ack_packet(wire.PUBACK, 0x1234) == b"\x40\x02\x12\x34"
    assert wire.ack_packet(wire.PUBREL, 1) == b"\x62\x02\x00\x01"  # PUBREL has flags 0b0010
    assert wire.ack_packet(wire.PUBACK, 1, 0x87) == b"\x40\x03\x00\x01\x87"
    assert wire.subscribe_packet(10, [("a/+", 1)], v5=False) == b"\x82\x08\x00\x0a\x00\x03a/+\x01"
    assert wire.subscribe_packet(10, [("a", 1)], v5=True) == b"\x82\x07\x00\x0a\x00\x00\x01a\x01"


def test_properties_round_trip() -> None:
    props = {
        wire.RESPONSE_TOPIC: "reply/here",
        wire.CORRELATION_DATA: b"\x00\xff",
        wire.RECEIVE_MAXIMUM: 20,
        wire.MAXIMUM_PACKET_SIZE: 1 << 20,
        wire.USER_PROPERTY: [("a", "1"), ("a", "2")],
        0x0B: 300,  # subscription identifier: a varint
    }
    encoded = wire.encode_properties(props)
    assert wire.decode_properties(encoded, 0) == (props, len(encoded))


def test_incoming_publish_5_with_response_topic() -> None:
    props = wire.encode_properties({wire.RESPONSE_TOPIC: "r", wire.CORRELATION_DATA: b"42"})
    body = b"\x00\x03a/b\x00\x09" + props + b"payload"
    message = wire.parse_publish(0b0010, body, v5=True)
    assert message == wire.Message(
        "a/b", b"payload", 1, False, 9, {wire.RESPONSE_TOPIC: "r", wire.CORRELATION_DATA: b"42"}
    )


def test_connack_and_suback_and_disconnect() -> None:
    assert wire.parse_connack(b"\x01\x00", v5=False) == wire.Connack(True, 0)
    props = wire.encode_properties({wire.RECEIVE_MAXIMUM: 10})
    assert wire.parse_connack(b"\x00\x00" + props, v5=True).properties == {wire.RECEIVE_MAXIMUM: 10}
    assert wire.parse_suback(b"\x00\x05\x01", v5=False) == (5, [1])
    assert wire.parse_suback(b"\x00\x05\x00\x87", v5=True) == (5, [0x87])
    reason = wire.encode_properties({wire.REASON_STRING: "bye"})
    assert wire.parse_disconnect(b"\x8b" + reason, v5=True) == (0x8B, "bye")


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x05a",  # topic length past the end
        b"\x00\x01\xff",  # topic not UTF-8
        b"\x00\x01a\x00",  # QoS 1 without a whole packet id
    ],
)
def test_malformed_publish_is_an_error_not_a_crash(body: bytes) -> None:
    with pytest.raises(wire.MalformedPacketError):
        wire.parse_publish(0b0010, body, v5=False)


def test_reader_refuses_a_five_byte_length() -> None:
    with pytest.raises(wire.MalformedPacketError, match="longer than four bytes"):
        wire.PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_reader_refuses_a_packet_over_its_limit() -> None:
    with pytest.raises(wire.MalformedPacketError, match="over the limit"):
        wire.PacketReader(max_size=1000).feed(b"\x30\xe9\x07")  # 1001


_packets = st.lists(
    st.tuples(
        st.sampled_from([wire.PUBACK, wire.PUBLISH, wire.SUBACK, wire.PINGRESP]),
        st.integers(0, 15),
        st.binary(max_size=300),
    ),
    max_size=20,
)


@given(packets=_packets, cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_reader_reassembles_any_split_of_the_stream(
    packets: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(wire.packet((kind << 4) | flags, body) for kind, flags, body in packets)
    reader = wire.PacketReader()
    got: list[tuple[int, int, bytes]] = []
    start = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        got += reader.feed(stream[start:cut])
        start = cut
    assert got == packets


@given(st.binary(max_size=200))
def test_garbage_from_the_broker_raises_only_malformed_packet(data: bytes) -> None:
    reader = wire.PacketReader(max_size=10_000)
    try:
        for kind, flags, body in reader.feed(data):
            if kind == wire.PUBLISH:
                wire.parse_publish(flags, body, v5=True)
            elif kind == wire.CONNACK:
                wire.parse_connack(body, v5=True)
            elif kind in (wire.PUBACK, wire.PUBCOMP, wire.PUBREC):
                wire.parse_ack(body)
            elif kind == wire.SUBACK:
                wire.parse_suback(body, v5=True)
            elif kind == wire.DISCONNECT:
                wire.parse_disconnect(body, v5=True)
    except wire.MalformedPacketError:
        pass


# -- the reading payload -------------------------------------------------------------------------
def _json_payload(reading: Reading, seq: int | None) -> bytes:
    body: dict[str, object] = {
        "value": reading.value,
        "unit": reading.unit,
        "ts": round(reading.ts, 3),
    }
    if seq is not None:
        body["seq"] = seq
    return json.dumps(body, ensure_ascii=False).encode()


_values = (
    st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)


@given(
    value=_values,
    unit=st.none() | st.sampled_from(["°C", "%", 'odd "unit"\n', "hPa"]),
    ts=st.floats(0, 4e9),
    seq=st.none() | st.integers(1, 10**12),
)
def test_payload_is_byte_for_byte_what_json_dumps_gives(
    value: float | int | str | bool, unit: str | None, ts: float, seq: int | None
) -> None:
    reading = Reading("dev", "temp", value, unit, ts)
    payload = reading_payload(reading, seq)
    assert payload == _json_payload(reading, seq)


def test_payload_example() -> None:
    reading = Reading("boiler", "temp", 21.5, "°C", 1764074400.1234)
    assert json.loads(reading_payload(reading, 42)) == {
        "value": 21.5,
        "unit": "°C",
        "ts": 1764074400.123,
        "seq": 42,
    }
