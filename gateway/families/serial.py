"""Serial devices (`type: serial`): one SerialLink per port; line, delimiter or packet framing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gateway.config import DelimiterFraming, Device, SerialDevice
from gateway.decoders import make_decoder, sensor_specs, to_readings
from gateway.errors import DecodeError
from gateway.families.base import Family, FamilyContext, Out
from gateway.framing import make_framer
from gateway.links.serial import SerialLink
from gateway.models import Reading

if TYPE_CHECKING:
    from gateway.supervisor import Link


class SerialFamily(Family):
    name = "serial"
    models = (SerialDevice,)

    def device_link(self, device: Any, ctx: FamilyContext) -> Link:
        return SerialLink(device, ctx.submit, ctx.metrics)

    def known_sensors(self, device: Device) -> dict[str, str | None]:
        assert isinstance(device, SerialDevice)
        known = {name: unit for name, unit, _ in device.decoder_sensors()}
        specs = sensor_specs(device)
        known.update({name: spec.unit for name, spec in specs.items() if name in known})
        return known

    def has_sensor(self, device: Device, sensor: str) -> bool:
        """kv, json and nmea name their sensors as they send them: any name may come."""
        assert isinstance(device, SerialDevice)
        return isinstance(device.decoder, str) or super().has_sensor(device, sensor)

    def sample_frames(
        self, device: Device, data: bytes, characteristic: str | None, out: Out
    ) -> Iterator[list[Reading]]:
        assert isinstance(device, SerialDevice)
        return _frames(device, data, out)

    def sample_bytes(self, device: Device, line: str) -> bytes:
        """In the device's encoding, with its terminator or delimiter."""
        assert isinstance(device, SerialDevice)
        data = line.encode(device.encoding)
        if device.framing == "line":
            end = device.terminator.encode(device.encoding)
        elif isinstance(device.framing, DelimiterFraming):
            end = bytes.fromhex(device.framing.delimiter)
        else:
            return data
        return data if data.endswith(end) else data + end


def _frames(device: SerialDevice, data: bytes, out: Out) -> Iterator[list[Reading]]:
    framer, decode, sensors = make_framer(device), make_decoder(device), sensor_specs(device)
    now = time.time()
    for frame in framer.feed(data):
        try:
            yield to_readings(device.id, decode(frame), sensors, now)
        except DecodeError as exc:
            out(f"frame {frame[:60]!r}: not decoded: {exc}")
    for reason, count in framer.take_errors().items():
        out(f"framing: {count} frame(s) skipped ({reason})")
    if left := framer.reset():
        out(f"framing: {left} byte(s) left that do not make a frame (yet)")


SERIAL = SerialFamily()
