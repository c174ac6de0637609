"""Home Assistant discovery, the pure part (gateway/homeassistant/: identity.py, discovery.py,
clearing.py, tables.py, checks.py): the configs in both modes, their ids, overrides, the clearing
messages, and the copies of Home Assistant's tables. `HA_SOURCE=<unpacked homeassistant wheel>`
also compares the tables with Home Assistant's own modules."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.abc
import importlib.machinery
import json
import math
import os
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from gateway.config.controls import HA_MQTT_PLATFORMS, ControlSpec
from gateway.config.modbus import RegisterSpec
from gateway.controls import from_register, from_spec
from gateway.decoders.ble import UNITS
from gateway.homeassistant import tables
from gateway.homeassistant.checks import check_sensor, default_classes
from gateway.homeassistant.clearing import is_own_config, owned_topic_filter, removals
from gateway.homeassistant.discovery import discovery_messages, encode
from gateway.homeassistant.identity import DeviceInfo, GatewayInfo, SensorInfo, escape, node_id
from gateway.homeassistant.tables import (
    BINARY_SENSOR_DEVICE_CLASSES,
    DEVICE_CLASS_STATE_CLASSES,
    DEVICE_CLASS_UNITS,
    NON_NUMERIC_DEVICE_CLASSES,
    SENSOR_DEVICE_CLASSES,
    STATE_CLASS_UNITS,
    STATE_CLASSES,
)

# Home Assistant's discovery topic pattern (components/mqtt/discovery.py, TOPIC_MATCHER).
HA_TOPIC = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
ONLINE = {"payload_available": "online", "payload_not_available": "offline"}


def gateway(mode: Literal["device", "component"] = "component", **changes: Any) -> GatewayInfo:
    gw = GatewayInfo(
        id="gw1",
        version="1.2.3",
        topic_prefix="home",
        status_topic="home/gw1/status",
        discovery_prefix="homeassistant",
        mode=mode,
        origin_url="https://example.org/iot-gateway",
    )
    return dataclasses.replace(gw, **changes)


def boiler(payload: Literal["sensor", "device"] = "sensor", **changes: Any) -> DeviceInfo:
    device = DeviceInfo(
        id="boiler",
        name="Boiler",
        manufacturer="Acme",
        model="B-1",
        sensors=(
            SensorInfo("temperature", "°C", "temperature", "measurement", binary=False),
            SensorInfo("flame", None, "heat", None, binary=True),
        ),
        payload=payload,
        expire_after=90.2,
    )
    return dataclasses.replace(device, **changes)


def _controls() -> tuple[Any, ...]:
    number = from_register(
        RegisterSpec(name="setpoint", address=0, homeassistant={"platform": "number"})
    )
    spec = ControlSpec(platform="select", options={"1": "on"}, state="mode", optimistic=True)
    return (
        number,
        from_spec("power", ControlSpec(platform="switch", state="power")),
        from_spec("reset", ControlSpec(platform="button")),
        from_spec("mode", spec),
    )


CONTROLS = _controls()


def components(messages: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every entity's config, the device's `device` and `origin` merged in (device mode)."""
    for config in messages.values():
        if "components" not in config:
            yield config
            continue
        for component in config["components"].values():
            yield component | {"device": config["device"], "origin": config["origin"]}


def by_unique_id(messages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["unique_id"]: c for c in components(messages)}


# -- the configs -------------------------------------------------------------------------------
def test_component_mode_sensor_config_carries_every_field() -> None:
    messages = discovery_messages(gateway(), [boiler()])
    topic = "homeassistant/sensor/gw1/gw1--boiler--temperature/config"
    assert messages[topic] == {
        "unique_id": "gw1:boiler:temperature",
        "default_entity_id": "sensor.boiler_temperature",
        "state_topic": "home/boiler/temperature",
        "value_template": "{{ 'None' if value_json.value is none else value_json.value }}",
        "qos": 1,
        "availability": [
            {"topic": "home/gw1/status", **ONLINE},
            {"topic": "home/boiler/availability", **ONLINE},
        ],
        "availability_mode": "all",
        "device_class": "temperature",
        "state_class": "measurement",
        "unit_of_measurement": "°C",
        "expire_after": 91,  # 90.2 s, rounded up
        "device": {
            "identifiers": ["iot-gateway:gw1:boiler"],
            "name": "Boiler",
            "manufacturer": "Acme",
            "model": "B-1",
            "via_device": "iot-gateway:gw1",
        },
        "origin": {
            "name": "iot-gateway",
            "sw_version": "1.2.3",
            "support_url": "https://example.org/iot-gateway",
        },
    }  # no `name`: the key is the device class, Home Assistant names it (translated)


