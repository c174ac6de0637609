"""BLE decoders: published sample payloads, and random bytes that may only ever raise
DecodeError. Also the GATT formats, the throttle and the BLE config models."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.ble.counters import COUNTERS_FILE, ReplayCounters, key_fingerprint
from gateway.ble.guard import PacketGuard
from gateway.ble.patterns import scan_plan
from gateway.ble.throttle import Throttle
from gateway.config import (
    AdvertStructSpec,
    BleAdvertDevice,
    BleGattDevice,
    Config,
    GattValueSpec,
)
from gateway.decoders.ble import BUILTIN, Advert, Decoded, detect, unit_of, uuid16
from gateway.decoders.ble.bthome import decode_bthome, encode_bthome, parse_bthome
from gateway.decoders.ble.gatt import decode_gatt
from gateway.decoders.ble.ibeacon import decode_ibeacon
from gateway.decoders.ble.ruuvi import decode_ruuvi
from gateway.decoders.ble.structfmt import decode_struct
from gateway.decoders.ble.xiaomi import decode_atc, decode_pvvx
from gateway.errors import DecodeError
from gateway.limits import COUNTER_BLOCK
from gateway.models import Value
from gateway.reload import plan_reload

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


# -- BTHome events, packet ids and counters; repeats and replays ------------------------------


@pytest.mark.parametrize(
    ("hexdata", "events"),
    [
        ("403a01", {"button": "press"}),  # bthome.io: 0x3A 0x01, a button press
        ("403a04", {"button": "long_press"}),
        ("403a80", {"button": "hold_press"}),
        # Home Assistant's test sample: three buttons, the 2nd pressed, the 3rd triple-pressed
        ("403a003a013a03", {"button_2": "press", "button_3": "triple_press"}),
        ("403c0103", {"dimmer": "rotate_left", "dimmer_steps": 3}),  # bthome.io: left 3 steps
        ("403c0205", {"dimmer": "rotate_right", "dimmer_steps": 5}),
        ("403a07", {}),  # an event type the format does not define: nothing to publish
    ],
)
def test_bthome_button_and_dimmer_events(hexdata: str, events: dict[str, Any]) -> None:
    decoded = parse_bthome(svc(BTHOME, hexdata))
    assert decoded.events == events
    assert decoded.values == {}


def test_bthome_packet_id_counter_and_values_beside_events() -> None:
    # A Shelly BLU Button-like packet: packet id 9, battery 100 %, a double press.
    assert parse_bthome(svc(BTHOME, "4400090164" + "3a02")) == Decoded(
        {"battery": 100}, {"button": "double_press"}, packet_id=9
    )
    # Only "no event": a valid packet with nothing to publish, not an error.
    assert parse_bthome(svc(BTHOME, "4000053a00")) == Decoded({}, {}, packet_id=5)
    # The published encrypted sample: its counter 0x33221100, authenticated by the decryption.
    sealed = parse_bthome(svc(BTHOME, BT_SEALED.hex(), BT_MAC), BT_KEY)
    assert sealed == Decoded({"temperature": 25.06, "humidity": 50.55}, counter=0x33221100)
    assert parse_bthome(svc(BTHOME, "4002ca09")).counter is None  # plain: no counter


def sealed(counter: int, objects: str = "02ca0903bf13") -> Decoded:
    data = encode_bthome(bytes.fromhex(objects), mac=BT_MAC, bindkey=BT_KEY, counter=counter)
    return parse_bthome(Advert(BT_MAC, service_data={BTHOME: data}), BT_KEY)


def test_guard_drops_repeated_packet_ids_within_the_window() -> None:
    guard = PacketGuard(encrypted=False, repeat_window=4.0)
    packet = {n: parse_bthome(svc(BTHOME, f"4000{n:02x}3a01")) for n in (0, 5, 6, 100, 250, 255)}
    assert guard.check(packet[5], 0.0) is None
    assert guard.check(packet[5], 0.1) == "repeat"  # a copy of the same packet
    assert guard.check(packet[5], 3.9) == "repeat"  # copies keep the window open ...
    assert guard.check(packet[6], 4.0) is None  # ... a new id is a new packet at once
    assert guard.check(packet[5], 4.1) == "repeat"  # a late copy of an older packet
    assert guard.check(packet[6], 9.0) is None  # silent for longer than the window: new
    assert guard.check(packet[250], 9.1) == "repeat"  # 12 behind 6 (ids wrap): a late copy
    assert guard.check(packet[100], 9.2) is None  # ahead (by less than 192)
    assert guard.check(packet[255], 9.3) is None
    assert guard.check(packet[0], 9.4) is None  # ids wrap at 256
    values_only = Decoded({"temperature": 21.5})
    assert guard.check(values_only, 9.3) is None  # no packet id: nothing to compare
    assert guard.check(values_only, 9.3) is None


def test_guard_accepts_only_increasing_counters_of_an_encrypted_device() -> None:
    guard = PacketGuard(encrypted=True, repeat_window=4.0)
    assert guard.check(sealed(0x33221100), 0.0) is None
    assert guard.check(sealed(0x33221100), 0.1) == "repeat"  # the same advertisement again
    assert guard.check(sealed(0x33221101), 0.2) is None
    assert guard.check(sealed(0x33221100), 10.0) == "replay"  # recorded, sent again later
    assert guard.check(sealed(7), 10.1) == "replay"  # a restarted counter looks the same
    assert guard.check(sealed(0x33221102), 10.2) is None
    # A plaintext advertisement in the name of a device with a bindkey: a forgery.
    plain = parse_bthome(svc(BTHOME, "4002ca0903bf13", BT_MAC))
    assert guard.check(plain, 10.3) == "unencrypted"
    assert guard.counter == 0x33221102


def test_counters_are_kept_reserved_ahead_and_exact_after_a_clean_stop(tmp_path: Path) -> None:
    path = tmp_path / "state" / COUNTERS_FILE
    key = key_fingerprint(bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932"))
    counters = ReplayCounters(path)
    assert counters.floor("bath", key) is None  # the first run
    counters.accepting("bath", key, 100)
    assert ReplayCounters(path).floor("bath", key) == 100 + COUNTER_BLOCK  # reserved ahead
    written = path.stat().st_mtime_ns
    for counter in range(101, 101 + COUNTER_BLOCK):  # within the reservation: no write
        counters.accepting("bath", key, counter)
    assert path.stat().st_mtime_ns == written
    counters.settle("bath", key, 107)  # a clean stop: the exact counter
    assert ReplayCounters(path).floor("bath", key) == 107
    assert ReplayCounters(path).floor("bath", key_fingerprint(bytes(16))) is None  # a new key
    guard = PacketGuard(encrypted=True, repeat_window=4.0, counter=107)
    assert guard.check(sealed(100), 0.0) == "replay"


@pytest.mark.parametrize("text", ["{", '"text"', '{"bath": {"counter": "x"}}', '{"bath": 3}'])
def test_a_damaged_counters_file_is_reported_and_started_afresh(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / COUNTERS_FILE
    path.write_text(text)
    counters = ReplayCounters(path)
    assert counters.floor("bath", "k") is None
    assert "replays are refused from now on only" in caplog.text
    counters.accepting("bath", "k", 5)  # and it is written anew
    assert ReplayCounters(path).floor("bath", "k") == 5 + COUNTER_BLOCK


def test_a_counter_that_cannot_be_written_is_accepted_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    counters = ReplayCounters(tmp_path / "file" / COUNTERS_FILE)  # its directory is a file
    for counter in range(5):
        counters.accepting("bath", "k", counter)
    assert caplog.text.count("cannot keep bath's encryption counter") == 1


# -- Xiaomi custom firmware (pvvx, atc), Ruuvi, iBeacon ------------------------------------------


def test_pvvx_and_atc_layouts() -> None:
    # pvvx: reversed MAC, 21.55 °C, 46.20 %, 2950 mV, 95 %, counter, flags (little endian)
    pvvx = svc(ENV, "56341238c1a46b080c12860b5f1204")
    expected: dict[str, Value] = {
        "temperature": 21.55, "humidity": 46.2, "battery": 95, "voltage": 2.95
    }  # fmt: skip
    assert decode_pvvx(pvvx) == expected
    # atc1441: MAC, 21.5 °C (x0.1), 46 %, 95 %, 2950 mV, counter (big endian)
    atc = svc(ENV, "a4c13812345600d72e5f0b8612")
    assert decode_atc(atc) == {**expected, "temperature": 21.5, "humidity": 46}
    assert decode_atc(svc(ENV, "a4c138123456ff382e5f0b8612"))["temperature"] == -20
    with pytest.raises(DecodeError, match="13 bytes"):
        decode_atc(pvvx)
    with pytest.raises(DecodeError, match="15 bytes"):
        decode_pvvx(atc)
    assert detect(pvvx) == ("pvvx", Decoded(expected))


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
        decoded = BUILTIN[name](advert)
    except DecodeError:
        return
    values = {**decoded.values, **decoded.events}
    if name != "bthome":  # BTHome may carry only "no event" button objects: nothing to publish
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
    assert isinstance(kitchen, BleAdvertDevice)
    assert isinstance(heart, BleGattDevice)
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


def test_scanning_mode_defaults_to_active_and_adapters_override_it() -> None:
    assert ble_config(adapter="hci0").ble.scanning_mode_of("hci0") == "active"
    cfg = ble_config(
        scanning_mode="passive",
        passive_patterns=[{"ad_type": 0xFF, "data": "5900"}],
        adapters={"hci1": {"scanning_mode": "active"},
                  "hci2": {"passive_patterns": [{"ad_type": 0x09, "data": "4154435f"}]}},
    )  # fmt: skip
    assert [cfg.ble.scanning_mode_of(a) for a in ("hci0", "hci1", "hci2")] == [
        "passive", "active", "passive"
    ]  # fmt: skip
    assert [p.data for p in cfg.ble.passive_patterns_of("hci2")] == ["5900", "4154435f"]


@pytest.mark.parametrize(
    ("ble", "message"),
    [
        ({"scanning_mode": "sleepy"}, "'active' or 'passive'"),
        ({"passive_patterns": [{"ad_type": 0x42, "data": "00"}]}, "ad_type 0x42 is not one of"),
        ({"passive_patterns": [{"ad_type": 0xFF, "data": "123"}]}, "pattern"),
        ({"passive_patterns": [{"ad_type": 0xFF, "data": "00" * 30, "start": 2}]}, "31 bytes"),
        ({"adapters": {"usb0": {"scanning_mode": "passive"}}}, "pattern"),
    ],
)
def test_passive_scanning_config_errors(ble: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ble_config(**ble)


def test_passive_patterns_come_from_the_decoders_and_the_config() -> None:
    def advert(i: int, decoder: str, **extra: Any) -> dict[str, Any]:
        return {"id": f"d{i}", "type": "ble_advert", "address": f"A4:C1:38:00:00:{i:02X}",
                "decoder": decoder, **extra}  # fmt: skip

    def struct(**source: Any) -> dict[str, Any]:
        return {"format": "<h", "fields": ["temperature"], **source}

    devices = [
        advert(1, "bthome"), advert(2, "pvvx"), advert(3, "atc"), advert(4, "ruuvi"),
        advert(5, "ibeacon"), advert(6, "struct", struct=struct(manufacturer_id=0x0059)),
        advert(7, "struct", struct=struct(service_uuid="fe95")),
        advert(8, "struct", struct=struct(service_uuid="6e400001-b5a3-f393-e0a9-e50e24dcca9e")),
        advert(9, "pvvx", adapter="hci1"),
        {"id": "heart", "type": "ble_gatt", "address": "AA:BB:CC:DD:EE:01"},
    ]  # fmt: skip
    cfg = ble_config(*devices, scanning_mode="passive")
    plan = scan_plan(cfg, "hci0")
    assert plan.mode == "passive"
    assert [(p.start, p.ad_type, p.data.hex()) for p in plan.patterns] == [
        (0, 0x16, "d2fc"),  # BTHome: service data of 0xFCD2, the UUID little endian
        (0, 0x16, "1a18"),  # pvvx and atc: 0x181A, once
        (0, 0xFF, "9904"),  # Ruuvi: manufacturer data of company 0x0499
        (0, 0xFF, "4c000215"),  # iBeacon: Apple's 0x004C, type 0x02, length 0x15
        (0, 0xFF, "5900"),
        (0, 0x16, "95fe"),
        (0, 0x21, "9ecadc240ee5a9e093f3a3b50100406e"),  # a 128-bit UUID, reversed
    ]
    assert plan.unmatched == ("ble_gatt:heart",)  # a GATT device: nothing to derive
    assert [str(p) for p in scan_plan(cfg, "hci1").patterns] == ["0x16:1a18"]
    # Configured patterns are added; with them, GATT devices are assumed to be covered.
    pattern = {"ad_type": 0x03, "data": "0d18", "start": 0}
    cfg = ble_config(*devices, scanning_mode="passive", passive_patterns=[pattern])
    assert str(scan_plan(cfg, "hci0").patterns[-1]) == "0x03:0d18"
    assert scan_plan(cfg, "hci0").unmatched == ()
    # unknown_devices: publish hears what any built-in decoder reads.
    cfg = ble_config(scanning_mode="passive", unknown_devices="publish")
    assert {str(p) for p in scan_plan(cfg, "hci0").patterns} == {
        "0x16:d2fc", "0x16:1a18", "0xFF:9904", "0xFF:4c000215"
    }  # fmt: skip
    assert scan_plan(ble_config(*devices), "hci0").patterns == ()  # active: none


def test_a_reload_restarts_a_passive_scanner_only_when_its_patterns_change() -> None:
    kitchen = {"id": "kitchen", "type": "ble_advert", "address": "A4:C1:38:12:34:56",
               "decoder": "pvvx"}  # fmt: skip
    hall = {**kitchen, "id": "hall", "address": "A4:C1:38:65:43:21", "decoder": "atc"}
    bath = {**kitchen, "id": "bath", "address": "54:48:E6:8F:80:A5", "decoder": "bthome"}
    for mode, restarts in (("active", [False, False]), ("passive", [False, True])):
        old = ble_config(kitchen, scanning_mode=mode)
        added = [ble_config(kitchen, device, scanning_mode=mode) for device in (hall, bath)]
        # hall's atc reads 0x181A like kitchen's pvvx: the same patterns; bath's BTHome adds one
        plans = [plan_reload(old, new) for new in added]
        assert ["ble_scanner:hci0" in plan.restart for plan in plans] == restarts, mode
