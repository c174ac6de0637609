"""Controls at run time, pure: what each control is (`Control`, from a Modbus register or a
`controls:` entry), what a command's payload becomes before it reaches the device (`accept`:
Home Assistant's `ON`/`OFF` and labels to what the device takes, a number outside the
control's range refused), and what the status page shows of them (`controls_document`).

The state of a control is what the device says: a sensor's value (a Modbus register's read-back,
or the sensor a serial or BLE control names as its `state:`), never the payload that was sent.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from gateway.config.controls import NUMBER_KEYS, ControlSpec
from gateway.config.modbus import RegisterSpec
from gateway.errors import CommandRefusedError
from gateway.models import Value

#: Home Assistant's MQTT number takes no step below this (components/mqtt/number.py).
MIN_STEP = 0.001
_INT_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}
_FLOAT_MAX = {
    "float32": struct.unpack(">f", b"\x7f\x7f\xff\xff")[0],
    "float64": 1.7976931348623157e308,
}


@dataclass(frozen=True, slots=True)
class Control:
    """One control of a device: its command (and entity key) `name`, and what Home Assistant
    is told of it."""

    name: str
    platform: str  # switch, number, select, button
    #: The sensor whose value is the state (None: Home Assistant shows what it sent).
    state: str | None
    #: The state sensor's values are booleans (a coil): on is True.
    state_bool: bool = False
    payload_on: str = "ON"  # what Home Assistant sends, switch
    payload_off: str = "OFF"
    payload_press: str = "PRESS"
    #: select: what the command takes -> the label shown. A Modbus register's sensor already
    #: publishes the label (`labels_published`); a serial or BLE state sensor publishes the key.
    options: Mapping[str, str] = field(default_factory=dict)
    labels_published: bool = False
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    unit: str | None = None
    optimistic: bool = False
    #: The user's options for the entity, merged into its discovery config last.
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @property
    def range_text(self) -> str:
        return f"{self.minimum:g} to {self.maximum:g}"


def from_spec(name: str, spec: ControlSpec) -> Control:
    """A serial or BLE GATT device's `controls:` entry."""
    overrides = dict(spec.homeassistant)
    for key in ("mode", "entity_category"):
        if (value := getattr(spec, key)) is not None:
            overrides.setdefault(key, value)
    return Control(
        name=name,
        platform=spec.platform,
        state=spec.state,
        payload_on=spec.payload_on,
        payload_off=spec.payload_off,
        payload_press=spec.payload_press,
        options=spec.options or {},
        minimum=spec.min,
        maximum=spec.max,
        step=spec.step,
        unit=spec.unit,
        optimistic=spec.optimistic,
        overrides=overrides,
    )


def from_specs(specs: Mapping[str, ControlSpec]) -> dict[str, Control]:
    return {name: from_spec(name, spec) for name, spec in specs.items()}


def from_register(reg: RegisterSpec) -> Control | None:
    """A Modbus register's control (its state is its own read-back), or None."""
    platform = reg.control_platform
    if platform is None:
        return None
    ha = reg.homeassistant
    overrides = {k: v for k, v in ha.items() if k != "platform"}
    common: dict[str, Any] = {"name": reg.name, "platform": platform, "overrides": overrides}
    state = None if platform == "button" else reg.name
    if reg.function == "coil":
        return Control(
            **common, state=state, state_bool=True, payload_press=str(ha.get("payload_press", "ON"))
        )
    if platform == "select":
        options = {_number_text(v): label for v, label in (reg.options or {}).items()}
        return Control(**common, state=state, options=options, labels_published=True)
    if platform == "switch":
        on, off = str(ha.get("payload_on", "1")), str(ha.get("payload_off", "0"))
        return Control(**common, state=state, payload_on=on, payload_off=off)
    if platform == "button":
        return Control(**common, state=None, payload_press=str(ha.get("payload_press", "1")))
    low, high, step = register_range(reg)
    given = {k: float(v) for k in NUMBER_KEYS if isinstance(v := ha.get(k), int | float)}
    return Control(
        **common,
        state=state,
        minimum=given.get("min", low),
        maximum=given.get("max", high),
        step=given.get("step", step),
        unit=reg.unit,
    )


def register_controls(registers: list[RegisterSpec]) -> dict[str, Control]:
    return {c.name: c for reg in registers if (c := from_register(reg)) is not None}


