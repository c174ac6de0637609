"""Which entities' last values go out again, and when, after their config was announced.

Home Assistant subscribes to a new entity's state topic only after it has processed the
entity's discovery config: 70-150 ms after the config arrives, measured against a real Home
Assistant (2026.2). A value published before that is not shown: at a gateway's first start
the first line of every device never reached Home Assistant (the entity stayed "unknown" until
the next reading, ten minutes later on a slow sensor), and a sensor learned at run time showed
a stale value. So a config this process has not announced before (new, or changed) makes its
state topics due for one re-send of their last value `delay` seconds after the broker took
the config; a value that comes later than that is seen anyway.

Pure bookkeeping, no I/O and no clock of its own: the announcer says what it announced and
when, asks what is due, and publishes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.homeassistant.discovery import encode


def entities(config: Mapping[str, Any]) -> dict[str, tuple[bytes, str | None]]:
    """A discovery config's entities as Home Assistant compares them: each component (device
    mode) with the device's shared keys, or the config itself (component mode); each as its
    bytes and its state topic."""
    components = config.get("components")
    if not isinstance(components, Mapping):
        return {"": (encode(dict(config)), _state_topic(config))}
    shared = {k: v for k, v in config.items() if k != "components"}
    return {
        key: (encode({**shared, "component": component}), _state_topic(component))
        for key, component in components.items()
        if isinstance(component, Mapping)
    }


def _state_topic(part: Mapping[str, Any]) -> str | None:
    topic = part.get("state_topic")
    return topic if isinstance(topic, str) else None


class StateResends:
    """State topics due for one re-send of their last value, and when.

    `delay` 0 turns it off. Memory is bounded by what is announced: one entry per entity and
    per state topic the entities name.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        # config topic -> its entities as the broker took them (entity key -> bytes)
        self._announced: dict[str, dict[str, bytes]] = {}
        self._due: dict[str, float] = {}  # state topic -> when its last value goes out again

    def announced(self, configs: Mapping[str, Mapping[str, Any]], now: float) -> int:
        """Configs the broker acknowledged at `now`. Entities not announced before as they are
        now make their state topics due at `now + delay` (a later announcement: later again).
        Returns how many entities were new or changed."""
        fresh = 0
        for topic, config in configs.items():
            before = self._announced.get(topic, {})
            now_there = entities(config)
            self._announced[topic] = {key: body for key, (body, _) in now_there.items()}
            for key, (body, state) in now_there.items():
                if before.get(key) == body:
                    continue  # Home Assistant has it as it is: it is subscribed
                fresh += 1
                if self.delay > 0 and state is not None:
                    self._due[state] = now + self.delay
        return fresh

    def cleared(self, topics: Iterable[str]) -> None:
        """Configs removed (or replaced by a removal) on the broker: announcing them again is
        new."""
        for topic in topics:
            self._announced.pop(topic, None)

    def deadline(self) -> float | None:
        """When the next re-send is due (None: none is)."""
        return min(self._due.values(), default=None)

    def take_due(self, now: float) -> set[str]:
        """The state topics due at `now`, each handed out once."""
        due = {topic for topic, at in self._due.items() if at <= now}
        for topic in due:
            del self._due[topic]
        return due

    def next_in(self, now: float) -> float | None:
        """Seconds until the next re-send (None: none is due, no deadline)."""
        deadline = self.deadline()
        return None if deadline is None else max(0.0, deadline - now)
