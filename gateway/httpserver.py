"""HTTP/1.1 for the endpoint: h11 (the parser uvicorn uses) over the event loop's own sockets.

The one module that knows h11. It owns the listening sockets and every client connection, and it
bounds what a client can take (issue 21):

- count: at most `max_connections` open. A new one beyond it closes the connection that has
  waited longest without a complete request (so idle or trickling clients cannot lock out
  `/healthz`); if every one is being answered, the new one gets a 503 and is closed at once.
- time: a request head must arrive within `header_timeout` (then 408), a kept-alive connection
  may wait `idle_timeout` for its next request, a client must read its answer within
  `send_timeout`.
- size: a request head is at most `HTTP_MAX_HEAD` bytes (then 431); a body is never read (the
  connection closes after the answer).
- accept errors (out of fds) pause accepting briefly instead of spinning.

Each refusal is counted in `gateway_input_refused_total{edge="http", reason}` and logged at most
once a minute per reason and client address. Handlers are plain functions from `Request` to
`Response`: nothing they do waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import h11

from gateway.config import MetricsSection
from gateway.errors import HttpServerError
from gateway.limits import HTTP_ACCEPT_PAUSE as ACCEPT_PAUSE
from gateway.limits import HTTP_BACKLOG as BACKLOG
from gateway.limits import HTTP_CLOSE_TIMEOUT as CLOSE_TIMEOUT
from gateway.limits import HTTP_MAX_HEAD as MAX_HEAD
from gateway.limits import HTTP_READ_SIZE as READ_SIZE
from gateway.throttle import LogThrottle

if TYPE_CHECKING:
    from prometheus_client import Counter

log = logging.getLogger("gateway.http")
SERVER = "iot-gateway"  # no versions: they only help whoever looks for a known hole
# accept() failures that mean "no resources now": more connections than fds.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string, not percent-decoded: our paths are plain ASCII
    headers: Mapping[str, str]  # lower-case names; the first of repeated ones
    remote: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


App = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_connections: int
    header_timeout: float
    idle_timeout: float
    send_timeout: float

    @classmethod
    def from_config(cls, cfg: MetricsSection) -> HttpLimits:
        return cls(cfg.max_connections, cfg.header_timeout, cfg.idle_timeout, cfg.send_timeout)


class _RefusedError(Exception):
    """A connection closed by us for a reason counted as a refusal; `status`, if any, is said
    to the client first."""

    def __init__(self, reason: str, status: int | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status


@dataclass(eq=False, slots=True)
class _Connection:
    sock: socket.socket
    remote: str
    busy: bool = False  # an answer is being made or sent: not to be evicted
    served: bool = False  # answered a request: now kept alive, waiting for the next
    since: float = field(default_factory=time.monotonic)  # waiting for a request since
    task: asyncio.Task[None] | None = None


class HttpServer:
    """Owns the listening sockets of the HTTP endpoint and every connection to them."""

    def __init__(
        self,
        host: str,
        port: int,
        app: App,
        *,
        limits: HttpLimits | None = None,
        refused: Counter | None = None,
    ) -> None:
        self.host = host
        self.port = port  # the bound port once entered (also when 0 was asked for)
        self._app = app
        if limits is None:
            limits = HttpLimits.from_config(MetricsSection())
        self._limits = limits
        self._refused = refused
        self._throttle = LogThrottle(log)
        self._listeners: list[socket.socket] = []
        self._open: dict[_Connection, None] = {}  # insertion-ordered set
        self._stack: contextlib.AsyncExitStack | None = None
        self._group: asyncio.TaskGroup | None = None
        self._accepting: list[asyncio.Task[None]] = []

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._open)

    # -- lifetime ----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._listeners = _listen(self.host, self.port)
        self.port = self._listeners[0].getsockname()[1]
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._close_listeners)
            self._group = await stack.enter_async_context(asyncio.TaskGroup())
            for listener in self._listeners:
                name = f"http[accept {_url(listener.getsockname())}]"
                self._accepting.append(
                    self._group.create_task(self._accept_loop(listener), name=name)
                )
            self._stack = stack.pop_all()
        urls = ", ".join(_url(s.getsockname()) for s in self._listeners)
        log.info("http: serving /metrics, /healthz, /readyz, /status and the page / on %s", urls)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        for task in self._accepting:
            task.cancel()  # no new connections
        await asyncio.wait(self._accepting)
        self._close_listeners()
        await self._finish_answers()
        for conn in list(self._open):
            _cancel(conn)
        await stack.aclose()  # the task group: every connection's task has ended

    async def _finish_answers(self) -> None:
        """Let answers being sent finish, within a bound; idle connections end at once."""
        for conn in [c for c in self._open if not c.busy]:
            _cancel(conn)
        busy = [c.task for c in self._open if c.task is not None and c.busy]
        if busy:
            _, late = await asyncio.wait(busy, timeout=CLOSE_TIMEOUT)
            if late:
                log.warning("http: %d answers not sent within %gs", len(late), CLOSE_TIMEOUT)

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.close()

    # -- accepting ---------------------------------------------------------------------------
    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except (BlockingIOError, ConnectionAbortedError):
                continue  # the client gave up before we accepted it
            except OSError as exc:
                await self._accept_failed(exc)
                continue
            self._admit(sock, _host(address))
            # Let a connection just evicted close its socket before the next accept needs one.
            await asyncio.sleep(0)

    async def _accept_failed(self, exc: OSError) -> None:
        """Out of fds (or another failure of ours): pause, the kernel keeps them queued."""
        self._count("accept_error")
        advice = "raise LimitNOFILE or lower metrics.max_connections"
        if exc.errno not in _OUT_OF_RESOURCES:
            advice = "retrying"
        self._throttle.warning(
            ("accept_error",),
            "http: cannot accept connections: %s (%d open here; %s)",
            os.strerror(exc.errno) if exc.errno else exc,
            len(self._open),
            advice,
        )
        await asyncio.sleep(ACCEPT_PAUSE)

    def _admit(self, sock: socket.socket, remote: str) -> None:
        sock.setblocking(False)
        if len(self._open) >= self._limits.max_connections and not self._evict():
            self._refuse_at_once(sock, remote)
            return
        conn = _Connection(sock, remote)
        self._open[conn] = None
        assert self._group is not None
        conn.task = self._group.create_task(self._serve(conn), name=f"http[{remote}]")
        conn.task.add_done_callback(lambda _: self._closed(conn))

    def _evict(self) -> bool:
        """Close the connection that has waited longest without a request; False if every one
        is being answered."""
        waiting = [c for c in self._open if not c.busy]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.since)
        del self._open[oldest]
        _cancel(oldest)
        self._note("evicted", oldest.remote, "no request yet; room made for a new one")
        return True

    def _refuse_at_once(self, sock: socket.socket, remote: str) -> None:
        self._note("connections", remote, "every connection is being answered")
        _say_and_close(sock, _refusal(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections"))

    def _closed(self, conn: _Connection) -> None:
        """A connection's task ended (or was cancelled before it ran)."""
        _release(conn.sock)
        self._open.pop(conn, None)

    # -- one connection ----------------------------------------------------------------------
    async def _serve(self, conn: _Connection) -> None:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while await self._exchange(conn, h):
                h.start_next_cycle()
        except _RefusedError as refusal:
            self._note(refusal.reason, conn.remote, str(refusal))
            if refusal.status is not None:
                _say(conn.sock, _answer_with(h, refusal.status, str(refusal)))
        except (OSError, h11.LocalProtocolError):
            pass  # the client went away mid-answer
        except Exception:
            # A bug of ours: this connection ends, the endpoint and the gateway go on.
            self._throttle.error(("bug",), "http: a connection failed", exc_info=True)
        finally:
            _release(conn.sock)

    async def _exchange(self, conn: _Connection, h: h11.Connection) -> bool:
        """One request and its answer; whether the connection may serve another."""
        event = await self._read_head(conn, h)
        if not isinstance(event, h11.Request):
            return False  # the client closed
        conn.busy = True
        request = _request(event, conn.remote)
        response = self._respond(request)
        close = h.their_state is not h11.DONE  # a body we will not read: close after
        data = _encode(h, response, head=request.method == "HEAD", close=close)
        try:
            async with asyncio.timeout(self._limits.send_timeout):
                await asyncio.get_running_loop().sock_sendall(conn.sock, data)
        except TimeoutError:
            raise _RefusedError("send_timeout", None, "the answer was not read in time") from None
        conn.busy, conn.served, conn.since = False, True, time.monotonic()
        return h.our_state is h11.DONE and h.their_state is h11.DONE

    async def _read_head(self, conn: _Connection, h: h11.Connection) -> object:
        """The next event once a whole request head is in, or None when the client closed or
        stayed idle past idle_timeout after an answer."""
        event = _next_event(h, eof=False)
        if event is not h11.NEED_DATA:
            return event  # pipelined: it was here already
        loop = asyncio.get_running_loop()
        if conn.served and not h.trailing_data[0]:
            # Kept alive with nothing sent yet: wait quietly for the next request.
            try:
                async with asyncio.timeout(self._limits.idle_timeout):
                    data = await loop.sock_recv(conn.sock, READ_SIZE)
            except TimeoutError:
                return None
            h.receive_data(data)
            event = _next_event(h, eof=not data)
        timeout = self._limits.header_timeout
        try:
            async with asyncio.timeout(timeout):
                while event is h11.NEED_DATA:
                    data = await loop.sock_recv(conn.sock, READ_SIZE)
                    h.receive_data(data)
                    event = _next_event(h, eof=not data)
        except TimeoutError:
            raise _RefusedError(
                "header_timeout", 408, f"no whole request within {timeout:g}s"
            ) from None
        return event

    def _respond(self, request: Request) -> Response:
        try:
            return self._app(request)
        except Exception:
            # A bug of ours, not the client's: say so, keep serving; a client repeating the
            # request must not turn it into a flood of tracebacks.
            self._throttle.error(("bug",), "http: an answer failed", exc_info=True)
            return Response(500, b"internal error\n")

    # -- counting and logging ----------------------------------------------------------------
    def _count(self, reason: str) -> None:
        if self._refused is not None:
            self._refused.labels("http", reason).inc()

    def _note(self, reason: str, remote: str, detail: str) -> None:
        self._count(reason)
        self._throttle.warning(
            (reason, remote), "http: closed a connection from %s (%s): %s", remote, reason, detail
        )