def test_component_mode_binary_sensor_and_the_gateway() -> None:
    messages = discovery_messages(gateway(), [boiler()])
    assert set(messages) == {
        "homeassistant/binary_sensor/gw1/gw1--connectivity/config",
        "homeassistant/sensor/gw1/gw1--boiler--temperature/config",
        "homeassistant/binary_sensor/gw1/gw1--boiler--flame/config",
    }
    flame = messages["homeassistant/binary_sensor/gw1/gw1--boiler--flame/config"]
    assert flame["name"] == "Flame"
    assert flame["default_entity_id"] == "binary_sensor.boiler_flame"
    assert flame["value_template"] == (
        "{{ 'None' if value_json.value is none else ('ON' if value_json.value else 'OFF') }}"
    )
    assert (flame["payload_on"], flame["payload_off"], flame["device_class"]) == (
        "ON",
        "OFF",
        "heat",
    )
    assert "unit_of_measurement" not in flame
    assert "state_class" not in flame
    own = messages["homeassistant/binary_sensor/gw1/gw1--connectivity/config"]
    assert own == {
        "name": "Connectivity",
        "unique_id": "gw1:connectivity",
        "default_entity_id": "binary_sensor.gw1_connectivity",
        "state_topic": "home/gw1/status",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "qos": 1,
        "device": {
            "identifiers": ["iot-gateway:gw1"],
            "name": "gw1",
            "model": "iot-gateway",
            "sw_version": "1.2.3",
        },
        "origin": own["origin"],
    }  # no availability: it is the availability


def test_device_mode_one_config_per_device_with_components() -> None:
    messages = discovery_messages(gateway("device"), [boiler("device")])
    assert set(messages) == {
        "homeassistant/device/gw1/gw1/config",
        "homeassistant/device/gw1/gw1--boiler/config",
    }
    config = messages["homeassistant/device/gw1/gw1--boiler/config"]
    assert set(config) == {"device", "origin", "components"}
    assert config["device"]["via_device"] == "iot-gateway:gw1"
    assert config["origin"]["name"] == "iot-gateway"
    temperature, flame = config["components"]["temperature"], config["components"]["flame"]
    assert temperature["platform"] == "sensor"
    assert flame["platform"] == "binary_sensor"
    assert temperature["state_topic"] == flame["state_topic"] == "home/boiler"
    assert temperature["value_template"] == (
        "{% if 'temperature' in value_json %}{{ 'None' if value_json['temperature'] is none "
        "else value_json['temperature'] }}{% endif %}"
    )
    gw_config = messages["homeassistant/device/gw1/gw1/config"]
    assert gw_config["components"]["connectivity"]["platform"] == "binary_sensor"
    assert "via_device" not in gw_config["device"]


@pytest.mark.parametrize("mode", ["device", "component"])
@pytest.mark.parametrize("payload", ["sensor", "device"])
def test_both_modes_announce_the_same_entities(
    mode: Literal["device", "component"], payload: Literal["sensor", "device"]
) -> None:
    """Mode only moves `device`/`origin`/`platform`: the entities' options are the same."""
    entities = by_unique_id(discovery_messages(gateway(mode), [boiler(payload)]))
    reference = by_unique_id(discovery_messages(gateway("component"), [boiler(payload)]))
    for config in entities.values():
        config.pop("platform", None)
    assert entities == reference
    for uid, config in entities.items():
        assert config["qos"] == 1
        assert config["origin"] == {
            "name": "iot-gateway",
            "sw_version": "1.2.3",
            "support_url": "https://example.org/iot-gateway",
        }
        if uid == "gw1:connectivity":
            assert "availability" not in config
            continue
        assert config["availability_mode"] == "all"
        assert [a["topic"] for a in config["availability"]] == [
            "home/gw1/status",
            "home/boiler/availability",
        ]
        assert config["expire_after"] == 91
        assert config["device"]["identifiers"] == ["iot-gateway:gw1:boiler"]


