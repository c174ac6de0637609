"""Modbus slaves played by pymodbus's own servers, for `gateway simulate modbus` and the tests:
the server side, the only module besides `client.py` that knows pymodbus.

The slaves are served on a serial port (RTU), or on loopback over TCP (Modbus TCP framing, or
RTU frames as a serial-to-Ethernet converter sends them) or UDP. A unit's map is
`{function: {address: word or bit}}`; addresses not in it draw an exception answer (illegal
address), units not in the map never answer (as on a real bus), and a unit in `silent` stops
answering (and acting: a write to it changes nothing) until it is removed. `values` is live:
the server reads from it at every request and writes to it, so a test or a profile changes what
the slaves say.

pymodbus (3.16) answers a unit it was not given with exception 4 (its `SimDevice` API ignores
`ignore_missing_devices`), so silence is made where the answer leaves: the packet hook
(`trace_packet`) drops every answer of a unit that is silent or not configured. Its TCP server
also answers only the first of several requests that arrive together: the gateway sends one at
a time per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer, ModbusUdpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.config.modbus import RegisterSpec
from gateway.modbus.registers import encode

UnitMap = dict[str, dict[int, int]]  # function -> address -> register word (or bit 0/1)
#: Where the unit id is in an answer: the first byte of an RTU frame, after the MBAP header's
#: transaction id, protocol id and length (6 bytes) in Modbus TCP framing.
_UNIT_AT = {"serial": 0, "rtu_over_tcp": 0, "tcp": 6, "udp": 6}
_FUNCTION_CODES = {3: "holding", 6: "holding", 16: "holding", 4: "input"}


def _runs(cells: Mapping[int, int]) -> Iterator[tuple[int, list[int]]]:
    """Contiguous runs of addresses: (first address, values)."""
    run: list[int] = []
    start = prev = -2
    for address in sorted(cells):
        if address != prev + 1 and run:
            yield start, run
            run = []
        if not run:
            start = address
        run.append(cells[address])
        prev = address
    if run:
        yield start, run


def _block(cells: Mapping[int, int], bits: bool) -> list[SimData]:
    kind = DataType.BITS if bits else DataType.REGISTERS
    blocks = [
        SimData(start, values=[bool(v) for v in run] if bits else run, datatype=kind)
        for start, run in _runs(cells)
    ]
    # pymodbus needs a block per table; an unused one gets a cell no request will name.
    return blocks or [SimData(0xFFFF, values=[False] if bits else [0], datatype=kind)]


class ModbusSimulator:
    def __init__(
        self,
        port: str | Path | int,
        units: Mapping[int, UnitMap],
        *,
        transport: str = "serial",
        host: str = "127.0.0.1",
        baudrate: int = 9600,
        parity: str = "E",
        bytesize: int = 8,
        stopbits: int = 1,
    ) -> None:
        self.values: dict[int, UnitMap] = {
            unit: {f: dict(cells) for f, cells in table.items()} for unit, table in units.items()
        }
        self.silent: set[int] = set()
        #: (unit, function, address) whose writes draw exception 3 (a value the slave refuses),
        #: while reads go on: a device that will not take what was asked.
        self.refuse_writes: set[tuple[int, str, int]] = set()
        self.requests = 0
        self.connections = 0  # TCP connections open now (a serial port or UDP has none)
        self.before_answer: Callable[[ModbusSimulator], None] | None = None
        self.transport = transport
        self._unit_at = _UNIT_AT[transport]
        self._address = (host, int(str(port))) if transport != "serial" else None
        self._line = {
            "port": str(port),
            "baudrate": baudrate,
            "parity": parity,
            "bytesize": bytesize,
            "stopbits": stopbits,
        }

    def _trace(self, sending: bool, packet: bytes) -> bytes:
        if not sending:
            self.requests += 1
            return packet
        # Silent and unknown units' answers are never sent (as on a real bus).
        unit = packet[self._unit_at] if len(packet) > self._unit_at else None
        return b"" if unit in self.silent or unit not in self.values else packet

    def _connected(self, connected: bool) -> None:
        self.connections += 1 if connected else -1

    async def _serve(  # noqa: PLR0917 - pymodbus's signature for an action
        self,
        unit: int,
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus's hook at each request: registers come from (and go to) `values`."""
        if unit in self.silent:
            # A silent unit is a dead slave: it neither answers nor acts. The exception keeps
            # pymodbus from writing its own table; `_trace` drops the answer.
            return ExcCodes.DEVICE_FAILURE
        if self.before_answer is not None:
            self.before_answer(self)
        function = _FUNCTION_CODES.get(function_code)
        if function is None:  # coils and discrete inputs: pymodbus's own table serves them
            if function_code in (5, 15) and set_values is not None:
                coils = self.values[unit].setdefault("coil", {})
                coils.update({address + i: int(bool(v)) for i, v in enumerate(set_values)})
            return None
        cells = self.values[unit].setdefault(function, {})
        if set_values is not None and (unit, function, address) in self.refuse_writes:
            return ExcCodes.ILLEGAL_VALUE
        if set_values is not None:
            cells.update({address + i: int(v) for i, v in enumerate(set_values)})
            return None
        for a in range(address, address + count):
            if a in cells:
                registers[a - start] = cells[a]
        return None

    def put(self, unit: int, register: RegisterSpec, value: str) -> None:
        """Set a register entry's value as a gateway would write it (scaled, ordered)."""
        words = encode(register, value)
        cells = self.values[unit].setdefault(register.function, {})
        if isinstance(words, bool):
            cells[register.address] = int(words)
        else:
            cells.update({register.address + i: w for i, w in enumerate(words)})

    async def serve(self) -> None:
        """Answer requests until cancelled; the port is closed on the way out. The slaves'
        tables have the addresses `values` has now (more cannot be added later)."""
        devices = [
            SimDevice(
                id=unit,
                simdata=tuple(  # type: ignore[arg-type]
                    _block(table.get(f, {}), bits=f in ("coil", "discrete"))
                    for f in ("coil", "discrete", "holding", "input")
                ),
                action=functools.partial(self._serve, unit),
            )
            for unit, table in self.values.items()
        ]
        server = self._server(devices)
        try:
            await server.serve_forever()
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    def _server(
        self, devices: list[SimDevice]
    ) -> ModbusSerialServer | ModbusTcpServer | ModbusUdpServer:
        common: dict[str, object] = {"ignore_missing_devices": True, "trace_packet": self._trace}
        if self._address is None:
            return ModbusSerialServer(
                devices,
                framer=FramerType.RTU,
                **common,  # type: ignore[arg-type]
                **self._line,  # type: ignore[arg-type]
            )
        if self.transport == "udp":
            return ModbusUdpServer(devices, address=self._address, **common)  # type: ignore[arg-type]
        framer = FramerType.RTU if self.transport == "rtu_over_tcp" else FramerType.SOCKET
        return ModbusTcpServer(
            devices,
            framer=framer,
            address=self._address,
            trace_connect=self._connected,
            **common,  # type: ignore[arg-type]
        )


