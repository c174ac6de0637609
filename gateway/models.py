"""Data that flows through the gateway: link -> frame -> decode -> Reading -> publish."""

from __future__ import annotations

from dataclasses import dataclass

#: A decoded sensor value. Numbers stay numbers (int or float) so consumers can plot them.
Value = float | int | str | bool


@dataclass(frozen=True, slots=True)
class Reading:
    """One sensor value from one device at one moment."""

    device: str
    sensor: str
    value: Value
    unit: str | None
    ts: float  # seconds since the epoch, taken when the frame was read (not when published)
