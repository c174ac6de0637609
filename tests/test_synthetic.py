"""Synthetic devices: made-up readings at a fixed rate, no hardware (demo, fleet and soak
benchmarks). The values are pure functions of the frame number and the seeded walk; a daemon
with a `count` makes exactly that many frames, numbered without gaps, and then stays up."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import Broker, Daemon, Subscriber, gateway_config, wait_until

from gateway.config import SyntheticDevice, load_config
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.synthetic import WALK_HIGH, WALK_LOW, SyntheticLink, Values


def synthetic(**kw: object) -> SyntheticDevice:
    return SyntheticDevice.model_validate({"id": "s", "type": "synthetic", **kw})


def test_values_counter_walk_and_sine() -> None:
    values = Values({"n": "counter", "t": "walk", "s": "sine"}, seed=1)
    frames = [values.frame(i, now=15.0) for i in range(500)]
    assert [f["n"] for f in frames] == list(range(500))
    walk = [f["t"] for f in frames]
    assert all(WALK_LOW <= float(v) <= WALK_HIGH for v in walk)
    assert len(set(walk)) > 100  # it moves
    assert {f["s"] for f in frames} == {25.0}  # 20 + 5 at a quarter period
    again = Values({"n": "counter", "t": "walk", "s": "sine"}, seed=1)
    assert [again.frame(i, 15.0)["t"] for i in range(500)] == walk  # seeded: repeatable


async def test_link_makes_count_frames_on_its_schedule_then_stays_up_silent() -> None:
    got: list[Sequence[Reading]] = []
    link = SyntheticLink(
        synthetic(interval=0.01, count=5, values={"n": "counter"}, sensors={"n": {"unit": "x"}}),
        got.append,
        Metrics(),
    )
    async with link:
        assert link.is_up
        task = asyncio.create_task(link.run(), name="synthetic-under-test")
        await asyncio.sleep(0.3)
        assert not task.done()  # finished its frames, still up
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not link.is_up
    assert [[(r.sensor, r.value, r.unit) for r in frame] for frame in got] == [
        [("n", i, "x")] for i in range(5)
    ]


def test_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: g}\ndevices:\n  - id: s\n    type: synthetic\n    values: {n: square}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert f"{path}:5" in str(err.value)
    assert "values.n" in str(err.value)


@pytest.mark.timeout(30)
def test_daemon_delivers_every_frame_numbered_without_gaps(
    daemon: Daemon, broker: Broker, subscriber: Subscriber
) -> None:
    device = {
        "id": "synth",
        "type": "synthetic",
        "interval": 0.02,
        "count": 50,
        "values": {"n": "counter", "t": "walk"},
    }
    daemon.start(gateway_config(broker, [device]))
    wait_until(lambda: len(subscriber.on_topic("gateway/synth/t")) == 50 or None, 15, "50 frames")
    assert [m.value for m in subscriber.on_topic("gateway/synth/n")] == list(range(50))
    readings = [m for m in subscriber.messages if m.topic.startswith("gateway/synth/")]
    readings = [m for m in readings if m.data is not None and "seq" in m.data]
    assert len(readings) == 100
    assert sorted(m.data["seq"] for m in readings if m.data) == list(range(1, 101))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0


async def test_after_a_short_stall_the_missed_frames_are_made_at_once() -> None:
    """A busy loop must not lower the offered rate: frames missed during a stall shorter than
    CATCH_UP are made together once the loop runs again."""
    got: list[Sequence[Reading]] = []
    link = SyntheticLink(synthetic(interval=0.01, count=20), got.append, Metrics())
    async with link:
        task = asyncio.create_task(link.run(), name="synthetic-under-test")
        await asyncio.sleep(0)  # the first frame
        time.sleep(0.3)  # the loop stalls for 30 intervals
        await asyncio.sleep(0.05)
        assert len(got) == 20
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
