"""Data that flows through the gateway: link -> frame -> decode -> Readings -> stream -> publish."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: A decoded sensor value. Numbers stay numbers (int or float) so consumers can plot them.
Value = float | int | str | bool


@dataclass(frozen=True, slots=True)
class Reading:
    """One sensor value from one device at one moment."""

    device: str
    sensor: str
    value: Value | None  # None: no value (what a stream's `timeout` filter publishes)
    unit: str | None
    ts: float  # seconds since the epoch, taken when the frame was read (not when published)


@dataclass(frozen=True, slots=True)
class SensorClass:
    """What a decoder says one of its sensors is, in Home Assistant's terms: the defaults of
    its discovery config where the device's `sensors:` entry says nothing."""

    unit: str | None
    device_class: str | None
    state_class: str | None


#: Device id -> sensor -> what its decoder said it is (BLE parser libraries, learned at run
#: time). One per gateway: advert links write it, Home Assistant discovery reads it.
SensorClasses = dict[str, dict[str, SensorClass]]


#: Where a link hands the readings of one frame (one line, one advert, one notification): the
#: unit of a device-mode payload. Never blocks, never raises.
Submit = Callable[[Sequence[Reading]], None]

#: The one account of every unconfigured BLE advertiser (`ble.unknown_devices: publish`): their
#: readings keep their own topics (`ble_<address>/...`) but share this seq numbering, outbox
#: seqs row and metric label, so that spoofed addresses cannot grow them.
UNKNOWN_DEVICES = "ble_unknown"
