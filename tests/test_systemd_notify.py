"""sd_notify and the watchdog, against a real AF_UNIX datagram socket given as NOTIFY_SOCKET.

The daemon (a subprocess, real mosquitto, real ptys) says READY=1, STATUS=, RELOADING=1/READY=1,
STOPPING=1 and pings WATCHDOG=1, and stops pinging while it is frozen. In-process, with a real
Supervisor and small links written for the test: a wedged event loop and a stuck supervisor
(a link whose close never ends) withhold the pings, which resume once things move again.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import pytest
from helpers import (
    Broker,
    Daemon,
    SerialPair,
    Subscriber,
    gateway_config,
    process_state,
    send_until_seen,
    serial_device,
    wait_until,
)
from notifysock import Notification, NotifySocket

from gateway.backoff import BackoffPolicy
from gateway.errors import TransientLinkError
from gateway.metrics import Metrics
from gateway.supervisor import Supervisor
from gateway.systemd import notify, watchdog_timeout
from gateway.watchdog import Watchdog

pytestmark = pytest.mark.timeout(40)

WATCHDOG_SEC = 1.0  # as WATCHDOG_USEC: the daemon pings every 0.25 s


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    """NOTIFY_SOCKET and WATCHDOG_USEC for this process and the daemons it starts from now on.
    Request it after `broker`: mosquitto speaks sd_notify too."""
    with NotifySocket() as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
        monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_SEC * 1e6)))
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield sock


def pings(notes: list[Notification]) -> list[float]:
    return [n.at for n in notes if n.get("WATCHDOG") == "1"]


def test_daemon_speaks_the_notify_protocol_and_pings_while_it_runs(
    broker: Broker,
    serial_pair: SerialPair,
    subscriber: Subscriber,
    daemon: Daemon,
    notify_socket: NotifySocket,
) -> None:
    daemon.start(gateway_config(broker, [serial_device("boiler", serial_pair)]))
    ready = notify_socket.wait_for("READY", "1")
    assert (ready.get("STATUS") or "").endswith("outbox 0")
    up = f"2/2 links up, mqtt {broker.host}:{broker.port}, outbox 0"
    notify_socket.wait_for("STATUS", up)
    send_until_seen(serial_pair, subscriber, "gateway", "boiler")

    steady = pings(notify_socket.collect(1.5))
    assert len(steady) >= 4  # every WatchdogSec/4
    assert max(b - a for a, b in itertools.pairwise(steady)) < WATCHDOG_SEC / 2

    daemon.signal(signal.SIGHUP)
    reloading = notify_socket.wait_for("RELOADING", "1")
    assert reloading.get("STATUS") == "reloading the config"
    after = notify_socket.wait_for("READY", "1")
    assert after.get("STATUS") == up

    # A frozen process (as a wedged event loop) sends nothing; systemd would restart it.
    daemon.signal(signal.SIGSTOP)
    wait_until(lambda: process_state(daemon.pid) == "T", 5, "the daemon to stop")
    assert pings(notify_socket.collect(2 * WATCHDOG_SEC)) == []
    daemon.signal(signal.SIGCONT)
    notify_socket.wait_for("WATCHDOG", "1", timeout=2)

    serial_pair.unplug()
    notify_socket.wait_for(
        "STATUS", f"1/2 links up (down: serial:boiler), mqtt {broker.host}:{broker.port}, outbox 0"
    )

    daemon.signal(signal.SIGTERM)
    stopping = notify_socket.wait_for("STOPPING", "1")
    assert stopping.get("STATUS") == "stopping: publishing what is queued"
    assert daemon.wait(timeout=10) == 0


def test_watchdog_timeout_honours_watchdog_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_timeout() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_timeout() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_timeout() is None


def test_notify_without_a_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


# -- in-process: what withholds the pings ------------------------------------------------------

FAST = BackoffPolicy(initial=0.01, maximum=0.05, multiplier=2.0, reset_after=60.0)
STALL = 0.3  # gateway.stall_timeout for these tests
STOP = 0.2  # the supervisor's stop_timeout


class StuckClose:
    """A link whose close (`__aexit__`) does not end until `release` is set, as a driver call
    stuck in the kernel or on D-Bus would. With `fail`, `run()` fails at once (then closes)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.name = "stuck"
        self.open_timeout = 1.0
        self.backoff = FAST
        self.fail = fail
        self.up = asyncio.Event()
        self.release = asyncio.Event()

    async def __aenter__(self) -> Self:
        self.up.set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.release.wait())  # even a second cancellation cannot end it

    async def run(self) -> None:
        if self.fail:
            raise TransientLinkError("device went away", kind="unplugged")
        await asyncio.Event().wait()


