"""Logging setup: human-readable text, JSON lines, or journald-friendly lines under systemd.

Every line carries the context of the link it was logged for: the supervisor sets
`current_link` in each link's task, asyncio copies it into every task and callback that task
starts (the MQTT session's workers, a serial port's read callbacks), and a filter on the handler
puts it on the record: `[serial:boiler]` in text, `"link"` in JSON.

Secrets (the MQTT password, BLE bind keys: whatever the config holds as a secret) are replaced by
`***` in every formatted line, tracebacks included, whatever logger wrote them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar

from pydantic import BaseModel, SecretBytes, SecretStr

from gateway.limits import MIN_SECRET_LENGTH

_SYSLOG_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

#: The link the current task works for (`serial:boiler`, `mqtt`); None outside any link.
current_link: ContextVar[str | None] = ContextVar("gateway_link", default=None)

MASK = "***"
# Plain-string config fields that hold secrets even when not typed as SecretStr.
_SECRET_FIELD = re.compile(r"(password|secret|token|bind_?key|encryption_?key)$", re.IGNORECASE)

_secrets: tuple[str, ...] = ()


def set_secrets(values: Iterable[str]) -> None:
    """Replace the set of strings masked in every log line (called on load and on reload)."""
    global _secrets  # noqa: PLW0603 - logging is process-wide; so is what it must never print
    variants: set[str] = set()
    for value in values:
        if len(value) >= MIN_SECRET_LENGTH:
            variants.update((value, value.lower(), value.upper()))
    # Longest first, so a secret that contains another is masked whole.
    _secrets = tuple(sorted(variants, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def config_secrets(model: object) -> Iterator[str]:
    """Every secret value in a config: SecretStr/SecretBytes anywhere, and plain strings in fields
    named like a secret (`password`, `bind_key`, ...)."""
    if isinstance(model, SecretStr):
        yield model.get_secret_value()
    elif isinstance(model, SecretBytes):
        raw = model.get_secret_value()
        yield raw.hex()
        yield raw.decode("utf-8", errors="ignore")
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, str) and _SECRET_FIELD.search(name):
                yield value
            else:
                yield from config_secrets(value)
    elif isinstance(model, Mapping):
        for value in model.values():
            yield from config_secrets(value)
    elif isinstance(model, list | tuple):
        for value in model:
            yield from config_secrets(value)


def printable(text: str) -> str:
    """Text from outside (an advertised name, a command topic's levels, a reply quoting a
    payload) made safe to print or log: control characters,
    ANSI escapes, line breaks, bidi overrides and other invisible characters become their
    Python escapes (`\\x1b`, `\\r`, `\\u202e`), as does the backslash, so that nothing a
    passer-by advertises can move a terminal's cursor, forge a log line or reorder the text."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)


class LinkContext(logging.Filter):
    """Puts the current link on each record: `record.link` (or None) and `record.where`
    (` [serial:boiler]` or empty) for the text formats."""

    def filter(self, record: logging.LogRecord) -> bool:
        link = getattr(record, "link", None) or current_link.get()
        record.link = link
        record.where = f" [{link}]" if link else ""
        return True


class TextFormatter(logging.Formatter):
    """`2026-01-01 12:00:00,123 INFO    gateway.links.serial [serial:boiler]: message` (UTC)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(where)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created))
        return f"{stamp},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JournalFormatter(logging.Formatter):
    """`<6>gateway.links.serial [serial:boiler]: message`: journald reads the priority prefix and
    adds its own timestamp, so we do not print one."""

    def __init__(self) -> None:
        super().__init__("%(name)s%(where)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelname, 6)
        text = redact(super().format(record))
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        link = getattr(record, "link", None)
        if link:
            entry["link"] = link
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        # Masked before encoding too: JSON escapes a secret with quotes or backslashes.
        return redact(json.dumps(entry, ensure_ascii=False))


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(LinkContext())
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif os.environ.get("JOURNAL_STREAM"):
        formatter = JournalFormatter()
    else:
        formatter = TextFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The foreign libraries' chatter stays at WARNING unless we debug.
    for name in ("asyncio",):
        logging.getLogger(name).setLevel(max(logging.getLevelName(level), logging.WARNING))
