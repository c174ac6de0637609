"""The one module that calls pymodbus's client (pymodbus's API changes in nearly every minor
release: `pymodbus>=3.16,<3.17` is what this was tested with).

`RtuClient` wraps `AsyncModbusSerialClient` with what the links need and nothing else: open and
close, read a block, write a coil or registers, and answers translated into the gateway's own
errors (`ExceptionResponseError`, `LinkDownError`). It keeps no timeouts of its own: the caller
wraps each request in `asyncio.timeout` (a device's `timeout`, per request, several devices on one
client), so pymodbus's own timer is only a safety net and its retries are off (ours count).
pymodbus's reconnect is off as well: reopening is the supervisor's job, with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException
from pymodbus.pdu import ModbusPDU

from gateway.errors import GatewayError, LinkDownError
from gateway.limits import MODBUS_SAFETY_TIMEOUT as SAFETY_TIMEOUT

log = logging.getLogger(__name__)


#: Modbus exception codes (the protocol's names, shortened for metric labels and replies).
EXCEPTION_NAMES = {
    1: "illegal_function",
    2: "illegal_address",
    3: "illegal_value",
    4: "device_failure",
    5: "acknowledge",
    6: "busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_no_response",
}


class ExceptionResponseError(GatewayError):
    """The slave answered with a Modbus exception (it is there, but refused the request)."""

    def __init__(self, code: int, what: str) -> None:
        self.code = code
        self.reason = EXCEPTION_NAMES.get(code, "exception")
        super().__init__(f"{what}: the device answered exception {code} ({self.reason})")


class RtuClient:
    """One Modbus RTU master on one serial port. Not reentrant: one owner opens and closes it
    (`bus.ModbusBus`), and requests go one at a time (pymodbus serialises them too)."""

    def __init__(
        self,
        path: str,
        *,
        baudrate: int,
        bytesize: int,
        parity: str,
        stopbits: float,
        on_lost: Callable[[], None],
    ) -> None:
        self.path = path
        self._on_lost = on_lost
        self._client = AsyncModbusSerialClient(
            path,
            framer=FramerType.RTU,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=int(stopbits),
            timeout=SAFETY_TIMEOUT,
            retries=0,
            reconnect_delay=0,  # no reconnecting behind the supervisor's back
            name=f"modbus {path}",
            trace_connect=self._connection_changed,
        )

    def _connection_changed(self, connected: bool) -> None:
        if not connected:
            self._on_lost()

    @property
    def connected(self) -> bool:
        return self._client.connected

    async def connect(self) -> bool:
        """Open the port; False if pymodbus could not (it keeps the reason to its log: the
        caller asks pyserial again to tell the user why)."""
        return await self._client.connect()

    def close(self) -> None:
        self._client.close()

    async def read(self, function: str, address: int, count: int, unit: int) -> list[int]:
        """Registers (or bits, as 0/1) of one block; raises ExceptionResponseError or
        LinkDownError."""
        what = f"read {function} {address}+{count} from unit {unit}"
        calls = {
            "holding": self._client.read_holding_registers,
            "input": self._client.read_input_registers,
            "coil": self._client.read_coils,
            "discrete": self._client.read_discrete_inputs,
        }
        answer = await self._call(calls[function](address, count=count, device_id=unit), what)
        if function in ("coil", "discrete"):
            return [int(bit) for bit in answer.bits[:count]]
        if len(answer.registers) != count:
            raise ExceptionResponseError(
                0, f"{what}: {len(answer.registers)} register(s) came back"
            )
        return list(answer.registers)

    async def write_coil(self, address: int, value: bool, unit: int) -> bool:
        """Write a coil; what the device says it is now."""
        what = f"write coil {address} of unit {unit}"
        answer = await self._call(self._client.write_coil(address, value, device_id=unit), what)
        return bool(answer.bits[0]) if answer.bits else value

    async def write_registers(self, address: int, words: list[int], unit: int) -> list[int]:
        """Write holding registers (one: function 6, more: 16); what the device echoed."""
        what = f"write holding {address}+{len(words)} of unit {unit}"
        if len(words) == 1:
            call = self._client.write_register(address, words[0], device_id=unit)
        else:
            call = self._client.write_registers(address, words, device_id=unit)
        answer = await self._call(call, what)
        return list(answer.registers) or words

    async def _call(self, request: Awaitable[ModbusPDU], what: str) -> ModbusPDU:
        try:
            answer = await request
        except ConnectionException as exc:
            raise LinkDownError(f"{self.path} is not open ({what})") from exc
        except ModbusException as exc:
            raise LinkDownError(f"{what} failed: {exc}") from exc
        if answer.isError():
            raise ExceptionResponseError(int(getattr(answer, "exception_code", 0)), what)
        return answer