def test_optional_fields_are_left_out() -> None:
    bare = DeviceInfo(
        id="meter",
        name="Meter",
        manufacturer=None,
        model=None,
        sensors=(SensorInfo("count", None, None, None, binary=False),),
        payload="sensor",
        expire_after=None,
    )
    (config,) = (
        c for c in components(discovery_messages(gateway(), [bare])) if "count" in c["unique_id"]
    )
    for option in ("unit_of_measurement", "device_class", "state_class", "expire_after"):
        assert option not in config
    assert config["name"] == "Count"
    assert set(config["device"]) == {"identifiers", "name", "via_device"}
    assert (
        "support_url"
        not in discovery_messages(gateway(origin_url=""), [bare]).popitem()[1]["origin"]
    )


def test_a_device_without_sensors_is_not_announced() -> None:
    empty = boiler(sensors=())
    for mode in ("device", "component"):
        messages = discovery_messages(gateway(mode), [empty])
        assert list(by_unique_id(messages)) == ["gw1:connectivity"]


def test_expire_after_rounds_up_to_whole_seconds() -> None:
    for seconds, sent in ((60.0, 60), (60.001, 61), (0.2, 1)):
        config = by_unique_id(discovery_messages(gateway(), [boiler(expire_after=seconds)]))
        assert config["gw1:boiler:temperature"]["expire_after"] == sent


def test_unique_ids_survive_a_new_prefix_mode_and_name() -> None:
    before = set(by_unique_id(discovery_messages(gateway(), [boiler()])))
    moved = gateway(
        "device", topic_prefix="site/a", status_topic="site/a/gw1/status", discovery_prefix="ha"
    )
    after = discovery_messages(moved, [boiler("device", name="Old boiler", manufacturer=None)])
    assert (
        set(by_unique_id(after))
        == before
        == {
            "gw1:connectivity",
            "gw1:boiler:temperature",
            "gw1:boiler:flame",
        }
    )
    assert by_unique_id(after)["gw1:boiler:temperature"]["state_topic"] == "site/a/boiler"


def test_overrides_merge_and_none_removes() -> None:
    sensor = SensorInfo(
        "temperature",
        "°C",
        "temperature",
        "measurement",
        binary=False,
        overrides={"name": "Flow", "icon": "mdi:fire", "expire_after": None, "state_class": None},
    )
    modes: list[tuple[Literal["device", "component"], Literal["sensor", "device"]]] = [
        ("component", "sensor"),
        ("device", "device"),
    ]
    for mode, payload in modes:
        messages = discovery_messages(gateway(mode), [boiler(payload, sensors=(sensor,))])
        config = by_unique_id(messages)["gw1:boiler:temperature"]
        assert (config["name"], config["icon"]) == ("Flow", "mdi:fire")
        assert "expire_after" not in config
        assert "state_class" not in config
        assert config["device_class"] == "temperature"


def test_overrides_are_a_snapshot() -> None:
    options: dict[str, Any] = {"icon": "mdi:fire"}
    sensor = SensorInfo("t", "°C", None, None, binary=False, overrides=options)
    options["icon"] = "mdi:water"
    assert sensor.overrides["icon"] == "mdi:fire"
    assert hash(sensor) == hash(dataclasses.replace(sensor))


def test_invalid_infos_are_refused() -> None:
    with pytest.raises(ValueError, match="sensor key"):
        SensorInfo("a/b", None, None, None, binary=False)
    with pytest.raises(ValueError, match="repeat"):
        boiler(sensors=(SensorInfo("t", None, None, None, binary=False),) * 2)
    with pytest.raises(ValueError, match="expire_after"):
        boiler(expire_after=0)
    with pytest.raises(ValueError, match="device ids repeat"):
        discovery_messages(gateway(), [boiler(), boiler()])
    with pytest.raises(ValueError, match="wildcard"):
        gateway(discovery_prefix="home/+")


# -- templates, rendered as Home Assistant renders them ----------------------------------------
def render(template: str, payload: dict[str, Any]) -> str:
    jinja2 = pytest.importorskip("jinja2")
    return str(jinja2.Environment().from_string(template).render(value_json=payload))


