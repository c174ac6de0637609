"""The HTTP endpoint (aiohttp): `/metrics`, `/healthz`, `/readyz`, `/status`, the status page.

`HttpServer` is an async context manager that owns the listening socket: entering binds it (port
0 picks a free port, logged), leaving closes it and the open connections within a bounded time.
It runs on the gateway's event loop, in the lifecycle's scope, not in a thread: `/healthz`
answering is itself the proof that the loop is responsive.

| path | 200 when | body |
|---|---|---|
| `/metrics` | always | Prometheus text format |
| `/healthz` | the loop answers and the supervisor makes progress (503 otherwise) | JSON |
| `/readyz` | MQTT connected, outbox below `metrics.outbox_high_water` (503 otherwise) | JSON |
| `/status` | always | JSON: links, states, last values per device, outbox, broker, BLE |
| `/` | always | the status page (HTML; `static/` its stylesheet and script) |
| `/status.html` | always | the page's `<main>`, rendered from a fresh `/status` |

With `metrics.auth`, every path but `/healthz` and `/readyz` needs the credentials
(`httpauth.py`). Every answer but `/metrics` says not to cache it; the page's answers also carry
a Content-Security-Policy that lets only its own script and stylesheet run.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway import httpauth
from gateway.config import MetricsAuth
from gateway.errors import HttpServerError
from gateway.health import Verdict
from gateway.limits import HTTP_CLOSE_TIMEOUT as CLOSE_TIMEOUT

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC = resources.files("gateway.statuspage") / "static"
STATIC_TYPES = {"page.css": "text/css", "page.js": "text/javascript"}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Endpoints:
    """The routes over callables that read the gateway (see `health.py`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        refresh: Callable[[], None],
        liveness: Callable[[], Verdict],
        readiness: Callable[[], Verdict],
        status: Callable[[], dict[str, Any]],
        auth: MetricsAuth | None = None,
    ) -> None:
        self._registry = registry
        self._refresh = refresh
        self._liveness = liveness
        self._readiness = readiness
        self._status = status
        self._auth = auth
        # Read once: the files are part of the installed package.
        self._static = {name: (STATIC / name).read_bytes() for name in STATIC_TYPES}

    def application(self) -> web.Application:
        middlewares = [] if self._auth is None else [httpauth.middleware(self._auth)]
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/status", self.status)
        app.router.add_get("/", self.page)
        app.router.add_get("/status.html", self.page_main)
        app.router.add_get("/static/{name}", self.static)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        self._refresh()
        body = generate_latest(self._registry)
        # CONTENT_TYPE_LATEST carries a charset parameter, which aiohttp wants separately.
        content_type, _, charset = CONTENT_TYPE_LATEST.partition("; charset=")
        return web.Response(body=body, content_type=content_type, charset=charset or None)

    async def healthz(self, request: web.Request) -> web.Response:
        return _verdict(self._liveness())

    async def readyz(self, request: web.Request) -> web.Response:
        return _verdict(self._readiness())

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status(), headers={"Cache-Control": "no-store"})

    async def page(self, request: web.Request) -> web.Response:
        from gateway.statuspage.render import render_page  # noqa: PLC0415 - on first view

        html = render_page(self._status())
        return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)

    async def page_main(self, request: web.Request) -> web.Response:
        from gateway.statuspage.render import render_main  # noqa: PLC0415 - on first view

        html = render_main(self._status())
        return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._static.get(name)
        if body is None:
            raise web.HTTPNotFound()
        headers = {"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"}
        return web.Response(
            body=body, content_type=STATIC_TYPES[name], charset="utf-8", headers=headers
        )


def _verdict(verdict: Verdict) -> web.Response:
    return web.json_response(verdict.document(), status=200 if verdict.ok else 503)


def _advice(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "another program (another gateway?) uses it: change metrics.port, or 0 for any"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this host has no such address: check metrics.host"
    if exc.errno == errno.EACCES:
        return "ports below 1024 need privileges: use a higher metrics.port"
    return "check metrics.host and metrics.port"


class HttpServer:
    """Owns the listening socket of the HTTP endpoint."""

    def __init__(self, host: str, port: int, app: web.Application) -> None:
        self.host = host
        self.port = port  # the bound port once entered (also when 0 was asked for)
        self._app = app
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        runner = web.AppRunner(
            self._app, handle_signals=False, access_log=None, shutdown_timeout=CLOSE_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.host}:{self.port}"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise HttpServerError(f"cannot listen on {where}: {reason} ({_advice(exc)})") from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = [a for a in runner.addresses if isinstance(a, tuple)]
        if addresses:
            self.port = int(addresses[0][1])
        urls = ", ".join(_url(a) for a in addresses)
        log.info("http: serving /metrics, /healthz, /readyz, /status and the page / on %s", urls)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            # aiohttp bounds the wait for open requests by shutdown_timeout; this bounds the rest.
            async with asyncio.timeout(CLOSE_TIMEOUT + 1.0):
                await runner.cleanup()
        except TimeoutError:
            log.warning("http: the server did not close within %gs", CLOSE_TIMEOUT + 1.0)


def _url(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this host only (`localhost` included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
