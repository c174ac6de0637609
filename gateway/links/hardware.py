"""A small thread pool of its own for blocking hardware calls (a serial port's open).

A USB-serial adapter can wedge in open(): the thread doing it is lost until the driver lets go.
On asyncio's default executor such threads pile up and everything else that needs it waits
behind them, name resolution of the broker (`getaddrinfo`) included. Here they wait among
themselves: at most `HARDWARE_WORKERS` opens run at once, further ones queue (each still under its
link's open timeout), and the threads are daemons, so a wedged one never holds up the exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from gateway.limits import HARDWARE_WORKERS

P = ParamSpec("P")
T = TypeVar("T")

_Job = tuple[Future[Any], Callable[[], Any]]


class HardwareExecutor(Executor):
    """Daemon worker threads, started on demand up to `workers`, taking jobs in order."""

    def __init__(self, workers: int = HARDWARE_WORKERS, name: str = "hardware") -> None:
        self._workers = workers
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, lambda: fn(*args, **kwargs)))
        with self._lock:
            if self._idle == 0 and self._threads < self._workers:
                self._threads += 1
                threading.Thread(
                    target=self._work, name=f"{self._name}-{self._threads}", daemon=True
                ).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            future, job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = job()
            except BaseException as exc:  # handed to the awaiting side, like any executor
                future.set_exception(exc)
            else:
                future.set_result(result)


_executor: HardwareExecutor | None = None


def hardware_executor() -> HardwareExecutor:
    """The process's executor for hardware calls (made on first use)."""
    global _executor  # noqa: PLW0603 - one pool per process, like asyncio's default one
    if _executor is None:
        _executor = HardwareExecutor()
    return _executor
