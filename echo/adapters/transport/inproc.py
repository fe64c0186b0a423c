"""In-process transport: trio memory channels between Core and its Agents (the all-in-one mode).

A real implementation of the Transport port, not a test double: the all-in-one copier runs on it.
Each Agent gets its own bounded channel from Core; all Agents share Core's bounded inbox, so a slow
Core applies backpressure to every Agent instead of buffering without limit.
"""

from __future__ import annotations

import trio

from echo.domain.messages import AgentToCore, CoreToAgent
from echo.ports.transport import AgentUnavailable, LinkClosed


class _AgentLink:
    def __init__(
        self,
        transport: InProcTransport,
        agent_id: str,
        to_core: trio.MemorySendChannel[tuple[str, AgentToCore]],
        from_core: trio.MemoryReceiveChannel[CoreToAgent],
    ) -> None:
        self._transport = transport
        self._agent_id = agent_id
        self._to_core = to_core
        self._from_core = from_core

    async def send(self, msg: AgentToCore) -> None:
        try:
            # No scheduler turn while there is room: what one read of a terminal brought reaches Core as one
            # burst (one group for its router), and the Agent goes on with the read without a task switch.
            self._to_core.send_nowait((self._agent_id, msg))
        except trio.WouldBlock:
            try:
                await self._to_core.send((self._agent_id, msg))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise LinkClosed("core is gone") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LinkClosed("core is gone") from exc

    async def receive(self) -> CoreToAgent:
        try:
            return await self._from_core.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise LinkClosed("core closed the link") from exc

    async def receive_many(self, limit: int) -> list[CoreToAgent]:
        batch = [await self.receive()]
        while len(batch) < limit:
            try:
                batch.append(self._from_core.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        return batch

    async def aclose(self) -> None:
        self._transport._drop(self._agent_id, self._from_core)
        await self._to_core.aclose()
        await self._from_core.aclose()


class _Hub:
    def __init__(self, transport: InProcTransport) -> None:
        self._t = transport

    async def receive(self) -> tuple[str, AgentToCore]:
        return await self._t._inbox_recv.receive()

    async def receive_many(self, limit: int) -> list[tuple[str, AgentToCore]]:
        inbox = self._t._inbox_recv
        batch = [await inbox.receive()]
        while len(batch) < limit:
            try:
                batch.append(inbox.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    async def send(self, agent_id: str, msg: CoreToAgent) -> None:
        chan = self._t._outboxes.get(agent_id)
        if chan is None:
            raise AgentUnavailable(f"agent {agent_id!r} is not connected")
        try:
            # No scheduler turn while there is room: a fan-out's commands reach the Agent as one burst.
            chan.send_nowait(msg)
        except trio.WouldBlock:
            try:
                await chan.send(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise AgentUnavailable(f"agent {agent_id!r} went away") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise AgentUnavailable(f"agent {agent_id!r} went away") from exc


class InProcTransport:
    def __init__(self, buffer: int = 4096) -> None:
        self._buffer = buffer
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[str, AgentToCore]](buffer)
        self._outboxes: dict[str, trio.MemorySendChannel[CoreToAgent]] = {}
        self._receivers: dict[str, trio.MemoryReceiveChannel[CoreToAgent]] = {}

    def hub(self) -> _Hub:
        return _Hub(self)

    async def connect(self, agent_id: str) -> _AgentLink:
        old = self._outboxes.pop(agent_id, None)
        if old is not None:
            await old.aclose()
        send, recv = trio.open_memory_channel[CoreToAgent](self._buffer)
        self._outboxes[agent_id] = send
        self._receivers[agent_id] = recv
        return _AgentLink(self, agent_id, self._inbox_send.clone(), recv)

    def _drop(self, agent_id: str, recv: trio.MemoryReceiveChannel[CoreToAgent]) -> None:
        if self._receivers.get(agent_id) is recv:
            del self._receivers[agent_id]
            self._outboxes.pop(agent_id, None)
