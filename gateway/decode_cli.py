"""`gateway decode`: one device's framer, decoder and filters on a sample, without hardware or
broker. Prints each reading as it would be published (topic, payload; `seq` is given by the
outbox, so it is left out) and each value a filter dropped, with the filter.

Samples: `--line TEXT` (a serial line; the terminator is added), `--hex BYTES` (serial bytes; a
BLE advertisement's raw AD structures, as btmon or an HCI dump shows them; a GATT
characteristic's value), `--file F` (the file's bytes, like `--hex`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway.config import (
    BleAdvertDevice,
    BleGattDevice,
    Config,
    DelimiterFraming,
    Device,
    SerialDevice,
)
from gateway.errors import DecodeError
from gateway.models import Reading, Value
from gateway.mqtt.topics import device_payload, device_topic, reading_payload, reading_topic
from gateway.streams.device import DeviceStream

Out = Callable[[str], None]


def sample_bytes(hex_text: str | None, file: Path | None) -> bytes:
    if hex_text is not None:
        return bytes.fromhex(hex_text.replace(":", " "))
    assert file is not None
    return file.read_bytes()


def serial_frames(device: SerialDevice, data: bytes, out: Out) -> Iterator[list[Reading]]:
    from gateway.decoders import make_decoder, sensor_specs, to_readings  # noqa: PLC0415
    from gateway.framing import make_framer  # noqa: PLC0415

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


def parse_ad_structures(data: bytes, address: str) -> object:
    """Raw advertising data (length, type, data; repeated) -> the decoders' Advert."""
    from gateway.decoders.ble.advert import Advert, uuid16  # noqa: PLC0415

    name, manufacturer, service, uuids = None, {}, {}, []
    i = 0
    while i < len(data):
        length = data[i]
        if length == 0:
            break
        if i + 1 + length > len(data):
            raise DecodeError(f"AD structure at byte {i} runs past the end of the data")
        kind, body = data[i + 1], data[i + 2 : i + 1 + length]
        if kind in (0x08, 0x09):
            name = body.decode("utf-8", "replace")
        elif kind == 0xFF and len(body) >= 2:
            manufacturer[int.from_bytes(body[:2], "little")] = body[2:]
        elif kind == 0x16 and len(body) >= 2:
            service[uuid16(int.from_bytes(body[:2], "little"))] = body[2:]
        elif kind in (0x02, 0x03):
            uuids += [
                uuid16(int.from_bytes(body[j : j + 2], "little"))
                for j in range(0, len(body) - 1, 2)
            ]
        i += 1 + length
    return Advert(
        address=address,
        name=name,
        manufacturer_data=manufacturer,
        service_data=service,
        service_uuids=tuple(uuids),
    )


def ble_advert_frames(device: BleAdvertDevice, data: bytes) -> Iterator[list[Reading]]:
    from gateway.ble.readings import ble_readings  # noqa: PLC0415
    from gateway.decoders.ble import make_advert_parser  # noqa: PLC0415
    from gateway.decoders.ble.advert import Advert  # noqa: PLC0415

    advert = parse_ad_structures(data, device.address or "00:00:00:00:00:00")
    assert isinstance(advert, Advert)
    decoded = make_advert_parser(device)(advert)
    yield ble_readings(device.id, {**decoded.values, **decoded.events}, device.sensors, time.time())


def ble_gatt_frames(
    device: BleGattDevice, data: bytes, characteristic: str | None
) -> Iterator[list[Reading]]:
    from gateway.ble.readings import ble_readings  # noqa: PLC0415
    from gateway.decoders.ble.gatt import decode_gatt  # noqa: PLC0415

    specs = [*device.notify, *device.poll]
    if characteristic is not None:
        from pydantic import TypeAdapter, ValidationError  # noqa: PLC0415

        from gateway.config import Uuid as UuidType  # noqa: PLC0415

        try:
            uuid = TypeAdapter(UuidType).validate_python(characteristic)
        except ValidationError:
            raise DecodeError(
                f"--characteristic {characteristic!r} is not a UUID (e.g. 2a37 or the full form)"
            ) from None
        specs = [s for s in specs if s.characteristic == uuid]
    if not specs:
        raise DecodeError("no notify or poll characteristic of this device matches")
    yield ble_readings(device.id, decode_gatt(specs[0], data), device.sensors, time.time())


def frames(
    device: Device, data: bytes, characteristic: str | None, out: Out
) -> Iterator[list[Reading]]:
    match device:
        case SerialDevice():
            return serial_frames(device, data, out)
        case BleAdvertDevice():
            return ble_advert_frames(device, data)
        case BleGattDevice():
            return ble_gatt_frames(device, data, characteristic)
    raise DecodeError(
        f"gateway decode does not read {device.type} devices (their values are registers, "
        "not frames): `gateway simulate modbus` plays a meter to try a config on"
    )


def line_bytes(device: Device, line: str) -> bytes:
    """A `--line` as the device sends it: in its encoding, with its terminator or delimiter."""
    if not isinstance(device, SerialDevice):
        return line.encode()
    data = line.encode(device.encoding)
    if device.framing == "line":
        end = device.terminator.encode(device.encoding)
    elif isinstance(device.framing, DelimiterFraming):
        end = bytes.fromhex(device.framing.delimiter)
    else:
        return data
    return data if data.endswith(end) else data + end


def run_decode(
    cfg: Config,
    device_id: str,
    data: bytes | str,
    *,
    characteristic: str | None = None,
    out: Out = print,
) -> int:
    """`data`: bytes, or the text of a `--line`. Exit status: 0 when something was decoded, 1
    when nothing was (or the id is unknown)."""
    device = cfg.device(device_id)
    if device is None:
        known = ", ".join(d.id for d in cfg.devices) or "none"
        print(f"no device {device_id!r} in the config (devices: {known})", file=sys.stderr)
        return 1
    if isinstance(data, str):
        data = line_bytes(device, data)
    drops: list[tuple[str, str]] = []
    stream = DeviceStream(device, lambda sensor, name: drops.append((sensor, name)))
    prefix, decoded = cfg.topic_prefix, 0
    state: dict[str, Value | None] = {}
    try:
        # A frame a second on the filters' clock (time is what throttle and debounce judge).
        for second, readings in enumerate(frames(device, data, characteristic, out)):
            decoded += len(readings)
            passed: list[Reading] = []
            for reading in readings:  # one at a time: to say which value a filter dropped
                del drops[:]
                passed += stream.feed([reading], float(second))
                for _, name in drops:
                    out(f"dropped {reading.sensor}={reading.value!r} by filter {name}")
            _print(device, prefix, passed, state, out)
    except DecodeError as exc:
        out(f"not decoded: {exc}")
    # What timed filters (debounce, throttle_average, heartbeat, timeout) would emit once
    # their time came, with nothing else arriving:
    if (due := stream.deadline()) is not None:
        later = stream.tick(due, time.time())
        if later:
            out(f"{due:g} s later, when the filters' timers first fire:")
            _print(device, prefix, later, state, out)
    if decoded == 0:
        out("no readings")
    return 0 if decoded else 1


def _print(
    device: Device, prefix: str, readings: list[Reading], state: dict[str, Value | None], out: Out
) -> None:
    if not readings:
        return
    if device.payload == "device":
        state.update({r.sensor: r.value for r in readings})
        ts = max(r.ts for r in readings)
        body = device_payload((dict(state), ts)).decode()
        out(f"{device_topic(prefix, device.id)} {body}")
        return
    for reading in readings:
        out(f"{reading_topic(prefix, reading)} {reading_payload(reading).decode()}")
