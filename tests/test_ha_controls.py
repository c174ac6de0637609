"""Controls, the pure part (issue 23): what a command's payload becomes (`gateway/controls.py`),
a register's number range, and the discovery configs of switches, numbers, selects and buttons
(`gateway/homeassistant/controls.py`) with their state templates rendered by Jinja2 as Home
Assistant renders them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

import pytest

from gateway.config import ModbusDevice, RegisterSpec
from gateway.config.controls import ControlSpec
from gateway.controls import (
    Control,
    accept,
    controls_document,
    from_register,
    from_spec,
    register_range,
)
from gateway.errors import CommandRefusedError
from gateway.homeassistant.devices import device_info
from gateway.homeassistant.discovery import discovery_messages
from gateway.homeassistant.identity import DeviceInfo, GatewayInfo, SensorInfo
from gateway.modbus.registers import decode, encode

jinja2 = pytest.importorskip("jinja2")

GW = GatewayInfo(
    id="gw1",
    version="1.2.3",
    topic_prefix="home",
    status_topic="home/gw1/status",
    discovery_prefix="homeassistant",
    mode="device",
    origin_url="",
)


def reg(**kw: Any) -> RegisterSpec:
    return RegisterSpec.model_validate({"name": "r", "address": 0, **kw})


def control(**kw: Any) -> Control:
    name = kw.pop("name", "c")
    return from_spec(name, ControlSpec.model_validate(kw))


# -- what a command carries on ------------------------------------------------------------------


def test_a_serial_switch_takes_home_assistants_on_off_and_its_own_payloads() -> None:
    power = control(platform="switch", payload_on="1", payload_off="0", state="power")
    assert [accept(power, p) for p in ("ON", "OFF", "on", "1", "0")] == ["1", "0", "1", "1", "0"]
    with pytest.raises(CommandRefusedError, match="takes ON or OFF") as err:
        accept(power, "2")
    assert err.value.reason == "not_on_off"


def test_a_select_takes_labels_and_keys_and_refuses_the_rest() -> None:
    led = control(platform="select", options={"00": "off", "ff": "on"})
    assert (accept(led, "on"), accept(led, "off"), accept(led, "ff")) == ("ff", "00", "ff")
    with pytest.raises(CommandRefusedError, match=r"'dim' is not an option of c \(off, on\)"):
        accept(led, "dim")


def test_a_number_outside_its_range_is_refused_before_the_device() -> None:
    setpoint = from_register(
        reg(data_type="int16", scale=0.1, homeassistant={"platform": "number", "min": 5, "max": 30})
    )
    assert setpoint is not None
    assert accept(setpoint, "21.5") == "21.5"
    for text in ("35", "4.9", "nan", "-inf"):
        with pytest.raises(CommandRefusedError, match="out of range for r \\(5 to 30\\)") as err:
            accept(setpoint, text)
        assert err.value.reason == "out_of_range"
    with pytest.raises(CommandRefusedError, match="not a number"):
        accept(setpoint, "warm")


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"data_type": "int16", "scale": 0.1}, (-3276.8, 3276.7, 0.1)),
        ({"data_type": "uint16"}, (0, 65535, 1)),
        ({"data_type": "int16", "scale": -0.5, "offset": 10}, (-16373.5, 16394.0, 0.5)),
        ({"data_type": "uint32", "scale": 0.0001}, (0, 429496.7295, 0.001)),
        ({"data_type": "float32"}, (-3.4028234663852886e38, 3.4028234663852886e38, 0.001)),
    ],
)
def test_a_number_gets_its_range_from_the_data_type_and_scale(
    kw: dict[str, Any], expected: tuple[float, float, float]
) -> None:
    assert register_range(reg(**kw)) == expected
    number = from_register(reg(**kw, homeassistant={"platform": "number"}))
    assert number is not None
    assert (number.minimum, number.maximum, number.step) == expected


def test_register_options_map_both_ways() -> None:
    mode = reg(options={0: "off", 1: "eco", 2: "comfort"})
    assert decode(mode, [1]) == {"r": "eco"}
    assert decode(mode, [7]) == {"r": 7}  # a mode the config does not name: published as is
    assert encode(mode, "comfort") == [2]
    assert encode(mode, "1") == [1]
    with pytest.raises(ValueError, match=r"'hot' is not an option of r \(off, eco, comfort\)"):
        encode(mode, "hot")
    with pytest.raises(ValueError, match="not an option"):
        encode(mode, "3")
    scaled = reg(scale=0.5, options={1: "half"})
    assert decode(scaled, [2]) == {"r": "half"}  # 1.0 finds the label of 1
    assert encode(scaled, "half") == [2]


def test_defaults_coil_switch_holding_with_options_select() -> None:
    relay = from_register(reg(function="coil"))
    mode = from_register(reg(options={0: "off", 1: "on"}))
    assert relay is not None
    assert mode is not None
    assert (relay.platform, relay.state_bool, relay.state) == ("switch", True, "r")
    assert (mode.platform, dict(mode.options), mode.labels_published) == (
        "select",
        {"0": "off", "1": "on"},
        True,
    )
    assert from_register(reg()) is None
    assert from_register(reg(function="coil", homeassistant={"platform": "sensor"})) is None
    button = from_register(reg(homeassistant={"platform": "button"}))
    assert button is not None
    assert (button.state, button.payload_press) == (None, "1")


def test_status_document_shows_the_state_as_home_assistant_does() -> None:
    controls = {
        "relay": from_register(reg(name="relay", function="coil")),
        "power": control(
            name="power", platform="switch", payload_on="1", payload_off="0", state="p"
        ),
        "led": control(name="led", platform="select", options={"00": "off", "ff": "on"}),
        "reset": control(name="reset", platform="button"),
    }
    doc = controls_document(
        {k: v for k, v in controls.items() if v is not None}, {"relay": True, "p": 0}
    )
    assert doc["relay"] == {
        "platform": "switch",
        "state_sensor": "relay",
        "state": "on",
        "optimistic": False,
    }
    assert doc["power"]["state"] == "off"
    assert (doc["led"]["state"], doc["led"]["optimistic"]) == (None, True)
    assert (doc["reset"]["state"], doc["reset"]["optimistic"]) == (None, False)


# -- discovery ----------------------------------------------------------------------------------


def meter(payload: Literal["sensor", "device"] = "sensor") -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "id": "meter1",
            "type": "modbus",
            "port": "/dev/ttyUSB0",
            "payload": payload,
            "registers": [
                {"name": "voltage", "address": 0, "function": "input", "unit": "V"},
                {"name": "relay", "address": 3, "function": "coil"},
                {
                    "name": "setpoint",
                    "address": 16,
                    "data_type": "int16",
                    "scale": 0.1,
                    "unit": "°C",
                    "homeassistant": {
                        "platform": "number",
                        "min": 5,
                        "max": 30,
                        "step": 0.5,
                        "mode": "box",
                        "entity_category": "config",
                    },
                },
                {"name": "mode", "address": 17, "options": {0: "off", 1: "eco", 2: "comfort"}},
            ],
        }
    )


def components(gw: GatewayInfo, device: DeviceInfo) -> dict[str, dict[str, Any]]:
    messages = discovery_messages(gw, [device])
    if gw.mode == "device":
        config = messages["homeassistant/device/gw1/gw1--meter1/config"]
        return dict(config["components"])
    return {
        topic.split("/")[3].split("--")[-1]: {"platform": topic.split("/")[1], **config}
        for topic, config in messages.items()
        if "meter1" in topic
    }


@pytest.mark.parametrize("mode", ["device", "component"])
def test_controls_are_entities_of_their_platform_in_the_device(
    mode: Literal["device", "component"],
) -> None:
    gw = dataclasses.replace(GW, mode=mode)
    found = components(gw, device_info(meter(), {}))
    assert sorted(found) == ["mode", "relay", "setpoint", "voltage"]
    assert {k: c["platform"] for k, c in found.items()} == {
        "voltage": "sensor",
        "relay": "switch",
        "setpoint": "number",
        "mode": "select",
    }
    relay, setpoint, mode_ = found["relay"], found["setpoint"], found["mode"]
    assert relay["command_topic"] == "home/meter1/set/relay"
    assert relay["state_topic"] == "home/meter1/relay"
    assert (relay["payload_on"], relay["state_on"]) == ("ON", "ON")
    assert relay["default_entity_id"] == "switch.meter1_relay"
    assert relay["unique_id"] == "gw1:meter1:relay"
    assert relay["availability"] == found["voltage"]["availability"]
    assert relay["availability_mode"] == "all"
    assert {k: setpoint[k] for k in ("min", "max", "step", "mode", "unit_of_measurement")} == {
        "min": 5,
        "max": 30,
        "step": 0.5,
        "mode": "box",
        "unit_of_measurement": "°C",
    }
    assert setpoint["entity_category"] == "config"
    assert setpoint["default_entity_id"] == "number.meter1_setpoint"
    assert mode_["options"] == ["off", "eco", "comfort"]
    assert mode_["default_entity_id"] == "select.meter1_mode"
    if mode == "device":
        assert "device" not in relay  # at the top, once
    else:
        assert relay["device"]["identifiers"] == ["iot-gateway:gw1:meter1"]


def test_the_command_verb_is_the_configured_one() -> None:
    gw = dataclasses.replace(GW, command_verb="cmd")
    assert (
        components(gw, device_info(meter(), {}))["relay"]["command_topic"]
        == "home/meter1/cmd/relay"
    )


def test_a_control_and_a_sensor_of_one_name_clash() -> None:
    relay = from_register(reg(name="relay", function="coil"))
    assert relay is not None
    with pytest.raises(ValueError, match="repeat"):
        DeviceInfo(
            "m",
            "m",
            None,
            None,
            (SensorInfo("relay", None, None, None, binary=True),),
            "sensor",
            None,
            (relay,),
        )


def render(template: str, payload: object) -> str:
    return str(jinja2.Environment().from_string(template).render(value_json=payload))


@pytest.mark.parametrize("payload_mode", ["sensor", "device"])
def test_state_templates_render_what_home_assistant_reads(
    payload_mode: Literal["sensor", "device"],
) -> None:
    found = components(GW, device_info(meter(payload_mode), {}))

    def shown(key: str, value: object) -> str:
        body: dict[str, object] = {"value": value} if payload_mode == "sensor" else {key: value}
        return render(found[key]["value_template"], body)

    assert [shown("relay", v) for v in (True, False, None)] == ["ON", "OFF", "None"]
    assert [shown("setpoint", v) for v in (21.5, None)] == ["21.5", "None"]
    assert [shown("mode", v) for v in ("eco", None)] == ["eco", "None"]
    if payload_mode == "device":  # a frame without the key keeps the last state
        assert render(found["relay"]["value_template"], {"voltage": 230}) == ""


def test_a_serial_switch_state_is_read_from_its_sensor() -> None:
    power = control(name="power", platform="switch", payload_on="1", payload_off="0", state="pwr")
    word = control(name="fan", platform="switch", payload_on="high", payload_off="stop", state="f")
    led = control(name="led", platform="select", options={"00": "off", "ff": "on"}, state="l")
    device = DeviceInfo("meter1", "Heater", None, None, (), "sensor", None, (power, word, led))
    found = components(GW, device)
    assert found["power"]["state_topic"] == "home/meter1/pwr"
    assert (found["power"]["payload_on"], found["power"]["payload_off"]) == ("1", "0")

    def shown(key: str, value: object) -> str:
        return render(found[key]["value_template"], {"value": value})

    states = [shown("power", v) for v in (1, 1.0, "1", True, 0, False, 7, None)]
    assert states == ["ON", "ON", "ON", "ON", "OFF", "OFF", "None", "None"]
    assert [shown("fan", v) for v in ("high", "HIGH", "stop", "mid")] == ["ON", "ON", "OFF", "None"]
    assert [shown("led", v) for v in ("ff", "00", "7f")] == ["on", "off", "None"]
    assert found["led"]["options"] == ["off", "on"]


def test_a_button_and_an_optimistic_control_have_no_state_topic() -> None:
    reset = control(name="reset", platform="button")
    led = control(name="led", platform="select", options={"1": "on"}, optimistic=True)
    found = components(GW, DeviceInfo("meter1", "m", None, None, (), "sensor", None, (reset, led)))
    assert found["reset"]["payload_press"] == "PRESS"
    assert "state_topic" not in found["reset"]
    assert found["led"]["optimistic"] is True
    assert "state_topic" not in found["led"]
    json.dumps(found)  # plain JSON, as published
