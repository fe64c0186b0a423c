"""Core's end of split mode: the gRPC server every Agent streams to, and the CoreHub port over it (each
Agent's send queue, its announced accounts, AccountOffline when its stream ends)."""

from __future__ import annotations

import ssl
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import replace

import trio
from grpclib.server import Server
from trio_asyncio import aio_as_trio

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.grpc import (
    _CheckedCodec,
    _to_trio,
    keepalive,
    log,
)
from echo.adapters.transport.grpc_guard import (
    Bucket,
    Credentials,
    Limits,
)
from echo.adapters.transport.grpc_service import _Conn, _Service
from echo.domain import messages as m
from echo.ports.transport import AgentUnavailable


class GrpcCoreHub:
    """Core's end: a gRPC server every Agent streams to. Implements the CoreHub port."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str = "",
        agent_tokens: Mapping[str, str] | None = None,
        core_version: str = "",
        heartbeat_interval_ms: int = 2000,
        delivery: m.DeliveryHeartbeat | None = None,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.host, self.port, self.core_version = host, port, core_version
        self.credentials = Credentials(token, agent_tokens)
        self.heartbeat_interval_ms, self.tls = heartbeat_interval_ms, tls
        self.limits = limits or Limits()
        self.delivery = delivery
        """Core's delivery settings, sent in every CoreHello (the latest one Core broadcast)."""
        self.stats: Counter[str] = Counter()
        self.outboxes: dict[str, _Conn] = {}
        """agent_id -> its live stream."""
        self.pings = Bucket(self.limits.pings_per_s, 2 * self.limits.pings_per_s, 0.0)
        self.cooldown: dict[str, float] = {}
        """agent_id -> until when (the loop clock) its new streams are refused: cut off for flooding."""
        self.flood_per_s = int(4 * max(self.limits.control_per_s, self.limits.reports_per_s))
        """Messages shed in one second past which a stream is ended as flooding."""
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[str, m.AgentToCore]](4096)
        self._inbox_at: deque[float] = deque()
        """When each message in Core's inbox (or waiting for room in it) arrived, oldest first."""
        self._server: Server | None = None

    async def deliver(self, agent_id: str, msg: m.AgentToCore) -> None:
        """From the asyncio side: hand a message to Core (waits when Core's inbox is full)."""
        self._inbox_at.append(trio.current_time())
        await _to_trio(self._inbox_send, (agent_id, msg))

    def _taken(self, n: int) -> None:
        inbox_at = self._inbox_at
        for _ in range(min(n, len(inbox_at))):
            inbox_at.popleft()

    def behind_s(self, agent_id: str | None = None) -> float:
        """How long the oldest message this hub holds has waited (0.0: none waits): an answer that arrived
        and that Core has not taken from its inbox yet, or a message to ``agent_id``'s stream (to any
        Agent's when None) not written yet. Core is that far behind what it must read or send."""
        now = trio.current_time()
        oldest = self._inbox_at[0] if self._inbox_at else now
        conns = self.outboxes.values() if agent_id is None else filter(None, [self.outboxes.get(agent_id)])
        for conn in conns:
            oldest = min(oldest, conn.oldest(now))
        return now - oldest

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        config = replace(
            keepalive(self.heartbeat_interval_ms),
            http2_stream_window_size=256 << 10,  # what one stream may have in flight before Core reads it
        )
        server = Server([_Service(self)], codec=_CheckedCodec(), config=config)
        await aio_as_trio(server.start)(self.host, self.port, ssl=self.tls)
        self._server = server
        log.info("grpc_core_listening", host=self.host, port=self.port, tls=self.tls is not None)
        if self.credentials.shared and self.credentials.per_agent:
            log.warning(
                "grpc_shared_token_in_use",
                reason="split.token admits any Agent not in split.agent_tokens under any id it names",
            )
        elif self.credentials.shared:
            log.warning(
                "grpc_shared_token_in_use",
                reason="every Agent holds split.token and can present itself as any other: "
                "give each its own in split.agent_tokens",
            )
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            server.close()
            with trio.CancelScope(shield=True):
                await aio_as_trio(server.wait_closed)()

    async def receive(self) -> tuple[str, m.AgentToCore]:
        item = await self._inbox_recv.receive()
        self._taken(1)
        return item

    async def receive_many(self, limit: int) -> list[tuple[str, m.AgentToCore]]:
        batch = [await self._inbox_recv.receive()]
        while len(batch) < limit:
            try:
                batch.append(self._inbox_recv.receive_nowait())
            except trio.WouldBlock:
                break
        self._taken(len(batch))
        return batch

    def disconnect(self, agent_id: str) -> bool:
        """End an Agent's stream (it reconnects by itself); False when it is not connected."""
        conn = self.outboxes.get(agent_id)
        if conn is None:
            return False
        conn.end("disconnected by Core")
        return True

    async def send(self, agent_id: str, msg: m.CoreToAgent) -> None:
        if isinstance(msg, m.DeliveryHeartbeat):
            self.delivery = msg  # what the next Agent to connect is told in its hello
        conn = self.outboxes.get(agent_id)
        if conn is None or conn.ended:
            raise AgentUnavailable(f"agent {agent_id!r} is not connected")
        if conn.outbox.qsize() >= self.limits.send_queue:
            # the Agent stopped reading: its stream is closed (its accounts go offline), not fed forever
            self.stats["stalled"] += 1
            conn.stalled = True
            conn.end(f"{self.limits.send_queue} messages queued: the Agent stopped reading")
            conn.transport.abort()
            raise AgentUnavailable(f"agent {agent_id!r} stopped reading")
        conn.outbox.put_nowait(conv.core_message(msg))
        conn.queued_at.append(trio.current_time())