def _cancel(conn: _Connection) -> None:
    if conn.task is not None:
        conn.task.cancel()  # its `finally` releases the socket
    else:
        _release(conn.sock)


def _release(sock: socket.socket) -> None:
    """Close a client socket, first taking it out of the loop's selector: its fd number is
    reused by the next accept at once."""
    if sock.fileno() != -1:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        loop.remove_writer(sock.fileno())
        sock.close()


def _say(sock: socket.socket, data: bytes) -> None:
    """Send what fits at once, never waiting: a refused client gets its reason if it reads."""
    with contextlib.suppress(OSError):
        sock.send(data)


def _say_and_close(sock: socket.socket, data: bytes) -> None:
    _say(sock, data)
    sock.close()  # never registered with the loop


def _next_event(h: h11.Connection, *, eof: bool) -> object:
    try:
        return h.next_event()
    except h11.RemoteProtocolError as exc:
        if eof:
            return h11.ConnectionClosed()  # the client gave up mid-request: nothing to refuse
        if exc.error_status_hint == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
            raise _RefusedError("too_large", 431, f"request head over {MAX_HEAD} bytes") from None
        # h11's message may quote the input: the log and the answer get our words only.
        raise _RefusedError("bad_request", 400, "not an HTTP/1.1 request") from None


