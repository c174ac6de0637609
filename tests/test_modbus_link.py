"""Modbus links against a real Modbus RTU server: pymodbus's own, on the far end of a socat pty
pair, with two slaves on one line."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from helpers import SerialPair, missing_programs

from gateway.config import ModbusDevice
from gateway.errors import (
    CommandRefusedError,
    FatalLinkError,
    GatewayError,
    LinkDownError,
    TransientLinkError,
)
from gateway.metrics import Metrics
from gateway.modbus.bus import ModbusBuses
from gateway.modbus.link import ModbusLink
from gateway.modbus.simulator import ModbusSimulator, UnitMap
from gateway.models import Reading

pytestmark = pytest.mark.skipif(bool(missing_programs("socat")), reason="needs socat")

# Every data type, both word orders, a gap (address 20) inside a block of configured registers.
REGISTERS = [
    {"name": "i16", "address": 0, "data_type": "int16", "scale": 0.1},
    {"name": "u16", "address": 1},
    {"name": "i32", "address": 2, "data_type": "int32"},
    {"name": "u32", "address": 4, "data_type": "uint32", "word_order": "little"},
    {"name": "i64", "address": 6, "data_type": "int64"},
    {"name": "u64", "address": 10, "data_type": "uint64", "word_order": "little"},
    {"name": "f32", "address": 14, "data_type": "float32", "unit": "V"},
    {"name": "f64", "address": 16, "data_type": "float64", "word_order": "little"},
    {"name": "missing", "address": 20},
    {"name": "after_gap", "address": 21, "byte_order": "little"},
    {"name": "model", "address": 22, "data_type": "string", "count": 3},
    {"name": "status", "address": 25, "data_type": "bits"},
    {"name": "volts_in", "address": 0, "function": "input", "data_type": "float32"},
    {"name": "relay", "address": 3, "function": "coil"},
    {"name": "door", "address": 0, "function": "discrete"},
]
VALUES = {
    "i16": "-12.5",
    "u16": "65000",
    "i32": "-123456",
    "u32": "4000000000",
    "i64": "-9000000000000",
    "u64": "18000000000000000000",
    "f32": "230.5",
    "f64": "0.000123",
    "after_gap": "513",
    "model": "MB1",
    "volts_in": "12.25",
}


def device(port: str, unit: int, **kw: object) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "id": f"unit{unit}",
            "type": "modbus",
            "port": port,
            "unit_id": unit,
            "parity": "N",  # a pty refuses parity bits
            "poll_interval": 0.2,
            "timeout": 0.2,
            "retries": 1,
            "registers": REGISTERS,
            **kw,
        }
    )


def server_map(dev: ModbusDevice) -> UnitMap:
    sim = ModbusSimulator("/dev/null", {1: {}})  # only to encode the values
    for reg in dev.registers:
        if reg.name in VALUES:
            sim.put(1, reg, VALUES[reg.name])
    table = sim.values[1]
    table["holding"][25] = 0b1000_0000_0000_0101
    table["coil"] = {3: 1}
    table["discrete"] = {0: 0}
    return table


class Collector:
    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.event = asyncio.Event()

    def __call__(self, readings: Sequence[Reading]) -> None:
        self.frames.append({r.sensor: r.value for r in readings})
        self.event.set()

    async def next(self) -> dict[str, object]:
        self.event.clear()
        async with asyncio.timeout(5.0):
            await self.event.wait()
        return self.frames[-1]


@contextlib.asynccontextmanager
async def serving(sim: ModbusSimulator) -> AsyncIterator[ModbusSimulator]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sim.serve(), name="modbus-server")
        await asyncio.sleep(0.2)  # the server opens its port
        try:
            yield sim
        finally:
            task.cancel()


@pytest.fixture
def line(tmp_path: Path) -> Iterator[SerialPair]:
    pair = SerialPair(tmp_path)
    pair.plug()
    yield pair
    pair.close()


async def run_link(link: ModbusLink) -> None:
    async with link:
        await link.run()


async def test_every_type_both_orders_an_exception_and_a_write(line: SerialPair) -> None:
    dev = device(line.dev, 1)
    metrics = Metrics()
    sim = ModbusSimulator(line.peer, {1: server_map(dev)}, parity="N")
    got = Collector()
    link = ModbusLink(dev, ModbusBuses().bus_for(dev), got, metrics)
    async with serving(sim), asyncio.TaskGroup() as tg:
        task = tg.create_task(run_link(link))
        values = await got.next()
        assert values == {
            "i16": -12.5,
            "u16": 65000,
            "i32": -123456,
            "u32": 4000000000,
            "i64": -9000000000000,
            "u64": 18000000000000000000,
            "f32": 230.5,
            "f64": 0.000123,
            "after_gap": 513,
            "model": "MB1",
            **{f"status_{i}": i in (0, 2, 15) for i in range(16)},
            "volts_in": 12.25,
            "relay": True,
            "door": False,
        }
        # Address 20 is not in the slave's map: that costs register `missing` only.
        errors = metrics.modbus_errors.labels("unit1", "missing", "illegal_address")
        assert errors._value.get() >= 1
        assert "missing" not in values
        answer = await link.execute("relay", b"0")
        assert answer == "relay = off"
        assert sim.values[1]["coil"][3] == 0
        assert (await got.next())["relay"] is False
        answer = await link.execute("i16", b"-3.2")
        assert answer == "i16 = -3.2"
        assert (await got.next())["i16"] == -3.2
        with pytest.raises(ValueError, match="read-only"):
            await link.execute("volts_in", b"1")
        with pytest.raises(ValueError, match="unknown register"):
            await link.execute("nope", b"1")
        task.cancel()


CONTROLS = [
    {"name": "relay", "address": 3, "function": "coil"},
    {
        "name": "setpoint",
        "address": 16,
        "data_type": "int16",
        "scale": 0.1,
        "homeassistant": {"platform": "number", "min": 5, "max": 30},
    },
    {"name": "mode", "address": 17, "options": {0: "off", 1: "eco", 2: "comfort"}},
]


async def test_a_write_is_read_back_and_the_state_is_what_the_device_kept(
    line: SerialPair,
) -> None:
    """Issue 23: the reply and the published state are the read-back, not what was asked; a
    value the device did not keep is an error (`device kept 22.0`), counted; labels and
    Home Assistant's ON/OFF are taken; a number out of the control's range never reaches the
    device."""
    dev = device(line.dev, 1, registers=CONTROLS)
    metrics = Metrics()
    table: UnitMap = {"coil": {3: 0}, "holding": {16: 220, 17: 0}}
    sim = ModbusSimulator(line.peer, {1: table}, parity="N")
    got = Collector()
    link = ModbusLink(dev, ModbusBuses().bus_for(dev), got, metrics)
    async with serving(sim), link:
        await link.poll_once()
        assert got.frames[-1] == {"relay": False, "setpoint": 22.0, "mode": "off"}
        assert await link.execute("relay", b"ON") == "relay = on"
        assert sim.values[1]["coil"][3] == 1
        assert got.frames[-1] == {"relay": True}  # the read-back, published at once
        assert await link.execute("setpoint", b"21.5") == "setpoint = 21.5"
        assert sim.values[1]["holding"][16] == 215
        assert await link.execute("mode", b"eco") == "mode = eco"
        assert sim.values[1]["holding"][17] == 1
        assert got.frames[-1] == {"mode": "eco"}

        # The device keeps its own value: it answers the write, but holds 22.0.
        def clamp(s: ModbusSimulator) -> None:
            s.values[1]["holding"][16] = 220

        sim.before_answer = clamp
        with pytest.raises(GatewayError, match=r"^device kept 22\.0$"):
            await link.execute("setpoint", b"25.5")
        assert got.frames[-1] == {"setpoint": 22.0}
        kept = metrics.modbus_errors.labels("unit1", "setpoint", "not_kept")._value.get()
        assert kept == 1
        sim.before_answer = None

        requests = sim.requests
        with pytest.raises(
            CommandRefusedError, match=r"35 is out of range for setpoint \(5 to 30\)"
        ):
            await link.execute("setpoint", b"35")
        with pytest.raises(ValueError, match="'hot' is not an option of mode"):
            await link.execute("mode", b"hot")
        assert sim.requests == requests  # nothing reached the device
        assert metrics.refused.labels("modbus", "out_of_range")._value.get() == 1

        # A write the device refuses: the state published is the device's, read back (Home
        # Assistant's select snaps back to it), and the error is counted.
        sim.refuse_writes.add((1, "holding", 17))
        with pytest.raises(GatewayError, match=r"exception 3 \(illegal_value\)"):
            await link.execute("mode", b"comfort")
        assert got.frames[-1] == {"mode": "eco"}
        assert sim.values[1]["holding"][17] == 1
        refused = metrics.modbus_errors.labels("unit1", "mode", "illegal_value")._value.get()
        assert refused == 1


async def test_two_units_share_the_port_and_a_silent_one_stops_only_itself(
    line: SerialPair,
) -> None:
    dev1, dev2 = device(line.dev, 1), device(line.dev, 2)
    metrics, buses = Metrics(), ModbusBuses()
    sim = ModbusSimulator(line.peer, {1: server_map(dev1), 2: server_map(dev2)}, parity="N")
    got1, got2 = Collector(), Collector()
    link1 = ModbusLink(dev1, buses.bus_for(dev1), got1, metrics)
    link2 = ModbusLink(dev2, buses.bus_for(dev2), got2, metrics)
    assert buses.bus_for(dev1) is buses.bus_for(dev2)
    async with serving(sim), asyncio.TaskGroup() as tg:
        task1 = tg.create_task(run_link(link1))
        await got1.next()
        async with link2:
            await link2.poll_once()
            assert got2.frames
            sim.silent.add(2)
            with pytest.raises(TransientLinkError, match=r"unit 2 .* does not answer") as err:
                await link2.poll_once()
            assert err.value.kind == "timeout"
            timeouts = metrics.modbus_errors.labels("unit2", "f32", "timeout")._value.get()
            assert timeouts == 1
            # The other unit on the line kept being read meanwhile, and still is.
            before = len(got1.frames)
            await got1.next()
            assert len(got1.frames) > before
            sim.silent.clear()
            await link2.poll_once()
        # link2 left; the port stays open for link1.
        assert link1.is_up
        await got1.next()
        assert os.path.realpath(line.dev) in fds()
        task1.cancel()
    assert os.path.realpath(line.dev) not in fds()


def fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
    return out


async def test_unplug_fails_the_link_and_replug_reads_again(line: SerialPair) -> None:
    dev = device(line.dev, 1)
    bus = ModbusBuses().bus_for(dev)
    got = Collector()
    for _ in range(3):
        sim = ModbusSimulator(line.peer, {1: server_map(dev)}, parity="N")
        link = ModbusLink(dev, bus, got, Metrics())
        async with serving(sim):
            async with link:
                await link.poll_once()
                assert got.frames
                line.unplug()
                with pytest.raises(TransientLinkError) as err:
                    await link.run()
                assert err.value.kind == "unplugged"
            assert not link.is_up
            with pytest.raises(LinkDownError):
                async with bus.turn():
                    pass
            line.plug()
    assert line.realpath not in fds()  # three unplugs left no stale fd behind


async def test_a_silent_slave_stays_offline_instead_of_flapping(line: SerialPair) -> None:
    """A slave that never answers: its link is never `up` (its device never `online`), however
    often it is asked again (it used to come up at every reopen and fail 0.5 s later)."""
    from gateway.supervisor import Supervisor  # noqa: PLC0415

    dev = device(line.dev, 2, backoff={"initial": 0.05, "max": 0.2, "reset_after": 1.0})
    sim = ModbusSimulator(line.peer, {1: server_map(dev)}, parity="N")  # unit 2: not there
    states: list[str] = []
    sup = Supervisor(Metrics(), on_change=lambda: states.append(sup.status["modbus:unit2"].state))
    link = ModbusLink(dev, ModbusBuses().bus_for(dev), Collector(), Metrics())
    async with serving(sim), sup:
        sup.start(link)
        async with asyncio.timeout(10):
            while sup.status["modbus:unit2"].failures < 4:  # noqa: ASYNC110 - a counter
                await asyncio.sleep(0.05)
        assert "up" not in states
        assert "backing_off" in states
        await sup.stop(link.name)


@pytest.mark.parametrize("parity", ["E", "M", "S"])
async def test_a_parity_the_port_refuses_is_a_config_failure_not_a_crash(
    line: SerialPair, parity: str
) -> None:
    """socat's ptys refuse parity bits, as USB adapters without mark/space parity do: termios
    raises from inside pymodbus's connect, which is not an OSError. It is a config failure with
    advice (the link backs off and says why), never "crashed (a bug)"."""
    dev = device(line.dev, 1, parity=parity)
    link = ModbusLink(dev, ModbusBuses().bus_for(dev), Collector(), Metrics())
    with pytest.raises(FatalLinkError) as err:
        async with link:
            pass
    assert err.value.kind == "config"
    assert "parity" in (err.value.advice or "")


async def test_a_write_to_a_silent_unit_fails_and_changes_nothing(line: SerialPair) -> None:
    """A unit that stopped answering is a dead slave: the write is an error, and once it answers
    again the coil and the register are what they were (the simulator's silence used to drop
    only the answer: the write went through, so a test could not tell "kept" from "lost")."""
    dev = device(line.dev, 1)
    sim = ModbusSimulator(line.peer, {1: server_map(dev)}, parity="N")
    link = ModbusLink(dev, ModbusBuses().bus_for(dev), Collector(), Metrics())
    async with serving(sim), link:
        await link.poll_once()
        sim.silent.add(1)
        for name, payload in (("relay", b"OFF"), ("i16", b"7")):
            with pytest.raises(LinkDownError, match="did not answer the write"):
                await link.execute(name, payload)
        sim.silent.clear()
        await link.poll_once()
        assert sim.values[1]["coil"][3] == 1
        assert (await link.execute("relay", b"ON")) == "relay = on"  # the coil's own read-back
        assert sim.values[1]["holding"][0] == server_map(dev)["holding"][0]