def register_range(reg: RegisterSpec) -> tuple[float, float, float]:
    """min, max and step of the values a number register holds: its type's range, scaled
    (on the decimal text of scale and offset, as values are), and the scale as the step."""
    kind = reg.kind
    if kind in _FLOAT_MAX:
        top = _FLOAT_MAX[kind]
        low, high = -top, top
        return _scaled_bound(low, reg), _scaled_bound(high, reg), MIN_STEP
    bits = _INT_BITS.get(kind, 16)
    raw_low, raw_high = (
        (0, 2**bits - 1) if kind.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    a, b = _scaled_bound(raw_low, reg), _scaled_bound(raw_high, reg)
    return min(a, b), max(a, b), max(abs(reg.scale), MIN_STEP)


def _scaled_bound(raw: float, reg: RegisterSpec) -> float:
    value = float(Decimal(raw) * Decimal(repr(reg.scale)) + Decimal(repr(reg.offset)))
    return value if math.isfinite(value) else math.copysign(_FLOAT_MAX["float64"], value)


def _number_text(value: float) -> str:
    """An option's value as a command payload: `1`, not `1.0`."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# -- commands ----------------------------------------------------------------------------------


def accept(control: Control, text: str) -> str:
    """What a command for `control` carries on to the device: a switch's `ON`/`OFF` as its
    payloads, a select's label as its key, a number checked against the control's range.
    CommandRefusedError (before anything is written) otherwise."""
    if control.platform == "switch" and not control.state_bool:
        return _switch(control, text)
    if control.platform == "select" and not control.labels_published:
        return _option(control, text)
    if control.platform == "number":
        _in_range(control, text)
    return text


def _switch(control: Control, text: str) -> str:
    if text in (control.payload_on, control.payload_off):
        return text
    word = text.strip().upper()
    if word in ("ON", "OFF"):
        return control.payload_on if word == "ON" else control.payload_off
    raise CommandRefusedError(
        f"{control.name} takes ON or OFF ({control.payload_on!r} or {control.payload_off!r})",
        reason="not_on_off",
    )


def _option(control: Control, text: str) -> str:
    if text in control.options:
        return text
    for key, label in control.options.items():
        if label == text:
            return key
    raise CommandRefusedError(
        f"{text[:40]!r} is not an option of {control.name} ({', '.join(control.options.values())})",
        reason="not_an_option",
    )


def _in_range(control: Control, text: str) -> None:
    try:
        number = float(text.strip())
    except ValueError:
        raise CommandRefusedError(
            f"{text.strip()[:40]!r} is not a number", reason="not_a_number"
        ) from None
    low = control.minimum if control.minimum is not None else -math.inf
    high = control.maximum if control.maximum is not None else math.inf
    if not low <= number <= high:  # NaN is never in range
        shown = text.strip()[:40]
        where = (
            f" ({control.range_text})"
            if control.minimum is not None and control.maximum is not None
            else ""
        )
        raise CommandRefusedError(
            f"{shown} is out of range for {control.name}{where}", reason="out_of_range"
        )


def accept_payload(controls: Mapping[str, Control], command: str, payload: bytes) -> bytes:
    """`accept` on a command's raw payload; a command without a control, or a payload that is
    not text (a bytes command's), goes on unchanged."""
    control = controls.get(command)
    if control is None:
        return payload
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return payload
    return accept(control, text).encode()


# -- what the status page shows ----------------------------------------------------------------


def controls_document(
    controls: Mapping[str, Control], last: Mapping[str, Value | None]
) -> dict[str, dict[str, Any]]:
    """Each control: its platform, the sensor its state comes from and that sensor's last
    value (None: not heard yet, or Home Assistant shows what it sent)."""
    return {
        name: {
            "platform": c.platform,
            "state_sensor": c.state,
            "state": state_text(c, last.get(c.state)) if c.state is not None else None,
            "optimistic": c.optimistic or (c.state is None and c.platform != "button"),
        }
        for name, c in controls.items()
    }


def state_text(control: Control, value: Value | None) -> str | None:
    """The state as Home Assistant shows it: on/off, the option's label, the number."""
    if value is None:
        return None
    if control.platform == "switch":
        if control.state_bool or isinstance(value, bool):
            return "on" if value else "off"
        return _switch_state(control, value)
    if control.platform == "select" and not control.labels_published:
        return control.options.get(_value_text(value), _value_text(value))
    return _value_text(value)


def _switch_state(control: Control, value: Value) -> str:
    text = _value_text(value)
    if text == control.payload_on or _same_number(value, control.payload_on):
        return "on"
    if text == control.payload_off or _same_number(value, control.payload_off):
        return "off"
    return text


def _same_number(value: Value, text: str) -> bool:
    try:
        return isinstance(value, int | float) and float(value) == float(text)
    except ValueError:
        return False


def _value_text(value: Value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 2**53 else repr(value)
    return str(value)
