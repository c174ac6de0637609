"""A Modbus device's link (`modbus:<id>`): attached to its port's or connection's bus, it reads
every register each `poll_interval` and writes registers and coils for MQTT commands.

The link is up (and the device `online`) only once the unit has answered: entering it opens or
joins the connection and asks the first request of the cycle; a unit that does not answer fails
the entering (`timeout`) and is asked again after its backoff, so a silent unit stays offline
instead of flapping online at every reconnect.

A request without an answer (after `retries` further tries) or with an exception answer costs
only the registers it was for: it is counted (`gateway_modbus_errors_total{device,register,
reason}`) and the other requests of the cycle go on. A block that draws an exception is split
into one request per register from then on, so one register missing from a slave's map does not
hide its neighbours. Only a cycle in which the slave answered nothing at all fails the link
(`timeout`): the device is then offline, and asked again after a backoff, while the other
devices on the bus carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar

from gateway.config import ModbusDevice, RegisterSpec
from gateway.controls import accept, register_controls
from gateway.decoders import to_readings
from gateway.errors import (
    CommandRefusedError,
    DecodeError,
    GatewayError,
    LinkDownError,
    TransientLinkError,
)
from gateway.linknames import link_name
from gateway.metrics import Metrics
from gateway.modbus.bus import ModbusBus
from gateway.modbus.client import ExceptionResponseError, ModbusClient
from gateway.modbus.registers import ReadRequest, decode, encode, plan_reads
from gateway.models import Submit, Value

log = logging.getLogger(__name__)

T = TypeVar("T")


class NoAnswerError(TransientLinkError):
    kind = "timeout"


class ModbusLink:
    def __init__(
        self, device: ModbusDevice, bus: ModbusBus, submit: Submit, metrics: Metrics
    ) -> None:
        self.device = device
        self.name = link_name(device)
        # Opening includes the first answer: its timeout and retries come on top.
        self.open_timeout = device.open_timeout + device.timeout * (device.retries + 1)
        self.backoff = device.backoff.policy()
        self._bus = bus
        self._submit = submit
        self._metrics = metrics
        self._received = metrics.readings_received.labels(device.id)
        self._alone: frozenset[str] = frozenset()
        self._plan = plan_reads(device.registers)
        self._controls = register_controls(device.registers)
        self._stack: contextlib.AsyncExitStack | None = None
        self._up = asyncio.Event()
        self._wake = asyncio.Event()  # the port went away, or a write wants a fresh read
        self._lost = False

    @property
    def is_up(self) -> bool:
        return self._stack is not None and self._bus.connected

    async def wait_up(self) -> None:
        await self._up.wait()

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError(f"{self.name} is already open (links are not reentrant)")
        self._lost = False
        self._wake.clear()
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._bus.attached(self.name, self._on_lost))
            await self._first_answer()
            self._stack = stack.pop_all()
        self._up.set()
        return self

    async def _first_answer(self) -> None:
        """Ask the cycle's first request: any answer (values or an exception) will do."""
        first = self._plan[0]
        d = self.device
        try:
            await self._ask(
                first.function,
                lambda c: c.read(first.function, first.address, first.count, d.unit_id),
            )
        except ExceptionResponseError:
            pass  # it is there; the cycle will say what it refuses
        except TimeoutError:
            self._count(first.registers, "timeout")
            raise self._no_answer() from None
        except LinkDownError as exc:
            self._check_port()
            raise self._went_away() from exc

    def _no_answer(self) -> NoAnswerError:
        checks = (
            "unit_id, host and port"
            if self.device.is_network
            else "the wiring, unit_id, baudrate and parity"
        )
        return NoAnswerError(
            f"unit {self.device.unit_id} on {self._bus.path} does not answer",
            advice=f"check {checks}; asking again with backoff",
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._up.clear()
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()  # detach: the last device on the port closes it

    def _on_lost(self) -> None:
        self._lost = True
        self._wake.set()

    async def run(self) -> None:
        if self._stack is None:
            raise RuntimeError("run() outside the link's context")
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.poll_once()
            next_at = max(next_at + self.device.poll_interval, loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_at):
                    await self._wake.wait()
            self._wake.clear()
            self._check_port()

    def _check_port(self) -> None:
        if self._lost or not self._bus.connected:
            raise self._went_away()

    def _went_away(self) -> TransientLinkError:
        network = self._bus.network
        return TransientLinkError(
            f"{self._bus.path} {'disconnected' if network else 'went away'}",
            kind="disconnected" if network else "unplugged",
            advice=f"{'reconnecting' if network else 'reopening'} with backoff until it is back",
        )

    async def poll_once(self) -> None:
        """Read every register once and submit the values of those that answered."""
        ts = time.time()
        values: dict[str, Value] = {}
        answered = False
        try:
            for request in self._plan:
                answered |= await self._read(request, values) != "timeout"
        except LinkDownError as exc:
            self._check_port()
            raise self._went_away() from exc
        if values:
            readings = to_readings(self.device.id, values, self.device.sensors, ts)
            self._received.inc(len(readings))
            self._submit(readings)
        if not answered:
            self._check_port()
            raise self._no_answer()

    async def _read(self, request: ReadRequest, values: dict[str, Value]) -> str | None:
        """One block into `values`; None, or why not: `timeout` or the exception's name."""
        d = self.device
        try:
            words = await self._ask(
                request.function,
                lambda c: c.read(request.function, request.address, request.count, d.unit_id),
            )
        except TimeoutError:
            self._count(request.registers, "timeout")
            return "timeout"
        except ExceptionResponseError as exc:
            if len(request.registers) > 1:
                await self._split(request, exc, values)
            else:
                log.debug("%s: %s", self.name, exc)
                self._count(request.registers, exc.reason)
            return exc.reason
        for reg in request.registers:
            start = reg.address - request.address
            try:
                values.update(decode(reg, words[start : start + reg.words]))
            except DecodeError as exc:
                log.debug("%s: %s", self.name, exc)
                self._count((reg,), "decode")
        return None

    async def _split(
        self, request: ReadRequest, exc: ExceptionResponseError, values: dict[str, Value]
    ) -> None:
        """A block drew an exception: read its registers one by one, and from now on read
        those that draw one alone (their neighbours stay in blocks)."""
        refused = set()
        for reg in request.registers:
            single = ReadRequest(reg.function, reg.address, reg.words, (reg,))
            if await self._read(single, values) not in (None, "timeout"):
                refused.add(reg.name)
        log.warning(
            "%s: %s; reading %s alone from now on",
            self.name,
            exc,
            ", ".join(sorted(refused)) or "nothing",
        )
        self._alone |= refused
        self._plan = plan_reads(self.device.registers, alone=self._alone)

    async def _ask(self, function: str, call: Callable[[ModbusClient], Awaitable[T]]) -> T:
        """One request with the device's timeout and retries; TimeoutError if none answered
        (the bus hears of it: a unit that answered before and now does not, with nothing
        else answering either, means a dead connection)."""
        requests = self._metrics.modbus_requests.labels(self.device.id, function)
        unit = self.device.unit_id
        since: float | None = None
        for _attempt in range(self.device.retries + 1):
            requests.inc()
            async with self._bus.turn() as client:
                since = time.monotonic() if since is None else since
                try:
                    async with asyncio.timeout(self.device.timeout):
                        answer = await call(client)
                except TimeoutError:
                    if self._bus.quiet_after_timeout:
                        # RTU frames carry no transaction id: a late answer must arrive while
                        # no request waits (pymodbus drops it), not be taken for the next one.
                        await asyncio.sleep(self.device.timeout)
                    continue
                except ExceptionResponseError:
                    self._bus.answered(unit)
                    raise
                self._bus.answered(unit)
                return answer
        if since is not None:
            self._bus.unanswered(unit, since)
        raise TimeoutError

    def _count(self, registers: tuple[RegisterSpec, ...], reason: str) -> None:
        for reg in registers:
            self._metrics.modbus_errors.labels(self.device.id, reg.name, reason).inc()

    async def execute(self, command: str, payload: bytes) -> str:
        """`set/<register>`: write a holding register or coil (the value scaled back, a label
        as its value, a control's range checked first), then read it back: the reply is what
        the device holds (`setpoint = 21.5`), an error when it kept something else (`device
        kept 22.0`). The read-back is published as the register's reading, so Home Assistant
        shows the device's state, not what was asked; the full read follows at once."""
        reg = self.device.register(command)
        if reg is None:
            writable = ", ".join(r.name for r in self.device.registers if r.writable)
            raise ValueError(f"unknown register {command!r} (writable: {writable or 'none'})")
        if not reg.writable:
            raise ValueError(f"{command} is a {reg.function} register: read-only")
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            raise ValueError("the payload must be text: 1, on, 230.5, ...") from None
        if (control := self._controls.get(command)) is not None:
            try:
                text = accept(control, text)
            except CommandRefusedError as exc:
                self._metrics.refused.labels("modbus", exc.reason).inc()
                raise
        target = encode(reg, text)
        expected = decode(reg, [target] if isinstance(target, bool) else target)[reg.name]
        try:
            await self._write(reg, target)
        except ExceptionResponseError as exc:
            self._count((reg,), exc.reason)
            await self._read_back(reg)  # the state Home Assistant shows snaps back to the device's
            raise
        finally:
            self._wake.set()
        held = await self._read_back(reg)
        if held is None:
            return f"{reg.name} = {_shown(expected)} (not read back)"
        if held != expected:
            self._count((reg,), "not_kept")
            raise NotKeptError(f"device kept {_shown(held)}")
        return f"{reg.name} = {_shown(held)}"

    async def _write(self, reg: RegisterSpec, target: list[int] | bool) -> None:
        unit = self.device.unit_id
        try:
            if isinstance(target, bool):
                await self._ask("write_coil", lambda c: c.write_coil(reg.address, target, unit))
            else:
                await self._ask(
                    "write_holding", lambda c: c.write_registers(reg.address, target, unit)
                )
        except TimeoutError:
            self._count((reg,), "timeout")
            raise LinkDownError(
                f"unit {unit} did not answer the write within {self.device.timeout:g}s"
            ) from None

    async def _read_back(self, reg: RegisterSpec) -> Value | None:
        """Read one register after a write and submit its reading; its value, or None when
        the device refuses to read it (a write-only register). No answer is an error: what
        the device holds is then unknown."""
        values: dict[str, Value] = {}
        reason = await self._read(ReadRequest(reg.function, reg.address, reg.words, (reg,)), values)
        if reason == "timeout":
            raise LinkDownError(
                f"unit {self.device.unit_id} did not answer the read-back of {reg.name} within "
                f"{self.device.timeout:g}s"
            )
        if reg.name not in values:
            return None
        readings = to_readings(self.device.id, values, self.device.sensors, time.time())
        self._received.inc(len(readings))
        self._submit(readings)
        return values[reg.name]  # as decoded, like the value written (a sensor's type may differ)


class NotKeptError(GatewayError):
    """The device answered a write but holds another value (out of its range, a mode it
    refuses, a register it sets itself)."""


def _shown(value: Value | None) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
