"""The pieces every config model shares: the frozen base model, topic-level names, backoff,
batching, hex bytes."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

from gateway.backoff import BackoffPolicy

# Device ids and sensor names become MQTT topic levels: no wildcards, separators or spaces.
TopicLevel = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)]
TOPIC_LEVEL_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Model(BaseModel):
    """Frozen, strict about unknown keys: a typo in a key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffConfig(Model):
    """Retry delays: exponential with full jitter and a cap (before retry n, a delay drawn from
    [0, min(max, initial * multiplier^n)])."""

    initial: float = Field(0.5, gt=0, description="First retry delay bound, seconds.")
    max: float = Field(30.0, gt=0, description="Cap on the retry delay, seconds.")
    multiplier: float = Field(2.0, ge=1, description="Growth of the delay bound per failure.")
    reset_after: float = Field(
        30.0, ge=0, description="A link up this long starts its next backoff from `initial`."
    )

    def policy(self) -> BackoffPolicy:
        return BackoffPolicy(self.initial, self.max, self.multiplier, self.reset_after)


class BatchConfig(Model):
    """Several readings in one MQTT message (the throughput lever): the device's payload
    objects, each with its own `ts`, `seq` and `"sensor"`, as one JSON array published to
    `<prefix>/<device>/batch`. The outbox still keeps every reading as its own record."""

    max_items: int = Field(
        100, ge=1, le=10_000, description="Publish as soon as this many readings wait."
    )
    max_delay: float = Field(
        0.05,
        ge=0,
        le=60,
        description="Seconds the oldest waiting reading may wait for more (latency it adds).",
    )


SensorName = TopicLevel  # a sensor name becomes the last topic level of its readings


def hex_bytes(text: str) -> bytes:
    """`"aa 55"`, `"AA55"` -> b"\\xaa\\x55" (the config's notation for bytes)."""
    return bytes.fromhex(text)


def _check_hex(text: str) -> str:
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{text!r} is not hex bytes such as 'aa 55'") from None
    return text


HexBytes = Annotated[str, AfterValidator(_check_hex)]