@pytest.mark.parametrize(
    ("payload", "binary", "message", "state"),
    [
        ("sensor", False, {"value": 21.5, "unit": "°C"}, "21.5"),
        ("sensor", False, {"value": None, "unit": "°C"}, "None"),  # Home Assistant: unknown
        ("sensor", True, {"value": True}, "ON"),
        ("sensor", True, {"value": False}, "OFF"),
        ("sensor", True, {"value": None}, "None"),
        ("device", False, {"t-1.x": 4, "ts": 1.0}, "4"),
        ("device", False, {"t-1.x": None}, "None"),
        ("device", False, {"other": 4}, ""),  # missing: ignored, the last state stays
        ("device", True, {"t-1.x": True}, "ON"),
        ("device", True, {"ts": 1.0}, ""),
    ],
)
def test_value_templates(
    payload: Literal["sensor", "device"], binary: bool, message: dict[str, Any], state: str
) -> None:
    sensor = SensorInfo("t-1.x", None, None, None, binary=binary)
    config = by_unique_id(discovery_messages(gateway(), [boiler(payload, sensors=(sensor,))]))
    assert render(config["gw1:boiler:t-1.x"]["value_template"], message) == state


# -- topics and ids ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gateway_id", "node"),
    [("gw1", "gw1"), ("gw_1", "gw_1"), ("gw-1", "gw-_1"), ("gw.1", "gw-d1"), ("a b", "a-u000020b")],
)
def test_node_id_is_home_assistants_alphabet(gateway_id: str, node: str) -> None:
    assert node_id(gateway_id) == node
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", node)


ids = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)


@given(st.lists(ids, unique=True, max_size=4), ids)
def test_escape_is_one_to_one_and_never_writes_the_separator(names: list[str], other: str) -> None:
    escaped = [escape(name) for name in names]
    assert len(set(escaped)) == len(names)
    assert all("--" not in e and re.fullmatch(r"[a-zA-Z0-9_-]+", e) for e in escaped)
    assert (escape(other) in escaped) == (other in names)


@given(
    gateway_id=ids,
    devices=st.dictionaries(ids, st.lists(ids, min_size=1, max_size=3, unique=True), max_size=4),
    mode=st.sampled_from(["device", "component"]),
)
def test_topics_never_collide_and_match_home_assistant_and_the_filter(
    gateway_id: str, devices: dict[str, list[str]], mode: Literal["device", "component"]
) -> None:
    """Including a device whose id is the gateway's: the gateway's entry stays its own."""
    devices = {gateway_id: ["connectivity"], **devices}
    infos = [
        boiler(id=d, sensors=tuple(SensorInfo(k, None, None, None, binary=False) for k in keys))
        for d, keys in devices.items()
    ]
    gw = gateway(mode, id=gateway_id)
    messages = discovery_messages(gw, infos)
    entity_count = 1 + sum(len(keys) for keys in devices.values())
    topic_count = 1 + len(devices) if mode == "device" else entity_count
    assert len(messages) == topic_count
    assert len(by_unique_id(messages)) == entity_count
    for topic in messages:
        assert HA_TOPIC.fullmatch(topic.removeprefix("homeassistant/")), topic
        assert topic_matches_sub(owned_topic_filter(gw), topic)
        assert is_own_config(gw, messages[topic])


def test_owned_topic_filter() -> None:
    assert owned_topic_filter(gateway(id="gw.1", discovery_prefix="ha")) == "ha/+/gw-d1/+/config"


def test_is_own_config() -> None:
    gw = gateway()
    config = discovery_messages(gw, [boiler()])[
        "homeassistant/sensor/gw1/gw1--boiler--temperature/config"
    ]
    assert is_own_config(gw, config)
    assert is_own_config(gw, {"o": {"name": "iot-gateway"}, "dev": {"ids": "iot-gateway:gw1"}})
    assert not is_own_config(gateway(id="gw10"), config)
    assert not is_own_config(gw, config | {"origin": {"name": "zigbee2mqtt"}})
    assert not is_own_config(gw, {"device": {"identifiers": ["iot-gateway:gw1"]}})


# -- encoding ----------------------------------------------------------------------------------
def test_encode_is_compact_sorted_utf8() -> None:
    assert (
        encode({"b": 1, "a": {"unit": "°C", "z": None}})
        == '{"a":{"unit":"°C","z":null},"b":1}'.encode()
    )
    config = discovery_messages(gateway(), [boiler()])[
        "homeassistant/sensor/gw1/gw1--boiler--temperature/config"
    ]
    assert encode(config) == encode(dict(reversed(config.items())))
    assert json.loads(encode(config)) == config
    with pytest.raises(ValueError, match="JSON"):
        encode({"expire_after": math.nan})


