"""The pure half of Modbus: request planning, registers <-> values, and the config's checks."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.app_config import load_config
from gateway.config import ModbusDevice, RegisterSpec
from gateway.errors import ConfigError, DecodeError
from gateway.homeassistant.devices import known_sensors
from gateway.modbus.registers import ReadRequest, decode, encode, plan_reads


def reg(name: str, address: int, **kw: object) -> RegisterSpec:
    return RegisterSpec.model_validate({"name": name, "address": address, **kw})


def spans(plan: list[ReadRequest]) -> list[tuple[str, int, int, list[str]]]:
    return [(r.function, r.address, r.count, [x.name for x in r.registers]) for r in plan]


def test_adjacent_registers_of_one_function_share_a_request() -> None:
    regs = [
        reg("v", 0, function="input", data_type="float32"),
        reg("i", 2, function="input", data_type="float32"),
        reg("p", 4, function="input", data_type="int32"),
        reg("e", 0x156, data_type="uint32"),
        reg("t", 0x158),
        reg("gap", 0x15A),
        reg("relay", 3, function="coil"),
        reg("door", 4, function="coil"),
    ]
    assert spans(plan_reads(regs)) == [
        ("input", 0, 6, ["v", "i", "p"]),
        ("holding", 0x156, 3, ["e", "t"]),
        ("holding", 0x15A, 1, ["gap"]),
        ("coil", 3, 2, ["relay", "door"]),
    ]


def test_a_request_never_exceeds_125_registers() -> None:
    regs = [reg(f"r{i}", i, data_type="uint32") for i in range(0, 300, 2)]
    plan = plan_reads(regs)
    assert [r.count for r in plan] == [124, 124, 52]
    assert sum(len(r.registers) for r in plan) == 150
    assert all(r.count <= 125 for r in plan_reads(regs, max_registers=125))


def test_overlapping_entries_and_registers_read_alone() -> None:
    regs = [reg("word", 10), reg("signed", 10, data_type="int16"), reg("next", 11)]
    assert spans(plan_reads(regs)) == [("holding", 10, 2, ["word", "signed", "next"])]
    assert spans(plan_reads(regs, alone=frozenset({"next"}))) == [
        ("holding", 10, 1, ["word", "signed"]),
        ("holding", 11, 1, ["next"]),
    ]


@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["uint16", "int32", "float64"]))))
def test_every_register_is_read_exactly_once_within_the_limit(
    entries: list[tuple[int, str]],
) -> None:
    regs = [reg(f"r{n}", a, data_type=t) for n, (a, t) in enumerate(entries)]
    plan = plan_reads(regs, max_registers=125)
    assert sorted(r.name for p in plan for r in p.registers) == sorted(r.name for r in regs)
    for p in plan:
        assert p.count <= 125
        assert all(p.address <= r.address and r.address + r.words <= p.end for r in p.registers)


def words_of(fmt: str, value: object) -> list[int]:
    data = struct.pack(">" + fmt, value)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


@pytest.mark.parametrize(
    ("data_type", "fmt", "value"),
    [
        ("int16", "h", -1234),
        ("uint16", "H", 65000),
        ("int32", "i", -123456789),
        ("uint32", "I", 4_000_000_000),
        ("int64", "q", -(2**60)),
        ("uint64", "Q", 2**63 + 5),
        ("float32", "f", 230.5),
        ("float64", "d", 1e-300),
    ],
)
def test_every_numeric_type_in_both_word_and_byte_orders(
    data_type: str, fmt: str, value: float
) -> None:
    big = words_of(fmt, value)
    assert decode(reg("x", 0, data_type=data_type), big) == {"x": value}
    little = list(reversed(big))
    assert decode(reg("x", 0, data_type=data_type, word_order="little"), little) == {"x": value}
    swapped = [int.from_bytes(w.to_bytes(2, "big"), "little") for w in big]
    assert decode(reg("x", 0, data_type=data_type, byte_order="little"), swapped) == {"x": value}
    for order in ("big", "little"):
        spec = reg("x", 0, data_type=data_type, word_order=order)
        words = encode(spec, repr(value))
        assert isinstance(words, list)
        assert decode(spec, words) == {"x": value}


def test_scale_offset_strings_bits_and_coils() -> None:
    assert decode(reg("t", 0, data_type="int16", scale=0.1), [0xFF1A]) == {"t": -23.0}
    assert decode(reg("v", 0, scale=0.1, offset=-40), [2301]) == {"v": 190.1}
    assert decode(reg("s", 0, data_type="string", count=3), [0x4142, 0x4300, 0]) == {"s": "ABC"}
    bits = decode(reg("st", 0, data_type="bits"), [0b1000_0000_0000_0101])
    assert [n for n, on in bits.items() if on] == ["st_0", "st_2", "st_15"]
    assert len(bits) == 16
    assert decode(reg("relay", 3, function="coil"), [1]) == {"relay": True}
    with pytest.raises(DecodeError, match="finite"):
        decode(reg("f", 0, data_type="float32"), [0x7FC0, 0])  # NaN


def test_writes_are_scaled_back_and_checked() -> None:
    assert encode(reg("v", 0, scale=0.1), "230.5") == [2305]
    assert encode(reg("t", 0, data_type="int16", scale=0.1, offset=-40), "-12.3") == [277]
    assert encode(reg("relay", 3, function="coil"), "on") is True
    assert encode(reg("relay", 3, function="coil"), "0") is False
    assert encode(reg("s", 0, data_type="string", count=2), "AB") == [0x4142, 0]
    with pytest.raises(ValueError, match="out of range"):
        encode(reg("u", 0), "70000")
    with pytest.raises(ValueError, match="not a number"):
        encode(reg("u", 0), "warm")
    with pytest.raises(ValueError, match="not on or off"):
        encode(reg("relay", 3, function="coil"), "maybe")
    with pytest.raises(ValueError, match="at most 4 bytes"):
        encode(reg("s", 0, data_type="string", count=2), "ABCDE")


@pytest.mark.parametrize("data_type", ["uint16", "int16", "int32", "uint32", "int64", "uint64"])
@pytest.mark.parametrize("text", ["1e30", "-1e30", "1e400", "123456789012345678901234567890"])
def test_a_huge_integer_write_is_out_of_range_not_a_crash(data_type: str, text: str) -> None:
    """Over 28 digits, rounding to an integer raised decimal.InvalidOperation (issue 21, 1)."""
    with pytest.raises(ValueError, match="out of range"):
        encode(reg("n", 0, data_type=data_type, scale=0.1), text)


@pytest.mark.parametrize(
    ("data_type", "text"),
    [
        ("float32", "1e39"),  # over float32's largest (3.4e38): would be inf
        ("float32", "-1e39"),
        ("float64", "1e400"),  # over float64's largest: float() made it inf, written as such
        ("float64", "-1e400"),
        ("float32", "nan"),
        ("float64", "inf"),
        ("float64", "-Infinity"),
        ("float32", "sNaN"),
    ],
)
def test_float_writes_refuse_what_the_register_cannot_hold(data_type: str, text: str) -> None:
    with pytest.raises(ValueError, match=r"out of range|not a finite number|not a number"):
        encode(reg("f", 0, data_type=data_type), text)


def test_float_writes_within_the_width_still_go() -> None:
    assert encode(reg("f", 0, data_type="float32"), "3.4e38") == words_of("f", 3.4e38)
    assert encode(reg("f", 0, data_type="float64"), "1e308") == words_of("d", 1e308)


CONFIG = """\
gateway: {id: gw}
devices:
  - id: meter1
    type: modbus
    port: /dev/ttyUSB0
    baudrate: 9600
    parity: E
    unit_id: 1
    poll_interval: 10
    timeout: 1.0
    retries: 2
    registers:
      - {name: voltage, address: 0, function: input, data_type: float32, word_order: big,
         byte_order: big, unit: V, scale: 1.0, offset: 0}
      - {name: energy, address: 0x0156, function: holding, data_type: uint32, unit: kWh,
         device_class: energy, state_class: total_increasing}
      - {name: relay, address: 3, function: coil}