# -- the `gateway simulate modbus` profile ------------------------------------------------------

METER = [
    RegisterSpec(name="voltage", address=0, function="input", data_type="float32"),
    RegisterSpec(name="current", address=2, function="input", data_type="float32"),
    RegisterSpec(name="power", address=4, function="input", data_type="int32"),
    RegisterSpec(name="energy", address=0x0156, function="holding", data_type="uint32"),
]
THERMOMETER = [
    RegisterSpec(name="temperature", address=0, data_type="int16", scale=0.1),
    RegisterSpec(name="humidity", address=1, data_type="uint16"),
]


SETPOINT = RegisterSpec(name="setpoint", address=0x10, data_type="int16", scale=0.1)
MODE = RegisterSpec(name="mode", address=0x11)
#: The setpoint the profile's unit 1 keeps: a thermostat clamps what it is told to its range.
SETPOINT_RANGE = (50, 300)  # raw: 5.0 to 30.0 °C


def profile_units() -> dict[int, UnitMap]:
    """Unit 1: an energy meter (relay on coil 3) with a thermostat's setpoint (holding 0x10,
    int16 × 0.1 °C, kept within 5-30 °C) and mode (holding 0x11: 0 off, 1 eco, 2 comfort);
    unit 2: a room thermometer."""
    return {1: {"coil": {3: 0}, "holding": {SETPOINT.address: 200, MODE.address: 0}}, 2: {}}


