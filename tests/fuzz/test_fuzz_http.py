"""The HTTP endpoint against arbitrary bytes: whatever a client sends, it gets an HTTP answer or a
closed connection, nothing fails inside the server, and no connection stays open after it.

The real server (`HttpServer` with the real `Endpoints`) runs on its own event loop in a thread
for the whole module; each example is one real connection that sends its bytes, says it is
done (half-close) and reads until the server closes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import MetricsSection
from gateway.health import Verdict
from gateway.http import Endpoints, HttpLimits, HttpServer
from gateway.metrics import Metrics

pytestmark = pytest.mark.timeout(300)

HOST = "127.0.0.1"
LIMITS = HttpLimits.from_config(MetricsSection(header_timeout=1.0, idle_timeout=1.0))
STATUSES = {b"200", b"400", b"404", b"405", b"408", b"431"}


class Running:
    """The server on its own loop in a thread, for the module."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.loop = asyncio.new_event_loop()
        self.server: HttpServer | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        ok = Verdict(True, [])
        endpoints = Endpoints(
            self.metrics.registry,
            refresh=lambda: None,
            liveness=lambda: ok,
            readiness=lambda: ok,
            status=lambda: {"devices": {}},
        )
        self._stop = asyncio.Event()
        app = endpoints.application()
        async with HttpServer(HOST, 0, app, limits=LIMITS, refused=self.metrics.refused) as srv:
            self.server = srv
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Running:
        self._thread.start()
        assert self._ready.wait(10), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def open_connections(self) -> int:
        assert self.server is not None
        return self.server.connections


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    with Running() as server:
        yield server


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # closed on us mid-send: a refusal, fine
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        return reply


# Heads the server takes up to where the random bytes start: the handlers are reached too.
REQUEST_LINES = st.sampled_from(
    [
        b"",
        b"GET /healthz HTTP/1.1\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
        b"HEAD /status HTTP/1.1\r\nHost: x\r\n",
        b"GET /static/page.js HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /nope HTTP/1.1\r\nHost: x\r\n",
    ]
)
TAILS = st.one_of(
    st.binary(max_size=2048),
    st.sampled_from([b"\r\n", b"X: y\r\n\r\n", b"Content-Length: 3\r\n\r\nabc"]),
)


@FUZZ
@given(head=REQUEST_LINES, rest=TAILS)
def test_any_bytes_get_an_http_answer_or_a_close(
    running: Running, caplog: pytest.LogCaptureFixture, head: bytes, rest: bytes
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway"):
        reply = exchange(running.port, head + rest)
    if reply:
        assert reply.startswith(b"HTTP/1.1 "), reply[:80]
        assert reply[9:12] in STATUSES, reply[:80]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_nothing_stays_open_after_the_fuzzing(running: Running) -> None:
    exchange(running.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(100):
        if running.open_connections() == 0:
            break
        threading.Event().wait(0.05)
    assert running.open_connections() == 0