"""


def load(tmp_path: Path, text: str) -> ModbusDevice:
    file = tmp_path / "gateway.yaml"
    file.write_text(text, encoding="utf-8")
    device = load_config(file).devices[0]
    assert isinstance(device, ModbusDevice)
    return device


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    return str(err.value)


def test_the_issue_config_loads_and_registers_become_sensors(tmp_path: Path) -> None:
    device = load(tmp_path, CONFIG)
    assert device.unit_id == 1
    assert device.retries == 2
    assert device.sensors["energy"].device_class == "energy"
    assert device.sensors["voltage"].unit == "V"
    assert device.sensors["relay"].type == "bool"
    assert known_sensors(device) == {"voltage": "V", "energy": "kWh", "relay": None}


def test_a_1_based_address_is_an_error_at_its_line(tmp_path: Path) -> None:
    text = CONFIG.replace("address: 0x0156", "address: 40343")
    assert problems(tmp_path, text) == (
        f"{tmp_path / 'gateway.yaml'}:15:24: devices[0].registers[1].address: Value error, "
        "40343 looks like a 1-based holding address: Modbus addresses here are 0-based, "
        "so write 342"
    )


def test_register_problems_point_at_the_register(tmp_path: Path) -> None:
    text = CONFIG.replace("unit: kWh,", "unit: V,")
    assert "devices[0].registers[1].unit: unit 'V' does not fit device_class energy" in problems(
        tmp_path, text
    )
    text = CONFIG.replace("function: coil}", "function: coil, data_type: uint16}")
    assert "a coil is one bit: remove data_type" in problems(tmp_path, text)
    text = CONFIG.replace("data_type: uint32,", "data_type: string,")
    assert "a string needs `count`" in problems(tmp_path, text)


def test_devices_on_one_port_share_line_settings_and_need_their_own_unit(tmp_path: Path) -> None:
    second = """\
  - id: meter2
    type: modbus
    port: /dev/ttyUSB0
    baudrate: BAUD
    unit_id: UNIT
    registers: [{name: v, address: 0}]
