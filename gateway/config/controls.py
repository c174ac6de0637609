"""Controls: a device's writable things as Home Assistant entities (switch, number, select,
button). A serial or BLE GATT device names them under `controls:`, each referring to one of its
`commands:`; a Modbus register says so in its own `homeassistant: {platform: ...}` (a coil is a
switch unless it says otherwise). What a control does at run time is `gateway/controls.py`'s.

The checks that need more than one entry (a control's command, its state sensor) ask the device
families what sensors a device has: they are `gateway/families/controls_check.py`'s, run by the
application after the config's own checks (`gateway.app_config`), and point at the control's
line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import Field, JsonValue, model_validator

from gateway.config.base import Model, TopicLevel

#: The platforms the gateway makes a control of.
CONTROL_PLATFORMS = ("switch", "number", "select", "button")
#: A register may also say it is only read (no control): a coil that is not a switch.
READ_PLATFORMS = ("sensor", "binary_sensor")
#: The entity platforms of Home Assistant's MQTT integration (components/mqtt/const.py,
#: SUPPORTED_COMPONENTS, 2026.11; tests/test_ha_discovery.py compares them with HA_SOURCE): a
#: name outside them is a typo, not a platform the gateway lacks.
HA_MQTT_PLATFORMS = frozenset(
    {
        "alarm_control_panel",
        "binary_sensor",
        "button",
        "camera",
        "climate",
        "cover",
        "date",
        "datetime",
        "device_automation",
        "device_tracker",
        "event",
        "fan",
        "humidifier",
        "image",
        "infrared",
        "lawn_mower",
        "light",
        "lock",
        "notify",
        "number",
        "scene",
        "siren",
        "select",
        "sensor",
        "switch",
        "tag",
        "text",
        "time",
        "update",
        "vacuum",
        "valve",
        "water_heater",
    }
)
#: Keys of a register's `homeassistant:` that the gateway reads itself (the rest, and these
#: too but `platform`, go into the entity's discovery config as they are).
NUMBER_KEYS = ("min", "max", "step")


def platform_problem(platform: object, allowed: tuple[str, ...]) -> str | None:
    """Why `platform` cannot be a control's (or a register's) platform, or None."""
    if not isinstance(platform, str) or platform not in HA_MQTT_PLATFORMS:
        return (
            f"Home Assistant has no platform {platform!r} (controls: "
            f"{', '.join(CONTROL_PLATFORMS)})"
        )
    if platform not in allowed:
        return f"platform {platform}: the gateway makes {', '.join(allowed)} here"
    return None


class ControlSpec(Model):
    """A serial or BLE GATT device's control: Home Assistant's entity for one of `commands:`
    (the control's name is the command's)."""

    platform: str = Field(description="switch, number, select or button.")
    state: TopicLevel | None = Field(
        None,
        description="The sensor whose value is the control's state (what the device says). "
        "Without it Home Assistant shows what it last sent (optimistic).",
    )
    optimistic: bool = Field(
        False,
        description="Home Assistant shows what it sent at once, without waiting for `state` "
        "(the state may then be what was asked, not what the device did).",
    )
    payload_on: str = Field("ON", description="switch: the command's payload for on.")
    payload_off: str = Field("OFF", description="switch: the command's payload for off.")
    payload_press: str = Field("PRESS", description="button: the command's payload.")
    options: dict[str, str] | None = Field(
        None,
        description="select: the command's payload -> the label Home Assistant shows (the "
        "state sensor's values map the same way).",
    )
    min: float | None = Field(None, description="number: the lowest value sent.")
    max: float | None = Field(None, description="number: the highest value sent.")
    step: float | None = Field(None, gt=0, description="number: the step of the value.")
    unit: str | None = Field(None, description="number: its unit.")
    mode: Literal["auto", "box", "slider"] | None = Field(None, description="number: how shown.")
    entity_category: Literal["config", "diagnostic"] | None = Field(
        None, description="config: shown with the device's settings in Home Assistant."
    )
    homeassistant: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Merged into the control's discovery config; a null value removes a key.",
    )

    @model_validator(mode="after")
    def _fits_platform(self) -> Self:
        if problem := platform_problem(self.platform, CONTROL_PLATFORMS):
            raise ValueError(problem)
        if self.platform == "select" and not self.options:
            raise ValueError("a select needs options: {payload: label, ...}")
        if self.options is not None and self.platform != "select":
            raise ValueError(f"options are for a select, not a {self.platform}")
        if self.options and len(set(self.options.values())) != len(self.options):
            raise ValueError("two options have the same label")
        if self.platform == "switch" and self.payload_on == self.payload_off:
            raise ValueError("payload_on and payload_off must differ")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError("min must be below max")
        if self.platform == "button" and self.state is not None:
            raise ValueError("a button has no state")
        return self


def register_control_problem(ha: Mapping[str, Any], data: Mapping[str, Any]) -> str | None:
    """What is wrong with a register's `homeassistant:` given the register's other keys (the
    validated ones in `data`), or None."""
    if "platform" not in ha:
        return None
    platform = ha["platform"]
    problem = platform_problem(platform, CONTROL_PLATFORMS + READ_PLATFORMS)
    if problem is None and platform not in READ_PLATFORMS:
        problem = _register_problem(platform, data) or _range_problem(ha)
    return problem


def _register_problem(platform: str, data: Mapping[str, Any]) -> str | None:
    function, kind = data.get("function", "holding"), data.get("data_type")
    if function not in ("holding", "coil"):
        return (
            f"a {platform} needs a register it can write: "
            f"{'an' if function == 'input' else 'a'} {function} register is read-only "
            "(function: holding or coil; or leave platform out)"
        )
    if kind in ("string", "bits"):
        return f"a {platform} cannot write a {kind} register"
    if platform == "select" and not data.get("options"):
        return "a select needs the register's options: {value: label, ...}"
    if platform == "number" and function == "coil":
        return "a coil is on or off: make it a switch or a button"
    if platform != "select" and data.get("options"):
        return f"a register with options is a select, not a {platform}"
    return None


def _range_problem(ha: Mapping[str, Any]) -> str | None:
    for key in NUMBER_KEYS:
        if key in ha and (isinstance(ha[key], bool) or not isinstance(ha[key], int | float)):
            return f"{key} must be a number"
    low, high = ha.get("min"), ha.get("max")
    if isinstance(low, int | float) and isinstance(high, int | float) and not low < high:
        return "min must be below max"
    if "step" in ha and not ha["step"] > 0:
        return "step must be above 0"
    return None
