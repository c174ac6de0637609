"""Per-device availability: retained `online`/`offline` at `<prefix>/<device>/availability`.

The gateway's links set the state; whichever session is connected publishes it: every state at
(re)connect (`restore_state`, all at once), then each change as it happens.
"""

from __future__ import annotations

import asyncio

from gateway.mqtt.aioclient import GatewayClient
from gateway.mqtt.topics import availability_topic


class Availability:
    """The devices' states; `changed` is set on every change."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.changed = asyncio.Event()

    def set(self, device: str, online: bool) -> None:
        state = "online" if online else "offline"
        if self.states.get(device) != state:
            self.states[device] = state
            self.changed.set()

    def forget(self, device: str) -> None:
        self.states.pop(device, None)


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
