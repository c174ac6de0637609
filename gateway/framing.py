"""Framers: pure, incremental splitting of a byte stream into frames.

A framer is fed whatever the port delivered (any chunking) and returns the complete frames. It
never holds more than `max_len` bytes of an unfinished frame: a longer one is discarded up to the
next terminator (resynchronisation) and counted in `oversized`.
"""

from __future__ import annotations


class LineFramer:
    def __init__(self, terminator: bytes = b"\n", max_len: int = 4096) -> None:
        if not terminator:
            raise ValueError("terminator must not be empty")
        self.terminator = terminator
        self.max_len = max_len
        self.oversized = 0  # frames discarded for exceeding max_len
        self._buf = bytearray()
        self._skipping = False  # inside an oversized frame: discard until the next terminator
        # "\n"-terminated devices very often send "\r\n": drop the "\r" too.
        self._strip_cr = terminator == b"\n"

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
                self.oversized += 1
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
                self.oversized += 1
            self._skipping = True
            # Keep a tail that might hold the start of a split terminator.
            del buf[: len(buf) - (tlen - 1)]
        return frames
