"""Backoff policy: exponential bound with a cap, full jitter within [0, bound], reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backoff import Backoff, BackoffPolicy
from gateway.config import BackoffConfig

pytestmark = pytest.mark.timeout(30)


def test_bound_grows_exponentially_until_the_cap() -> None:
    policy = BackoffPolicy(initial=0.5, maximum=30.0, multiplier=2.0)
    assert [policy.bound(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_bound_of_huge_attempt_counts_is_the_cap() -> None:
    policy = BackoffPolicy(initial=0.5, maximum=30.0, multiplier=10.0)
    assert policy.bound(10_000) == 30.0
    assert policy.bound(2**40) == 30.0


def test_multiplier_one_keeps_the_bound_constant() -> None:
    policy = BackoffPolicy(initial=2.0, maximum=30.0, multiplier=1.0)
    assert {policy.bound(n) for n in range(50)} == {2.0}


def test_seeded_delays_are_within_the_bound_and_jittered() -> None:
    policy = BackoffPolicy(initial=1.0, maximum=8.0, multiplier=2.0)
    backoff = Backoff(policy, rng=random.Random(1234))

    delays = [backoff.next_delay() for _ in range(40)]

    assert backoff.attempt == 40
    for attempt, delay in enumerate(delays):
        assert 0.0 <= delay <= policy.bound(attempt)
    # Full jitter: the delays are spread over [0, bound], not pinned to the bound.
    capped = delays[4:]
    assert len(set(capped)) == len(capped)
    assert min(capped) < policy.maximum / 4 < policy.maximum * 3 / 4 < max(capped)


def test_same_seed_gives_the_same_delays() -> None:
    policy = BackoffPolicy(initial=0.1, maximum=5.0)
    first = Backoff(policy, rng=random.Random(7))
    second = Backoff(policy, rng=random.Random(7))
    assert [first.next_delay() for _ in range(10)] == [second.next_delay() for _ in range(10)]


def test_reset_starts_again_from_the_initial_bound() -> None:
    policy = BackoffPolicy(initial=0.25, maximum=100.0, multiplier=3.0)
    backoff = Backoff(policy, rng=random.Random(99))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.attempt == 6

    backoff.reset()

    assert backoff.attempt == 0
    assert backoff.next_delay() <= policy.initial
    assert backoff.attempt == 1
    for _ in range(20):  # a link that keeps recovering never backs off past `initial`
        backoff.reset()
        assert 0.0 <= backoff.next_delay() <= policy.initial


def test_config_maps_to_policy() -> None:
    cfg = BackoffConfig(initial=0.1, max=3.0, multiplier=1.5, reset_after=12.0)
    assert cfg.policy() == BackoffPolicy(0.1, 3.0, 1.5, 12.0)
    assert BackoffConfig().policy() == BackoffPolicy()


@settings(max_examples=200, deadline=None)
@given(
    initial=st.floats(0.001, 10.0),
    maximum=st.floats(0.001, 600.0),
    multiplier=st.floats(1.0, 10.0),
    seed=st.integers(0, 2**32),
    attempts=st.integers(1, 100),
)
def test_any_policy_gives_delays_within_bounds(
    initial: float, maximum: float, multiplier: float, seed: int, attempts: int
) -> None:
    policy = BackoffPolicy(initial, maximum, multiplier)
    backoff = Backoff(policy, rng=random.Random(seed))
    previous_bound = 0.0
    for attempt in range(attempts):
        bound = policy.bound(attempt)
        assert bound <= maximum
        assert bound >= previous_bound  # never shrinks
        assert 0.0 <= backoff.next_delay() <= bound
        previous_bound = bound
