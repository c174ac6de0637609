"""Who is who in discovery: the gateway, its devices and their sensors as they are announced
(`GatewayInfo`, `DeviceInfo`, `SensorInfo`, frozen and checked), and every id derived from them:
node and object ids in Home Assistant's topic alphabet (`escape`), unique ids, entity ids and
device identifiers. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.controls import Control

ORIGIN_NAME: Final = "iot-gateway"
#: Device identifiers are `iot-gateway:<gateway>` and `iot-gateway:<gateway>:<device>`: Home
#: Assistant keeps the identifiers of every MQTT publisher in one namespace, and a bare
#: gateway id such as "gw1" could be another publisher's device.
IDENTIFIER_PREFIX: Final = "iot-gateway"
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
    #: What Home Assistant may act on (switches, numbers, ...): each an entity of its own.
    controls: tuple[Control, ...] = ()

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"device id {self.id!r} is not 1-64 of A-Z a-z 0-9 _ . -")
        keys = [sensor.key for sensor in self.sensors] + [c.name for c in self.controls]
        if len(set(keys)) != len(keys):
            raise ValueError(f"device {self.id}: sensor and control keys repeat: {keys}")
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
    command_verb: str = "set"  # commands are `<prefix>/<device>/<verb>/<command>`

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"gateway id {self.id!r} is not 1-64 of A-Z a-z 0-9 _ . -")
        if not self.discovery_prefix or any(c in self.discovery_prefix for c in "+#"):
            raise ValueError(f"discovery prefix {self.discovery_prefix!r}: empty or a wildcard")


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


def device_object_id(gw: GatewayInfo, device_id: str | None) -> str:
    """The gateway's own object id is its node id; a device's is `<node_id>--<device>`.

    A device's always contains `--`, which an escaped id never does, so no configured
    device can take the gateway's entry whatever its id (even the gateway's own id). The node
    id repeated in the object id makes it unique across gateways too, as Home Assistant's
    documentation advises (object id = unique id), and in device mode it is the discovery id."""
    node = node_id(gw.id)
    return node if device_id is None else f"{node}{SEPARATOR}{escape(device_id)}"


def component_object_id(gw: GatewayInfo, device_id: str | None, component: str) -> str:
    """Component mode: `<device object id>--<component>`. A device's sensor has two `--`,
    the gateway's connectivity one, and escaped parts have none: all distinct."""
    return f"{device_object_id(gw, device_id)}{SEPARATOR}{escape(component)}"


def unique_id(gateway_id: str, device_id: str, key: str) -> str:
    return f"{gateway_id}:{device_id}:{key}"


def entity_id(platform: str, *parts: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")
    return f"{platform}.{slug or 'unknown'}"


def gateway_identifier(gw: GatewayInfo) -> str:
    return f"{IDENTIFIER_PREFIX}:{gw.id}"


def device_identifier(gw: GatewayInfo, device_id: str) -> str:
    return f"{IDENTIFIER_PREFIX}:{gw.id}:{device_id}"
