"""Discovery configs of controls (switch, number, select, button), pure: the entity that acts on
a device through its command topic `<prefix>/<device>/<verb>/<name>`, and shows its state from
the state sensor's topic where the gateway knows the state.

Like a sensor's: `unique_id` `<gateway>:<device>:<name>`, `default_entity_id`
`<platform>.<device>_<name>` (`switch.meter1_relay`), the sensors' availability, `qos` 1, the
user's options merged last. A control takes the entity of its name and of its state sensor
(`devices.py` leaves those sensors out): one entity per thing in Home Assistant.

The state templates render what Home Assistant's platform reads: a switch `ON`/`OFF` (its
`state_on`/`state_off`) from a coil's bool or a serial sensor's value equal to `payload_on` or
`payload_off`; a select the label (a Modbus register's sensor publishes it; a serial or BLE
state sensor's value is mapped in the template); a number the value. `None` (the sensor's null)
is Home Assistant's "unknown"; in device mode a frame without the key renders nothing, which
keeps the last state.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, Literal

from gateway.controls import Control
from gateway.homeassistant.identity import DeviceInfo, GatewayInfo, entity_id, unique_id

STATE_ON: Final = "ON"
STATE_OFF: Final = "OFF"


def command_topic(gw: GatewayInfo, device: DeviceInfo, control: Control) -> str:
    """gateway.commands: `<prefix>/<device>/<verb>/<command>`."""
    return f"{gw.topic_prefix}/{device.id}/{gw.command_verb}/{control.name}"


def control_config(
    gw: GatewayInfo, device: DeviceInfo, control: Control, common: dict[str, Any]
) -> dict[str, Any]:
    """One control's component config, without `device`, `origin` and `platform`; `common`
    holds what every entity of the device carries (availability, qos)."""
    text = control.name.replace("_", " ")
    config: dict[str, Any] = {
        "name": text[:1].upper() + text[1:],
        "unique_id": unique_id(gw.id, device.id, control.name),
        "default_entity_id": entity_id(control.platform, device.id, control.name),
        "command_topic": command_topic(gw, device, control),
        **common,
    }
    if control.state is not None:
        config["state_topic"] = _state_topic(gw, device, control.state)
        config["value_template"] = _state_template(device.payload, control)
    if control.optimistic:
        config["optimistic"] = True
    config |= _platform_options(control)
    for key, value in control.overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def _platform_options(control: Control) -> dict[str, Any]:
    if control.platform == "switch":
        return {
            "payload_on": control.payload_on,
            "payload_off": control.payload_off,
            "state_on": STATE_ON,
            "state_off": STATE_OFF,
        }
    if control.platform == "button":
        return {"payload_press": control.payload_press}
    if control.platform == "select":
        return {"options": list(control.options.values())}
    options: dict[str, Any] = {"min": control.minimum, "max": control.maximum, "step": control.step}
    options["unit_of_measurement"] = control.unit
    return {k: v for k, v in options.items() if v is not None}


def _state_topic(gw: GatewayInfo, device: DeviceInfo, sensor: str) -> str:
    """gateway.mqtt.topics: `<prefix>/<device>/<sensor>` (sensor mode), `<prefix>/<device>`."""
    if device.payload == "sensor":
        return f"{gw.topic_prefix}/{device.id}/{sensor}"
    return f"{gw.topic_prefix}/{device.id}"


def _state_template(payload: Literal["sensor", "device"], control: Control) -> str:
    assert control.state is not None
    key = control.state
    value = "value_json.value" if payload == "sensor" else f"value_json[{_literal(key)}]"
    template = f"{{% set v = {value} %}}{{{{ 'None' if v is none else {_shown(control)} }}}}"
    if payload == "device":
        template = f"{{% if {_literal(key)} in value_json %}}{template}{{% endif %}}"
    return template


def _shown(control: Control) -> str:
    """The expression of `v` (not None) that Home Assistant's platform reads."""
    if control.platform == "switch":
        if control.state_bool:
            return f"('{STATE_ON}' if v else '{STATE_OFF}')"
        on, off = _matches(control.payload_on), _matches(control.payload_off)
        return (
            f"('{STATE_ON}' if v is sameas true or {on} else "
            f"('{STATE_OFF}' if v is sameas false or {off} else 'None'))"
        )
    if control.platform == "select" and not control.labels_published:
        labels = _literal(dict(control.options))
        return f"{labels}.get(v | string, 'None')"
    return "v"


def _matches(payload: str) -> str:
    """`v` is the payload: the same text, or the same number (the sensor's 1 is a payload
    `1`, and so is 1.0)."""
    test = f"(v | string) == {_literal(payload)}"
    try:
        number = float(payload)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):  # a word (`on`), or `nan` and `inf`: no number literal
        return f"({test} or (v | string | lower) == {_literal(payload.lower())})"
    return f"({test} or (v is number and v == {number!r}))"


def _literal(value: object) -> str:
    """A Jinja literal: JSON strings and objects are Jinja's too."""
    return json.dumps(value, ensure_ascii=False)
