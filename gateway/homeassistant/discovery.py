"""Home Assistant MQTT discovery configs: pure functions from the gateway and its devices to
the retained messages that announce them, and to the messages that clear what is no longer
announced. No I/O: the announcer (`announcer.py`) publishes what these return.

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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.mqtt.topics import availability_topic

ORIGIN_NAME: Final = "iot-gateway"
#: Device identifiers are `iot-gateway:<gateway>` and `iot-gateway:<gateway>:<device>`: Home
#: Assistant keeps the identifiers of every MQTT publisher in one namespace, and a bare
#: gateway id such as "gw1" could be another publisher's device.
IDENTIFIER_PREFIX: Final = "iot-gateway"
PAYLOAD_ONLINE: Final = "online"
PAYLOAD_OFFLINE: Final = "offline"
STATE_QOS: Final = 1
GATEWAY_COMPONENT: Final = "connectivity"  # the gateway's own entity (binary_sensor)
SEPARATOR: Final = "--"  # between the parts of an object id; `escape` never writes it

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # gateway.config.base.TopicLevel
_SAFE = re.compile(r"[A-Za-z0-9_]")


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """One sensor of a device, as it is announced."""

    key: str  # the sensor's name: last level of its topic, key in a device payload
    unit: str | None
    device_class: str | None
    state_class: str | None
    binary: bool  # boolean values: a binary_sensor (unit and state_class are not sent)
    #: The user's `homeassistant:` options, merged into the component's config last (a shallow
    #: merge, full option names); an option set to None removes that option.
    overrides: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.key):
            raise ValueError(f"sensor key {self.key!r} is not 1-64 of A-Z a-z 0-9 _ . -")
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @property
    def platform(self) -> Literal["sensor", "binary_sensor"]:
        return "binary_sensor" if self.binary else "sensor"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A configured device and the sensors it announces."""

    id: str
    name: str
    manufacturer: str | None
    model: str | None
    sensors: tuple[SensorInfo, ...]
    #: `sensor`: each reading to `<prefix>/<device>/<sensor>` as `{"value": ..., ...}`;
    #: `device`: one object to `<prefix>/<device>`, `{"temp": 21.5, "hum": 40, "ts": ...}`.
    payload: Literal["sensor", "device"]
    expire_after: float | None  # seconds; sent rounded up to whole seconds

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"device id {self.id!r} is not 1-64 of A-Z a-z 0-9 _ . -")
        keys = [sensor.key for sensor in self.sensors]
        if len(set(keys)) != len(keys):
            raise ValueError(f"device {self.id}: sensor keys repeat: {keys}")
        if self.expire_after is not None and not self.expire_after > 0:
            raise ValueError(f"device {self.id}: expire_after must be > 0 s")


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """The gateway, announced as a device of its own."""

    id: str
    version: str
    topic_prefix: str
    status_topic: str  # retained `online`/`offline`, the gateway's last will
    discovery_prefix: str  # Home Assistant's, `homeassistant` by default
    mode: Literal["device", "component"]
    origin_url: str

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"gateway id {self.id!r} is not 1-64 of A-Z a-z 0-9 _ . -")
        if not self.discovery_prefix or any(c in self.discovery_prefix for c in "+#"):
            raise ValueError(f"discovery prefix {self.discovery_prefix!r}: empty or a wildcard")


# -- ids -------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """`text` in Home Assistant's topic alphabet `[a-zA-Z0-9_-]`, one to one: letters, digits
    and `_` stay, `-` becomes `-_`, `.` becomes `-d`, anything else `-u` and six hex digits.
    So `-` is always followed by `_`, `d` or `u`, and the result never contains `--`
    (`SEPARATOR`): ids joined with it can be told apart again."""
    out = []
    for char in text:
        if _SAFE.fullmatch(char):
            out.append(char)
        elif char == "-":
            out.append("-_")
        elif char == ".":
            out.append("-d")
        else:
            out.append(f"-u{ord(char):06x}")
    return "".join(out)


def node_id(gateway_id: str) -> str:
    """The `<node_id>` level of every config topic of this gateway: its id, escaped (`gw1`
    stays `gw1`; `gw.1` becomes `gw-d1`, `gw-1` becomes `gw-_1`, so the two never meet)."""
    if not gateway_id:
        raise ValueError("an empty gateway id has no node id")
    return escape(gateway_id)


def _device_object_id(gw: GatewayInfo, device_id: str | None) -> str:
    """The gateway's own object id is its node id; a device's is `<node_id>--<device>`.

    A device's always contains `--`, which an escaped id never does, so no configured
    device can take the gateway's entry whatever its id (even the gateway's own id). The node
    id repeated in the object id makes it unique across gateways too, as Home Assistant's
    documentation advises (object id = unique id), and in device mode it is the discovery id."""
    node = node_id(gw.id)
    return node if device_id is None else f"{node}{SEPARATOR}{escape(device_id)}"


def _component_object_id(gw: GatewayInfo, device_id: str | None, component: str) -> str:
    """Component mode: `<device object id>--<component>`. A device's sensor has two `--`,
    the gateway's connectivity one, and escaped parts have none: all distinct."""
    return f"{_device_object_id(gw, device_id)}{SEPARATOR}{escape(component)}"


