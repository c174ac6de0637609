"""Supervisor: retries with backoff, open timeouts, fatal errors, bugs, stop, cancellation and
the link state metrics, with small in-test links run on real asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

import pytest

from gateway.backoff import BackoffPolicy
from gateway.errors import FatalLinkError, TransientLinkError
from gateway.metrics import Metrics
from gateway.supervisor import Supervisor

pytestmark = pytest.mark.timeout(10)

# Tiny delays so a test sees many retries in a few tens of milliseconds.
FAST = BackoffPolicy(initial=0.001, maximum=0.016, multiplier=2.0, reset_after=60.0)


class Pulse:
    """Wakes a waiting test whenever something it watches may have changed (a state change or
    link activity), so tests wait on conditions instead of sleeping."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self._event.set()

    async def until(self, condition: Callable[[], bool], within: float = 3.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self._event.clear()
                await self._event.wait()


class FakeLink:
    """A link whose behaviour is set per test: `run` raises `error` (or works forever when it
    is None), `hang_on_enter` makes __aenter__ never return."""

    def __init__(
        self,
        name: str,
        pulse: Pulse,
        *,
        error: Exception | None = None,
        hang_on_enter: bool = False,
        backoff: BackoffPolicy = FAST,
        open_timeout: float = 1.0,
    ) -> None:
        self.name = name
        self.open_timeout = open_timeout
        self.backoff = backoff
        self.error = error
        self.hang_on_enter = hang_on_enter
        self.pulse = pulse
        self.entered = 0  # __aenter__ calls
        self.opened = 0  # __aenter__ calls that completed
        self.exited = 0
        self.enters_cancelled = 0
        self.runs_cancelled = 0
        self.work = 0  # ticks of a healthy run()

    async def __aenter__(self) -> Self:
        self.entered += 1
        self.pulse()
        if self.hang_on_enter:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.enters_cancelled += 1
                self.pulse()
                raise
        self.opened += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.exited += 1
        self.pulse()

    async def run(self) -> None:
        if self.error is not None:
            raise self.error
        try:
            while True:
                self.work += 1
                self.pulse()
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            self.runs_cancelled += 1
            raise


def link_up(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value("gateway_link_up", {"link": name})


def link_state(metrics: Metrics, name: str, state: str) -> float | None:
    return metrics.registry.get_sample_value("gateway_link_state", {"link": name, "state": state})


def failures(metrics: Metrics, name: str, kind: str) -> float | None:
    return metrics.registry.get_sample_value(
        "gateway_link_failures_total", {"link": name, "kind": kind}
    )


async def test_failing_link_is_retried_with_growing_bounds_while_its_sibling_works() -> None:
    pulse, metrics = Pulse(), Metrics()
    flaky = FakeLink("fake:flaky", pulse, error=TransientLinkError("gone", kind="unplugged"))
    healthy = FakeLink("fake:healthy", pulse)

    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(healthy)
        sup.start(flaky)
        await pulse.until(lambda: flaky.entered >= 10)
        work_before = healthy.work
        await pulse.until(lambda: flaky.entered >= 12 and healthy.work > work_before + 5)

        status = sup.status["fake:flaky"]
        assert status.failures >= 11
        assert status.last_error == "gone"
        assert len(status.delays) == min(status.failures, 32)  # one backoff per failure
        for attempt, delay in enumerate(status.delays):
            assert 0.0 <= delay <= FAST.bound(attempt)
        # The bound grows: later delays may exceed the first bound (with 6 draws in the capped
        # range [0, 16 ms], all staying under 1 ms has a probability of about 6e-8).
        assert max(status.delays[4:10]) > FAST.initial
        assert flaky.opened == flaky.exited  # every successful open was closed again
        assert failures(metrics, "fake:flaky", "unplugged") == status.failures
        retries = metrics.registry.get_sample_value(
            "gateway_link_retries_total", {"link": "fake:flaky"}
        )
        assert retries == status.failures

        # The sibling was never disturbed.
        assert sup.status["fake:healthy"].state == "up"
        assert sup.status["fake:healthy"].failures == 0
        assert (healthy.entered, healthy.exited) == (1, 0)
        assert link_up(metrics, "fake:healthy") == 1.0


async def test_link_up_long_enough_restarts_backoff_from_initial() -> None:
    pulse = Pulse()
    policy = BackoffPolicy(initial=0.001, maximum=1.0, multiplier=4.0, reset_after=0.0)
    flaky = FakeLink("fake:flaky", pulse, error=TransientLinkError("gone"), backoff=policy)

    async with Supervisor(Metrics(), on_change=pulse) as sup:
        sup.start(flaky)
        await pulse.until(lambda: flaky.entered >= 8)
        delays = sup.status["fake:flaky"].delays
        assert len(delays) >= 7
        assert all(0.0 <= d <= policy.initial for d in delays)


async def test_hanging_open_is_timed_out_and_retried() -> None:
    pulse, metrics = Pulse(), Metrics()
    stuck = FakeLink("fake:stuck", pulse, hang_on_enter=True, open_timeout=0.02)

    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(stuck)
        await pulse.until(lambda: stuck.entered >= 3)

        assert stuck.enters_cancelled >= 2  # the timeout cancelled the hanging __aenter__
        assert stuck.opened == 0
        assert stuck.exited == 0  # never opened, so never closed
        status = sup.status["fake:stuck"]
        assert status.last_error == "could not open within 0.02s"
        assert failures(metrics, "fake:stuck", "timeout") == status.failures >= 2
        assert link_up(metrics, "fake:stuck") == 0.0


async def test_fatal_error_marks_the_link_failed_and_it_is_not_retried() -> None:
    pulse, metrics = Pulse(), Metrics()
    broken = FakeLink("fake:broken", pulse, error=FatalLinkError("bad baudrate", kind="config"))
    healthy = FakeLink("fake:healthy", pulse)

    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(healthy)
        sup.start(broken)
        await pulse.until(lambda: sup.status["fake:broken"].state == "failed")
        # Give a (wrong) retry ample time to happen: 50 times the initial backoff.
        await asyncio.sleep(0.05)

        assert (broken.entered, broken.exited) == (1, 1)
        assert "fake:broken" not in sup
        assert sup.link("fake:broken") is None
        status = sup.status["fake:broken"]
        assert (status.state, status.failures, status.last_error) == ("failed", 1, "bad baudrate")
        assert status.delays == []
        assert link_state(metrics, "fake:broken", "failed") == 1.0
        assert link_up(metrics, "fake:broken") == 0.0
        assert failures(metrics, "fake:broken", "config") == 1.0
        assert sup.status["fake:healthy"].state == "up"

    assert sup.status["fake:broken"].state == "failed"  # shutdown does not relabel it


async def test_unexpected_exception_is_retried_not_propagated() -> None:
    pulse, metrics = Pulse(), Metrics()
    buggy = FakeLink("fake:buggy", pulse, error=ZeroDivisionError("division by zero"))
    healthy = FakeLink("fake:healthy", pulse)

    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(healthy)
        sup.start(buggy)
        await pulse.until(lambda: buggy.entered >= 3)

        assert "fake:buggy" in sup
        assert sup.status["fake:buggy"].last_error == "division by zero"
        assert failures(metrics, "fake:buggy", "unexpected") == sup.status["fake:buggy"].failures
        assert sup.status["fake:healthy"].state == "up"


async def test_run_returning_is_retried_like_a_failure() -> None:
    pulse, metrics = Pulse(), Metrics()

    class EndsAtOnce(FakeLink):
        async def run(self) -> None:
            return

    link = EndsAtOnce("fake:eof", pulse)
    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(link)
        await pulse.until(lambda: link.entered >= 3)
        assert sup.status["fake:eof"].last_error == "link ended"
        assert failures(metrics, "fake:eof", "ended") == sup.status["fake:eof"].failures


async def test_stop_cancels_one_link_and_releases_it() -> None:
    pulse, metrics = Pulse(), Metrics()
    first, second = FakeLink("fake:a", pulse), FakeLink("fake:b", pulse)

    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(first)
        sup.start(second)
        await pulse.until(lambda: first.work > 0 and second.work > 0)

        await sup.stop("fake:a")

        assert (first.runs_cancelled, first.exited) == (1, 1)  # __aexit__ ran before stop returned
        assert "fake:a" not in sup
        assert sup.status["fake:a"].state == "stopped"
        assert link_up(metrics, "fake:a") == 0.0
        assert link_state(metrics, "fake:a", "stopped") == 1.0
        work_after_stop = first.work
        await pulse.until(lambda: second.work > work_after_stop + 5)
        assert first.work == work_after_stop
        assert sup.status["fake:b"].state == "up"

        await sup.stop("fake:a")  # stopping a stopped link is a no-op
        await sup.stop("fake:unknown")

        # The name is free again: a new link can start under it.
        again = FakeLink("fake:a", pulse)
        sup.start(again)
        await pulse.until(lambda: again.work > 0)
        assert sup.link("fake:a") is again


async def test_link_stopped_before_it_ever_ran_is_reported_stopped() -> None:
    pulse, metrics = Pulse(), Metrics()
    first, second = FakeLink("fake:a", pulse), FakeLink("fake:b", pulse)

    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(first)
        await sup.stop("fake:a")  # its task has not had a chance to run yet
        assert first.entered == 0
        assert sup.status["fake:a"].state == "stopped"
        assert link_up(metrics, "fake:a") == 0.0
        assert link_state(metrics, "fake:a", "stopped") == 1.0
        sup.start(second)  # and the block ends before this one runs

    assert second.entered == 0
    assert sup.status["fake:b"].state == "stopped"
    assert link_state(metrics, "fake:b", "stopped") == 1.0


async def test_stop_during_backoff() -> None:
    pulse = Pulse()
    slow = BackoffPolicy(initial=30.0, maximum=30.0, reset_after=60.0)
    flaky = FakeLink("fake:flaky", pulse, error=TransientLinkError("gone"), backoff=slow)

    async with Supervisor(Metrics(), on_change=pulse) as sup:
        sup.start(flaky)
        await pulse.until(lambda: sup.status["fake:flaky"].state == "backing_off")
        async with asyncio.timeout(1.0):  # does not wait for the (up to 30 s) backoff
            await sup.stop("fake:flaky")
        assert sup.status["fake:flaky"].state == "stopped"


async def test_starting_a_running_name_twice_is_refused() -> None:
    pulse = Pulse()
    async with Supervisor(Metrics(), on_change=pulse) as sup:
        sup.start(FakeLink("fake:a", pulse))
        with pytest.raises(ValueError, match="already running"):
            sup.start(FakeLink("fake:a", pulse))


async def test_link_tasks_are_named_and_do_not_outlive_the_block() -> None:
    pulse = Pulse()
    links = [FakeLink("fake:a", pulse), FakeLink("fake:b", pulse, error=TransientLinkError("x"))]
    before = asyncio.all_tasks()

    async with Supervisor(Metrics(), on_change=pulse) as sup:
        for link in links:
            sup.start(link)
        await pulse.until(lambda: links[0].work > 0 and links[1].entered >= 2)
        names = {task.get_name() for task in asyncio.all_tasks() - before}
        assert names == {"link[fake:a]", "link[fake:b]", "supervisor-heartbeat"}

    assert asyncio.all_tasks() == before
    assert all(link.opened == link.exited for link in links)
    assert {s.state for s in sup.status.values()} == {"stopped"}


async def test_cancelling_the_owner_propagates_and_leaves_no_tasks() -> None:
    pulse, metrics = Pulse(), Metrics()
    links = [
        FakeLink("fake:a", pulse),
        FakeLink("fake:b", pulse),
        FakeLink("fake:stuck", pulse, hang_on_enter=True, open_timeout=30.0),
    ]
    before = asyncio.all_tasks()
    supervisors: list[Supervisor] = []
    reached_end = False

    async def owner() -> None:
        nonlocal reached_end
        async with Supervisor(metrics, on_change=pulse) as sup:
            supervisors.append(sup)
            for link in links:
                sup.start(link)
            await asyncio.Event().wait()
        reached_end = True

    task = asyncio.create_task(owner(), name="owner")
    await pulse.until(lambda: links[0].work > 0 and links[1].work > 0 and links[2].entered == 1)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not reached_end
    assert asyncio.all_tasks() == before
    assert [(link.opened, link.exited) for link in links] == [(1, 1), (1, 1), (0, 0)]
    assert links[2].enters_cancelled == 1
    assert {name: s.state for name, s in supervisors[0].status.items()} == {
        "fake:a": "stopped",
        "fake:b": "stopped",
        "fake:stuck": "stopped",
    }
    assert all(link_up(metrics, link.name) == 0.0 for link in links)


async def test_link_up_gauge_follows_the_state() -> None:
    pulse, metrics = Pulse(), Metrics()
    gate = asyncio.Event()

    class Gated(FakeLink):
        async def __aenter__(self) -> Self:
            self.entered += 1
            self.pulse()
            await gate.wait()
            self.opened += 1
            return self

    link = Gated("fake:gated", pulse)
    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(link)
        await pulse.until(lambda: link.entered == 1)
        assert link_up(metrics, "fake:gated") == 0.0
        assert link_state(metrics, "fake:gated", "starting") == 1.0

        gate.set()
        await pulse.until(lambda: link.work > 0)
        assert link_up(metrics, "fake:gated") == 1.0
        assert link_state(metrics, "fake:gated", "up") == 1.0
        assert link_state(metrics, "fake:gated", "starting") == 0.0

        await sup.stop("fake:gated")
        assert link_up(metrics, "fake:gated") == 0.0
        assert link_state(metrics, "fake:gated", "stopped") == 1.0


async def test_link_up_gauge_is_zero_while_backing_off() -> None:
    pulse, metrics = Pulse(), Metrics()
    slow = BackoffPolicy(initial=30.0, maximum=30.0, reset_after=60.0)
    flaky = FakeLink("fake:flaky", pulse, error=TransientLinkError("gone"), backoff=slow)

    async with Supervisor(metrics, on_change=pulse) as sup:
        sup.start(flaky)
        await pulse.until(lambda: sup.status["fake:flaky"].state == "backing_off")
        assert link_up(metrics, "fake:flaky") == 0.0
        assert link_state(metrics, "fake:flaky", "backing_off") == 1.0
        assert link_state(metrics, "fake:flaky", "up") == 0.0


class StuckClose(FakeLink):
    """A link whose close ignores cancellation until `release` is set: a driver stuck in close."""

    def __init__(self, name: str, pulse: Pulse) -> None:
        super().__init__(name, pulse)
        self.release = asyncio.Event()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # deliberately deaf to cancellation
        await super().__aexit__(exc_type, exc, tb)


async def test_stop_is_bounded_by_stop_timeout_even_when_a_close_hangs() -> None:
    pulse, metrics = Pulse(), Metrics()
    stuck = StuckClose("fake:stuck", pulse)
    async with Supervisor(metrics, on_change=pulse, stop_timeout=0.05) as sup:
        sup.start(stuck)
        await pulse.until(lambda: stuck.work > 0)
        # Without the bound, stop() returns only when the close is let go (after 3 s).
        let_go = asyncio.get_running_loop().call_later(3.0, stuck.release.set)
        stopped = await sup.stop("fake:stuck")
        assert stopped is False
        assert not stuck.release.is_set()
        let_go.cancel()
        assert stuck.exited == 0  # still closing: the supervisor went on without it
        stuck.release.set()  # let the TaskGroup finish
    assert stuck.exited == 1
