"""The parser libraries (`ble-parsers` extra) as advert decoders: real captures from their own
tests, the adapter's conversion of their results, ours against theirs on the published test
vectors of the formats we decode ourselves, the config rules, and what Home Assistant is told."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from ble_captures import CAPTURES, GOVEE_H5075, XIAOMI_LYWSDCGQ, Capture
from pydantic import ValidationError

from gateway.ble.scan import config_snippet, describe
from gateway.config import BleAdvertDevice
from gateway.config import ble as ble_config_module
from gateway.config.ble import INSTALL_HINT, LIBRARIES, installed_libraries
from gateway.decoders.ble import BUILTIN, Advert, auto_parser, make_advert_parser, uuid16
from gateway.decoders.ble.parsers import LibraryParser, service_info, to_decoded
from gateway.errors import DecodeError
from gateway.homeassistant.devices import SeenSensor, sensor_info
from gateway.models import SensorClass

MISSING = [name for name in LIBRARIES if name not in installed_libraries()]
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        bool(MISSING), reason=f"the ble-parsers extra is not installed ({INSTALL_HINT})"
    ),
]

BTHOME, ENV = uuid16(0xFCD2), uuid16(0x181A)


def device(**kw: Any) -> BleAdvertDevice:
    return BleAdvertDevice.model_validate(
        {"id": "d", "type": "ble_advert", "address": "A4:C1:38:12:34:56", **kw}
    )


# -- real captures -----------------------------------------------------------------------------
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda c: c.decoder)
def test_named_and_auto_decoders_read_the_libraries_own_captures(capture: Capture) -> None:
    named = make_advert_parser(device(address=capture.address, decoder=capture.decoder))
    decoded = named(capture.advert())
    assert decoded.values == capture.values  # signal_strength left out: the `rssi` option's
    for sensor in capture.values:
        stated = decoded.classes[sensor]
        assert stated.device_class == sensor  # temperature, humidity, battery, voltage
        assert stated.state_class == "measurement"
    assert decoded.classes["temperature"].unit == "°C"
    assert decoded.classes["battery"].unit == "%"
    auto = auto_parser()
    assert auto(capture.advert()).values == capture.values
    assert auto.last == capture.decoder


def test_a_named_library_rejects_other_formats_with_decode_error() -> None:
    govee = LibraryParser("govee")
    with pytest.raises(DecodeError, match="not a govee advertisement"):
        govee(XIAOMI_LYWSDCGQ.advert())
    with pytest.raises(DecodeError, match="no installed parser"):
        auto_parser()(Advert("11:22:33:44:55:66", name="x", manufacturer_data={0x1234: b"\1"}))


def test_the_service_info_is_the_bleak_kind_with_a_time() -> None:
    info = service_info(GOVEE_H5075.advert(rssi=-70), now=123.5)
    assert type(info).__name__ == "BluetoothServiceInfoBleak"
    assert (info.time, info.rssi, info.name, info.address) == (
        123.5, -70, "GVH5075_2762", GOVEE_H5075.address
    )  # fmt: skip
    assert info.device.address == GOVEE_H5075.address
    assert service_info(Advert("11:22:33:44:55:66")).rssi == -127  # bleak reported none


def test_sensor_update_conversion() -> None:
    from sensor_state_data import (  # noqa: PLC0415 - the extra's
        BinarySensorDescription,
        BinarySensorDeviceClass,
        BinarySensorValue,
        DeviceKey,
        Event,
        SensorDescription,
        SensorDeviceClass,
        SensorUpdate,
        SensorValue,
        Units,
    )

    def key(name: Any, device_id: str | None = None) -> Any:
        return DeviceKey(name, device_id)

    probe, day = key("temperature", "probe_2"), key("date")
    update = SensorUpdate(
        title=None,
        devices={},
        entity_descriptions={
            probe: SensorDescription(probe, SensorDeviceClass.TEMPERATURE, Units.TEMP_CELSIUS),
        },
        entity_values={
            probe: SensorValue(probe, "T", decimal.Decimal("21.5")),
            day: SensorValue(day, "D", datetime.date(2026, 1, 2)),
            key(SensorDeviceClass.PRESSURE): SensorValue(key("pressure"), "P", 1000.5),
            key("signal_strength"): SensorValue(key("signal_strength"), "S", -60),
            key("gone"): SensorValue(key("gone"), "G", None),
        },
        binary_entity_descriptions={
            key("door"): BinarySensorDescription(key("door"), BinarySensorDeviceClass.OPENING)
        },
        binary_entity_values={key("door"): BinarySensorValue(key("door"), "Door", True)},
        events={key("button"): Event(key("button"), "Button", "long_press", None)},
    )
    decoded = to_decoded(update)
    assert decoded.values == {
        "temperature_probe_2": 21.5,  # a sub-device's value: its id appended
        "date": "2026-01-02",
        "pressure": 1000.5,  # an enum member as the key
        "door": True,
    }
    assert decoded.events == {"button": "long_press"}
    assert decoded.classes["temperature_probe_2"] == SensorClass("°C", "temperature", "measurement")
    assert decoded.classes["date"] == SensorClass(None, None, None)
    assert decoded.classes["door"] == SensorClass(None, "opening", None)


# -- ours against theirs on the published test vectors --------------------------------------
@pytest.mark.parametrize(
    ("hexdata", "ours", "theirs"),
    [  # bthome.io's examples; bthome-ble names a repeated object _1, _2 and publishes the
        # packet id, and passes the dimmer's steps as an event property (left out here)
        ("4002ca0903bf13", {"temperature": 25.06, "humidity": 50.55}, None),
        ("4004138a01", {"pressure": 1008.83}, None),
        ("440f01210045e100", {"generic": True, "motion": False, "temperature": 22.5}, None),
        ("40000c01640c8b0b", {"battery": 100, "voltage": 2.955},
         {"packet_id": 12, "battery": 100, "voltage": 2.955}),
        ("4002ca0902310a", {"temperature": 25.06, "temperature_2": 26.09},
         {"temperature_1": 25.06, "temperature_2": 26.09}),
    ],
)  # fmt: skip
def test_bthome_ours_and_bthome_ble_agree_on_the_values(
    hexdata: str, ours: dict[str, Any], theirs: dict[str, Any] | None
) -> None:
    advert = Advert("A4:C1:38:12:34:56", service_data={BTHOME: bytes.fromhex(hexdata)})
    assert BUILTIN["bthome"](advert).values == ours
    assert LibraryParser("bthome")(advert).values == (theirs or ours)


def test_bthome_encrypted_sample_and_events_agree() -> None:
    key = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")  # bthome.io's encryption example
    sealed = Advert(
        "54:48:E6:8F:80:A5", service_data={BTHOME: bytes.fromhex("41a47266c95f730011223378237214")}
    )
    expected = {"temperature": 25.06, "humidity": 50.55}
    assert (
        make_advert_parser(device(decoder="bthome", bindkey=key.hex()))(sealed).values == expected
    )
    assert LibraryParser("bthome", key)(sealed).values == expected
    press = Advert("A4:C1:38:12:34:56", service_data={BTHOME: bytes.fromhex("403a01")})
    assert BUILTIN["bthome"](press).events == LibraryParser("bthome")(press).events
    assert LibraryParser("bthome")(press).events == {"button": "press"}


RUUVI_VECTORS = [  # Ruuvi's data format 5 documentation: valid, maximum, minimum
    "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F",
    "057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F",
    "058001000000008001800180010000000000CBB8334C884F",
]


@pytest.mark.parametrize("hexdata", RUUVI_VECTORS)
def test_ruuvi_ours_and_ruuvitag_ble_differ_in_units_and_precision(hexdata: str) -> None:
    advert = Advert("CB:B8:33:4C:88:4F", manufacturer_data={0x0499: bytes.fromhex(hexdata)})
    ours = BUILTIN["ruuvi"](advert).values
    theirs = LibraryParser("ruuvi")(advert)
    # Same measurements; theirs rounds to 2 decimals (the format resolves 0.005 °C), gives the
    # voltage in mV and accelerations in m/s², and leaves out tx_power.
    for sensor in ("temperature", "humidity", "pressure"):
        assert theirs.values[sensor] == pytest.approx(ours[sensor], abs=0.005)
    assert theirs.values["voltage"] == pytest.approx(float(ours["voltage"]) * 1000)
    assert theirs.classes["voltage"].unit == "mV"
    assert theirs.values["acceleration_z"] == pytest.approx(
        float(ours["acceleration_z"]) * 9.81, rel=0.01
    )
    assert "tx_power" in ours
    assert "tx_power" not in theirs.values
    assert theirs.values["movement_counter"] == ours["movement_counter"]


def test_pvvx_and_atc_are_not_decoded_by_xiaomi_ble() -> None:
    # Our samples of the two custom firmwares' 0x181A layouts (see test_ble_decoders.py).
    for name, hexdata in [
        ("pvvx", "56341238c1a46b080c12860b5f1204"),
        ("atc", "a4c13812345600d72e5f0b8612"),
    ]:
        advert = Advert("A4:C1:38:12:34:56", service_data={ENV: bytes.fromhex(hexdata)})
        assert BUILTIN[name](advert).values["temperature"] in (21.55, 21.5)
        with pytest.raises(DecodeError):
            LibraryParser("xiaomi")(advert)
        auto = auto_parser()
        auto(advert)
        assert auto.last == name  # auto: ours first for the formats we decode


# -- config ------------------------------------------------------------------------------------
def test_bindkey_rules() -> None:
    device(decoder="xiaomi", bindkey="00" * 16)
    device(decoder="xiaomi", bindkey="00" * 12)  # MiBeacon v2/v3
    device(decoder="auto", bindkey="00" * 16)
    with pytest.raises(ValidationError, match="bindkey is only used by"):
        device(decoder="govee", bindkey="00" * 16)
    with pytest.raises(ValidationError, match="MiBeacon v2/v3 key"):
        device(decoder="bthome", bindkey="00" * 12)


def test_a_named_library_that_is_not_installed_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ble_config_module, "installed", lambda name: name != "govee")
    with pytest.raises(ValidationError, match=r"pip install 'iot-gateway\[ble-parsers\]'"):
        device(decoder="govee")
    device(decoder="xiaomi")
    device(decoder="auto")  # auto uses what is installed


# -- gateway scan and Home Assistant ----------------------------------------------------------
def test_scan_names_the_parser_and_writes_a_config_snippet() -> None:
    decoder, values = describe(GOVEE_H5075.advert())
    assert decoder == "govee"
    assert values == "temperature=21.3°C humidity=44.2% battery=100%"
    snippet = config_snippet([GOVEE_H5075.advert(), Advert("11:22:33:44:55:66")])
    assert snippet.splitlines() == [
        "devices:",
        "  - id: ble_a4c138276201",
        "    type: ble_advert",
        "    address: A4:C1:38:27:62:01",
        "    decoder: govee",
    ]


def test_discovery_takes_the_stated_classes_unless_the_config_or_unit_says_otherwise() -> None:
    probe = SeenSensor("°C", binary=False, device_class="temperature", state_class="measurement")
    d = device(decoder="govee")
    info = sensor_info(d, "temperature_probe_1", None, probe)  # the name alone implies nothing
    assert (info.device_class, info.state_class, info.unit) == ("temperature", "measurement", "°C")
    # A filter made it °F in a unit Home Assistant's temperature class does not take: unclassed.
    d = device(decoder="govee", sensors={"temperature_probe_1": {"unit": "F"}})
    info = sensor_info(d, "temperature_probe_1", "F", probe)
    assert info.device_class is None
    # The user's entry wins.
    d = device(decoder="govee", sensors={"temperature_probe_1": {"device_class": "humidity"}})
    assert sensor_info(d, "temperature_probe_1", "%", probe).device_class == "humidity"
