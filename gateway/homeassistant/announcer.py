"""Home Assistant MQTT discovery at run time: a part of the MQTT session (`SessionPart`).

- On every (re)connect (`restore`): the discovery configs, retained, queued together and
  awaited together, after what a reload removed has been cleared.
- It subscribes to Home Assistant's status topic: on `online` (Home Assistant restarted; not a
  retained copy, which is an old birth message) it waits a random time up to
  `homeassistant.announce_delay`, then publishes the configs and the last value of every state
  topic again, as Home Assistant's documentation asks.
- It subscribes to every config topic this gateway can own (`<prefix>/+/<node_id>/+/config`):
  a retained config there that the gateway no longer generates (a device removed while the
  gateway was not running) is cleared with an empty retained payload.
- A sensor seen for the first time (decoders that name their sensors as they send them) is
  learned and announced.
- After a config this process had not announced (first start, a learned sensor, a reload that
  changed it), the entity's last value is published once more
  `homeassistant.state_resend_delay` later (`resend.py`): Home Assistant subscribes to a new
  entity's state topic only after the config, and a value sent before that is not shown.
- On reload (`configure`), what the new config no longer generates is cleared (device mode: a
  removed component is sent as `{"platform": "sensor"}` first, as Home Assistant requires).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt

from gateway import __version__
from gateway.config import Config
from gateway.encoding import Encoder
from gateway.homeassistant.clearing import is_own_config, owned_topic_filter, removals
from gateway.homeassistant.devices import LEARNED_FILE, Learned, SeenSensor, device_info
from gateway.homeassistant.discovery import discovery_messages, encode
from gateway.homeassistant.identity import GatewayInfo
from gateway.homeassistant.resend import StateResends
from gateway.metrics import Metrics
from gateway.models import Reading, SensorClasses
from gateway.mqtt.aioclient import GatewayClient
from gateway.mqtt.session import await_controls
from gateway.mqtt.topics import status_topic

log = logging.getLogger(__name__)

PROJECT_URL = "https://pypi.org/project/iot-gateway/"  # origin.url: where the software lives


def gateway_info(cfg: Config) -> GatewayInfo:
    ha = cfg.homeassistant
    return GatewayInfo(
        id=cfg.gateway.id,
        version=__version__,
        topic_prefix=cfg.topic_prefix,
        status_topic=status_topic(cfg.topic_prefix, cfg.gateway.id),
        discovery_prefix=ha.prefix,
        mode=ha.mode,
        origin_url=PROJECT_URL,
        command_verb=cfg.mqtt.command_verb,
    )


class Announcer:
    name = "homeassistant"

    def __init__(
        self,
        cfg: Config,
        encoder: Encoder,
        metrics: Metrics,
        sensor_classes: SensorClasses | None = None,
    ) -> None:
        self._encoder = encoder
        self._metrics = metrics
        # What decoders said each sensor is (written by BLE advert links before they submit).
        self._classes: SensorClasses = {} if sensor_classes is None else sensor_classes
        self.learned = Learned(Path(cfg.gateway.state_dir) / LEARNED_FILE)
        self._pending_clear: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._resend = False  # the next wake-up also republishes the last values
        self._delay = False  # ...after the random delay (Home Assistant came online)
        self._resends = StateResends(cfg.homeassistant.state_resend_delay)
        self._configure(cfg)

    # -- what is announced ---------------------------------------------------------------
    def _configure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.gw = gateway_info(cfg)
        self.subscriptions: Sequence[str] = (
            cfg.homeassistant.status_topic,
            owned_topic_filter(self.gw),
        )
        self._qos = cfg.mqtt.qos
        self._resends.delay = cfg.homeassistant.state_resend_delay
        self._devices = {d.id: d for d in cfg.devices}
        self.learned.keep_only(set(self._devices))
        infos = self._infos()
        self._known = {(d.id, sensor.key) for d in infos for sensor in d.sensors}
        # A control's state sensor is its entity: never learned as a sensor of its own.
        self._known |= {(d.id, c.state) for d in infos for c in d.controls if c.state}
        self.configs = discovery_messages(self.gw, infos)

    def _infos(self) -> list[Any]:
        return [device_info(d, self.learned.of(d.id)) for d in self.cfg.devices]

    def configure(self, cfg: Config) -> None:
        """A reload: what is no longer generated is cleared at the next chance."""
        old = self.configs
        self._configure(cfg)
        self._pending_clear += removals(self.gw, old, self.configs)
        self._wake.set()

    def clear_all(self) -> None:
        """Discovery switched off by a reload: every config goes."""
        self._pending_clear += removals(self.gw, self.configs, {})
        self.configs = {}
        self._wake.set()

    def seen(self, readings: Sequence[Reading]) -> None:
        """Every reading that leaves the streams: learn sensors not announced yet."""
        for reading in readings:
            if (reading.device, reading.sensor) in self._known:
                continue
            if reading.device not in self._devices:
                continue  # not configured (a BLE passer-by): never announced
            self._known.add((reading.device, reading.sensor))
            binary = isinstance(reading.value, bool)
            stated = self._classes.get(reading.device, {}).get(reading.sensor)
            seen = SeenSensor(
                reading.unit,
                binary,
                device_class=stated.device_class if stated is not None else None,
                state_class=stated.state_class if stated is not None else None,
            )
            if self.learned.learn(reading.device, reading.sensor, seen):
                log.info("homeassistant: announcing %s/%s", reading.device, reading.sensor)
                self.configs = discovery_messages(self.gw, self._infos())
                self._wake.set()

    # -- the session's side ----------------------------------------------------------------
    async def restore(self, client: GatewayClient) -> None:
        await self._announce(client, states=False)

    def offer(self, client: GatewayClient, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if topic == self.cfg.homeassistant.status_topic:
            if payload.strip() == b"online" and not message.retain:
                log.info("homeassistant: Home Assistant is online: announcing again")
                self._resend = self._delay = True
                self._wake.set()
            return
        if not message.retain or not payload or topic in self.configs:
            return  # our own publishes come back without the retain flag
        if message.topic.matches(self.subscriptions[1]) and self._ours(payload):
            log.info("homeassistant: clearing %s (no longer configured)", topic)
            self._pending_clear.append((topic, b""))
            self._wake.set()

    def _ours(self, payload: bytes) -> bool:
        """A retained config this gateway published (another program could use our node id:
        its configs are not ours to clear)."""
        try:
            config = json.loads(payload)
        except ValueError:
            return False
        return isinstance(config, dict) and is_own_config(self.gw, config)

    async def run(self, client: GatewayClient) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:  # until woken, or until the next re-send of new entities' values is due
                async with asyncio.timeout(self._resends.next_in(loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._wake.is_set():
                self._wake.clear()
                if self._delay:
                    self._delay = False
                    await asyncio.sleep(random.uniform(0, self.cfg.homeassistant.announce_delay))
                resend, self._resend = self._resend, False
                async with asyncio.timeout(self.cfg.mqtt.publish_timeout):
                    await self._announce(client, states=resend)
            if due := self._resends.take_due(loop.time()):
                async with asyncio.timeout(self.cfg.mqtt.publish_timeout):
                    await self._resend_states(client, due)

    async def _announce(self, client: GatewayClient, *, states: bool) -> None:
        """Clears first (in order: a device-mode component removal precedes the device's new
        config), then the configs, then (after Home Assistant restarted) the last values. A
        clear leaves the pending list only once acknowledged: a connection lost on the way
        sends it again on the next one."""
        pending = list(self._pending_clear)
        futures = [client.publish_control(t, p, 1, retain=True) for t, p in pending]
        configs = self.configs  # (a learned sensor may replace it while we wait)
        futures += self._publish_configs(client, configs)
        if states:
            futures += self._publish_states(client, self._encoder.last_payloads())
        await await_controls(futures, "discovery messages")
        del self._pending_clear[: len(pending)]
        self._metrics.discovery.labels("clear").inc(sum(not p for _, p in pending))
        now = asyncio.get_running_loop().time()
        self._resends.cleared(topic for topic, _ in pending)
        self._resends.announced(configs, now)

    async def _resend_states(self, client: GatewayClient, topics: set[str]) -> None:
        """The last values of entities whose config is new, once Home Assistant can have
        subscribed to their state topics. A topic without a value yet has nothing to send: its
        first value comes after the subscription."""
        last = [(t, p) for t, p in self._encoder.last_payloads() if t in topics]
        if last:
            log.info("homeassistant: %d value(s) again for new entities", len(last))
            await await_controls(self._publish_states(client, last), "last values")

    def _publish_configs(
        self, client: GatewayClient, configs: dict[str, dict[str, Any]]
    ) -> list[asyncio.Future[int]]:
        self._metrics.discovery.labels("config").inc(len(configs))
        return [
            client.publish_control(topic, encode(payload), 1, retain=True)
            for topic, payload in configs.items()
        ]

    def _publish_states(
        self, client: GatewayClient, last: Sequence[tuple[str, bytes]]
    ) -> list[asyncio.Future[int]]:
        self._metrics.discovery.labels("state").inc(len(last))
        return [client.publish_control(topic, payload, self._qos) for topic, payload in last]