def unique_id(gateway_id: str, device_id: str, key: str) -> str:
    return f"{gateway_id}:{device_id}:{key}"


def _entity_id(platform: str, *parts: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")
    return f"{platform}.{slug or 'unknown'}"


def gateway_identifier(gw: GatewayInfo) -> str:
    return f"{IDENTIFIER_PREFIX}:{gw.id}"


def device_identifier(gw: GatewayInfo, device_id: str) -> str:
    return f"{IDENTIFIER_PREFIX}:{gw.id}:{device_id}"


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
        "default_entity_id": _entity_id(sensor.platform, device.id, sensor.key),
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


def gateway_config(gw: GatewayInfo) -> dict[str, Any]:
    """The gateway's `connectivity` binary sensor, read from its status topic (retained
    `online`, and `offline` as its last will). No availability: it reports that itself, and
    it must show "disconnected" exactly when every other entity goes unavailable."""
    return {
        "name": "Connectivity",
        "unique_id": f"{gw.id}:{GATEWAY_COMPONENT}",  # one ":", a sensor's have two
        "default_entity_id": _entity_id("binary_sensor", gw.id, GATEWAY_COMPONENT),
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

    A device without sensors is not announced (Home Assistant would create nothing).
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
        if components:
            entries.append((device.id, _device(gw, device), components))
    origin = _origin(gw)
    messages: dict[str, dict[str, Any]] = {}
    for device_id, block, components in entries:
        if gw.mode == "device":
            topic = _topic(gw, "device", _device_object_id(gw, device_id))
            messages[topic] = {"device": block, "origin": origin, "components": components}
            continue
        for component_id, config in components.items():
            platform = config.pop("platform")
            object_id = _component_object_id(gw, device_id, component_id)
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


# -- clearing --------------------------------------------------------------------------------


def removals(
    gw: GatewayInfo, old: Mapping[str, dict[str, Any]], new: Mapping[str, dict[str, Any]]
) -> list[tuple[str, bytes]]:
    """The retained publishes that clear what `old` announced and `new` does not, in topic
    order; the caller publishes them before the configs of `new`.

    - A topic of `old` missing from `new` (an entity, or in device mode a whole device, gone;
      or every topic, after a switch of mode, prefix or gateway id): an empty payload, which
      makes Home Assistant remove the entity, or every entity of the device.
    - Device mode, a device in both whose `components` lost one (or changed its platform,
      sensor <-> binary_sensor): Home Assistant does not remove a component that is merely
      left out, so first the device's new config with each such component as
      `{"platform": <its old platform>}` alone, which removes it; the caller's config follows.

    `gw` is the gateway as it is now: a topic present in both is a device config when it is a
    device topic under its discovery prefix (a topic under an old prefix is in `old` only)."""
    published: list[tuple[str, bytes]] = []
    device_topics = f"{gw.discovery_prefix}/device/"
    for topic in sorted(old):
        if topic not in new:
            published.append((topic, b""))
        elif topic.startswith(device_topics) and (gone := _gone(old[topic], new[topic])):
            published.append((topic, encode(_removing(new[topic], gone))))
    return published


def _components(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    components = config.get("components", config.get("cmps", {}))
    return dict(components) if isinstance(components, Mapping) else {}


def _platform(component: Mapping[str, Any]) -> Any:
    return component.get("platform", component.get("p"))


def _gone(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Component id -> old platform, for the components `new` no longer has under that
    platform. An old removal marker (platform alone) has nothing left to remove."""
    kept = _components(new)
    return {
        cid: _platform(component)
        for cid, component in _components(old).items()
        if len(component) > 1 and (cid not in kept or _platform(kept[cid]) != _platform(component))
    }


def _removing(new: Mapping[str, Any], gone: Mapping[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in new.items() if k not in ("components", "cmps")}
    components = {cid: c for cid, c in _components(new).items() if cid not in gone}
    components |= {cid: {"platform": platform} for cid, platform in gone.items()}
    return config | {"components": components}


def owned_topic_filter(gw: GatewayInfo) -> str:
    """`<discovery_prefix>/+/<node_id>/+/config`: matches every config topic this gateway
    publishes in either mode (the gateway's own, every device's, every entity's), so the
    runtime can find retained configs of earlier runs. Another program could use the same
    node id: check a retained config with `is_own_config` before clearing it."""
    return f"{gw.discovery_prefix}/+/{node_id(gw.id)}/+/config"


def is_own_config(gw: GatewayInfo, config: Mapping[str, Any]) -> bool:
    """True when a (decoded) retained config was published by this gateway: its origin is
    `iot-gateway` and its device is the gateway or one of the gateway's devices. Reads
    abbreviated option names too."""
    origin = config.get("origin", config.get("o"))
    device = config.get("device", config.get("dev"))
    if not isinstance(origin, Mapping) or not isinstance(device, Mapping):
        return False
    identifiers = device.get("identifiers", device.get("ids"))
    if isinstance(identifiers, str):
        identifiers = [identifiers]
    if origin.get("name") != ORIGIN_NAME or not isinstance(identifiers, list):
        return False
    mine = gateway_identifier(gw)
    return any(i == mine or str(i).startswith(f"{mine}:") for i in identifiers)
