"""The gateway's checks on Home Assistant's tables (`tables.py`): whether Home Assistant takes a
sensor's device class, state class and unit as they are (`check_sensor`, else a message that says
what would fit), and which classes a sensor's name implies (`default_classes`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from gateway.homeassistant.tables import (
    AMBIGUOUS_UNITS,
    BINARY_ALIASES,
    BINARY_SENSOR_DEVICE_CLASSES,
    DEVICE_CLASS_STATE_CLASSES,
    DEVICE_CLASS_UNITS,
    NON_NUMERIC_DEVICE_CLASSES,
    SENSOR_ALIASES,
    SENSOR_DEVICE_CLASSES,
    STATE_CLASS_UNITS,
    STATE_CLASSES,
)

_REPEAT = re.compile(r"_[0-9]+$")  # BTHome names a repeated object `temperature_2`
_DEVICE_CLASS_DOCS = "https://www.home-assistant.io/integrations/sensor/#device-class"


def normalize_unit(unit: str | None) -> str | None:
    """The unit as Home Assistant keeps it: a blank unit is dropped (its MQTT sensor schema
    removes it), an ambiguous spelling becomes Home Assistant's (`AMBIGUOUS_UNITS`: "µg/m³"
    with the micro sign -> "μg/m³" with the Greek mu)."""
    if unit is None or not unit.strip():
        return None
    return AMBIGUOUS_UNITS.get(unit, unit)


def check_sensor(
    device_class: str | None,
    state_class: str | None,
    unit: str | None,
    *,
    binary: bool = False,
) -> str | None:
    """None when Home Assistant takes this sensor as it is, else a one-line message that says
    what is wrong and what would fit.

    Home Assistant's rules, in the order it applies them (its MQTT sensor schema, then the
    sensor entity when it writes a state):

    - device and state class are lowercased, then must be names it knows (the schema rejects
      the config otherwise: no entity at all);
    - `measurement_angle` needs the unit "°" (`STATE_CLASS_UNITS`; rejected);
    - a unit must be one that `DEVICE_CLASS_UNITS` lists for the device class (rejected); a
      device class missing from that table (`monetary`: a currency code) takes any unit;
    - no unit with a device class whose units do not include None (`temperature`): the schema
      lets it pass, but the entity logs a warning on its first state and Home Assistant cannot
      convert or graph it as that class, so it is reported here as wrong too;
    - a unit with a non-numeric device class (`timestamp`, `date`, `enum`, `uptime`): the entity
      fails on every state;
    - a state class not in `DEVICE_CLASS_STATE_CLASSES` for the device class (a warning in
      Home Assistant; long-term statistics are then wrong); where the table does not list the
      device class, or no device class is given, every state class is accepted.

    With `binary` only the device class is checked, against the binary sensor classes: binary
    sensors have neither units nor state classes.
    """
    if binary:
        if device_class is None or device_class.lower() in BINARY_SENSOR_DEVICE_CLASSES:
            return None
        return _unknown(
            "binary_sensor device_class", device_class, BINARY_SENSOR_DEVICE_CLASSES, BINARY_ALIASES
        )
    device_class = device_class.lower() if device_class is not None else None
    state_class = state_class.lower() if state_class is not None else None
    if device_class is not None and device_class not in SENSOR_DEVICE_CLASSES:
        return _unknown("device_class", device_class, SENSOR_DEVICE_CLASSES, SENSOR_ALIASES)
    if state_class is not None and state_class not in STATE_CLASSES:
        return f"unknown state_class '{state_class}': use one of {_listed(STATE_CLASSES)}"
    unit = normalize_unit(unit)
    return _unit_problem(device_class, state_class, unit) or _state_class_problem(
        device_class, state_class
    )


def _unit_problem(
    device_class: str | None, state_class: str | None, unit: str | None
) -> str | None:
    needed = STATE_CLASS_UNITS.get(state_class) if state_class is not None else None
    if needed is not None and unit not in needed:
        return f"state_class {state_class} needs the unit {_listed(needed)}, got {_shown(unit)}"
    return None if device_class is None else _device_class_unit_problem(device_class, unit)


def _device_class_unit_problem(device_class: str, unit: str | None) -> str | None:
    if device_class in NON_NUMERIC_DEVICE_CLASSES:
        if unit is None:
            return None
        return f"device_class {device_class} is not numeric: it takes no unit, got '{unit}'"
    units = DEVICE_CLASS_UNITS.get(device_class)
    if units is None or unit in units:
        return None
    if unit is None:
        return f"device_class {device_class} needs a unit: use one of {_listed(units)}"
    return f"unit '{unit}' does not fit device_class {device_class}: use one of {_listed(units)}"


def _state_class_problem(device_class: str | None, state_class: str | None) -> str | None:
    if device_class is None or state_class is None:
        return None
    allowed = DEVICE_CLASS_STATE_CLASSES.get(device_class)
    if allowed is None or state_class in allowed:
        return None
    advice = f"use {_listed(allowed, 'or')}" if allowed else "leave state_class out"
    return f"state_class {state_class} is not allowed for device_class {device_class}: {advice}"


def default_classes(
    sensor: str, unit: str | None, *, binary: bool = False
) -> tuple[str | None, str | None]:
    """(device_class, state_class) that a sensor's name implies, else (None, None).

    The BLE decoders name their values as Home Assistant names its device classes
    (`temperature`, `humidity`, `battery`, `pressure`, `illuminance`, `voltage`,
    `signal_strength`, `pm25`, `carbon_dioxide`, ...), BTHome with a suffix for a repeated
    object (`temperature_2`); `SENSOR_ALIASES` adds a few common other names (`co2`, `rssi`).
    A name implies its class only when the unit fits it (`check_sensor`): "temperature" in
    °C is a temperature, in "C" or without a unit it is left unclassed rather than announced
    as a class Home Assistant would then reject or warn about. Non-numeric classes
    (`timestamp`, ...) are never implied: Home Assistant expects ISO dates there, decoders
    give numbers. The state class is `measurement` where the device class allows it, else
    None (`energy`, `gas`, `water` are totals: whether increasing or not is the user's to say).

    With `binary`, the device class is a binary sensor class of that name (`door`, `motion`;
    BTHome's `battery_low` is `battery`), and there is no state class.
    """
    names = [sensor.lower()]
    if (base := _REPEAT.sub("", names[0])) != names[0]:
        names.append(base)
    for name in names:
        if binary:
            device_class = BINARY_ALIASES.get(name, name)
            if device_class in BINARY_SENSOR_DEVICE_CLASSES:
                return device_class, None
            continue
        device_class = SENSOR_ALIASES.get(name, name)
        if device_class not in SENSOR_DEVICE_CLASSES or device_class in NON_NUMERIC_DEVICE_CLASSES:
            continue
        if check_sensor(device_class, None, unit) is not None:
            return None, None
        allowed = DEVICE_CLASS_STATE_CLASSES.get(device_class, STATE_CLASSES)
        return device_class, ("measurement" if "measurement" in allowed else None)
    return None, None


def _unknown(what: str, name: str, known: Iterable[str], aliases: Mapping[str, str]) -> str:
    lowered = name.lower()
    close = [aliases[lowered]] if lowered in aliases else []
    close += difflib.get_close_matches(lowered, list(known), n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]}?)" if close else f": see {_DEVICE_CLASS_DOCS}"
    return f"unknown {what} '{name}'{hint}"


def _unit_order(unit: str | None) -> tuple[bool, str, str]:
    """Units by their letters ("°C", "°F", "K"; "mg/m³", "μg/m³"), no unit last."""
    text = unit or ""
    return unit is None, text.lstrip("°µμ").casefold(), text


def _shown(unit: str | None) -> str:
    return "no unit" if unit is None else unit


def _listed(items: Iterable[str | None], last: str = "") -> str:
    texts = [_shown(item) for item in sorted(items, key=_unit_order)]
    if last and len(texts) > 1:
        return f"{', '.join(texts[:-1])} {last} {texts[-1]}"
    return ", ".join(texts)
