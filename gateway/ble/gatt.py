"""A connected BLE device: the GATT link owns one BleakClient.

Entering: wait until the adapter's scanner has heard the device (its BLEDevice is what we connect
with: connecting by address while this process scans fails with org.bluez.Error.InProgress),
take one of the adapter's connection slots (waiting as long as it takes), connect with
bleak-retry-connector's `establish_connection` (its attempts counted in metrics) under an outer
safety timeout, subscribe to notifications. `run()` poll-reads characteristics at their
intervals until the device disconnects or a read fails; the supervisor then reconnects with
backoff. Leaving disconnects within `disconnect_timeout` and frees the slot.

Commands (`<prefix>/<device>/set/<command>`) write characteristics: this link is a
`CommandTarget` (gateway.commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

from gateway.ble.errors import FOREIGN_ERRORS, NOT_FOUND_ADVICE, translate
from gateway.ble.hub import AdapterState
from gateway.ble.readings import ble_readings
from gateway.config import BleGattDevice, GattValueSpec, GattWriteSpec
from gateway.controls import accept_payload, from_specs
from gateway.decoders.ble.gatt import decode_gatt
from gateway.errors import (
    CommandRefusedError,
    DecodeError,
    LinkDownError,
    LinkError,
    TransientLinkError,
)
from gateway.linknames import link_name
from gateway.links.decode_errors import DecodeErrors
from gateway.metrics import Metrics
from gateway.models import Submit

log = logging.getLogger(__name__)


class GattLink:
    def __init__(
        self,
        device: BleGattDevice,
        adapter: AdapterState,
        submit: Submit,
        metrics: Metrics,
    ) -> None:
        self.device = device
        self.name = link_name(device)
        self._errors = DecodeErrors(metrics, device.id, self.name)
        # No overall deadline: waiting for a connection slot must not fail the link. Each step
        # that can hang (finding, connecting, subscribing) has its own timeout below.
        self.open_timeout = math.inf
        self.backoff = device.backoff.policy()
        self._adapter = adapter
        self._submit = submit
        self._metrics = metrics
        self._received = metrics.readings_received.labels(device.id)
        self._attempts = metrics.ble_connect_attempts.labels(device.id)
        self._retries = metrics.ble_connect_retries.labels(device.id)
        self._attempt = 0
        self._client_class = _counting_client(self._on_attempt)
        self._client: BleakClient | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._up = asyncio.Event()
        self._lost = asyncio.Event()

    # -- CommandTarget -----------------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        client = self._client
        return client is not None and client.is_connected and not self._lost.is_set()

    async def wait_up(self) -> None:
        await self._up.wait()

    async def execute(self, command: str, payload: bytes) -> None:
        d = self.device
        spec = d.commands.get(command)
        if spec is None:
            known = ", ".join(sorted(d.commands)) or "none configured"
            raise ValueError(f"unknown command {command!r} (known: {known})")
        try:
            payload = accept_payload(from_specs(d.controls), command, payload)
        except CommandRefusedError as exc:
            self._metrics.refused.labels("ble", exc.reason).inc()
            raise
        data = command_bytes(spec, payload)
        client = self._client
        if client is None or not self.is_up:
            raise LinkDownError(f"{self.name} is not connected")
        try:
            async with asyncio.timeout(d.io_timeout):
                await client.write_gatt_char(spec.characteristic, data, response=spec.response)
        except FOREIGN_ERRORS as exc:
            raise translate(exc, f"{self.name}: writing {command}") from exc
        log.info(
            "%s: wrote %d byte(s) to %s (%s)", self.name, len(data), spec.characteristic, command
        )

    # -- enter / exit ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError(f"{self.name} is already connected (links are not reentrant)")
        async with contextlib.AsyncExitStack() as stack:
            ble_device = await self._find()
            await stack.enter_async_context(self._adapter.slots.hold(self.name))
            client = await self._connect(ble_device)
            stack.push_async_callback(self._disconnect, client)
            self._lost.clear()  # bleak may report a disconnect during a retried connect
            if not client.is_connected:
                raise TransientLinkError(
                    f"{self.name}: disconnected while connecting", kind="disconnected"
                )
            await self._subscribe(client)
            self._client = client
            self._stack = stack.pop_all()
        self._up.set()
        log.info("%s: connected to %s", self.name, self.device.address)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._up.clear()
        self._client = None
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _find(self) -> BLEDevice:
        d = self.device
        try:
            async with asyncio.timeout(d.find_timeout):
                return await self._adapter.wait_device(d.address)
        except TimeoutError:
            raise TransientLinkError(
                f"{self.name}: {d.address} not heard by the scanner of {self._adapter.name} "
                f"within {d.find_timeout:g}s",
                kind="not_found",
                advice=NOT_FOUND_ADVICE,
            ) from None

    async def _connect(self, ble_device: BLEDevice) -> BleakClient:
        d = self.device
        self._attempt = 0
        try:
            async with asyncio.timeout(d.connect_timeout):  # D-Bus can stall: a safety net
                return await establish_connection(
                    self._client_class,
                    ble_device,
                    self.name,
                    disconnected_callback=self._on_disconnect,
                    max_attempts=d.connect_attempts,
                )
        except FOREIGN_ERRORS as exc:
            error = translate(exc, f"{self.name}: connecting to {d.address}")
            if error.kind == "not_found":
                self._adapter.forget_device(d.address)  # wait for a fresh advert next time
            raise error from exc

    def _on_attempt(self) -> None:
        self._attempt += 1
        self._attempts.inc()
        if self._attempt > 1:
            self._retries.inc()
            log.info("%s: connect attempt %d", self.name, self._attempt)

    def _on_disconnect(self, client: BleakClient) -> None:
        self._lost.set()

    async def _subscribe(self, client: BleakClient) -> None:
        for spec in self.device.notify:
            try:
                async with asyncio.timeout(self.device.io_timeout):
                    await client.start_notify(
                        spec.characteristic, functools.partial(self._on_notify, spec)
                    )
            except FOREIGN_ERRORS as exc:
                raise translate(exc, f"{self.name}: subscribing to {spec.characteristic}") from exc

    async def _disconnect(self, client: BleakClient) -> None:
        try:
            async with asyncio.timeout(self.device.disconnect_timeout):
                await client.disconnect()
        except FOREIGN_ERRORS as exc:
            log.warning("%s: disconnecting: %s", self.name, translate(exc, "disconnect"))
        else:
            log.info("%s: disconnected", self.name)

    # -- run ---------------------------------------------------------------------------------
    async def run(self) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("run() outside the link's context")
        try:
            async with asyncio.TaskGroup() as tg:
                for spec in self.device.poll:
                    tg.create_task(
                        self._poll(client, spec, spec.interval),
                        name=f"link[{self.name}]:poll:{spec.characteristic[:8]}",
                    )
                await self._lost.wait()
                raise TransientLinkError(
                    f"{self.name}: the device disconnected",
                    kind="disconnected",
                    advice="reconnecting with backoff",
                )
        except* LinkError as group:
            raise group.exceptions[0] from None

    async def _poll(self, client: BleakClient, spec: GattValueSpec, interval: float) -> None:
        while True:
            try:
                async with asyncio.timeout(self.device.io_timeout):
                    data = await client.read_gatt_char(spec.characteristic)
            except FOREIGN_ERRORS as exc:
                raise translate(exc, f"{self.name}: reading {spec.characteristic}") from exc
            self._handle(spec, bytes(data))
            await asyncio.sleep(interval)

    def _on_notify(
        self, spec: GattValueSpec, char: BleakGATTCharacteristic, data: bytearray
    ) -> None:
        self._handle(spec, bytes(data))

    def _handle(self, spec: GattValueSpec, data: bytes) -> None:
        # Called from bleak's notification callback: must never raise.
        d = self.device
        try:
            readings = ble_readings(d.id, decode_gatt(spec, data), d.sensors, time.time())
        except DecodeError as exc:
            self._errors.count("decode", f"{spec.characteristic}: {exc}; value {data.hex()}")
            return
        except Exception:  # a decoder bug must not kill the link: count, log, skip
            self._errors.crashed(data.hex())
            return
        self._received.inc(len(readings))
        if readings:
            self._submit(readings)


def command_bytes(spec: GattWriteSpec, payload: bytes) -> bytes:
    """What a command writes: the fixed `value`, or the MQTT payload as configured."""
    if spec.value is not None:
        return bytes.fromhex(spec.value)
    if spec.payload == "hex":
        try:
            return bytes.fromhex(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"payload is not hex digits: {exc}") from exc
    if spec.payload == "text":
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"payload is not UTF-8: {exc.reason}") from exc
    return payload


def _counting_client(on_attempt: Callable[[], None]) -> type[BleakClientWithServiceCache]:
    """bleak-retry-connector retries inside `establish_connection` with one client, calling its
    `connect` once per attempt: count them there, so every retry shows in metrics."""

    class CountingClient(BleakClientWithServiceCache):
        async def connect(self, **kwargs: Any) -> None:
            on_attempt()
            await super().connect(**kwargs)

    return CountingClient
