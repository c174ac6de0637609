"""Home Assistant MQTT discovery configs: pure functions from the gateway and its devices to
the retained messages that announce them, and to the messages that clear what is no longer
announced. No I/O: the announcer (`announcer.py`) publishes what these return; the ids are
`identity.py`'s, the clearing of what is no longer announced is `clearing.py`'s.

Checked against Home Assistant Core 2026.11 (`components/mqtt`: `discovery.py`, `schemas.py`,
`entity.py`, `sensor.py`, `binary_sensor.py`, `abbreviations.py`).

What every entity carries:

- `unique_id` `<gateway>:<device>:<sensor>`: the gateway's, the device's and the sensor's
  ids and nothing else, so restarts, reloads, a new topic or discovery prefix, a new name or a
  switch between discovery modes keep the entity (and its history and settings in Home
  Assistant). ":" cannot occur in an id, so two different triples never give the same string.
- `default_entity_id` `sensor.<device>_<sensor>` (lowercased, anything but letters and digits
  as "_", as Home Assistant slugifies it anyway): the entity id Home Assistant gives a new
  entity (the option that replaced `object_id`, deprecated in 2025.10 and gone since 2026.4;
  it is a whole entity id, domain included). Home Assistant keeps the entity id it once gave
  (the registry goes by unique_id) and adds `_2` on a clash.
- `state_topic` and `value_template` per the device's payload mode, `qos` 1.
- `availability`: the gateway's status topic and the device's availability topic, both
  `online`/`offline`, with `availability_mode: all` (available only while the gateway is
  connected and the device is up).
- `unit_of_measurement`, `device_class`, `state_class` where known, `expire_after` from the
  device's availability timeout.
- `device` (identifiers, name, manufacturer/model where known, `via_device` the gateway) and
  `origin` (name `iot-gateway`, `sw_version`, `support_url`): top level in device mode.

Option names are written out in full: Home Assistant accepts `stat_t` and `state_topic`
alike, and full names read better in a broker's explorer and in the user's overrides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from gateway.homeassistant.controls import control_config
from gateway.homeassistant.identity import (
    ORIGIN_NAME,
    DeviceInfo,
    GatewayInfo,
    SensorInfo,
    component_object_id,
    device_identifier,
    device_object_id,
    entity_id,
    escape,
    gateway_identifier,
    node_id,
    unique_id,
)
from gateway.mqtt.topics import availability_topic

PAYLOAD_ONLINE: Final = "online"
PAYLOAD_OFFLINE: Final = "offline"
STATE_QOS: Final = 1
GATEWAY_COMPONENT: Final = "connectivity"  # the gateway's own entity (binary_sensor)


# -- one component's config ------------------------------------------------------------------


def _value_template(payload: Literal["sensor", "device"], sensor: SensorInfo) -> str:
    """The template that reads the sensor's value from its state topic's JSON.

    A null value renders `None`, which Home Assistant's MQTT sensor and binary sensor take as
    "unknown" (`PAYLOAD_NONE`). A binary value renders `ON`/`OFF` (the binary sensor's default
    `payload_on`/`payload_off`). In device mode the key is read as `value_json['key']` (keys
    may hold `-` or `.`), and only when the object has it: an empty rendering is ignored by
    Home Assistant, so a key missing from one object keeps the entity's last state instead of
    making it unknown or logging a template warning."""
    value = "value_json.value" if payload == "sensor" else f"value_json['{sensor.key}']"
    shown = f"('ON' if {value} else 'OFF')" if sensor.binary else value
    template = f"{{{{ 'None' if {value} is none else {shown} }}}}"
    if payload == "device":
        template = f"{{% if '{sensor.key}' in value_json %}}{template}{{% endif %}}"
    return template


def _state_topic(gw: GatewayInfo, device: DeviceInfo, sensor: SensorInfo) -> str:
    """gateway.mqtt.topics: `<prefix>/<device>/<sensor>` (sensor mode), `<prefix>/<device>`."""
    if device.payload == "sensor":
        return f"{gw.topic_prefix}/{device.id}/{sensor.key}"
    return f"{gw.topic_prefix}/{device.id}"


def _availability(topic: str) -> dict[str, str]:
    return {
        "topic": topic,
        "payload_available": PAYLOAD_ONLINE,
        "payload_not_available": PAYLOAD_OFFLINE,
    }


def _entity_name(sensor: SensorInfo) -> str | None:
    """None (no `name` sent) when the key is its device class: Home Assistant then names the
    entity after the class, translated ("PM2.5"); else the key, readable ("Temperature 2")."""
    if sensor.device_class is not None and sensor.device_class.lower() == sensor.key.lower():
        return None
    text = sensor.key.replace("_", " ")
    return text[:1].upper() + text[1:]


def sensor_config(gw: GatewayInfo, device: DeviceInfo, sensor: SensorInfo) -> dict[str, Any]:
    """One sensor's component config, without `device`, `origin` and `platform` (where those
    go depends on the discovery mode), the user's overrides merged in."""
    config: dict[str, Any] = {
        "name": _entity_name(sensor),
        "unique_id": unique_id(gw.id, device.id, sensor.key),
        "default_entity_id": entity_id(sensor.platform, device.id, sensor.key),
        "state_topic": _state_topic(gw, device, sensor),
        "value_template": _value_template(device.payload, sensor),
        "qos": STATE_QOS,
        "availability": [
            _availability(gw.status_topic),
            _availability(availability_topic(gw.topic_prefix, device.id)),
        ],
        "availability_mode": "all",
        "device_class": sensor.device_class,
        "expire_after": None if device.expire_after is None else math.ceil(device.expire_after),
    }
    if sensor.binary:
        config |= {"payload_on": "ON", "payload_off": "OFF"}
    else:
        config |= {"unit_of_measurement": sensor.unit, "state_class": sensor.state_class}
    return _merged({k: v for k, v in config.items() if v is not None}, sensor.overrides)


