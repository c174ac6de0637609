"""Framers: lines and delimiters, fixed and binary packets with checksums; any chunking gives
the same frames and error counts, and random bytes never raise or grow memory."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.framing import Framer, LengthField, LineFramer, PacketFramer
from gateway.framing.checksums import Checksum, checksum, crc16_modbus, xor8

pytestmark = pytest.mark.timeout(30)


def feed_all(framer: Framer, chunks: list[bytes]) -> list[bytes]:
    return [frame for chunk in chunks for frame in framer.feed(chunk)]


def test_lines_are_split_and_the_unfinished_one_is_kept() -> None:
    framer = LineFramer()
    assert framer.feed(b"temp=21.5\nhum=40\npres") == [b"temp=21.5", b"hum=40"]
    assert framer.feed(b"sure=1013") == []
    assert framer.feed(b"\n") == [b"pressure=1013"]
    assert framer.oversized == 0


def test_crlf_is_stripped_for_newline_terminated_devices() -> None:
    framer = LineFramer(b"\n")
    assert framer.feed(b"a=1\r\nb=2\r") == [b"a=1"]
    assert framer.feed(b"\nc=3\n") == [b"b=2", b"c=3"]


def test_only_a_trailing_cr_is_stripped() -> None:
    framer = LineFramer(b"\n")
    assert framer.feed(b"\ra=1\rb=2\r\r\n") == [b"\ra=1\rb=2\r"]


def test_empty_lines_are_skipped() -> None:
    framer = LineFramer(b"\n")
    assert framer.feed(b"\n\r\n\na=1\n\n") == [b"a=1"]


def test_multibyte_terminator() -> None:
    framer = LineFramer(b"\r\n")
    assert framer.feed(b"a=1\r") == []
    assert framer.feed(b"\nb=2\nc=3\r\n") == [b"a=1", b"b=2\nc=3"]


def test_other_terminator_keeps_cr() -> None:
    framer = LineFramer(b";")
    assert framer.feed(b"a=1\r;b=2;") == [b"a=1\r", b"b=2"]


def test_empty_terminator_is_refused() -> None:
    with pytest.raises(ValueError, match="terminator"):
        LineFramer(b"")


def test_oversized_frame_is_counted_and_the_stream_resynchronises() -> None:
    framer = LineFramer(b"\n", max_len=16)
    assert framer.feed(b"x" * 40 + b"\nok=1\n") == [b"ok=1"]
    assert framer.oversized == 1


def test_unterminated_garbage_is_counted_once_and_skipped_to_the_next_line() -> None:
    framer = LineFramer(b"\n", max_len=16)
    for _ in range(100):  # a device that never sends a terminator
        assert framer.feed(b"y" * 10) == []
    assert framer.oversized == 1
    assert framer.feed(b"yyy\nok=1\n") == [b"ok=1"]
    assert framer.oversized == 1


def test_frame_of_exactly_max_len_is_kept() -> None:
    framer = LineFramer(b"\n", max_len=16)
    assert framer.feed(b"z" * 16 + b"\n") == [b"z" * 16]
    assert framer.feed(b"z" * 17 + b"\n") == []
    assert framer.oversized == 1


def test_max_len_frame_with_a_split_multibyte_terminator_is_kept() -> None:
    # The "\r" that may begin the terminator is not part of the frame: the framer must not
    # count it against max_len before it knows.
    framer = LineFramer(b"\r\n", max_len=16)
    assert framer.feed(b"z" * 16 + b"\r") == []
    assert framer.feed(b"\n") == [b"z" * 16]
    assert framer.oversized == 0


# Streams built from pieces that often contain (parts of) terminators.
PIECES = st.sampled_from(
    [b"a", b"k=1", b"\r", b"\n", b"\r\n", b";", b"x" * 7, b"\xff\x00", b"temp=21.5,hum=40"]
)
STREAMS = st.lists(PIECES, max_size=60).map(b"".join)
TERMINATORS = st.sampled_from([b"\n", b"\r\n", b";", b"\n\n", b"END"])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]


def reference_frames(data: bytes, terminator: bytes, max_len: int) -> list[bytes]:
    """What a framer must return for a stream fed in one piece, written the obvious way."""
    *complete, _unfinished = data.split(terminator)
    frames = []
    for frame in complete:
        if len(frame) > max_len:
            continue
        stripped = frame[:-1] if terminator == b"\n" and frame.endswith(b"\r") else frame
        if stripped:
            frames.append(stripped)
    return frames


@settings(max_examples=300, deadline=None)
@given(
    data=STREAMS,
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    terminator=TERMINATORS,
    max_len=st.integers(1, 40),
)
def test_any_chunking_gives_the_same_frames(
    data: bytes, cuts: list[int], terminator: bytes, max_len: int
) -> None:
    whole = LineFramer(terminator, max_len)
    expected = whole.feed(data)
    chunked = LineFramer(terminator, max_len)
    bytewise = LineFramer(terminator, max_len)

    assert feed_all(chunked, split(data, cuts)) == expected
    assert feed_all(bytewise, [bytes([b]) for b in data]) == expected
    assert chunked.oversized == bytewise.oversized == whole.oversized


@settings(max_examples=300, deadline=None)
@given(data=STREAMS, terminator=TERMINATORS, max_len=st.integers(1, 40))
def test_whole_stream_matches_the_reference(data: bytes, terminator: bytes, max_len: int) -> None:
    # Terminate the stream so that nothing is left unfinished (the framer may count an
    # unfinished oversized frame early, which the reference cannot know).
    data += terminator
    framer = LineFramer(terminator, max_len)
    assert framer.feed(data) == reference_frames(data, terminator, max_len)
    assert framer.oversized == sum(len(f) > max_len for f in data.split(terminator)[:-1])


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=200), max_size=30),
    terminator=st.binary(min_size=1, max_size=3),
    max_len=st.integers(1, 64),
)
def test_random_bytes_never_raise_and_frames_respect_max_len(
    chunks: list[bytes], terminator: bytes, max_len: int
) -> None:
    framer = LineFramer(terminator, max_len)
    for frame in feed_all(framer, chunks):
        assert frame
        assert len(frame) <= max_len
        assert terminator not in frame


# -- delimiter framing ---------------------------------------------------------------------------


def test_delimiter_framer_is_binary_safe() -> None:
    framer = LineFramer(b"\x7e", max_len=8, strip_cr=False)
    assert framer.feed(b"\x01\r\x7e\x7e\x02\x0a\x7e") == [b"\x01\r", b"\x02\x0a"]
    assert framer.feed(b"\x00" * 20 + b"\x7e\x03\x7e") == [b"\x03"]
    assert framer.errors == {"oversized": 1}


def test_reset_drops_an_unfinished_frame() -> None:
    framer = LineFramer(b"\n")
    assert framer.feed(b"half") == []
    assert framer.reset() == 4
    assert framer.feed(b"=1\nk=2\n") == [b"=1", b"k=2"]


# -- checksums -----------------------------------------------------------------------------------


def test_checksum_check_values() -> None:
    data = b"123456789"
    assert crc16_modbus(data) == 0x4B37  # the CRC catalogue's check value for CRC-16/MODBUS
    assert checksum("crc16_modbus").encode(data) == b"\x37\x4b"  # low byte first, as Modbus
    assert checksum("crc16_modbus", "big").encode(data) == b"\x4b\x37"
    assert xor8(data) == 0x31
    assert checksum("sum").encode(data) == bytes([sum(data) & 0xFF]) == b"\xdd"
    assert checksum("sum16").encode(data) == (477).to_bytes(2, "big")
    assert checksum("xor").encode(b"") == b"\x00"


# -- packet framing (fixed and binary) -----------------------------------------------------------

CRC = checksum("crc16_modbus")
ONE_BYTE_LENGTH = LengthField(1)


def packet(
    payload: bytes,
    start: bytes = b"\xaa",
    length: LengthField | None = ONE_BYTE_LENGTH,
    cs: Checksum | None = CRC,
    includes_start: bool = False,
) -> bytes:
    """A frame as a device would send it."""
    head = b""
    if length is not None:
        head = (len(payload) - length.adjust).to_bytes(length.size, length.endian)
    body = head + payload
    tail = b"" if cs is None else cs.encode(start + body if includes_start else body)
    return start + body + tail


def binary_framer(**overrides: Any) -> PacketFramer:
    options: dict[str, Any] = {"length": LengthField(1), "checksum": CRC, "max_frame": 64}
    return PacketFramer(b"\xaa", **{**options, **overrides})


def test_binary_frames_in_any_chunks() -> None:
    framer = binary_framer()
    stream = packet(b"\x01\x02\x03") + packet(b"") + packet(b"\xaa\xaa")
    assert framer.feed(stream[:2]) == []
    assert framer.feed(stream[2:9]) == [b"\x01\x02\x03"]
    assert framer.feed(stream[9:]) == [b"", b"\xaa\xaa"]
    assert framer.errors == {}


def test_garbage_before_a_frame_is_one_resync() -> None:
    framer = binary_framer()
    assert framer.feed(b"\x00\x01\x02") == []
    assert framer.feed(b"\x03" + packet(b"ok")) == [b"ok"]
    assert framer.errors == {"resync": 1}
    assert framer.take_errors() == {"resync": 1}
    assert framer.take_errors() == {}


def test_bad_checksum_is_counted_and_the_next_frame_is_found() -> None:
    bad = bytearray(packet(b"\x10\x20"))
    bad[3] ^= 0xFF
    framer = binary_framer()
    assert framer.feed(bytes(bad) + packet(b"\x30")) == [b"\x30"]
    assert framer.errors == {"checksum": 1}  # the rest of the bad frame is part of that error


def test_marker_inside_garbage_costs_at_most_that_frame() -> None:
    framer = binary_framer()
    # 0xAA 0x05 announces a 5-byte payload that swallows the start of the real frame: the
    # checksum fails, and the search resumes one byte after the false marker.
    assert framer.feed(b"\xaa\x05\x00" + packet(b"real")) == [b"real"]
    assert framer.errors == {"checksum": 1}


def test_length_beyond_max_frame_is_oversized_and_not_buffered() -> None:
    framer = binary_framer(max_frame=16)
    assert framer.feed(b"\xaa\xff" + b"\x00" * 5) == []
    assert framer.errors == {"oversized": 1}
    assert framer.reset() < 16  # the announced 255 bytes were never awaited
    assert framer.feed(packet(b"x" * 11)) == [b"x" * 11]  # 1 + 1 + 11 + 2 = 16: fits


def test_negative_payload_size_is_a_length_error() -> None:
    framer = binary_framer(length=LengthField(1, adjust=-2))
    assert framer.feed(b"\xaa\x01" + packet(b"ab", length=LengthField(1, adjust=-2))) == [b"ab"]
    assert framer.errors == {"length": 1}


def test_pms5003_style_frame() -> None:
    # Plantower PMS5003: 42 4D, a 2-byte big-endian length that counts the data and the 2-byte
    # checksum, and a 16-bit sum over everything before it, big-endian.
    length = LengthField(2, "big", adjust=-2)
    sum16 = checksum("sum16")
    data = bytes(range(26))
    frame = packet(data, start=b"BM", length=length, cs=sum16, includes_start=True)
    assert frame[2:4] == b"\x00\x1c"  # 28 = 26 data + 2 checksum
    framer = PacketFramer(b"BM", length=length, checksum=sum16, checksum_includes_start=True)
    assert framer.feed(b"M" + frame + frame[:10]) == [data]
    assert framer.feed(frame[10:]) == [data]
    assert framer.errors == {"resync": 1}


def test_fixed_frames_without_marker_or_checksum() -> None:
    framer = PacketFramer(b"", frame_size=4)
    assert framer.feed(b"abcdefg") == [b"abcd"]
    assert framer.feed(b"h12") == [b"efgh"]
    assert framer.reset() == 2


def test_fixed_frames_with_marker_and_checksum_resynchronise() -> None:
    xor = checksum("xor")
    frame = packet(b"\x01\x02", start=b"\x55", length=None, cs=xor)
    framer = PacketFramer(b"\x55", frame_size=4, checksum=xor)
    # 00: skipped (resync); 55 99 55 01: a false frame (checksum); then the two real ones.
    assert framer.feed(b"\x00\x55\x99" + frame + frame) == [b"\x01\x02"] * 2
    assert framer.errors == {"resync": 1, "checksum": 1}


def test_fixed_frame_must_have_room_for_a_payload() -> None:
    with pytest.raises(ValueError, match="longer"):
        PacketFramer(b"\x55", frame_size=3, checksum=CRC)


PAYLOADS = st.binary(max_size=12)
GARBAGE = st.binary(max_size=8)
START = st.sampled_from([b"\xaa", b"\xaa\x55", b"BM"])
LENGTHS = st.sampled_from(
    [LengthField(1), LengthField(2, "little"), LengthField(2, "big", adjust=-2), None]
)
CHECKSUMS = st.sampled_from([None, *(checksum(n) for n in ("xor", "sum", "sum16", "crc16_modbus"))])


@st.composite
def packet_streams(draw: st.DrawFn) -> tuple[PacketFramer, bytes, list[bytes]]:
    """A framer and a stream of good frames, garbage and damaged frames; also the payloads of
    the good frames that no damage can hide (those that follow a marker-free gap)."""
    start, length, cs = draw(START), draw(LENGTHS), draw(CHECKSUMS)
    includes_start = draw(st.booleans())
    size = draw(st.integers(1, 10))
    min_size = len(start) + (cs.size if cs else 0) + 1
    if length is None:
        size = max(size, min_size)
        payloads = st.binary(min_size=size - min_size + 1, max_size=size - min_size + 1)
    else:
        payloads = PAYLOADS
    framer = PacketFramer(
        start,
        length=length,
        frame_size=size if length is None else 0,
        checksum=cs,
        checksum_includes_start=includes_start,
        max_frame=40,
    )
    parts: list[bytes] = []
    good: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["frame", "garbage", "damaged"]))
        payload = draw(payloads)
        frame = packet(payload, start, length, cs, includes_start)
        if kind == "frame":
            parts.append(frame)
            good.append(payload)
        elif kind == "garbage":
            parts.append(draw(GARBAGE))
        else:
            cut = draw(st.integers(0, len(frame)))
            parts.append(frame[:cut])
    return framer, b"".join(parts), good


@settings(max_examples=150, deadline=None)
@given(stream=packet_streams(), cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_packet_framer_gives_the_same_frames_and_counts_in_any_chunks(
    stream: tuple[PacketFramer, bytes, list[bytes]], cuts: list[int]
) -> None:
    framer, data, _ = stream
    whole = copy.deepcopy(framer)
    expected = whole.feed(data)
    bytewise = copy.deepcopy(framer)
    assert feed_all(framer, split(data, cuts)) == expected
    assert feed_all(bytewise, [bytes([b]) for b in data]) == expected
    assert framer.errors == bytewise.errors == whole.errors


@settings(max_examples=150, deadline=None)
@given(
    start=START,
    length=LENGTHS.filter(lambda f: f is not None),
    cs=CHECKSUMS.filter(lambda c: c is not None),
    payloads=st.lists(PAYLOADS, max_size=6),
    garbage=st.lists(GARBAGE, max_size=6),
)
def test_every_frame_between_garbage_is_recovered(
    start: bytes,
    length: LengthField,
    cs: Checksum,
    payloads: list[bytes],
    garbage: list[bytes],
) -> None:
    framer = PacketFramer(start, length=length, checksum=cs, max_frame=40)
    stream = b""
    for i, payload in enumerate(payloads):
        noise = garbage[i] if i < len(garbage) else b""
        stream += noise.replace(start[:1], b"") + packet(payload, start, length, cs)
    assert framer.feed(stream) == payloads
    assert set(framer.errors) <= {"resync"}


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=100), max_size=30),
    start=START,
    length=LENGTHS,
    cs=CHECKSUMS,
    max_frame=st.integers(8, 64),
)
def test_random_bytes_never_raise_and_memory_stays_bounded(
    chunks: list[bytes],
    start: bytes,
    length: LengthField | None,
    cs: Checksum | None,
    max_frame: int,
) -> None:
    framer = PacketFramer(
        start,
        length=length,
        frame_size=8 if length is None else 0,
        checksum=cs,
        max_frame=max_frame,
    )
    for chunk in chunks:
        for payload in framer.feed(chunk):
            assert len(payload) <= max_frame
        assert framer.reset() <= max_frame  # what is buffered is bounded ...
    for chunk in chunks:
        framer.feed(chunk)  # ... and without resets too:
        assert len(framer._buf) <= max_frame


def test_modbus_rtu_frames_as_fixed_frames_with_crc() -> None:
    # Read 2 holding registers from unit 1, and the unit's answer (values 234, 300): the
    # request's CRC bytes C4 0B are the well-known ones; a fixed framer with crc16_modbus reads
    # both, and resynchronises on the CRC after a stray byte.
    request = bytes.fromhex("01 03 00 00 00 02 c4 0b")
    assert PacketFramer(b"", frame_size=8, checksum=CRC).feed(request) == [request[:-2]]
    answer = bytes.fromhex("01 03 04 00 ea 01 2c") + CRC.encode(
        bytes.fromhex("01 03 04 00 ea 01 2c")
    )
    framer = PacketFramer(b"", frame_size=9, checksum=CRC)
    assert framer.feed(b"\x00" + answer + answer) == [answer[:-2]] * 2
    assert framer.errors == {"checksum": 1}


# -- resync in linear time (issue 21, item 18) ----------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=300),
    ranges=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=10),
    name=st.sampled_from(["xor", "sum", "sum16", "crc16_modbus"]),
    drop=st.integers(0, 310),
)
def test_running_checksums_give_the_checksum_of_any_range(
    data: bytes, ranges: list[tuple[int, int]], name: Any, drop: int
) -> None:
    """What the packet framer checks a candidate frame with: the checksum of a range from the
    running states, O(1) (O(log size) for the CRC) instead of a pass over the frame."""
    cs = checksum(name)
    sums = cs.running()
    half = len(data) // 2
    sums.extend(data[:half])
    sums.extend(data[half:])  # in pieces, as the bytes arrive
    for a, b in ranges:
        start, end = sorted((min(a, len(data)), min(b, len(data))))
        assert sums.of(start, end) == cs.compute(data[start:end])
    sums.drop(min(drop, len(data)))  # the framer dropped the front of its buffer
    rest = data[min(drop, len(data)) :]
    assert sums.of(0, len(rest)) == cs.compute(rest)


@pytest.mark.timeout(30)  # the quadratic resync took minutes here; linear, well under a second
def test_resync_through_a_flood_of_false_markers_is_linear() -> None:
    """Every 4 bytes a marker announcing a 60,000-byte frame whose CRC fails: each candidate
    used to cost a CRC pass over its 60 KB (64 KiB took 44 s of CPU); now the flood is
    counted at the cost of one pass over the bytes."""
    marker = b"\xaa\x55" + (60_000).to_bytes(2, "big")
    flood = marker * (256 * 1024 // 4)
    # Every candidate starts at a multiple of 4 of a 4-periodic stream: all are alike, and
    # their checksum does not match (so the count below is exact).
    candidate = flood[: 4 + 60_000 + 2]
    assert CRC.encode(candidate[4:-2]) != candidate[-2:]
    framer = PacketFramer(b"\xaa\x55", length=LengthField(2), checksum=CRC, max_frame=65_536)
    garbage = bytes(100)  # no marker: one resync
    chunks = [garbage] + [flood[i : i + 4096] for i in range(0, len(flood), 4096)]
    assert feed_all(framer, chunks) == []
    complete = sum(1 for p in range(0, len(flood), 4) if p + len(candidate) <= len(flood))
    assert framer.errors == {"resync": 1, "checksum": complete}
    assert len(framer._buf) < 65_536  # the pending candidates: bounded by max_frame
