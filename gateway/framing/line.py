"""Line (and delimiter) framing: split a byte stream at a terminator, bounded.

The framer never holds more than `max_len` bytes of an unfinished frame: a longer one is
discarded up to the next terminator (resynchronisation) and counted as `oversized`.
"""

from __future__ import annotations

from gateway.framing.base import ErrorCounts


class LineFramer(ErrorCounts):
    def __init__(
        self, terminator: bytes = b"\n", max_len: int = 4096, *, strip_cr: bool | None = None
    ) -> None:
        super().__init__()
        if not terminator:
            raise ValueError("terminator must not be empty")
        self.terminator = terminator
        self.max_len = max_len
        self._buf = bytearray()
        self._skipping = False  # inside an oversized frame: discard until the next terminator
        # "\n"-terminated devices very often send "\r\n": drop the "\r" too (text lines only;
        # a binary delimiter framer passes strip_cr=False).
        self._strip_cr = terminator == b"\n" if strip_cr is None else strip_cr

    @property
    def oversized(self) -> int:
        """Frames discarded for exceeding max_len."""
        return self.errors["oversized"]

    def reset(self) -> int:
        dropped = len(self._buf)
        self._buf.clear()
        self._skipping = False
        return dropped

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        term, tlen = self.terminator, len(self.terminator)
        start = 0
        buf = self._buf
        while (end := buf.find(term, start)) != -1:
            frame = bytes(buf[start:end])
            start = end + tlen
            if self._skipping:
                self._skipping = False
                continue
            if len(frame) > self.max_len:
                self._count("oversized")
                continue
            if self._strip_cr and frame.endswith(b"\r"):
                frame = frame[:-1]
            if frame:
                frames.append(frame)
        del buf[:start]
        # Up to tlen - 1 trailing bytes may be the start of a split terminator, not frame data.
        if len(buf) > self.max_len + tlen - 1:
            # An unterminated frame is already too long: drop it now, not when it ends, so a
            # device that never sends a terminator cannot grow our memory without bound.
            if not self._skipping:
                self._count("oversized")
            self._skipping = True
            # Keep a tail that might hold the start of a split terminator.
            del buf[: len(buf) - (tlen - 1)]
        return frames