async def collect(sock: NotifySocket, seconds: float) -> list[float]:
    """Ping arrival times over the next `seconds`, received in a thread so that a blocked event
    loop cannot hide anything."""
    return pings(await asyncio.to_thread(sock.collect, seconds))


async def test_a_link_stuck_closing_withholds_pings_until_it_moves(
    notify_socket: NotifySocket,
) -> None:
    metrics = Metrics()
    link = StuckClose(fail=True)
    async with (
        Supervisor(metrics, stall_timeout=STALL, stop_timeout=STOP) as sup,
        Watchdog(sup.stalled, metrics, timeout=WATCHDOG_SEC),
    ):
        sup.start(link)
        await link.up.wait()
        await asyncio.sleep(STOP + STALL + 0.1)  # past the close deadline and the grace
        stall = sup.stalled()
        assert stall is not None
        assert stall.kind == "closing"
        assert "link stuck is" in stall.detail
        assert await collect(notify_socket, 0.8) == []
        withheld = metrics.watchdog_withheld.labels("closing")._value.get()
        assert withheld >= 2

        link.release.set()
        assert len(await collect(notify_socket, 0.8)) >= 2
        assert sup.stalled() is None


async def test_a_stop_that_hangs_withholds_pings(notify_socket: NotifySocket) -> None:
    metrics = Metrics()
    link = StuckClose()
    async with (
        Supervisor(metrics, stall_timeout=STALL, stop_timeout=STOP) as sup,
        Watchdog(sup.stalled, metrics, timeout=WATCHDOG_SEC),
        asyncio.TaskGroup() as tg,
    ):
        sup.start(link)
        await link.up.wait()
        assert len(await collect(notify_socket, 0.6)) >= 2  # up forever is fine
        stopping = tg.create_task(sup.stop("stuck"))
        await asyncio.sleep(STOP + STALL + 0.1)
        assert await collect(notify_socket, 0.8) == []
        stall = sup.stalled()
        assert stall is not None
        assert stall.kind == "stopping"
        assert stopping.done()  # stop() gave up at its bound...
        assert stopping.result() is False
        link.release.set()
        async with asyncio.timeout(5):  # ...and the link stops once its close lets go
            while sup.status["stuck"].state != "stopped":  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.01)
        assert sup.stalled() is None
        assert len(await collect(notify_socket, 0.6)) >= 2


async def test_a_wedged_event_loop_sends_no_pings_and_shows_as_lag(
    notify_socket: NotifySocket,
) -> None:
    metrics = Metrics()
    async with (
        Supervisor(metrics, stall_timeout=5.0) as sup,
        Watchdog(sup.stalled, metrics, timeout=WATCHDOG_SEC) as watchdog,
    ):
        collecting = asyncio.ensure_future(asyncio.to_thread(notify_socket.collect, 2.0))
        await asyncio.sleep(0.5)
        wedged_at = time.monotonic()
        time.sleep(1.2)  # the point: a blocking call wedges the loop
        await asyncio.sleep(0.1)  # the pinger runs again and measures how late it is
        assert watchdog.lag >= 1.0
        assert metrics.loop_lag._value.get() >= 1.0
        times = pings(await collecting)
    during = [t for t in times if wedged_at + 0.05 < t < wedged_at + 1.2]
    assert during == []
    assert [t for t in times if t < wedged_at]  # before: pinging
    assert [t for t in times if t > wedged_at + 1.2]  # after: pinging again