def _control_common(gw: GatewayInfo, device: DeviceInfo) -> dict[str, Any]:
    """What a control carries as the device's sensors do: availability, qos."""
    return {
        "availability": [
            _availability(gw.status_topic),
            _availability(availability_topic(gw.topic_prefix, device.id)),
        ],
        "availability_mode": "all",
        "qos": STATE_QOS,
    }


def gateway_config(gw: GatewayInfo) -> dict[str, Any]:
    """The gateway's `connectivity` binary sensor, read from its status topic (retained
    `online`, and `offline` as its last will). No availability: it reports that itself, and
    it must show "disconnected" exactly when every other entity goes unavailable."""
    return {
        "name": "Connectivity",
        "unique_id": f"{gw.id}:{GATEWAY_COMPONENT}",  # one ":", a sensor's have two
        "default_entity_id": entity_id("binary_sensor", gw.id, GATEWAY_COMPONENT),
        "state_topic": gw.status_topic,
        "payload_on": PAYLOAD_ONLINE,
        "payload_off": PAYLOAD_OFFLINE,
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "qos": STATE_QOS,
    }


def _merged(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


# -- devices and topics ----------------------------------------------------------------------


def _gateway_device(gw: GatewayInfo) -> dict[str, Any]:
    return {
        "identifiers": [gateway_identifier(gw)],
        "name": gw.id,
        "model": ORIGIN_NAME,
        "sw_version": gw.version,
    }


def _device(gw: GatewayInfo, device: DeviceInfo) -> dict[str, Any]:
    block: dict[str, Any] = {"identifiers": [device_identifier(gw, device.id)], "name": device.name}
    if device.manufacturer is not None:
        block["manufacturer"] = device.manufacturer
    if device.model is not None:
        block["model"] = device.model
    block["via_device"] = gateway_identifier(gw)
    return block


def _origin(gw: GatewayInfo) -> dict[str, str]:
    origin = {"name": ORIGIN_NAME, "sw_version": gw.version}
    if gw.origin_url:
        origin["support_url"] = gw.origin_url
    return origin


def _topic(gw: GatewayInfo, component: str, object_id: str) -> str:
    return f"{gw.discovery_prefix}/{component}/{node_id(gw.id)}/{object_id}/config"


def discovery_messages(gw: GatewayInfo, devices: Sequence[DeviceInfo]) -> dict[str, dict[str, Any]]:
    """Config topic -> config payload for the gateway and every device with sensors.

    - `component` mode: one config per entity at
      `<discovery_prefix>/<sensor|binary_sensor>/<node_id>/<object_id>/config`, each with its
      `device` and `origin`.
    - `device` mode (Home Assistant 2024.12 and later): one config per device at
      `<discovery_prefix>/device/<node_id>/<object_id>/config`, `device` and `origin` at the
      top, the entities under `components` keyed by their escaped sensor key, each with its
      `platform`. Fewer, larger messages; removing one entity takes two (`removals`).

    A device's controls (`controls.py`) are components beside its sensors. A device without
    sensors or controls is not announced (Home Assistant would create nothing).
    """
    ids = [device.id for device in devices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"device ids repeat: {ids}")
    entries: list[tuple[str | None, dict[str, Any], dict[str, dict[str, Any]]]] = [
        (
            None,
            _gateway_device(gw),
            {GATEWAY_COMPONENT: _platformed("binary_sensor", gateway_config(gw))},
        )
    ]
    for device in devices:
        components = {
            escape(s.key): _platformed(s.platform, sensor_config(gw, device, s))
            for s in device.sensors
        }
        common = _control_common(gw, device)
        components |= {
            escape(c.name): _platformed(c.platform, control_config(gw, device, c, common))
            for c in device.controls
        }
        if components:
            entries.append((device.id, _device(gw, device), components))
    origin = _origin(gw)
    messages: dict[str, dict[str, Any]] = {}
    for device_id, block, components in entries:
        if gw.mode == "device":
            topic = _topic(gw, "device", device_object_id(gw, device_id))
            messages[topic] = {"device": block, "origin": origin, "components": components}
            continue
        for component_id, config in components.items():
            platform = config.pop("platform")
            object_id = component_object_id(gw, device_id, component_id)
            messages[_topic(gw, platform, object_id)] = config | {"device": block, "origin": origin}
    return messages


def _platformed(platform: str, config: dict[str, Any]) -> dict[str, Any]:
    """`platform` first, unless the user's overrides set one of their own."""
    return {"platform": platform} | config


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON ("°C" as itself, not `\\u00b0C`) with sorted keys.

    Sorted keys make the bytes depend on the config alone, not on the order its parts were
    assembled in: the same config is the same retained message on every run, so a config
    found retained on the broker can be compared byte for byte with the one generated now.
    NaN and infinities (not JSON; Home Assistant would refuse the config) raise ValueError."""
    return json.dumps(
        payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()
