"""BLE decoders: published sample payloads, and random bytes that may only ever raise
DecodeError. Also the GATT formats, the throttle and the BLE config models."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.ble.throttle import Throttle
from gateway.config import AdvertStructSpec, Config, GattValueSpec
from gateway.decoders.ble import BUILTIN, Advert, detect, unit_of, uuid16
from gateway.decoders.ble.bthome import decode_bthome, encode_bthome
from gateway.decoders.ble.gatt import decode_gatt
from gateway.decoders.ble.ibeacon import decode_ibeacon
from gateway.decoders.ble.ruuvi import decode_ruuvi
from gateway.decoders.ble.structfmt import decode_struct
from gateway.decoders.ble.xiaomi import decode_atc, decode_pvvx
from gateway.errors import DecodeError

pytestmark = pytest.mark.timeout(60)

BTHOME, ENV = uuid16(0xFCD2), uuid16(0x181A)
# The encryption example of bthome.io / bthome-ble: MAC, bind key, and the sealed service data
# of temperature 25.06 °C and humidity 50.55 % with counter 0x33221100.
BT_MAC = "54:48:E6:8F:80:A5"
BT_KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
BT_SEALED = bytes.fromhex("41a47266c95f730011223378237214")


def svc(uuid: str, hexdata: str, address: str = "A4:C1:38:12:34:56") -> Advert:
    return Advert(address, service_data={uuid: bytes.fromhex(hexdata)})


def mfr(company: int, hexdata: str, address: str = "CB:B8:33:4C:88:4F") -> Advert:
    return Advert(address, manufacturer_data={company: bytes.fromhex(hexdata)})


# -- BTHome v2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hexdata", "expected"),
    [
        ("4002ca0903bf13", {"temperature": 25.06, "humidity": 50.55}),  # bthome.io example
        ("40000c01640c8b0b", {"battery": 100, "voltage": 2.955}),  # packet id skipped
        ("4002ca0902310a", {"temperature": 25.06, "temperature_2": 26.09}),  # repeated object
        ("440f01210045e100", {"generic": True, "motion": False, "temperature": 22.5}),
        ("4004138a01", {"pressure": 1008.83}),  # bthome.io example
    ],
)
def test_bthome_samples(hexdata: str, expected: dict[str, Any]) -> None:
    assert decode_bthome(svc(BTHOME, hexdata)) == expected


def test_bthome_encrypted_sample_decrypts_with_the_bindkey() -> None:
    advert = svc(BTHOME, BT_SEALED.hex(), BT_MAC)
    assert decode_bthome(advert, BT_KEY) == {"temperature": 25.06, "humidity": 50.55}
    with pytest.raises(DecodeError, match="bindkey"):
        decode_bthome(advert)
    with pytest.raises(DecodeError, match="wrong bindkey"):
        decode_bthome(advert, bytes(16))
    with pytest.raises(DecodeError, match="wrong bindkey"):  # another device's MAC
        decode_bthome(svc(BTHOME, BT_SEALED.hex(), "54:48:E6:8F:80:A6"), BT_KEY)


def test_bthome_encode_round_trip_matches_the_published_sample() -> None:
    sealed = encode_bthome(
        bytes.fromhex("02ca0903bf13"), mac=BT_MAC, bindkey=BT_KEY, counter=0x33221100
    )
    assert sealed == BT_SEALED


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("", "empty"),
        ("2002ca09", "version 1"),
        ("40ee01", "unknown BTHome object id"),
        ("4002ca", "truncated"),
        ("4000", "truncated"),
        ("4000aa", "without sensor values"),
    ],
)
def test_bthome_rejects(hexdata: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_bthome(svc(BTHOME, hexdata))


def test_bthome_skips_text_and_raw_objects_by_their_length_byte() -> None:
    assert decode_bthome(svc(BTHOME, "4001505303686921")) == {"battery": 80}


# -- Xiaomi custom firmware (pvvx, atc), Ruuvi, iBeacon ------------------------------------------


def test_pvvx_and_atc_layouts() -> None:
    # pvvx: reversed MAC, 21.55 °C, 46.20 %, 2950 mV, 95 %, counter, flags (little endian)
    pvvx = svc(ENV, "56341238c1a46b080c12860b5f1204")
    expected = {"temperature": 21.55, "humidity": 46.2, "battery": 95, "voltage": 2.95}
    assert decode_pvvx(pvvx) == expected
    # atc1441: MAC, 21.5 °C (x0.1), 46 %, 95 %, 2950 mV, counter (big endian)
    atc = svc(ENV, "a4c13812345600d72e5f0b8612")
    assert decode_atc(atc) == {**expected, "temperature": 21.5, "humidity": 46}
    assert decode_atc(svc(ENV, "a4c138123456ff382e5f0b8612"))["temperature"] == -20
    with pytest.raises(DecodeError, match="13 bytes"):
        decode_atc(pvvx)
    with pytest.raises(DecodeError, match="15 bytes"):
        decode_pvvx(atc)
    assert detect(pvvx) == ("pvvx", expected)


@pytest.mark.parametrize(
    ("hexdata", "expected"),
    [  # the test vectors of Ruuvi's data format 5 documentation: valid, maximum, minimum
        (
            "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F",
            {"temperature": 24.3, "humidity": 53.49, "pressure": 1000.44,
             "acceleration_x": 0.004, "acceleration_y": -0.004, "acceleration_z": 1.036,
             "voltage": 2.977, "tx_power": 4, "movement_counter": 66},
        ),
        (
            "057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F",
            {"temperature": 163.835, "humidity": 163.835, "pressure": 1155.34,
             "acceleration_x": 32.767, "acceleration_y": 32.767, "acceleration_z": 32.767,
             "voltage": 3.646, "tx_power": 20, "movement_counter": 254},
        ),
        (
            "058001000000008001800180010000000000CBB8334C884F",
            {"temperature": -163.835, "humidity": 0.0, "pressure": 500.0,
             "acceleration_x": -32.767, "acceleration_y": -32.767, "acceleration_z": -32.767,
             "voltage": 1.6, "tx_power": -40, "movement_counter": 0},
        ),
    ],
)  # fmt: skip
def test_ruuvi_rawv2_test_vectors(hexdata: str, expected: dict[str, Any]) -> None:
    assert decode_ruuvi(mfr(0x0499, hexdata)) == expected


def test_ruuvi_invalid_values_are_left_out_and_other_formats_rejected() -> None:
    with pytest.raises(DecodeError, match="without valid values"):
        decode_ruuvi(mfr(0x0499, "058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF"))
    with pytest.raises(DecodeError, match="not 5"):
        decode_ruuvi(mfr(0x0499, "0301"))


def test_ibeacon() -> None:
    advert = mfr(0x004C, "0215e2c56db5dffb48d2b060d0f5a71096e000010102c5")
    assert decode_ibeacon(advert) == {
        "uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
        "major": 1,
        "minor": 258,
        "tx_power": -59,
    }
    with pytest.raises(DecodeError):
        decode_ibeacon(mfr(0x004C, "1005031c"))  # another Apple frame


def test_struct_decoder() -> None:
    spec = AdvertStructSpec(
        manufacturer_id=0xFFFF, format="<hHB", fields=["temperature", "humidity", "_"],
        scale={"temperature": 0.01, "humidity": 0.1}, offset=1,
    )  # fmt: skip
    assert decode_struct(mfr(0xFFFF, "006b08cc0107"), spec) == {
        "temperature": 21.55,
        "humidity": 46.0,
    }
    with pytest.raises(DecodeError, match="do not fit"):
        decode_struct(mfr(0xFFFF, "006b08"), spec)
    with pytest.raises(DecodeError, match="no manufacturer data"):
        decode_struct(mfr(0x1234, "006b08cc0107"), spec)


def test_units_follow_the_sensor_names() -> None:
    assert unit_of("temperature") == "°C"
    assert unit_of("temperature_2") == "°C"
    assert unit_of("movement_counter") is None


# -- random input: DecodeError or a result, nothing else -----------------------------------------

SOURCES = st.sampled_from([uuid16(0xFCD2), uuid16(0x181A)])
COMPANIES = st.sampled_from([0x0499, 0x004C, 0xFFFF])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), SOURCES, COMPANIES, st.sampled_from(sorted(BUILTIN)))
def test_advert_decoders_only_raise_decode_error(
    data: bytes, uuid: str, company: int, name: str
) -> None:
    advert = Advert("A4:C1:38:12:34:56", service_data={uuid: data},
                    manufacturer_data={company: data})  # fmt: skip
    try:
        values = BUILTIN[name](advert)
    except DecodeError:
        return
    assert values
    assert all(isinstance(v, bool | int | float | str) for v in values.values())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.booleans())
def test_bthome_with_random_payload_only_raises_decode_error(payload: bytes, key: bool) -> None:
    # A valid header, random objects; encrypted or not.
    data = bytes([0x40 | (1 if key else 0)]) + payload
    with contextlib.suppress(DecodeError):
        decode_bthome(Advert(BT_MAC, service_data={BTHOME: data}), BT_KEY if key else None)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x0C, 0x2E, 0x3D, 0x45, 0x21, 0x53, 0x00]),
        min_size=1, max_size=6,
    ),
    st.binary(min_size=24, max_size=24),
)  # fmt: skip
def test_bthome_decrypts_what_it_encrypted(ids: list[int], filler: bytes) -> None:
    objects = b"".join(
        bytes([oid]) + (bytes([2]) + filler[:2] if oid == 0x53 else filler[: _size(oid)])
        for oid in ids
    )
    sealed = encode_bthome(objects, mac=BT_MAC, bindkey=BT_KEY, counter=len(objects))
    plain = encode_bthome(objects)
    try:
        expected = decode_bthome(Advert(BT_MAC, service_data={BTHOME: plain}))
    except DecodeError:
        return  # e.g. only skipped objects
    assert decode_bthome(Advert(BT_MAC, service_data={BTHOME: sealed}), BT_KEY) == expected


def _size(oid: int) -> int:
    return {0x01: 1, 0x02: 2, 0x03: 2, 0x04: 3, 0x0C: 2, 0x2E: 1, 0x3D: 2, 0x45: 2, 0x21: 1,
            0x00: 1}[oid]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=24),
    st.sampled_from(["temperature", "humidity", "battery", "heart_rate", "text", "raw", "<hB"]),
)
def test_gatt_formats_only_raise_decode_error(data: bytes, fmt: str) -> None:
    fields = ["a", "b"] if fmt.startswith("<") else []
    spec = GattValueSpec(characteristic="2a37", format=fmt, fields=fields)
    with contextlib.suppress(DecodeError):
        decode_gatt(spec, data)


# -- GATT standard formats -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "hexdata", "expected"),
    [
        ("temperature", "3408", {"temperature": 21.0}),
        ("temperature", "ecff", {"temperature": -0.2}),
        ("humidity", "1a12", {"humidity": 46.34}),
        ("battery", "5a", {"battery": 90}),
        ("heart_rate", "0048", {"heart_rate": 72}),
        ("heart_rate", "014801", {"heart_rate": 328}),  # 16-bit value
        ("heart_rate", "1e4b2a000004", {"heart_rate": 75, "sensor_contact": True,
                                        "energy_expended": 42, "rr_interval": 1.0}),
        ("heart_rate", "044b", {"heart_rate": 75, "sensor_contact": False}),
        ("text", "46573a20312e3200", {"text": "FW: 1.2"}),
        ("raw", "00ff", {"raw": "00ff"}),
    ],
)  # fmt: skip
def test_gatt_standard_formats(fmt: str, hexdata: str, expected: dict[str, Any]) -> None:
    spec = GattValueSpec(characteristic="2a6e", format=fmt)
    assert decode_gatt(spec, bytes.fromhex(hexdata)) == expected


@pytest.mark.parametrize(
    ("fmt", "hexdata"),
    [("temperature", "0080"), ("temperature", "34"), ("humidity", "ffff"), ("battery", "65"),
     ("heart_rate", ""), ("heart_rate", "1048"), ("text", "ff")],
)  # fmt: skip
def test_gatt_rejects(fmt: str, hexdata: str) -> None:
    with pytest.raises(DecodeError):
        decode_gatt(GattValueSpec(characteristic="2a6e", format=fmt), bytes.fromhex(hexdata))


def test_gatt_sensor_renames_and_struct_formats() -> None:
    inside = GattValueSpec(characteristic="2a6e", format="temperature", sensor="inside")
    assert decode_gatt(inside, bytes.fromhex("3408")) == {"inside": 21.0}
    layout = GattValueSpec(characteristic="ff01", format=">Hb", fields=["co2", "temperature"])
    assert decode_gatt(layout, bytes.fromhex("01f4e7")) == {"co2": 500, "temperature": -25}


# -- the throttle ------------------------------------------------------------------------------


def test_throttle_publishes_changes_at_once_and_unchanged_values_per_interval() -> None:
    t = Throttle(60, sticky={"signal_strength"})
    first = {"temperature": 21.5, "humidity": 40, "signal_strength": -60}
    assert t.due(first, 0) == first
    assert t.due({**first, "signal_strength": -61}, 1) == {}  # RSSI jitter is not a change
    assert t.due({**first, "temperature": 21.6}, 2) == {"temperature": 21.6}
    assert t.due({**first, "temperature": 21.6}, 61) == {"humidity": 40, "signal_strength": -60}
    assert t.due({**first, "temperature": 21.6}, 62.5) == {"temperature": 21.6}
    assert Throttle(0).due(first, 0) == first
    zero = Throttle(0)
    zero.due(first, 0)
    assert zero.due(first, 0) == first  # interval 0: every advertisement


# -- config ------------------------------------------------------------------------------------


def ble_config(*devices: dict[str, Any], **ble: Any) -> Config:
    return Config.model_validate({"gateway": {"id": "gw"}, "devices": list(devices), "ble": ble})


def test_the_issue_config_contract_validates() -> None:
    cfg = ble_config(
        {"id": "kitchen", "type": "ble_advert", "address": "a4:c1:38:12:34:56",
         "decoder": "pvvx"},
        {"id": "heart", "type": "ble_gatt", "address": "AA:BB:CC:DD:EE:01",
         "notify": [{"characteristic": "00002a37-0000-1000-8000-00805f9b34fb",
                     "format": "heart_rate"}]},
        adapter="hci0",
    )  # fmt: skip
    kitchen, heart = cfg.devices
    assert kitchen.type == "ble_advert"
    assert kitchen.address == "A4:C1:38:12:34:56"
    assert heart.type == "ble_gatt"
    assert heart.notify[0].characteristic == "00002a37-0000-1000-8000-00805f9b34fb"
    assert cfg.ble.max_connections == 3


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"decoder": "pvvx"}, "exactly one of address and name"),
        ({"address": "A4:C1:38:12:34:56", "decoder": "struct"}, "struct"),
        ({"address": "A4:C1:38:12:34", "decoder": "pvvx"}, "pattern"),
        ({"address": "A4:C1:38:12:34:56", "decoder": "pvvx", "bindkey": "00" * 16}, "bthome"),
        ({"address": "A4:C1:38:12:34:56", "decoder": "bthome", "bindkey": "zz"}, "32 hex"),
        ({"address": "A4:C1:38:12:34:56", "decoder": "struct",
          "struct": {"manufacturer_id": 1, "format": "hh", "fields": ["a", "b"]}}, "byte order"),
        ({"address": "A4:C1:38:12:34:56", "decoder": "struct",
          "struct": {"manufacturer_id": 1, "format": "<hh", "fields": ["a"]}}, "2 value"),
    ],
)  # fmt: skip
def test_advert_device_config_errors(device: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ble_config({"id": "x", "type": "ble_advert", **device})


def test_gatt_uuid_shorthands_and_errors() -> None:
    spec = GattValueSpec(characteristic="0x2A19", format="battery")
    assert spec.characteristic == "00002a19-0000-1000-8000-00805f9b34fb"
    with pytest.raises(ValidationError, match="not a UUID"):
        GattValueSpec(characteristic="2a1", format="battery")
    with pytest.raises(ValidationError, match="fields"):
        GattValueSpec(characteristic="2a19", format="battery", fields=["x"])