"""
    same = CONFIG + second.replace("BAUD", "9600").replace("UNIT", "2")
    assert load(tmp_path, same).id == "meter1"
    assert "give both the same baudrate" in problems(
        tmp_path, CONFIG + second.replace("BAUD", "19200").replace("UNIT", "2")
    )
    assert "devices[1].unit_id: unit_id 1 is used by another device on this port" in problems(
        tmp_path, CONFIG + second.replace("BAUD", "9600").replace("UNIT", "1")
    )


@pytest.mark.parametrize(
    ("data_type", "raw", "scaling"),
    [
        ("float64", 1e308, {"scale": 10}),  # the scale overflows a double
        ("float64", -1e308, {"offset": -1e308}),  # so does the offset
        ("float32", 3e38, {"scale": 1e300}),
        ("uint64", 2**64 - 1, {"scale": 1e300}),
    ],
)
def test_a_scale_or_offset_overflowing_a_double_is_a_decode_error(
    data_type: str, raw: float, scaling: dict[str, float]
) -> None:
    """Issue 21, item 16: `{"value": Infinity}` is not JSON; nan/inf never reach a payload."""
    spec = reg("big", 0, data_type=data_type, **scaling)
    fmt = {"float64": ">d", "float32": ">f", "uint64": ">Q"}[data_type]
    packed = struct.pack(fmt, raw)
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    with pytest.raises(DecodeError, match="finite"):
        decode(spec, words)
