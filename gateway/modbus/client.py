"""The one module that calls pymodbus's client (pymodbus's API changes in nearly every minor
release: `pymodbus>=3.16,<3.17` is what this was tested with).

`ModbusClient` wraps one of pymodbus's async clients (serial RTU, TCP with its own framing or
with RTU frames, UDP) with what the links need and nothing else: open and close, read a block,
write a coil or registers, and answers translated into the gateway's own errors
(`ExceptionResponseError`, `LinkDownError`). An answer must fit its request (function code,
size): on TCP and UDP pymodbus's framer also skips an answer whose transaction id is not the
request's, so a late answer to a request we gave up on is never taken for the next one. It
keeps no timeouts of its own: the caller wraps each request in `asyncio.timeout` (a device's
`timeout`, per request, several devices on one client), so pymodbus's own timer is only a
safety net and its retries are off (ours count). pymodbus's reconnect is off as well:
reopening is the supervisor's job, with backoff.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from pymodbus import FramerType, ModbusException
from pymodbus.client import (
    AsyncModbusSerialClient,
    AsyncModbusTcpClient,
    AsyncModbusUdpClient,
    ModbusBaseClient,
)
from pymodbus.exceptions import ConnectionException
from pymodbus.pdu import ModbusPDU

from gateway.errors import GatewayError, LinkDownError
from gateway.limits import MODBUS_SAFETY_TIMEOUT as SAFETY_TIMEOUT
from gateway.throttle import LogThrottle

log = logging.getLogger(__name__)


class _Throttled(logging.Filter):
    """pymodbus logs an ERROR for every answer it skips (a late one, another unit's) and a
    WARNING for every failed connect: what a peer does must not fill the log, so its warnings
    and errors are written again by our logger, each kind at most once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._throttle = LogThrottle(logging.getLogger("gateway.modbus.pymodbus"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # The kind of line is its text without the numbers (ids, lengths): a bounded key.
        key = re.sub(r"\d+", "#", str(record.msg))[:80]
        self._throttle.log(key, record.levelno, "pymodbus: %s", record.getMessage())
        return False


logging.getLogger("pymodbus.logging").addFilter(_Throttled())

#: The function code each call's answer must carry (an exception answer adds 0x80).
_FUNCTION_CODES = {
    "holding": 3,
    "input": 4,
    "coil": 1,
    "discrete": 2,
    "write_coil": 5,
    "write_register": 6,
    "write_registers": 16,
}


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


class ModbusClient:
    """One Modbus master on one port or connection. Not reentrant: one owner opens and closes
    it (`bus.ModbusBus`), and requests go one at a time (pymodbus serialises them too). Made by
    `serial_client` or `network_client`."""

    def __init__(
        self,
        path: str,
        make: Callable[[Callable[[bool], None]], ModbusBaseClient],
        on_lost: Callable[[], None],
    ) -> None:
        self.path = path
        self._on_lost = on_lost
        self._client = make(self._connection_changed)

    def _connection_changed(self, connected: bool) -> None:
        if not connected:
            self._on_lost()

    @property
    def connected(self) -> bool:
        return self._client.connected

    async def connect(self) -> bool:
        """Open the port or connect; False if pymodbus could not (it keeps the reason to its
        log: the caller asks again to tell the user why)."""
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
        answer = await self._call(
            calls[function](address, count=count, device_id=unit), what, function
        )
        if function in ("coil", "discrete"):
            if len(answer.bits) < count:
                raise ExceptionResponseError(0, f"{what}: {len(answer.bits)} bit(s) came back")
            return [int(bit) for bit in answer.bits[:count]]
        if len(answer.registers) != count:
            raise ExceptionResponseError(
                0, f"{what}: {len(answer.registers)} register(s) came back"
            )
        return list(answer.registers)

    async def write_coil(self, address: int, value: bool, unit: int) -> bool:
        """Write a coil; what the device says it is now."""
        what = f"write coil {address} of unit {unit}"
        call = self._client.write_coil(address, value, device_id=unit)
        answer = await self._call(call, what, "write_coil")
        return bool(answer.bits[0]) if answer.bits else value

    async def write_registers(self, address: int, words: list[int], unit: int) -> list[int]:
        """Write holding registers (one: function 6, more: 16); what the device echoed."""
        what = f"write holding {address}+{len(words)} of unit {unit}"
        if len(words) == 1:
            call = self._client.write_register(address, words[0], device_id=unit)
            function = "write_register"
        else:
            call = self._client.write_registers(address, words, device_id=unit)
            function = "write_registers"
        answer = await self._call(call, what, function)
        return list(answer.registers) or words

    async def _call(self, request: Awaitable[ModbusPDU], what: str, function: str) -> ModbusPDU:
        try:
            answer = await request
        except ConnectionException as exc:
            raise LinkDownError(f"{self.path} is not open ({what})") from exc
        except ModbusException as exc:
            raise LinkDownError(f"{what} failed: {exc}") from exc
        if answer.isError():
            raise ExceptionResponseError(int(getattr(answer, "exception_code", 0)), what)
        if answer.function_code != _FUNCTION_CODES[function]:
            # Without a transaction id (RTU framing) a stray answer could be of another request.
            raise ExceptionResponseError(
                0, f"{what}: the answer is for function {answer.function_code}"
            )
        return answer


def serial_client(
    path: str,
    *,
    baudrate: int,
    bytesize: int,
    parity: str,
    stopbits: float,
    on_lost: Callable[[], None],
) -> ModbusClient:
    """Modbus RTU on a serial port."""

    def make(trace_connect: Callable[[bool], None]) -> ModbusBaseClient:
        return AsyncModbusSerialClient(
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
            trace_connect=trace_connect,
        )

    return ModbusClient(path, make, on_lost)


def network_client(
    transport: str, address: str, port: int, *, label: str, on_lost: Callable[[], None]
) -> ModbusClient:
    """Modbus over TCP (its own framing, with transaction ids), RTU frames over TCP (a
    serial-to-Ethernet converter) or UDP, to `address` (already resolved)."""

    def make(trace_connect: Callable[[bool], None]) -> ModbusBaseClient:
        if transport == "udp":
            return AsyncModbusUdpClient(
                address,
                port=port,
                timeout=SAFETY_TIMEOUT,
                retries=0,
                reconnect_delay=0,
                name=f"modbus {label}",
                trace_connect=trace_connect,
            )
        return AsyncModbusTcpClient(
            address,
            port=port,
            framer=FramerType.RTU if transport == "rtu_over_tcp" else FramerType.SOCKET,
            timeout=SAFETY_TIMEOUT,
            retries=0,
            reconnect_delay=0,
            name=f"modbus {label}",
            trace_connect=trace_connect,
        )

    return ModbusClient(label, make, on_lost)
