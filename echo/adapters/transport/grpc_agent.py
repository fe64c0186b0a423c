"""An Agent's end of split mode: one stream to Core (AgentHello with its token, CoreHello's delivery
settings applied), re-established with backoff that starts over after a healthy stream; the AgentLink
port over it."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import replace
from typing import Any

import grpclib
import grpclib.const
import grpclib.exceptions
import grpclib.server
import trio
from grpclib.client import Channel
from trio_asyncio import aio_as_trio, trio_as_aio

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.grpc import (
    HEALTHY_S,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    STREAM_PROTOCOL_VERSION,
    _CheckedCodec,
    _to_trio,
    keepalive,
    log,
    send_many,
    take_batch,
)
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb
from echo.domain import messages as m
from echo.ports.transport import LinkClosed

INBOX = 256
"""Messages from Core the Agent holds before its reader stops reading the stream (one ``receive_many``)."""
WINDOW_BYTES = 64 << 10
"""What Core may have in flight to this Agent before the Agent reads it (HTTP/2's least window; ~400
commands). Together with ``INBOX`` it bounds what waits in the Agent unseen by Core: past it, Core's own
queue for this Agent grows, and Core counts that as being behind (admission, re-send timers)."""


class GrpcAgentLink:
    """An Agent's end: a stream to Core, re-established with backoff. Implements the AgentLink port."""

    def __init__(
        self,
        host: str,
        port: int,
        agent_id: str,
        *,
        token: str = "",
        heartbeat_interval_ms: int = 2000,
        tls: ssl.SSLContext | None = None,
        lossless: bool = True,
    ) -> None:
        self.host, self.port, self.agent_id, self.token = host, port, agent_id, token
        self.heartbeat_interval_ms, self.tls, self.lossless = heartbeat_interval_ms, tls, lossless
        self.compat_mode = False
        """What Core answered in its hello."""
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._online: dict[str, m.AccountOnline] = {}
        """The accounts this Agent announced, replayed after a reconnect."""
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[m.CoreToAgent](INBOX)
        self.connected = trio.Event()
        self.failed = trio.Event()
        """Set when a stream attempt failed (``last_error`` says why)."""
        self.last_error = ""
        self.reconnects = 0
        self.reconnect_min_s, self.reconnect_max_s, self.healthy_s = (
            RECONNECT_MIN_S,
            RECONNECT_MAX_S,
            HEALTHY_S,
        )
        self.delays: deque[float] = deque(maxlen=64)
        """The last delays before reconnecting (seconds)."""
        self._connected_at = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a stream to Core open until cancelled (``connected`` is set while one is up)."""
        task_status.started()
        backoff = self.reconnect_min_s
        while True:
            try:
                await aio_as_trio(self._stream)()
            except Exception as exc:  # the stream broke or Core refused it
                self.last_error = str(exc)
                self.failed.set()
            if self.connected.is_set() and trio.current_time() - self._connected_at >= self.healthy_s:
                backoff = self.reconnect_min_s  # the stream was healthy: a new outage, not the same one
            log.warning("grpc_link_down", agent_id=self.agent_id, error=self.last_error, retry_s=backoff)
            self.connected = trio.Event()
            self.reconnects += 1
            self.delays.append(backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max_s)

    async def _stream(self) -> None:
        channel = Channel(
            self.host,
            self.port,
            ssl=self.tls,
            config=replace(
                keepalive(self.heartbeat_interval_ms),
                http2_stream_window_size=WINDOW_BYTES,
                http2_connection_window_size=WINDOW_BYTES,
            ),
            codec=_CheckedCodec(),
        )
        try:
            async with channel.request(
                "/echo.v1.AgentService/StreamBidi",
                grpclib.const.Cardinality.STREAM_STREAM,
                pb.AgentMessage,
                pb.CoreMessage,
            ) as stream:
                await stream.send_message(
                    pb.AgentMessage(
                        hello=pb.AgentHello(
                            agent_id=self.agent_id,
                            protocol_version=STREAM_PROTOCOL_VERSION,
                            supports_lossless_delivery=self.lossless,
                            token=self.token,
                            accounts=sorted(self._online),
                        )
                    )
                )
                reply = await stream.recv_message()
                if reply is None or reply.WhichOneof("payload") != "hello":
                    raise ConnectionError("Core did not answer the hello")
                self.compat_mode = reply.hello.compat_mode
                if reply.hello.HasField("delivery"):
                    heartbeat = pb.CoreMessage(
                        delivery_heartbeat=pb.DeliveryHeartbeat(config=reply.hello.delivery)
                    )
                    await _to_trio(self._inbox_send, conv.core_message_from_pb(heartbeat))
                for online in list(self._online.values()):
                    await stream.send_message(conv.agent_message(online))
                await trio_as_aio(self._set_connected)()
                sender = asyncio.ensure_future(self._send_loop(stream))
                try:
                    while True:
                        message = await stream.recv_message()
                        if message is None:
                            raise ConnectionError("Core closed the stream")
                        try:
                            msg = conv.core_message_from_pb(message)
                        except conv.ConvertError as exc:
                            log.warning("grpc_bad_core_message", error=str(exc))
                            continue
                        await _to_trio(self._inbox_send, msg)
                finally:
                    sender.cancel()
        finally:
            channel.close()

    async def _set_connected(self) -> None:
        self._connected_at = trio.current_time()
        self.connected.set()

    async def _send_loop(self, stream: Any) -> None:
        while True:
            # what queued meanwhile (a burst of acks and results) goes out in one write
            batch = take_batch(self._outbox, await self._outbox.get())
            try:
                await send_many(stream, batch)
            except Exception:
                # the stream broke: they go out on the next one, in order, before anything queued since
                rest = [self._outbox.get_nowait() for _ in range(self._outbox.qsize())]
                for item in batch + rest:
                    self._outbox.put_nowait(item)
                raise

    async def send(self, msg: m.AgentToCore) -> None:
        if isinstance(msg, m.AccountOnline):
            self._online[msg.handshake.account_id] = msg
        elif isinstance(msg, m.AccountOffline):
            self._online.pop(msg.account_id, None)
        self._outbox.put_nowait(conv.agent_message(msg))

    async def receive(self) -> m.CoreToAgent:
        try:
            return await self._inbox_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise LinkClosed("the link to Core is closed") from exc

    async def receive_many(self, limit: int) -> list[m.CoreToAgent]:
        batch = [await self.receive()]
        while len(batch) < limit:
            try:
                batch.append(self._inbox_recv.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    async def aclose(self) -> None:
        await self._inbox_send.aclose()