# -- clearing ----------------------------------------------------------------------------------
def test_nothing_removed_clears_nothing() -> None:
    for mode in ("device", "component"):
        messages = discovery_messages(gateway(mode), [boiler()])
        assert removals(gateway(mode), messages, messages) == []
        assert removals(gateway(mode), {}, messages) == []


def test_device_mode_removed_component_is_sent_as_platform_only_first() -> None:
    gw = gateway("device")
    old = discovery_messages(gw, [boiler("device")])
    kept = (boiler().sensors[0],)
    new = discovery_messages(gw, [boiler("device", sensors=kept)])
    topic = "homeassistant/device/gw1/gw1--boiler/config"
    ((cleared, payload),) = removals(gw, old, new)
    assert cleared == topic
    sent = json.loads(payload)
    assert sent["components"]["flame"] == {"platform": "binary_sensor"}
    assert sent["components"]["temperature"] == new[topic]["components"]["temperature"]
    assert (sent["device"], sent["origin"]) == (new[topic]["device"], new[topic]["origin"])
    assert "flame" not in new[topic]["components"]  # ...and the caller's new config follows


def test_device_mode_changed_platform_removes_the_old_entity() -> None:
    gw = gateway("device")
    old = discovery_messages(gw, [boiler("device")])
    flipped = (boiler().sensors[0], SensorInfo("flame", "%", None, None, binary=False))
    new = discovery_messages(gw, [boiler("device", sensors=flipped)])
    ((_, payload),) = removals(gw, old, new)
    assert json.loads(payload)["components"]["flame"] == {"platform": "binary_sensor"}


def test_device_mode_whole_device_removed_gets_an_empty_payload() -> None:
    gw = gateway("device")
    meter = boiler("device", id="meter")
    old = discovery_messages(gw, [boiler("device"), meter])
    new = discovery_messages(gw, [meter])
    assert removals(gw, old, new) == [("homeassistant/device/gw1/gw1--boiler/config", b"")]
    assert removals(gw, old, {}) == [(topic, b"") for topic in sorted(old)]


def test_device_mode_ordering_with_both_kinds() -> None:
    gw = gateway("device")
    old = discovery_messages(gw, [boiler("device"), boiler("device", id="attic")])
    new = discovery_messages(gw, [boiler("device", sensors=boiler().sensors[:1])])
    cleared = removals(gw, old, new)
    assert [(t, p == b"") for t, p in cleared] == [
        ("homeassistant/device/gw1/gw1--attic/config", True),
        ("homeassistant/device/gw1/gw1--boiler/config", False),
    ]


def test_component_mode_removed_sensor_gets_an_empty_payload() -> None:
    gw = gateway()
    old = discovery_messages(gw, [boiler()])
    new = discovery_messages(gw, [boiler(sensors=boiler().sensors[:1])])
    assert removals(gw, old, new) == [
        ("homeassistant/binary_sensor/gw1/gw1--boiler--flame/config", b"")
    ]


def test_a_switch_of_mode_clears_every_old_topic() -> None:
    old = discovery_messages(gateway(), [boiler()])
    new = discovery_messages(gateway("device"), [boiler()])
    assert removals(gateway("device"), old, new) == [(topic, b"") for topic in sorted(old)]


def test_old_abbreviated_device_configs_are_read() -> None:
    gw = gateway("device")
    new = discovery_messages(gw, [boiler("device", sensors=boiler().sensors[:1])])
    topic = "homeassistant/device/gw1/gw1--boiler/config"
    old = {topic: {"dev": {}, "o": {}, "cmps": {"flame": {"p": "binary_sensor", "uniq_id": "x"}}}}
    ((_, payload),) = removals(gw, old, new)
    assert json.loads(payload)["components"]["flame"] == {"platform": "binary_sensor"}