def _request(event: h11.Request, remote: str) -> Request:
    headers: dict[str, str] = {}
    for name, value in event.headers:
        headers.setdefault(name.decode("ascii"), value.decode("latin-1"))
    # h11 has checked that the target has only printable ASCII.
    path = event.target.decode("ascii").partition("?")[0]
    return Request(event.method.decode("ascii"), path, headers, remote)


def _encode(h: h11.Connection, response: Response, *, head: bool, close: bool) -> bytes:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("date", formatdate(usegmt=True)),
        ("server", SERVER),
        *response.headers,
    ]
    if close:
        headers.append(("connection", "close"))
    reason = HTTPStatus(response.status).phrase.encode("ascii")
    data = h.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    if not head and response.body:
        data = (data or b"") + (h.send(h11.Data(data=response.body)) or b"")
    return (data or b"") + (h.send(h11.EndOfMessage()) or b"")


def refusal_response(status: int, reason: str) -> Response:
    body = json.dumps({"status": "refused", "reasons": [reason]}).encode()
    return Response(status, body, "application/json; charset=utf-8")


def _answer_with(h: h11.Connection, status: int, reason: str) -> bytes:
    """The refusal as the answer on this connection, if h11 still lets us answer on it."""
    if h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return b""
    try:
        return _encode(h, refusal_response(status, reason), head=False, close=True)
    except h11.LocalProtocolError:
        return b""


def _refusal(status: int, reason: str) -> bytes:
    """The refusal as the answer of a connection that will not be read from."""
    fresh = h11.Connection(h11.SERVER)
    return _encode(fresh, refusal_response(status, reason), head=False, close=True)


def _advice(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "another program (another gateway?) uses it: change metrics.port, or 0 for any"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this host has no such address: check metrics.host"
    if exc.errno == errno.EACCES:
        return "ports below 1024 need privileges: use a higher metrics.port"
    return "check metrics.host and metrics.port"


def _listen(host: str, port: int) -> list[socket.socket]:
    """A listening socket for each address `host` resolves to (`localhost`: IPv4 and IPv6),
    all on one port (the first's, when 0 asked for any)."""
    listeners: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(listeners) > 1:  # the others on the first's free port
                sock.bind((address[0], listeners[0].getsockname()[1], *address[2:]))
            else:
                sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in listeners:
            sock.close()
        reason = os.strerror(exc.errno) if isinstance(exc.errno, int) else str(exc)
        if isinstance(exc, socket.gaierror):
            reason = exc.strerror or str(exc)
        advice = _advice(exc) if not isinstance(exc, socket.gaierror) else "check metrics.host"
        raise HttpServerError(f"cannot listen on {host}:{port}: {reason} ({advice})") from exc
    return listeners


def _host(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) else str(address)


def _url(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"
