"""Per-device availability: retained `online`/`offline` at `<prefix>/<device>/availability`.

The gateway's links set the state; whichever session is connected publishes it: every state at
(re)connect (`restore_state`, all at once), then each change as it happens.
"""

from __future__ import annotations

import asyncio

from gateway.mqtt.aioclient import GatewayClient
from gateway.mqtt.topics import availability_topic


class Availability:
    """The devices' states; `changed` is set on every change.

    A device is online while its link is up (`set`) and, for a device with
    `availability.timeout`, while values keep being decoded (`set_fresh`)."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.changed = asyncio.Event()
        self._link_up: dict[str, bool] = {}
        self._stale: set[str] = set()  # devices silent for longer than their timeout

    def set(self, device: str, online: bool) -> None:
        """The link's state: up or not."""
        self._link_up[device] = online
        self._update(device)

    def set_fresh(self, device: str, fresh: bool) -> None:
        """Whether the device decoded something within its availability timeout."""
        if fresh:
            self._stale.discard(device)
        else:
            self._stale.add(device)
        self._update(device)

    def _update(self, device: str) -> None:
        online = self._link_up.get(device, False) and device not in self._stale
        state = "online" if online else "offline"
        if self.states.get(device) != state:
            self.states[device] = state
            self.changed.set()

    def online(self, device: str) -> bool:
        return self.states.get(device) == "online"

    def forget(self, device: str) -> None:
        self.states.pop(device, None)
        self._link_up.pop(device, None)
        self._stale.discard(device)


def publish_states(
    client: GatewayClient, prefix: str, states: dict[str, str]
) -> list[asyncio.Future[int]]:
    """Queue one retained publish per device; the caller awaits them together (one round trip
    for all, not one per device)."""
    return [
        client.publish_control(availability_topic(prefix, device), state.encode(), 1, retain=True)
        for device, state in states.items()
    ]


async def publish_changes(
    client: GatewayClient,
    availability: Availability,
    prefix: str,
    deadline: float,
    published: dict[str, str],
) -> None:
    """Runs for one connection: publishes each change since `published` (what restore_state
    published), so a change in between is not missed; each publish waits at most `deadline`
    seconds for its acknowledgement."""
    published = dict(published)
    availability.changed.set()  # compare once at start
    while True:
        await availability.changed.wait()
        availability.changed.clear()
        current = dict(availability.states)
        changes = {d: s for d, s in current.items() if published.get(d) != s}
        if changes:
            async with asyncio.timeout(deadline):
                await asyncio.gather(*publish_states(client, prefix, changes))
        published = current
