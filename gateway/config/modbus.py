"""Modbus RTU devices: the serial port (shared with serial devices), the unit id, the registers.

A register entry is also the sensor's spec: its unit and Home Assistant classes become the
sensor's (a `sensors:` entry of the same name adds filters and discovery keys, and wins where
both say something), so the values go through the same streams and discovery as any device's.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gateway.config.base import Model, SensorName
from gateway.config.devices import DeviceBase, SensorSpec
from gateway.config.serial import SerialPortOptions

Function = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "bits"
]

#: Registers (16-bit words) per value of each fixed-size type.
WORDS: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
MAX_ADDRESS = 0xFFFF
#: The Modbus limits per request: 125 registers (a 250-byte answer), 2000 coils or inputs.
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
#: Addresses users copy from a manual in the 1-based "Modicon" notation (40001 = holding 0).
_MODICON = {"coil": 1, "discrete": 10001, "input": 30001, "holding": 40001}


class RegisterSpec(Model):
    name: SensorName = Field(description="The sensor's name: the topic level of its readings.")
    function: Function = Field(
        "holding",
        description="holding (read/write registers), input (read-only registers), coil "
        "(read/write bits), discrete (read-only bits).",
    )
    address: int = Field(
        ge=0,
        le=MAX_ADDRESS,
        description="0-based protocol address, as sent on the wire (a manual's 40001 is "
        "holding 0, 30001 is input 0).",
    )
    data_type: DataType | None = Field(
        None,
        description="Registers only (default uint16): int16, uint16, int32, uint32, int64, "
        "uint64, float32, float64, string (`count` registers), bits (one bool per bit, "
        "`<name>_<bit>`).",
    )
    count: int | None = Field(
        None, ge=1, le=MAX_READ_REGISTERS, description="Registers of a string or bits value."
    )
    word_order: Literal["big", "little"] = Field(
        "big", description="Multi-register values: big = most significant register first."
    )
    byte_order: Literal["big", "little"] = Field(
        "big", description="Within each register: big = most significant byte first."
    )
    scale: float = Field(1.0, description="value = raw × scale + offset (numbers only).")
    offset: float = Field(0.0, description="Added after scaling.")
    unit: str | None = Field(None, description="Unit published with the value.")
    device_class: str | None = Field(None, description="Home Assistant device class.")
    state_class: Literal["measurement", "measurement_angle", "total", "total_increasing"] | None = (
        Field(None, description="Home Assistant state class.")
    )
    encoding: str = Field("utf-8", description="Of a string value (trailing NULs dropped).")

    @field_validator("address")
    @classmethod
    def _zero_based(cls, value: int, info: ValidationInfo) -> int:
        # `function` is declared first, so it is known here (absent if it was invalid itself).
        hint = modicon_hint(value, info.data.get("function", "holding"))
        if hint is not None:
            raise ValueError(hint)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        bits = self.function in ("coil", "discrete")
        if bits and self.data_type is not None:
            raise ValueError(f"a {self.function} is one bit: remove data_type")
        if self.count is not None and self.data_type not in ("string", "bits"):
            raise ValueError("count is for data_type string or bits")
        if self.data_type == "string" and self.count is None:
            raise ValueError("a string needs `count` (its length in registers)")
        if self.scale == 0:
            raise ValueError("scale must not be 0 (a write could not be scaled back)")
        if self.address + self.words - 1 > MAX_ADDRESS:
            raise ValueError(f"address {self.address} + {self.words} register(s) pass 65535")
        return self

    @property
    def kind(self) -> str:
        return self.data_type or ("bool" if self.function in ("coil", "discrete") else "uint16")

    @property
    def words(self) -> int:
        """Registers (or bits, for coils and discrete inputs) the value occupies."""
        if self.function in ("coil", "discrete"):
            return 1
        return WORDS.get(self.kind) or self.count or 1

    @property
    def writable(self) -> bool:
        return self.function in ("holding", "coil")

    @property
    def sensor_names(self) -> list[str]:
        if self.kind == "bits":
            return [f"{self.name}_{bit}" for bit in range(16 * self.words)]
        return [self.name]

    @property
    def sensor_type(self) -> Literal["bool", "str"] | None:
        if self.kind in ("bool", "bits"):
            return "bool"
        return "str" if self.kind == "string" else None


def modicon_hint(address: int, function: str) -> str | None:
    """What a 1-based "Modicon" address such as 40001 means, if it looks like one."""
    for kind, base in _MODICON.items():
        if base > 1 and base <= address < base + 10000:
            if kind != function:
                return None
            return (
                f"{address} looks like a 1-based {kind} address: Modbus addresses here are "
                f"0-based, so write {address - base}"
            )
    return None


class ModbusDevice(SerialPortOptions, DeviceBase):
    """A Modbus RTU slave on a serial line (RS485 usually). Devices with the same port share
    one client and one port, and their requests go one at a time."""

    type: Literal["modbus"]
    baudrate: int = Field(9600, gt=0, description="Bits per second.")
    parity: Literal["N", "E", "O", "M", "S"] = Field(
        "E", description="None, even (the Modbus default), odd, mark or space."
    )
    unit_id: int = Field(1, ge=1, le=247, description="The slave's address on the bus.")
    poll_interval: float = Field(10.0, gt=0, description="Seconds between reads of all registers.")
    timeout: float = Field(1.0, gt=0, description="Seconds to wait for each answer.")
    retries: int = Field(2, ge=0, le=10, description="Further tries of a request not answered.")
    registers: list[RegisterSpec] = Field(min_length=1, description="What to read (and write).")

    @model_validator(mode="after")
    def _registers_are_sensors(self) -> Self:
        names: set[str] = set()
        for reg in self.registers:
            for name in reg.sensor_names:
                if name in names:
                    raise ValueError(f"two registers give the sensor {name!r}")
                names.add(name)
        # The registers' units and classes are the sensors' specs (frozen model: set once here).
        object.__setattr__(self, "sensors", self._merged_sensors())
        return self

    def _merged_sensors(self) -> dict[str, SensorSpec]:
        merged = dict(self.sensors)
        for reg in self.registers:
            for name in reg.sensor_names:
                given = self.sensors.get(name) or SensorSpec()
                merged[name] = given.model_copy(
                    update={
                        "unit": given.unit if given.unit is not None else reg.unit,
                        "type": given.type or reg.sensor_type,
                        "device_class": given.device_class or reg.device_class,
                        "state_class": given.state_class or reg.state_class,
                    }
                )
        return merged

    def register(self, name: str) -> RegisterSpec | None:
        return next((r for r in self.registers if r.name == name), None)

    @property
    def bus_key(self) -> tuple[object, ...]:
        """Devices with the same key share a port (one client, requests one at a time)."""
        return (self.port, self.match)

    @property
    def line_settings(self) -> tuple[object, ...]:
        return (self.baudrate, self.bytesize, self.parity, self.stopbits)


__all__ = ["ModbusDevice", "RegisterSpec"]
