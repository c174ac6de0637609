"""The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/status`, the status page.

`HttpServer` (`httpserver.py`, HTTP/1.1 through h11) is an async context manager that owns the
listening socket: entering binds it (port 0 picks a free port, logged), leaving closes it and the
open connections within a bounded time; it bounds what clients can take (connections, time, size).
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
(`httpauth.py`). Every answer but `/metrics` and the static files says not to cache it; the
page's answers also carry a Content-Security-Policy that lets only its own script and stylesheet
run. Every path answers GET and HEAD; other methods get 405, unknown paths 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway import httpauth
from gateway.config import MetricsAuth
from gateway.config.sections import is_loopback
from gateway.health import Verdict
from gateway.httpserver import App, HttpLimits, HttpServer, Request, Response

__all__ = ["Endpoints", "HttpLimits", "HttpServer", "is_loopback"]

STATIC = resources.files("gateway.statuspage") / "static"
STATIC_TYPES = {"page.css": "text/css", "page.js": "text/javascript"}
STATIC_PREFIX = "/static/"
JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"
NO_STORE = (("cache-control", "no-store"),)
PAGE_HEADERS = (
    ("cache-control", "no-store"),
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)
STATIC_HEADERS = (("cache-control", "max-age=300"), ("x-content-type-options", "nosniff"))
METHODS = ("GET", "HEAD")


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
        self._routes: dict[str, Callable[[Request], Response]] = {
            "/metrics": self.metrics,
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/status": self.status,
            "/": self.page,
            "/status.html": self.page_main,
        }

    def application(self) -> App:
        return self.route if self._auth is None else httpauth.guard(self.route, self._auth)

    def route(self, request: Request) -> Response:
        handler = self._routes.get(request.path)
        if handler is None and request.path.startswith(STATIC_PREFIX):
            handler = self.static
        if handler is None:
            return Response(404, b"404: Not Found\n")
        if request.method not in METHODS:
            return Response(405, b"405: Method Not Allowed\n", headers=(("allow", "GET, HEAD"),))
        return handler(request)

    def metrics(self, request: Request) -> Response:
        self._refresh()
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    def healthz(self, request: Request) -> Response:
        return _verdict(self._liveness())

    def readyz(self, request: Request) -> Response:
        return _verdict(self._readiness())

    def status(self, request: Request) -> Response:
        return _json(200, self._status())

    def page(self, request: Request) -> Response:
        from gateway.statuspage.render import render_page  # noqa: PLC0415 - on first view

        return Response(200, render_page(self._status()).encode(), HTML, PAGE_HEADERS)

    def page_main(self, request: Request) -> Response:
        from gateway.statuspage.render import render_main  # noqa: PLC0415 - on first view

        return Response(200, render_main(self._status()).encode(), HTML, PAGE_HEADERS)

    def static(self, request: Request) -> Response:
        name = request.path.removeprefix(STATIC_PREFIX)
        body = self._static.get(name)
        if body is None:
            return Response(404, b"404: Not Found\n")
        return Response(200, body, f"{STATIC_TYPES[name]}; charset=utf-8", STATIC_HEADERS)


def _json(status: int, document: object) -> Response:
    return Response(status, json.dumps(document).encode(), JSON, NO_STORE)


def _verdict(verdict: Verdict) -> Response:
    # The probes say not to cache them: a cached "ok" would hide a failure.
    return _json(200 if verdict.ok else 503, verdict.document())
