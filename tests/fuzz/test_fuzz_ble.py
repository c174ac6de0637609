"""Fuzz: the BLE advertisement parsers, built in (BTHome, pvvx, ATC, Ruuvi, iBeacon, struct) and
Home Assistant's libraries through their one adapter (`decoders/ble/parsers.py`: `auto`, each
named library), `describe` (the status page's and `gateway scan`'s columns) and the BTHome guard.

Advertisements are made of what a radio can carry: manufacturer data under the company ids the
parsers look for (and others), service data under their UUIDs, service UUIDs and names that pick
a library (Inkbird, ThermoPro and SensorPush go by name). What is asserted: only DecodeError
comes out (no library's IndexError, no KeyError of ours), what comes out is plain values, and a
long-lived parser (a configured `auto` device's) keeps its memory bounded.
"""

from __future__ import annotations

import contextlib
import gc
import random
import tracemalloc

import pytest
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from gateway.ble.describe import describe
from gateway.ble.guard import PacketGuard
from gateway.config import BleAdvertDevice
from gateway.config.ble import INSTALL_HINT, LIBRARIES, installed_libraries
from gateway.decoders.ble import (
    BUILTIN,
    Advert,
    AdvertParser,
    auto_parser,
    make_advert_parser,
    uuid16,
)
from gateway.decoders.ble.bthome import encode_bthome
from gateway.errors import DecodeError
from gateway.models import Value

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        len(installed_libraries()) < len(LIBRARIES),
        reason=f"the ble-parsers extra is not installed ({INSTALL_HINT})",
    ),
]

# What the parsers look for: company ids (Ruuvi, Apple/iBeacon, Govee, Inkbird's, SensorPush's,
# ThermoPro's, Xiaomi's) and service UUIDs (BTHome, pvvx/ATC, Xiaomi, Qingping, Govee, Inkbird).
COMPANIES = [0x0499, 0x004C, 0xEC88, 0x0848, 0x0001, 0xC2A0, 0x038F, 0x0000, 0xFFFF]
SERVICES = [uuid16(u) for u in (0xFCD2, 0x181A, 0xFE95, 0xFDCD, 0xEC88, 0xFFF0, 0xEF11, 0x181C)]
NAMES = [
    "sps", "tps", "TP357", "TP393 (1234)", "SensorPush HT.w 0CA1", "GVH5075_1234",
    "Govee_H5179_1234", "ATC_123456", "Ruuvi 884F", "Qingping", "iBBQ", "LYWSD03MMC", "",
]  # fmt: skip
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "54:48:E6:8F:80:A5"

addresses = st.builds(lambda b: ":".join(f"{x:02X}" for x in b), st.binary(min_size=6, max_size=6))
uuids = st.one_of(
    st.sampled_from(SERVICES),
    st.integers(0, 0xFFFF).map(uuid16),
    st.uuids().map(str),
)
adverts = st.builds(
    Advert,
    address=st.one_of(st.just(MAC), addresses),
    name=st.one_of(st.none(), st.sampled_from(NAMES), st.text(max_size=40)),
    rssi=st.one_of(st.none(), st.integers(-127, 20)),
    manufacturer_data=st.dictionaries(
        st.one_of(st.sampled_from(COMPANIES), st.integers(0, 0xFFFF)),
        st.binary(max_size=31),
        max_size=3,
    ),
    service_data=st.dictionaries(uuids, st.binary(max_size=31), max_size=3),
    service_uuids=st.lists(uuids, max_size=4).map(tuple),
    tx_power=st.one_of(st.none(), st.integers(-127, 20)),
)


def plain(values: dict[str, Value]) -> bool:
    return all(isinstance(v, bool | int | float | str) for v in values.values())


def device(decoder: str, **extra: object) -> BleAdvertDevice:
    return BleAdvertDevice.model_validate(
        {"id": "d", "type": "ble_advert", "address": MAC, "decoder": decoder, **extra}
    )


#: One long-lived parser per library, and `auto`: as configured devices keep them.
NAMED = {name: make_advert_parser(device(name)) for name in LIBRARIES if name != "ruuvi"}
AUTO = auto_parser()


@FUZZ
@given(adverts)
def test_the_library_adapter_and_describe_raise_only_decode_error(advert: Advert) -> None:
    faults: list[str] = []
    parsers: list[AdvertParser] = [*NAMED.values(), auto_parser(on_fault=faults.append), AUTO]
    for parse in parsers:
        try:
            decoded = parse(advert)
        except DecodeError:
            continue
        assert plain(decoded.values)
        assert plain(decoded.events)
    assert set(faults) <= set(LIBRARIES)  # a parser's own name, never text of the advert
    decoder, values = describe(advert)
    assert decoder == "-" or decoder in {*LIBRARIES, *BUILTIN}
    assert isinstance(values, str)


@FUZZ
@given(adverts, st.sampled_from(sorted(BUILTIN)))
def test_the_built_in_parsers_raise_only_decode_error(advert: Advert, name: str) -> None:
    try:
        decoded = BUILTIN[name](advert)
    except DecodeError:
        return
    assert plain(decoded.values)
    assert plain(decoded.events)


@FUZZ
@given(
    st.binary(max_size=40),
    st.integers(0, 2**32 - 1),
    st.sampled_from([None, KEY, bytes(16)]),
    st.floats(0, 1e6),
)
def test_encrypted_bthome_and_its_guard_raise_only_decode_error(
    objects: bytes, counter: int, key: bytes | None, now: float
) -> None:
    """Sealed with the right key, or not; read with the right key, a wrong one, or none."""
    guard = PacketGuard(encrypted=key is not None, repeat_window=4.0)
    data = encode_bthome(objects, mac=MAC, bindkey=KEY, counter=counter)
    parse = make_advert_parser(device("bthome", **({"bindkey": key.hex()} if key else {})))
    for payload in (data, data[: len(data) // 2], bytes([0x41]) + objects):
        try:
            decoded = parse(Advert(MAC, service_data={uuid16(0xFCD2): payload}))
        except DecodeError:
            continue
        assert guard.check(decoded, now) in (None, "repeat", "replay", "unencrypted")


def test_a_long_lived_auto_parser_keeps_its_memory_bounded() -> None:
    """A configured `auto` device's parser, fed adverts from ever new addresses (spoofed) and
    payloads: what it keeps does not grow with them."""
    rng = random.Random(21)

    def advert() -> Advert:
        data = rng.randbytes(rng.randrange(32))
        return Advert(
            ":".join(f"{rng.randrange(256):02X}" for _ in range(6)),
            name=rng.choice(NAMES),
            manufacturer_data={rng.choice(COMPANIES): data},
            service_data={rng.choice(SERVICES): rng.randbytes(rng.randrange(32))},
        )

    parser = auto_parser(on_fault=lambda name: None)

    def feed(n: int) -> None:
        for _ in range(n):
            with contextlib.suppress(DecodeError):
                parser(advert())

    feed(500)  # imports, caches and the libraries' per-device state settle
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.take_snapshot()
        feed(3000)
        gc.collect()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(start, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, f"{grown} bytes kept after 3000 adverts"