# -- Home Assistant's tables -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device_class", "state_class", "unit"),
    [
        ("temperature", "measurement", "°C"),
        ("temperature", None, "K"),
        ("Temperature", "MEASUREMENT", "°F"),  # Home Assistant lowercases both
        ("humidity", "measurement", "%"),
        ("pm25", "measurement", "µg/m³"),  # micro sign, as the BLE decoders write it
        ("pm25", "measurement", "μg/m³"),  # Greek mu, as Home Assistant writes it
        ("aqi", "measurement", None),  # a class whose units include "no unit"
        ("power_factor", None, "%"),
        ("monetary", "total", "EUR"),  # not in DEVICE_CLASS_UNITS: any unit
        ("energy", "total_increasing", "kWh"),
        ("wind_direction", "measurement_angle", "°"),
        ("timestamp", None, None),
        (None, "measurement", "furlongs"),  # no device class: anything goes
        (None, None, None),
    ],
)
def test_check_sensor_accepts(
    device_class: str | None, state_class: str | None, unit: str | None
) -> None:
    assert check_sensor(device_class, state_class, unit) is None


@pytest.mark.parametrize(
    ("device_class", "state_class", "unit", "message"),
    [
        (
            "temperature",
            None,
            "C",
            "unit 'C' does not fit device_class temperature: use one of °C, °F, K",
        ),
        ("temperature", None, None, "device_class temperature needs a unit: use one of °C, °F, K"),
        ("battery", None, " ", "device_class battery needs a unit: use one of %"),
        (
            "humidity",
            "total_increasing",
            "%",
            "state_class total_increasing is not allowed for device_class humidity: "
            "use measurement",
        ),
        (
            "energy",
            "measurement",
            "kWh",
            "state_class measurement is not allowed for device_class energy: "
            "use total or total_increasing",
        ),
        (
            "timestamp",
            "measurement",
            None,
            "state_class measurement is not allowed for device_class timestamp: "
            "leave state_class out",
        ),
        (
            "timestamp",
            None,
            "s",
            "device_class timestamp is not numeric: it takes no unit, got 's'",
        ),
        ("temprature", None, "°C", "unknown device_class 'temprature' (did you mean temperature?)"),
        ("frobnication", None, None, "unknown device_class 'frobnication': see https://"),
        ("co2", None, "ppm", "unknown device_class 'co2' (did you mean carbon_dioxide?)"),
        ("temperature", "average", "°C", "unknown state_class 'average': use one of measurement, "),
        (
            "distance",
            "measurement_angle",
            "m",
            "state_class measurement_angle needs the unit °, got m",
        ),
        ("pm25", None, "ppm", "unit 'ppm' does not fit device_class pm25: use one of μg/m³"),
    ],
)
def test_check_sensor_rejects(
    device_class: str | None, state_class: str | None, unit: str | None, message: str
) -> None:
    problem = check_sensor(device_class, state_class, unit)
    assert problem is not None
    assert problem.startswith(message)
    assert "\n" not in problem


def test_check_sensor_binary() -> None:
    assert check_sensor("door", None, None, binary=True) is None
    assert check_sensor("Motion", None, None, binary=True) is None
    assert check_sensor(None, None, None, binary=True) is None
    assert check_sensor("temperature", None, None, binary=True) == (
        "unknown binary_sensor device_class 'temperature': see "
        "https://www.home-assistant.io/integrations/sensor/#device-class"
    )
    assert check_sensor("windw", None, None, binary=True) == (
        "unknown binary_sensor device_class 'windw' (did you mean window?)"
    )


@pytest.mark.parametrize(
    ("sensor", "unit", "classes"),
    [
        ("temperature", "°C", ("temperature", "measurement")),
        ("temperature_2", "°C", ("temperature", "measurement")),  # BTHome's repeat
        ("humidity", "%", ("humidity", "measurement")),
        ("battery", "%", ("battery", "measurement")),
        ("pressure", "hPa", ("pressure", "measurement")),
        ("illuminance", "lx", ("illuminance", "measurement")),
        ("voltage", "V", ("voltage", "measurement")),
        ("signal_strength", "dBm", ("signal_strength", "measurement")),
        ("rssi", "dBm", ("signal_strength", "measurement")),
        ("pm25", "µg/m³", ("pm25", "measurement")),
        ("pm2_5", "µg/m³", ("pm25", "measurement")),
        ("carbon_dioxide", "ppm", ("carbon_dioxide", "measurement")),
        ("co2", "ppm", ("carbon_dioxide", "measurement")),
        ("dew_point", "°C", ("temperature", "measurement")),
        ("mass", "kg", ("weight", "measurement")),
        ("energy", "kWh", ("energy", None)),  # a total: increasing or not, the user says
        ("wind_direction", "°", ("wind_direction", None)),
        ("temperature", "C", (None, None)),  # unit does not fit: no class
        ("temperature", None, (None, None)),
        ("timestamp", None, (None, None)),  # non-numeric classes are never implied
        ("tx_power", "dBm", (None, None)),
        ("acceleration_x", "g", (None, None)),
    ],
)
def test_default_classes(
    sensor: str, unit: str | None, classes: tuple[str | None, str | None]
) -> None:
    assert default_classes(sensor, unit) == classes


