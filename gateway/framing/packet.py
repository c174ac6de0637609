"""Binary packet framing: a start marker, an optional length field, a payload, a checksum.

    | start (0-8 bytes) | length (0, 1 or 2 bytes) | payload | checksum (0, 1 or 2 bytes) |

With a length field the payload has `length + adjust` bytes; without one every frame has the
same total size (fixed-length framing). The framer emits the payload only: the marker, length
and checksum are framing, checked here and of no use to a decoder.

Resynchronisation: bytes that cannot begin a frame are skipped up to the next start marker and
counted once per run as `resync`; a frame whose length field is out of range (`oversized`,
`length`) or whose checksum does not match (`checksum`) is counted, and the search for a start
marker resumes one byte after the rejected one, so a marker inside garbage costs one frame at
most. Decisions depend only on the bytes, never on how they were chunked.

Linear time: candidates overlap (a marker every few bytes, each announcing a long frame), so a
candidate's checksum comes from the running checksum of the buffer (`Checksum.running`, each
byte processed once), and a frame is copied only once it is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.framing.base import ErrorCounts
from gateway.framing.checksums import Checksum, Endian, RunningChecksum


@dataclass(frozen=True, slots=True)
class LengthField:
    size: int  # 1 or 2 bytes, right after the start marker
    endian: Endian = "big"
    adjust: int = 0  # payload bytes = field value + adjust (e.g. -2 if it counts a checksum)


class PacketFramer(ErrorCounts):
    def __init__(
        self,
        start: bytes,
        *,
        length: LengthField | None = None,
        frame_size: int = 0,
        checksum: Checksum | None = None,
        checksum_includes_start: bool = False,
        max_frame: int = 256,
    ) -> None:
        """`frame_size` is the total size of a fixed-length frame (no length field);
        `max_frame` bounds the total size a length field may announce."""
        super().__init__()
        self._start = start
        self._length = length
        self._header = len(start) + (length.size if length else 0)
        self._cs = checksum
        self._sums: RunningChecksum | None = checksum.running() if checksum else None
        self._cs_size = checksum.size if checksum else 0
        self._cs_from = 0 if checksum_includes_start else len(start)
        if length is None and frame_size <= self._header + self._cs_size:
            raise ValueError("a fixed frame must be longer than its marker and checksum")
        self._frame_size = frame_size
        self._max_frame = max(max_frame, frame_size)
        self._buf = bytearray()
        self._hunting = False  # skipping bytes after an error: count the run once

    def reset(self) -> int:
        dropped = len(self._buf)
        self._buf.clear()
        if self._sums is not None:
            self._sums.drop(dropped)
        return dropped

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        start, keep = self._start, max(len(self._start) - 1, 0)
        while True:
            found = buf.find(start, pos)
            if found == -1:  # keep a tail that may be the beginning of a split marker
                found = max(pos, len(buf) - keep)
                self._skip(found - pos)
                pos = found
                break
            self._skip(found - pos)
            pos = found
            if len(buf) - pos < self._header:
                break
            size = self._size_at(buf, pos)
            if size is None:
                pos += 1  # the length field is out of range: look for the next marker
                continue
            if len(buf) - pos < size:
                break
            if not self._checksum_ok(buf, pos, size):
                self._reject("checksum")
                pos += 1
                continue
            frames.append(bytes(buf[pos + self._header : pos + size - self._cs_size]))
            pos += size
            self._hunting = False
        del buf[:pos]
        if self._sums is not None:
            self._sums.drop(pos)
        return frames

    def _size_at(self, buf: bytearray, pos: int) -> int | None:
        """Total size of the frame starting at `pos`, or None (counted) if it cannot be one."""
        length = self._length
        if length is None:
            return self._frame_size
        at = pos + len(self._start)
        payload = int.from_bytes(buf[at : at + length.size], length.endian) + length.adjust
        if payload < 0:
            self._reject("length")
            return None
        size = self._header + payload + self._cs_size
        if size > self._max_frame:
            self._reject("oversized")
            return None
        return size

    def _checksum_ok(self, buf: bytearray, pos: int, size: int) -> bool:
        cs, sums = self._cs, self._sums
        if cs is None or sums is None:
            return True
        end = pos + size - self._cs_size
        if sums.covered < end:  # each byte enters the running checksum once
            sums.extend(buf[sums.covered : end])
        return cs.wire(sums.of(pos + self._cs_from, end)) == buf[end : pos + size]

    def _reject(self, reason: str) -> None:
        self._count(reason)
        self._hunting = True  # the bytes skipped after this error belong to it

    def _skip(self, n: int) -> None:
        if n > 0 and not self._hunting:
            self._count("resync")
            self._hunting = True
