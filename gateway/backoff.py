"""Retry policy as data: exponential backoff with full jitter and a cap.

Full jitter (a uniform draw between 0 and the exponential bound) spreads reconnect storms when
many links or many gateways lose the same broker at once (AWS architecture blog, "Exponential
Backoff And Jitter"). Links retry forever; only the delay is bounded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    #: A link that stayed up this long is considered healthy again: its next failure starts the
    #: backoff from `initial`. Shorter runs keep growing the delay, so a flapping link is damped.
    reset_after: float = 30.0

    def bound(self, attempt: int) -> float:
        """The upper bound of the delay before retry number `attempt` (0-based)."""
        # Cap the exponent so huge attempt counts cannot overflow a float.
        return float(min(self.maximum, self.initial * self.multiplier ** min(attempt, 64)))


@dataclass(slots=True)
class Backoff:
    """Per-link retry state. `next_delay()` draws the delay for the next retry and counts it."""

    policy: BackoffPolicy
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        delay = self.rng.uniform(0.0, self.policy.bound(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