def test_default_classes_binary() -> None:
    assert default_classes("door", None, binary=True) == ("door", None)
    assert default_classes("battery_low", None, binary=True) == ("battery", None)
    assert default_classes("window_2", None, binary=True) == ("window", None)
    assert default_classes("generic", None, binary=True) == (None, None)


def test_ble_decoder_units_fit_the_classes_their_names_imply() -> None:
    """Every BLE sensor named as a device class (or an alias) gets that class with its unit."""
    for sensor, unit in UNITS.items():
        name = tables.SENSOR_ALIASES.get(sensor, sensor)
        if name in SENSOR_DEVICE_CLASSES:
            assert default_classes(sensor, unit)[0] == name, (sensor, unit)
            assert check_sensor(name, default_classes(sensor, unit)[1], unit) is None


def test_tables_are_sane() -> None:
    assert set(DEVICE_CLASS_STATE_CLASSES) <= SENSOR_DEVICE_CLASSES
    assert set(DEVICE_CLASS_UNITS) <= SENSOR_DEVICE_CLASSES
    assert NON_NUMERIC_DEVICE_CLASSES <= SENSOR_DEVICE_CLASSES
    assert not NON_NUMERIC_DEVICE_CLASSES & set(DEVICE_CLASS_UNITS)
    assert set(STATE_CLASS_UNITS) <= STATE_CLASSES
    assert all(allowed <= STATE_CLASSES for allowed in DEVICE_CLASS_STATE_CLASSES.values())
    assert all(units for units in DEVICE_CLASS_UNITS.values())
    assert set(tables.SENSOR_ALIASES.values()) <= SENSOR_DEVICE_CLASSES
    assert set(tables.BINARY_ALIASES.values()) <= BINARY_SENSOR_DEVICE_CLASSES
    assert "µ" not in "".join(u or "" for units in DEVICE_CLASS_UNITS.values() for u in units)
    assert all(
        k.startswith("µ") or k.endswith("Ar") or k.endswith("Arh") for k in tables.AMBIGUOUS_UNITS
    )
    assert DEVICE_CLASS_UNITS["temperature"] == {"°C", "°F", "K"}
    assert {"measurement", "measurement_angle", "total", "total_increasing"} == STATE_CLASSES


# -- against Home Assistant's own source (HA_SOURCE=<unpacked homeassistant wheel>) -------------
class _Anything(types.ModuleType):
    """A stand-in for every Home Assistant module but the few loaded for real."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub


class _StubType(type):
    """Class attributes of a stand-in too (`SomeEntityFeature.ARM_HOME` in mqtt/const.py)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub()


class _Stub(metaclass=_StubType):
    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __or__(self, other: object) -> _Stub:
        return self

    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return _Stub()

    def __class_getitem__(cls, item: object) -> type[_Stub]:
        return cls

    def __getattr__(self, name: str) -> _Stub:
        return _Stub()


