"""`metrics.auth`: who may read `/`, `/status` and `/metrics`.

A bearer token (`Authorization: Bearer TOKEN`, what Prometheus sends with `authorization:`) or a
user name and password (HTTP basic auth, what browsers ask for). With a token, basic auth with
any user name and the token as the password is accepted too: a browser's login dialog then
works for the status page. Comparisons take constant time. The probes `/healthz` and `/readyz`
stay open: systemd, the container's HEALTHCHECK and Kubernetes call them without credentials,
and they tell nothing but ok or the reasons why not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging

from gateway.config import MetricsAuth
from gateway.httpserver import App, Request, Response

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
REALM = "iot-gateway"


def authorized(header: str | None, auth: MetricsAuth) -> bool:
    """Whether an `Authorization` header carries the configured credentials."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if auth.token is not None:
        token = auth.token.get_secret_value()
        if scheme == "bearer":
            return _same(credentials, token)
        pair = _basic(credentials) if scheme == "basic" else None
        return pair is not None and _same(pair[1], token)
    pair = _basic(credentials) if scheme == "basic" else None
    if pair is None or auth.username is None or auth.password is None:
        return False
    # Both compared, always: the time taken tells nothing about which one was wrong.
    user_ok = _same(pair[0], auth.username)
    password_ok = _same(pair[1], auth.password.get_secret_value())
    return user_ok and password_ok


def _basic(credentials: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def challenge(auth: MetricsAuth) -> Response:
    """401 with what a client may answer: basic (browsers prompt), and bearer with a token."""
    body = {"status": "unauthorized", "reasons": ["credentials required (metrics.auth)"]}
    headers = [("www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"')]
    if auth.token is not None:
        headers.append(("www-authenticate", f'Bearer realm="{REALM}"'))
    return Response(401, json.dumps(body).encode(), "application/json; charset=utf-8", (*headers,))


def guard(app: App, auth: MetricsAuth) -> App:
    """`app` behind the credentials, but for the probes."""

    def guarded(request: Request) -> Response:
        if request.path in OPEN_PATHS or authorized(request.headers.get("authorization"), auth):
            return app(request)
        log.debug("http: refused %s %s from %s", request.method, request.path, request.remote)
        return challenge(auth)

    return guarded