def play_profile(sim: ModbusSimulator, now: float | None = None) -> None:
    """The profile's values at time `now`: mains voltage and a load that drift, energy that
    counts up, a temperature around 21 °C; the setpoint kept within its range."""
    t = time.time() if now is None else now
    voltage = 230 + 2 * math.sin(t / 30)
    relay = sim.values[1].get("coil", {}).get(3, 0)
    current = (4 + math.sin(t / 7)) if relay else 0.0
    energy = int(t / 10) % 1_000_000
    holding = sim.values[1].setdefault("holding", {})
    low, high = SETPOINT_RANGE
    raw = holding.get(SETPOINT.address, 200)
    raw = raw - 0x10000 if raw >= 0x8000 else raw  # int16
    holding[SETPOINT.address] = min(max(raw, low), high)
    for reg, value in zip(
        METER,
        (f"{voltage:.2f}", f"{current:.3f}", str(round(voltage * current)), str(energy)),
        strict=True,
    ):
        sim.put(1, reg, value)
    sim.put(2, THERMOMETER[0], f"{21 + math.sin(t / 60):.1f}")
    sim.put(2, THERMOMETER[1], str(round(45 + 5 * math.sin(t / 90))))


async def _serve_until_signalled(sim: ModbusSimulator) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await sim.serve()


def simulate_modbus_network(transport: str, host: str, port: int) -> int:
    """`gateway simulate modbus --tcp PORT` (`--rtu-over-tcp`, `--udp`): the profile's two
    slaves on `host` (loopback by default), with pymodbus's own TCP or UDP server."""
    sim = ModbusSimulator(port, profile_units(), transport=transport, host=host)
    play_profile(sim)  # the slaves' tables: every address the profile uses
    sim.before_answer = play_profile
    where = f"{transport.replace('_', ' ')} {host}:{port}"
    print(f"simulating modbus units 1 (meter) and 2 (thermometer) on {where}", file=sys.stderr)
    asyncio.run(_serve_until_signalled(sim))
    return 0


def simulate_modbus(port: Path | None, link: Path | None, baudrate: int, parity: str) -> int:
    """`gateway simulate modbus`: the profile's two slaves on `port` (an existing tty), or on a
    new socat pty pair whose gateway side is the symlink `link`."""
    socat: subprocess.Popen[bytes] | None = None
    if port is None:
        where = link or Path("ttyMODBUS")
        port = where.with_name(where.name + ".peer")
        socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={where}", f"pty,raw,echo=0,link={port}"]
        )
        deadline = time.monotonic() + 5
        while not (where.exists() and port.exists()) and time.monotonic() < deadline:
            time.sleep(0.02)
        print(f"simulating modbus units 1 (meter) and 2 (thermometer) on {where}", file=sys.stderr)
    try:
        sim = ModbusSimulator(port, profile_units(), baudrate=baudrate, parity=parity)
        play_profile(sim)  # the slaves' tables: every address the profile uses
        sim.before_answer = play_profile
        asyncio.run(_serve_until_signalled(sim))
    finally:
        if socat is not None:
            socat.terminate()
            socat.wait(5)
    return 0
