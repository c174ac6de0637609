"""LineFramer: frames from any chunking of a byte stream, CR handling, oversized frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.framing import LineFramer

pytestmark = pytest.mark.timeout(30)


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[bytes]:
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
