"""Fuzz: every framer (line, delimiter, fixed and binary packets with each checksum) on random
bytes and on streams of valid frames then mutated, in random chunks. No framer raises; no frame
is longer than its bound; what a framer holds stays within `max_line` / `max_frame`; and the
running checksum a packet framer checks candidates with always agrees with a direct pass.
"""

from __future__ import annotations

import itertools
from typing import Any, get_args

from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import SerialDevice
from gateway.framing import LengthField, LineFramer, PacketFramer, make_framer
from gateway.framing.checksums import Checksum, ChecksumName, checksum

CHECKSUMS = st.none() | st.sampled_from(get_args(ChecksumName)).map(checksum)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, at, byte in edits:
        if not out:
            break
        i = at % len(out)
        if kind == 0:
            out[i] = byte
        elif kind == 1:
            del out[i]
        else:
            out.insert(i, byte)
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 100_000), st.integers(0, 255)))


# -- line and delimiter framing --------------------------------------------------------------


@FUZZ
@given(
    data=st.binary(max_size=600) | st.lists(st.binary(max_size=40)).map(b"\n".join),
    terminator=st.sampled_from([b"\n", b"\r\n", b"\x7e", b"\x0d\x0a\x00"]),
    max_len=st.integers(1, 64),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_line_framer_never_raises_and_stays_within_max_line(
    data: bytes, terminator: bytes, max_len: int, cuts: list[int]
) -> None:
    framer = LineFramer(terminator, max_len)
    for chunk in chunked(data, cuts):
        for frame in framer.feed(chunk):
            assert 0 < len(frame) <= max_len
            assert terminator not in frame
        assert len(framer._buf) <= max_len + len(terminator) - 1
    assert all(count > 0 for count in framer.take_errors().values())


# -- packet framing (fixed and binary) ---------------------------------------------------------


@st.composite
def packet_configs(draw: st.DrawFn) -> dict[str, Any]:
    cs: Checksum | None = draw(CHECKSUMS)
    fixed = draw(st.booleans())
    start = draw(st.binary(max_size=3) if fixed else st.binary(min_size=1, max_size=3))
    config: dict[str, Any] = {
        "start": start,
        "checksum": cs,
        "checksum_includes_start": draw(st.booleans()),
    }
    if fixed:
        header = len(start) + (cs.size if cs else 0)
        config["frame_size"] = draw(st.integers(header + 1, header + 24))
    else:
        size = draw(st.sampled_from([1, 2]))
        config["length"] = LengthField(
            size, draw(st.sampled_from(["big", "little"])), draw(st.integers(-3, 3))
        )
        config["max_frame"] = draw(st.integers(8, 80))
    return config


def valid_frame(config: dict[str, Any], payload: bytes) -> bytes:
    start: bytes = config["start"]
    cs: Checksum | None = config["checksum"]
    length: LengthField | None = config.get("length")
    if length is None:
        room = config["frame_size"] - len(start) - (cs.size if cs else 0)
        payload = payload[:room].ljust(room, b"\x00")
        head = b""
    else:
        count = len(payload) - length.adjust
        if count < 0:
            payload, count = payload + bytes(-count), 0
        head = count.to_bytes(length.size, length.endian)
    body = head + payload
    covered = start + body if config["checksum_includes_start"] else body
    return start + body + (cs.encode(covered) if cs else b"")


def framer_of(config: dict[str, Any]) -> PacketFramer:
    options = {k: v for k, v in config.items() if k != "start"}
    return PacketFramer(config["start"], **options)


def bound(config: dict[str, Any]) -> int:
    return int(config.get("max_frame", config.get("frame_size", 0)))


@FUZZ
@given(
    config=packet_configs(),
    payloads=st.lists(st.binary(max_size=40), max_size=8),
    garbage=st.lists(st.binary(max_size=20), max_size=8),
    edits=EDITS,
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_packet_framer_never_raises_and_stays_within_max_frame(
    config: dict[str, Any],
    payloads: list[bytes],
    garbage: list[bytes],
    edits: list[tuple[int, int, int]],
    cuts: list[int],
) -> None:
    frames = [valid_frame(config, p) for p in payloads]
    mixed = b"".join(g + f for g, f in zip(garbage + [b""] * len(frames), frames, strict=False))
    stream = mutate(mixed, edits)
    framer = framer_of(config)
    limit = max(bound(config), 1)
    for chunk in chunked(stream, cuts):
        for payload in framer.feed(chunk):
            assert len(payload) <= limit
        assert len(framer._buf) <= limit
    errors = framer.take_errors()
    assert set(errors) <= {"resync", "checksum", "length", "oversized"}


@FUZZ
@given(config=packet_configs(), payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=6))
def test_valid_frames_come_out_whole_in_any_chunks(
    config: dict[str, Any], payloads: list[bytes]
) -> None:
    """No mutation: every frame is found (a fixed frame without a marker or checksum cannot
    resync, but there is nothing to resync here)."""
    frames = [valid_frame(config, p) for p in payloads]
    if "length" in config and any(len(f) > config["max_frame"] for f in frames):
        return  # refused as oversized: the other test covers it
    stream = b"".join(frames)
    whole = framer_of(config).feed(stream)
    bytewise = framer_of(config)
    byte_by_byte = [out for i in range(len(stream)) for out in bytewise.feed(stream[i : i + 1])]
    assert len(whole) == len(frames)
    assert byte_by_byte == whole


@FUZZ
@given(data=st.binary(max_size=200), name=st.sampled_from(["xor", "sum", "sum16", "crc16_modbus"]))
def test_running_checksum_agrees_with_a_direct_pass(data: bytes, name: Any) -> None:
    cs = checksum(name)
    sums = cs.running()
    sums.extend(data)
    for start in range(0, len(data) + 1, 7):
        for end in range(start, len(data) + 1, 5):
            assert sums.of(start, end) == cs.compute(data[start:end])


# -- the framers a config builds -----------------------------------------------------------------

FRAMINGS = st.sampled_from(
    [
        "line",
        {"type": "delimiter", "delimiter": "7e", "max_frame": 32},
        {"type": "fixed", "length": 8, "start": "aa", "checksum": "xor"},
        {"type": "fixed", "length": 9, "checksum": "crc16_modbus"},
        {"type": "binary", "start": "aa55", "length_size": 2, "checksum": "crc16_modbus"},
        {"type": "binary", "start": "424d", "checksum": "sum16", "max_frame": 40},
    ]
)


@FUZZ
@given(framing=FRAMINGS, data=st.binary(max_size=800), cuts=st.lists(st.integers(0, 10_000)))
def test_configured_framers_never_raise_and_stay_bounded(
    framing: Any, data: bytes, cuts: list[int]
) -> None:
    device = SerialDevice.model_validate(
        {"id": "d", "type": "serial", "port": "/dev/null", "framing": framing, "max_line": 64}
    )
    framer = make_framer(device)
    limit = {"line": 64}.get(framing) if isinstance(framing, str) else None
    if limit is None:
        limit = framing.get("max_frame", framing.get("length", 256))
    for chunk in chunked(data, cuts):
        for frame in framer.feed(chunk):
            assert len(frame) <= limit
    assert framer.reset() <= limit + 1  # a split terminator's first byte, at most
