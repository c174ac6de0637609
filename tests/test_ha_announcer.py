"""Home Assistant's last values (homeassistant/announcer.py), in process: the announcer keeps
the last message of each state topic the broker acknowledged (the publisher's `delivered`),
and publishes those again, byte for byte, when Home Assistant comes online. Its own cache: it
reads nothing of the encoder or the outbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from gateway.config import Config
from gateway.homeassistant.announcer import Announcer
from gateway.metrics import Metrics
from gateway.models import UNKNOWN_DEVICES, Reading
from gateway.mqtt.aioclient import GatewayClient
from gateway.mqtt.topics import reading_fields, reading_payload
from gateway.outbox import Record

pytestmark = pytest.mark.timeout(30)


def config(state_dir: Path, *devices: str) -> Config:
    return Config.model_validate(
        {
            "gateway": {"id": "gw", "state_dir": str(state_dir)},
            "homeassistant": {"discovery": True},
            "devices": [
                {"id": d, "type": "serial", "port": "/dev/ttyX", "sensors": {"temp": {}}}
                for d in devices
            ],
        }
    )


def record(device: str, value: float, seq: int) -> Record:
    reading = Reading(device, "temp", value, None, 1_800_000_000.0 + seq)
    fields = reading_fields(reading)
    return Record(seq, device, seq, f"gateway/{device}/temp", "temp", fields, 1, reading.ts, 99)


class Client:
    """What the announcer asks of a connection: control publishes, answered at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish_control(
        self, topic: str, payload: bytes, qos: int, *, retain: bool = False
    ) -> asyncio.Future[int]:
        self.sent.append((topic, payload))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(0)
        return future


async def states(announcer: Announcer) -> dict[str, bytes]:
    client = Client()
    futures = announcer._publish_states(cast(GatewayClient, client), announcer._last_payloads())
    await asyncio.gather(*futures)
    return dict(client.sent)


async def test_the_last_delivered_message_of_each_state_topic_is_published_again(
    tmp_path: Path,
) -> None:
    announcer = Announcer(config(tmp_path, "boiler", "attic"), Metrics())
    announcer.delivered([record("boiler", 21.5, 1), record("attic", 5.0, 1)])
    announcer.delivered([record("boiler", 22.0, 2), record(UNKNOWN_DEVICES, 1.0, 1)])
    again = await states(announcer)
    boiler = Reading("boiler", "temp", 22.0, None, 1_800_000_002.0)
    assert again == {
        "gateway/boiler/temp": reading_payload(boiler, 2),  # byte for byte, its seq included
        "gateway/attic/temp": reading_payload(Reading("attic", "temp", 5.0, None, 1.8e9 + 1), 1),
    }  # (an unconfigured device's: never announced, never republished)
    announcer.configure(config(tmp_path, "boiler"))  # attic removed by a reload
    assert list(await states(announcer)) == ["gateway/boiler/temp"]


def test_nothing_accepted_but_not_delivered_is_kept(tmp_path: Path) -> None:
    """What the intake shows the announcer (readings) only teaches it sensors: a reading whose
    message has not gone out has no last value yet (its seq may not be spent)."""
    announcer = Announcer(config(tmp_path, "boiler"), Metrics())
    announcer.seen([Reading("boiler", "hum", 40, "%", 1.8e9)])
    assert ("boiler", "hum") in announcer._known
    assert not cast(dict[str, Any], announcer._last)
