"""The refusal log: once per interval per key, bounded keys, a count of what was kept quiet."""

from __future__ import annotations

import logging

import pytest

from gateway.throttle import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_once_per_interval_per_key_then_says_how_many_were_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("t"), interval=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        assert throttle.warning(("a", "busy"), "refused %s", "a")
        for _ in range(5):
            assert not throttle.warning(("a", "busy"), "refused %s", "a")
        assert throttle.warning(("b", "busy"), "refused %s", "b")
        clock.now += 61
        assert throttle.warning(("a", "busy"), "refused %s", "a")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["refused a", "refused b", "refused a (5 more like it in the last 61s)"]


def test_keys_are_bounded() -> None:
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("t"), interval=60, max_keys=10, clock=clock)
    for i in range(10_000):
        throttle.info(i, "x")
    assert len(throttle._seen) == 10
    # The oldest were forgotten: key 0 logs again at once.
    assert throttle.info(0, "x")
