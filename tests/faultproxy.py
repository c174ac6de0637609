"""A tiny TCP fault proxy (a toxiproxy stand-in) on its own thread and event loop, so that tests
written as plain functions can black-hole or reset the path between the daemon and the broker."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class ThreadedFaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, delay: float = 0.0) -> None:
        self.host, self.upstream = upstream_host, upstream_port
        self.blackhole = False  # True: accept connections and swallow bytes both ways
        # Seconds each chunk is held in each direction (a round trip costs 2 x delay), in order:
        # a broker "far away" without tc/netem.
        self.delay = delay
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="faultproxy")
        self._thread.start()
        self._ready.wait(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, 0)
        )
        self.port: int = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.delay > 0:
            await self._delayed_pipe(reader, writer)
            return
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self.blackhole:
                    continue  # silently dropped: the sender's TCP sees nothing wrong
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _delayed_pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Each chunk leaves `delay` seconds after it arrived (a queue keeps the order)."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await held.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(release())
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not self.blackhole:
                    held.put_nowait((loop.time() + self.delay, data))
        held.put_nowait((0.0, b""))
        with contextlib.suppress(ConnectionError, OSError):
            await sender
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.blackhole:
            return  # accept, never answer
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def reset_all(self) -> None:
        """Abort every connection (RST), as a NAT timeout or a rebooted router would."""

        def abort() -> None:
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()

        self._loop.call_soon_threadsafe(abort)

    def close(self) -> None:
        """Abort every connection, end every task of the proxy's loop, then stop it."""

        async def shutdown() -> None:
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
