"""Modbus devices: the transport (a serial port, as serial devices have, or a network
connection), the unit id, the registers.

A register entry is also the sensor's spec: its unit and Home Assistant classes become the
sensor's (a `sensors:` entry of the same name adds filters and discovery keys, and wins where
both say something), so the values go through the same streams and discovery as any device's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from typing import Literal, Self

from pydantic import Field, JsonValue, ValidationInfo, field_validator, model_validator

from gateway.config.base import Model, SensorName
from gateway.config.controls import READ_PLATFORMS, register_control_problem
from gateway.config.devices import DeviceBase, SensorSpec, device_model
from gateway.config.serial import SerialPortOptions
from gateway.yamlsource import Located, Path_, dotted

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
    # After every key they are checked against (a field validator sees the fields before it).
    options: dict[int, str] | None = Field(
        None,
        description="Value -> label, both ways: the sensor publishes the label, a command "
        'takes the label (or the value); e.g. {0: "off", 1: eco, 2: comfort}. A holding '
        "register with options is a Home Assistant select.",
    )
    homeassistant: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="`platform`: the Home Assistant entity this register is: switch (a coil's "
        "default), number, select (a holding register with options), button, or sensor / "
        "binary_sensor (read only); `min`, `max`, `step` bound a number (default: the data "
        "type's range × scale). The other keys are merged into the entity's discovery config "
        "(entity_category: config, mode: box, name, ...); a null value removes a key.",
    )

    @field_validator("options")
    @classmethod
    def _labels(cls, value: dict[int, str] | None, info: ValidationInfo) -> dict[int, str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("options need at least one value: label")
        if info.data.get("function") in ("coil", "discrete"):
            raise ValueError("a bit is on or off: options are for registers")
        if info.data.get("data_type") in ("string", "bits", "float32", "float64"):
            raise ValueError("options are for integer registers")
        if len(set(value.values())) != len(value) or not all(value.values()):
            raise ValueError("every option needs a label of its own")
        return value

    @field_validator("homeassistant")
    @classmethod
    def _control(cls, value: dict[str, JsonValue], info: ValidationInfo) -> dict[str, JsonValue]:
        if problem := register_control_problem(value, info.data):
            raise ValueError(problem)
        return value

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
    def control_platform(self) -> str | None:
        """The control this register is: its `homeassistant.platform`, else a coil is a switch
        and a holding register with options a select; None: only read (a sensor)."""
        platform = self.homeassistant.get("platform")
        if platform is None:
            if self.function == "coil":
                return "switch"
            return "select" if self.function == "holding" and self.options else None
        return None if platform in READ_PLATFORMS else str(platform)

    @property
    def sensor_names(self) -> list[str]:
        if self.kind == "bits":
            return [f"{self.name}_{bit}" for bit in range(16 * self.words)]
        return [self.name]

    @property
    def sensor_type(self) -> Literal["bool", "str"] | None:
        if self.kind in ("bool", "bits"):
            return "bool"
        return "str" if self.kind == "string" or self.options else None


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


Transport = Literal["serial", "tcp", "rtu_over_tcp", "udp"]
NETWORK_TRANSPORTS = ("tcp", "rtu_over_tcp", "udp")
#: Keys that only a serial line has: refused with a network transport (they would do nothing).
_SERIAL_ONLY = ("match", "baudrate", "bytesize", "parity", "stopbits")
DEFAULT_TCP_PORT = 502  # Modbus TCP's registered port (IANA)


@device_model
class ModbusDevice(SerialPortOptions, DeviceBase):
    """A Modbus slave: on a serial line (RS485 usually: `port` is the device path) or over the
    network (`transport: tcp | rtu_over_tcp | udp`: `host` and `port`, a number). Devices with
    the same port (serial) or the same transport, host and port share one connection, and their
    requests go one at a time."""

    type: Literal["modbus"]
    transport: Transport = Field(
        "serial",
        description="serial (RTU on `port`, a device path), tcp (Modbus TCP), rtu_over_tcp (RTU "
        "frames over a TCP socket: serial-to-Ethernet converters) or udp (Modbus TCP's framing "
        "in UDP datagrams).",
    )
    host: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="Network transports: the device's or converter's host name or address "
        "(names are resolved at every connect).",
    )
    port: str | int | None = Field(  # type: ignore[assignment]  # a number for networks
        None,
        validate_default=True,
        description="serial: the device path, e.g. /dev/ttyUSB0 or /dev/serial/by-id/... "
        "(symlinks followed at every open; or `match`). Network transports: the TCP or UDP port "
        "number (default 502).",
    )
    baudrate: int = Field(9600, gt=0, description="Bits per second.")
    parity: Literal["N", "E", "O", "M", "S"] = Field(
        "E", description="None, even (the Modbus default), odd, mark or space."
    )
    unit_id: int = Field(
        1,
        ge=0,
        le=255,
        description="The slave's address: 1-247 on a serial line; over the network also 0 or "
        "255, which many devices reached directly over TCP expect.",
    )
    poll_interval: float = Field(10.0, gt=0, description="Seconds between reads of all registers.")
    timeout: float = Field(1.0, gt=0, description="Seconds to wait for each answer.")
    retries: int = Field(2, ge=0, le=10, description="Further tries of a request not answered.")
    registers: list[RegisterSpec] = Field(min_length=1, description="What to read (and write).")

    @field_validator("port")
    @classmethod
    def _port_or_match(  # type: ignore[override]  # a port may be a number here
        cls, value: str | int | None, info: ValidationInfo
    ) -> str | int | None:
        # Replaces the serial check of the same name: what `port` must be depends on
        # `transport`, which is validated after it (see `_transport_keys`).
        return value

    @model_validator(mode="after")
    def _transport_keys(self) -> Self:
        problem = self._network_problem() if self.is_network else self._serial_problem()
        if problem is not None:
            raise ValueError(problem)
        if self.is_network and self.port is None:
            object.__setattr__(self, "port", DEFAULT_TCP_PORT)  # frozen model: set once here
        return self

    def _serial_problem(self) -> str | None:
        if self.host is not None:
            return "host is for the network transports: set transport: tcp, rtu_over_tcp or udp"
        if isinstance(self.port, int):
            return (
                "a serial Modbus device's port is its device path (/dev/ttyUSB0); for a device "
                "on the network set transport: tcp (or rtu_over_tcp, udp) and host"
            )
        if self.port is None and self.match is None:
            return "give port (the device path) or match"
        if self.port is not None and self.match is not None:
            return "give either port or match, not both"
        if not 1 <= self.unit_id <= 247:
            return f"unit_id {self.unit_id}: a serial line's slaves are 1-247"
        return None

    def _network_problem(self) -> str | None:
        given = [k for k in _SERIAL_ONLY if k in self.model_fields_set]
        if given:
            return f"{', '.join(given)}: serial line settings, not for transport {self.transport}"
        if self.host is None:
            return f"transport {self.transport} needs host (and port, default 502)"
        if self.port is not None and (
            not isinstance(self.port, int) or not 1 <= self.port <= 65535
        ):
            return (
                f"port of transport {self.transport} is the TCP/UDP port number (1-65535, "
                f"default 502), not {self.port!r}"
            )
        return None

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
                # A register that is only read: its `homeassistant:` keys are its sensor's.
                ha = {} if reg.control_platform else reg.homeassistant
                merged[name] = given.model_copy(
                    update={
                        "unit": given.unit if given.unit is not None else reg.unit,
                        "type": given.type or reg.sensor_type,
                        "device_class": given.device_class or reg.device_class,
                        "state_class": given.state_class or reg.state_class,
                        "homeassistant": {
                            **{k: v for k, v in ha.items() if k != "platform"},
                            **given.homeassistant,
                        },
                    }
                )
        return merged

    def register(self, name: str) -> RegisterSpec | None:
        return next((r for r in self.registers if r.name == name), None)

    def named_sensors(self) -> Iterator[tuple[str, Path_]]:
        for j, reg in enumerate(self.registers):
            for name in reg.sensor_names:
                yield name, ("registers", j, "name")
        yield from super().named_sensors()

    def sensor_entry(self, name: str) -> Path_ | None:
        """A register's sensor takes its unit and classes from the register's entry."""
        for j, reg in enumerate(self.registers):
            if name in reg.sensor_names:
                return ("registers", j)
        return None

    @property
    def is_network(self) -> bool:
        return self.transport in NETWORK_TRANSPORTS

    @property
    def bus_key(self) -> tuple[object, ...]:
        """Devices with the same key share a port or a connection (one client, requests one at
        a time)."""
        if self.is_network:
            assert self.host is not None  # the model requires it
            return (self.transport, self.host.lower(), self.port)
        return (self.port, self.match)

    @property
    def line_settings(self) -> tuple[object, ...]:
        if self.is_network:
            return ()
        return (self.baudrate, self.bytesize, self.parity, self.stopbits)

    @classmethod
    def check_devices(
        cls, devices: Sequence[tuple[int, DeviceBase]], located: Located
    ) -> list[str]:
        """Modbus devices on one port share it: the same line settings, a unit id each."""
        first: dict[tuple[object, ...], tuple[int, ModbusDevice]] = {}
        units: dict[tuple[object, ...], set[int]] = {}
        problems = []
        for i, device in devices:
            assert isinstance(device, ModbusDevice)  # the loader gives each model its own devices
            if not first and importlib.util.find_spec("pymodbus") is None:
                loc_: Path_ = ("devices", i, "type")
                problems.append(
                    f"{located.where(loc_)}: {dotted(loc_)}: modbus devices need pymodbus: "
                    "pip install 'iot-gateway[modbus]'"
                )
            j, other = first.setdefault(device.bus_key, (i, device))
            used = units.setdefault(device.bus_key, set())
            loc: Path_ | None = None
            if other.line_settings != device.line_settings:
                loc, problem = (
                    ("devices", i, "baudrate"),
                    f"shares its port with devices[{j}] ({other.id}): give both the same "
                    "baudrate, bytesize, parity and stopbits",
                )
            elif device.unit_id in used:
                loc, problem = (
                    ("devices", i, "unit_id"),
                    f"unit_id {device.unit_id} is used by another device on this port",
                )
            used.add(device.unit_id)
            if loc is not None:
                problems.append(f"{located.where(loc)}: {dotted(loc)}: {problem}")
        return problems

    @property
    def connection_label(self) -> str:
        """`tcp://inverter.local:502`, or the serial port: for logs, /status and metrics."""
        if self.is_network:
            return f"{self.transport}://{self.host}:{self.port}"
        return str(self.port) if self.port is not None else f"match {self.match_text}"


__all__ = [
    "NETWORK_TRANSPORTS",
    "ModbusDevice",
    "RegisterSpec",
    "Transport",
]
