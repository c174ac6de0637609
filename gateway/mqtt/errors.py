"""The session's errors, and the one place foreign MQTT errors become the gateway's.

aiomqtt raises `MqttError` / `MqttCodeError` / `MqttConnectError` (and converts paho's OSError
on connect into a plain `MqttError`, keeping the original as `__context__`); asyncio raises
`TimeoutError`. `translate()` turns any of them into a `TransientLinkError` whose `kind` is a
stable metric label (`auth`, `tls`, `timeout`, `refused`, `mqtt`) with advice for the user.
"""

from __future__ import annotations

import ssl

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import TransientLinkError

AUTH_CODES_3_1_1 = (4, 5)  # bad user name or password, not authorised
AUTH_CODES_5 = (0x86, 0x87)


class SessionError(Exception):
    """Base of the errors the session raises itself (translated like aiomqtt's)."""


class ConnectionLostError(SessionError):
    """The connection is gone (or going): lost, refused mid-way, or aborted by us."""


class AckTimeoutError(SessionError):
    """A publish stayed unacknowledged for mqtt.publish_timeout: a frozen broker, a black-holed
    path, a half-open connection."""


class PacketTooLargeError(SessionError):
    """One message is over the broker's maximum packet size (MQTT 5 CONNACK)."""


class RefusedError(SessionError):
    """The broker refused a request (a control publish or a subscription)."""


# What a connection's tasks raise when the connection fails (everything else is a bug).
CONNECTION_ERRORS = (aiomqtt.MqttError, SessionError, TimeoutError, OSError)


def _cause(exc: BaseException) -> BaseException:
    """aiomqtt raises `MqttError(str(exc)) from None` for connect errors: the original is still
    the context."""
    inner = exc.__cause__ or exc.__context__
    return inner if isinstance(exc, aiomqtt.MqttError) and inner is not None else exc


def _code(rc: object) -> int | None:
    if isinstance(rc, ReasonCode):
        return int(rc.value)
    return rc if isinstance(rc, int) else None


def translate(exc: BaseException, what: str) -> TransientLinkError:
    """Connection errors -> the gateway's, with advice where we can give one."""
    if isinstance(exc, TransientLinkError):
        return exc
    inner = _cause(exc)
    text = str(exc) or type(exc).__name__
    message = f"{what}: {text}"
    if isinstance(exc, MqttConnectError):
        code = _code(exc.rc)
        if code in AUTH_CODES_3_1_1 or code in AUTH_CODES_5:
            return TransientLinkError(
                message, kind="auth", advice="check mqtt.username and the password"
            )
    if isinstance(inner, ssl.SSLError) or "certificate" in text.lower() or "[SSL" in text:
        return TransientLinkError(
            message, kind="tls", advice="check mqtt.tls (CA, client certificate, key)"
        )
    if isinstance(inner, TimeoutError | AckTimeoutError) or "timed out" in text.lower():
        return TransientLinkError(message, kind="timeout")
    if isinstance(inner, ConnectionRefusedError):
        return TransientLinkError(
            message, kind="refused", advice="is the broker running at mqtt.host:port?"
        )
    return TransientLinkError(message, kind="mqtt")
