"""A minimal MQTT 5 broker that says "session taken over" (DISCONNECT reason 0x8E).

Brokers that send 0x8E when a second client connects with the same client id (EMQX, HiveMQ,
VerneMQ, newer mosquitto) are not installable here; mosquitto 2.0.11 just closes the older
connection. This speaks just enough MQTT 5 for the gateway's session to come up (CONNACK,
SUBACK, PUBACK, PINGRESP) and, `kick_after` seconds after each CONNACK, sends DISCONNECT 0x8E
and closes the connection, as a real broker does to the older of two connections. It routes
nothing: it is the other end of one protocol exchange, not a broker to test delivery against.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self

from helpers import HOST

CONNECT, PUBLISH, SUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 8, 12, 14
SESSION_TAKEN_OVER = 0x8E


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_packet(sock: socket.socket) -> tuple[int, int, bytes]:
    """(packet type, flags, body) of the next control packet."""
    first = _read_exact(sock, 1)[0]
    length, shift = 0, 0
    while True:  # the remaining length: a variable byte integer
        byte = _read_exact(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return first >> 4, first & 0x0F, _read_exact(sock, length)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _suback(body: bytes) -> bytes:
    """SUBACK granting each filter the QoS it asked for."""
    packet_id = body[:2]
    props, at = _varint(body, 2)
    at += props
    granted = b""
    while at < len(body):
        size = int.from_bytes(body[at : at + 2], "big")
        at += 2 + size
        granted += bytes([body[at] & 0x03])
        at += 1
    payload = packet_id + b"\x00" + granted
    return bytes([0x90, len(payload)]) + payload


class KickingBroker:
    def __init__(self, kick_after: float = 0.5) -> None:
        self.host = HOST
        self.kick_after = kick_after
        self._server = socket.create_server((HOST, 0))
        self.port: int = self._server.getsockname()[1]
        self.connects = 0
        self.kicks = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        accept = threading.Thread(target=self._accept, name="kickbroker", daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._server.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        self._server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            serve = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            serve.start()
            self._threads.append(serve)

    def _serve(self, sock: socket.socket) -> None:
        lock = threading.Lock()
        with sock, contextlib.suppress(ConnectionError, OSError):
            sock.settimeout(0.1)
            kick_at: float | None = None
            while not self._stop.is_set():
                if kick_at is not None and time.monotonic() >= kick_at:
                    with lock:
                        sock.sendall(bytes([DISCONNECT << 4, 2, SESSION_TAKEN_OVER, 0]))
                    self.kicks += 1
                    return
                try:
                    kind, flags, body = _read_packet(sock)
                except TimeoutError:
                    continue
                reply = b""
                if kind == CONNECT:
                    self.connects += 1
                    kick_at = time.monotonic() + self.kick_after
                    reply = b"\x20\x03\x00\x00\x00"  # CONNACK: no session, success, no props
                elif kind == SUBSCRIBE:
                    reply = _suback(body)
                elif kind == PUBLISH and (flags >> 1) & 0x03:
                    topic_len = int.from_bytes(body[:2], "big")
                    reply = b"\x40\x02" + body[2 + topic_len : 4 + topic_len]  # PUBACK
                elif kind == PINGREQ:
                    reply = b"\xd0\x00"
                elif kind == DISCONNECT:
                    return
                if reply:
                    with lock:
                        sock.sendall(reply)
