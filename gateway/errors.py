"""The gateway's own error types.

Foreign exceptions (pyserial, bleak, sqlite3, OSError, ssl, yaml, pydantic) are translated into
these at the module that talks to the foreign code, with `raise ... from exc`, so that the
supervisor only has to know two things about a failure: is it worth retrying, and what should the
user be told.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used. `problems` holds one line per problem, each of the form
    `FILE:LINE:COL: FIELD.PATH: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class LinkError(GatewayError):
    """A link failed. `kind` is a short, stable label used in metrics (`timeout`, `unplugged`,
    `refused`, ...)."""

    kind: str = "error"

    def __init__(self, message: str, *, kind: str | None = None, advice: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        self.advice = advice

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} ({self.advice})" if self.advice else text


class TransientLinkError(LinkError):
    """Worth retrying after a backoff: the port is unplugged, the broker is down, a timeout."""


class FatalLinkError(LinkError):
    """Retrying cannot help until the configuration changes (e.g. an unsupported setting). The
    supervisor marks the link failed and leaves its siblings alone."""


class LinkDownError(GatewayError):
    """An operation (such as a write from an MQTT command) needs a link that is not up."""


class DecodeError(GatewayError):
    """A frame could not be decoded. Counted per device and skipped; never fatal to a link."""


class HttpServerError(GatewayError):
    """The HTTP endpoint cannot listen (address in use, not available, no permission)."""


class CommandRefusedError(GatewayError):
    """A command's payload is refused before anything is written (it would write more than
    its command, or the device does not take it). `reason` is a fixed word for metrics."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
