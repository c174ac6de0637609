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

from gateway.config import Config, Device
from gateway.controls import controls_document
from gateway.errors import DecodeError
from gateway.families import family_of
from gateway.models import Reading, Value
from gateway.mqtt.topics import device_payload, device_topic, reading_payload, reading_topic
from gateway.streams.device import DeviceStream

Out = Callable[[str], None]


def sample_bytes(hex_text: str | None, file: Path | None) -> bytes:
    if hex_text is not None:
        return bytes.fromhex(hex_text.replace(":", " "))
    assert file is not None
    return file.read_bytes()


def frames(
    device: Device, data: bytes, characteristic: str | None, out: Out
) -> Iterator[list[Reading]]:
    found = family_of(device).sample_frames(device, data, characteristic, out)
    if found is None:
        raise DecodeError(
            f"gateway decode does not read {device.type} devices (their values are registers, "
            "not frames): `gateway simulate modbus` plays a meter to try a config on"
        )
    return found


def line_bytes(device: Device, line: str) -> bytes:
    """A `--line` as the device sends it: in its encoding, with its terminator or delimiter."""
    return family_of(device).sample_bytes(device, line)


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
    last: dict[str, Value | None] = {}  # each sensor's last value passed: the controls' state
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
            last.update({r.sensor: r.value for r in passed})
    except DecodeError as exc:
        out(f"not decoded: {exc}")
    # What timed filters (debounce, throttle_average, heartbeat, timeout) would emit once
    # their time came, with nothing else arriving:
    if (due := stream.deadline()) is not None:
        later = stream.tick(due, time.time())
        if later:
            out(f"{due:g} s later, when the filters' timers first fire:")
            _print(device, prefix, later, state, out)
    _print_controls(device, last, out)
    if decoded == 0:
        out("no readings")
    return 0 if decoded else 1


def _print_controls(device: Device, last: dict[str, Value | None], out: Out) -> None:
    """Each control and its state after the sample, as Home Assistant would show it."""
    for name, doc in controls_document(family_of(device).controls(device), last).items():
        if doc["platform"] == "button":
            shown = "a button, no state"
        elif doc["state_sensor"] is None:
            shown = "optimistic (no state sensor)"
        elif doc["state"] is None:
            shown = f"state from {doc['state_sensor']}: not in the sample"
        else:
            shown = f"{doc['state']} (from {doc['state_sensor']})"
        out(f"control {name} ({doc['platform']}): {shown}")


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