class _HomeAssistantSource(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads these modules from the source; everything else they import is a stub (their
    constants need no more than the enums of `homeassistant/const.py`)."""

    REAL = (
        "homeassistant/const.py",
        "homeassistant/generated/entity_platforms.py",
        "homeassistant/components/sensor/const.py",
        "homeassistant/components/binary_sensor/const.py",
        "homeassistant/components/mqtt/abbreviations.py",
        "homeassistant/components/mqtt/const.py",
    )

    def __init__(self, root: Path) -> None:
        self.files = {p.removesuffix(".py").replace("/", "."): root / p for p in self.REAL}

    def find_spec(
        self, name: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "probatio" and name.split(".", maxsplit=1)[0] != "homeassistant":
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=name not in self.files)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        if spec.name in self.files:
            return None
        module = _Anything(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        if (path := self.files.get(module.__name__)) is None:
            return
        import __future__  # noqa: PLC0415 - annotations that name types only HA has

        flags = __future__.annotations.compiler_flag
        code = compile(path.read_text("utf-8"), str(path), "exec", flags=flags, dont_inherit=True)
        module.__file__ = str(path)
        exec(code, module.__dict__)  # Home Assistant's own source, asked for by HA_SOURCE


def _plain(value: object) -> str | None:
    return None if value is None else str(value.value if isinstance(value, enum.Enum) else value)


@pytest.fixture
def home_assistant() -> Iterator[dict[str, types.ModuleType]]:
    root = os.environ.get("HA_SOURCE")
    if not root:
        pytest.skip("set HA_SOURCE to an unpacked homeassistant wheel to compare the tables")
    finder = _HomeAssistantSource(Path(root))
    saved = {
        n: m for n, m in sys.modules.items() if n.split(".")[0] in ("homeassistant", "probatio")
    }
    sys.meta_path.insert(0, finder)
    try:
        yield {name: importlib.import_module(name) for name in finder.files}
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] in ("homeassistant", "probatio")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_tables_match_home_assistant_source(home_assistant: dict[str, types.ModuleType]) -> None:
    sensor = home_assistant["homeassistant.components.sensor.const"]
    binary = home_assistant["homeassistant.components.binary_sensor.const"]

    def units(table: dict[Any, Any]) -> dict[str, frozenset[str | None]]:
        return {str(_plain(k)): frozenset(_plain(u) for u in v) for k, v in table.items()}

    assert home_assistant["homeassistant.const"].__version__ == "2026.11.0", (
        "update tables.py's header"
    )
    assert {_plain(c) for c in sensor.SensorDeviceClass} == SENSOR_DEVICE_CLASSES
    assert {_plain(c) for c in binary.BinarySensorDeviceClass} == BINARY_SENSOR_DEVICE_CLASSES
    assert {_plain(c) for c in sensor.SensorStateClass} == STATE_CLASSES
    assert {_plain(c) for c in sensor.NON_NUMERIC_DEVICE_CLASSES} == NON_NUMERIC_DEVICE_CLASSES
    assert units(sensor.DEVICE_CLASS_UNITS) == DEVICE_CLASS_UNITS
    assert units(sensor.DEVICE_CLASS_STATE_CLASSES) == DEVICE_CLASS_STATE_CLASSES
    assert units(sensor.STATE_CLASS_UNITS) == STATE_CLASS_UNITS
    assert {k: _plain(v) for k, v in sensor.AMBIGUOUS_UNITS.items()} == tables.AMBIGUOUS_UNITS


def test_options_are_home_assistants(home_assistant: dict[str, types.ModuleType]) -> None:
    """Every option the configs use is one Home Assistant knows (by its abbreviation tables;
    `qos` and `via_device` have no abbreviation)."""
    abbreviations = home_assistant["homeassistant.components.mqtt.abbreviations"]
    known = {
        *abbreviations.ABBREVIATIONS.values(),
        *abbreviations.DEVICE_ABBREVIATIONS.values(),
        *abbreviations.ORIGIN_ABBREVIATIONS.values(),
        "qos",
        "via_device",
    }
    used: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            used.update(value)
            for key, item in value.items():
                if key != "components":
                    walk(item)
                else:
                    for component in item.values():
                        walk(component)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    controlled = boiler(controls=CONTROLS)
    for mode in ("device", "component"):
        devices = [boiler(), boiler("device", id="b"), dataclasses.replace(controlled, id="c")]
        walk(list(discovery_messages(gateway(mode), devices).values()))
    assert {"command_topic", "payload_press", "state_on", "min", "options"} <= used
    assert used - known == set()


def test_control_platforms_are_home_assistants(home_assistant: dict[str, types.ModuleType]) -> None:
    """A platform name the config refuses as unknown is one Home Assistant's MQTT lacks."""
    mqtt = home_assistant["homeassistant.components.mqtt.const"]
    assert {str(_plain(c)) for c in mqtt.SUPPORTED_COMPONENTS} == HA_MQTT_PLATFORMS
