"""EA connections over in-memory streams: a real pipe listener for single-process runs on a virtual clock."""

from __future__ import annotations

import trio
import trio.testing

from echo.ports.pipe import ConnectionHandler


class MemoryPipeListener:
    def __init__(self) -> None:
        self.description = "memory"
        self._send, self._recv = trio.open_memory_channel[trio.abc.Stream](64)

    async def connect(self) -> trio.abc.Stream:
        """Open a new connection to the listening agent; returns the terminal's end."""
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def serve(
        self, handler: ConnectionHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for stream in self._recv:
                nursery.start_soon(handler, stream)
