"""The Transport port over gRPC (split mode): one bidirectional stream per Agent (``AgentService.StreamBidi``
of ``protos/echo/v1/agent.proto``), grpclib on the trio-asyncio loop.

The caller runs everything inside one ``trio_asyncio.open_loop()``. gRPC lives on the asyncio side; each
direction crosses into trio once per message through a channel or queue, not per field (STACK.md). The
stream opens with AgentHello (agent id, protocol version, token) and CoreHello; an Agent whose token does
not match is refused with PERMISSION_DENIED and a log line. When a stream ends Core hears AccountOffline for
every account that Agent had announced; the Agent reconnects with backoff and announces its connected
accounts again, and what it sent meanwhile waits in its queue.

Negotiation: the stream runs the lower of both sides' protocol versions (an Agent below
``MIN_STREAM_PROTOCOL_VERSION`` is refused with FAILED_PRECONDITION); an Agent without lossless delivery
runs in compat mode (Core re-sends on its own timers only), logged and counted. CoreHello carries Core's
delivery settings, which the Agent applies at once. Both sides send HTTP/2 keepalive pings every
``heartbeat_interval_ms`` and drop a connection whose ping goes unanswered for twice that (at least 1 s),
so a peer that vanished without closing its socket is noticed. TLS is optional (``ssl.SSLContext``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpclib
import grpclib.const
import grpclib.exceptions
import structlog
import trio
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.encoding.proto import ProtoCodec
from grpclib.server import Server
from trio_asyncio import aio_as_trio, trio_as_aio

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.pb.echo.v1 import agent_grpc
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb
from echo.domain import messages as m
from echo.domain.errors import ConfigError
from echo.ports.transport import AgentUnavailable, LinkClosed

log = structlog.get_logger("echo.transport")

STREAM_PROTOCOL_VERSION = 1
MIN_STREAM_PROTOCOL_VERSION = 1
_CLOSED = object()


def server_tls(cert: str, key: str = "") -> ssl.SSLContext:
    """TLS for Core's listener from PEM files (HTTP/2 by ALPN)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key or None)
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(f"split.tls_cert / split.tls_key ({cert}, {key or 'in the cert'}): {exc}") from exc
    ctx.set_alpn_protocols(["h2"])
    return ctx


def client_tls(ca: str) -> ssl.SSLContext:
    """TLS for an Agent: Core's certificate must verify against ``ca`` and match the host it dials."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except OSError as exc:
        raise ConfigError(f"split.tls_ca ({ca}): {exc}") from exc
    ctx.set_alpn_protocols(["h2"])
    return ctx


def keepalive(heartbeat_interval_ms: int) -> Configuration:
    """HTTP/2 keepalive at the delivery heartbeat: a ping every interval, the connection dropped when one
    goes unanswered for twice that (at least 1 s). Pings are never throttled below the interval on
    either side, so the server accepts what the client sends."""
    every = heartbeat_interval_ms / 1000.0
    return Configuration(
        _keepalive_time=every,
        _keepalive_timeout=max(2 * every, 1.0),
        _keepalive_permit_without_calls=True,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=every,
    )


class _CheckedCodec(ProtoCodec):
    """Protobuf, with a peer's bytes checked before the parser reads them: an oversized message, groups,
    thousands of unknown fields or bad lengths end that stream (logged)."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        problem = conv.wire_problem(data, message_type)
        if problem is not None:
            raise conv.ConvertError(f"{message_type.__name__}: {problem}")
        return super().decode(data, message_type)


class _Service(agent_grpc.AgentServiceBase):
    def __init__(self, hub: GrpcCoreHub) -> None:
        self.hub = hub

    async def Ping(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(
            pb.PingResponse(core_version=self.hub.core_version, protocol_version=STREAM_PROTOCOL_VERSION)
        )

    async def StreamBidi(self, stream: Any) -> None:
        async for message in self.stream_bidi(stream):
            await stream.send_message(message)

    async def stream_bidi(self, messages: AsyncIterator[pb.AgentMessage]) -> AsyncIterator[pb.CoreMessage]:
        first = await messages.__anext__()
        hello = first.hello
        if first.WhichOneof("payload") != "hello" or not hello.agent_id:
            raise grpclib.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT, "the stream starts with AgentHello"
            )
        if self.hub.token and hello.token != self.hub.token:
            log.warning("grpc_agent_refused", agent_id=hello.agent_id, reason="bad token")
            raise grpclib.GRPCError(grpclib.const.Status.PERMISSION_DENIED, "invalid agent token")
        if hello.protocol_version < MIN_STREAM_PROTOCOL_VERSION:
            log.warning(
                "grpc_agent_refused",
                agent_id=hello.agent_id,
                reason="protocol version",
                protocol_version=hello.protocol_version,
            )
            raise grpclib.GRPCError(
                grpclib.const.Status.FAILED_PRECONDITION,
                f"stream protocol version {hello.protocol_version} is not supported "
                f"({MIN_STREAM_PROTOCOL_VERSION}..{STREAM_PROTOCOL_VERSION})",
            )
        agent_id = hello.agent_id
        version = min(hello.protocol_version, STREAM_PROTOCOL_VERSION)
        compat = not hello.supports_lossless_delivery
        if compat:
            self.hub.stats["compat_mode"] += 1
            log.warning(
                "grpc_agent_compat_mode",
                agent_id=agent_id,
                reason="no lossless delivery: Core re-sends on its own timers only",
            )
        if version != hello.protocol_version:
            self.hub.stats["downgraded"] += 1
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        previous = self.hub.outboxes.get(agent_id)
        if previous is not None:
            previous.put_nowait(_CLOSED)  # a newer stream for the same Agent replaces the old one
        self.hub.outboxes[agent_id] = outbox
        accounts: set[str] = set()
        log.info(
            "grpc_agent_connected",
            agent_id=agent_id,
            protocol_version=version,
            agent_protocol_version=hello.protocol_version,
            agent_version=hello.agent_version,
            compat_mode=compat,
        )
        reader = asyncio.ensure_future(self._read(agent_id, messages, accounts, outbox))
        try:
            beat = (
                None if self.hub.delivery is None else conv.core_message(self.hub.delivery).delivery_heartbeat
            )
            yield pb.CoreMessage(
                hello=pb.CoreHello(
                    protocol_version=version,
                    compat_mode=compat,
                    core_version=self.hub.core_version,
                    delivery=None if beat is None else beat.config,
                )
            )
            while True:
                item = await outbox.get()
                if item is _CLOSED:
                    return
                yield item
        finally:
            reader.cancel()
            if self.hub.outboxes.get(agent_id) is outbox:
                del self.hub.outboxes[agent_id]
            log.info("grpc_agent_disconnected", agent_id=agent_id, accounts=len(accounts))
            now = time.time_ns() // 1_000_000
            for account in sorted(accounts):
                await self.hub.deliver(agent_id, m.AccountOffline(agent_id, account, now))

    async def _read(
        self,
        agent_id: str,
        messages: AsyncIterator[pb.AgentMessage],
        accounts: set[str],
        outbox: asyncio.Queue[Any],
    ) -> None:
        try:
            async for message in messages:
                try:
                    msg = conv.agent_message_from_pb(message, agent_id)
                except conv.ConvertError as exc:
                    log.warning("grpc_bad_agent_message", agent_id=agent_id, error=str(exc))
                    continue
                if isinstance(msg, m.AccountOnline):
                    accounts.add(msg.handshake.account_id)
                elif isinstance(msg, m.AccountOffline):
                    accounts.discard(msg.account_id)
                await self.hub.deliver(agent_id, msg)
        except (grpclib.GRPCError, grpclib.exceptions.StreamTerminatedError, ConnectionError):
            pass  # the stream ended; the caller logs the disconnect
        except Exception as exc:  # bytes that do not decode: this stream ends, the Agent reconnects
            log.warning("grpc_bad_agent_stream", agent_id=agent_id, error=f"{type(exc).__name__}: {exc}")
        finally:
            outbox.put_nowait(_CLOSED)


T = TypeVar("T")


async def _to_trio(channel: trio.MemorySendChannel[T], item: T) -> None:
    """From asyncio code on the trio-asyncio loop (which runs inside trio's thread) into a trio channel:
    without a task switch when there is room, which keeps a busy stream from paying one per message."""
    try:
        channel.send_nowait(item)
    except trio.WouldBlock:
        await trio_as_aio(channel.send)(item)


class GrpcCoreHub:
    """Core's end: a gRPC server every Agent streams to. Implements the CoreHub port."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str = "",
        core_version: str = "",
        heartbeat_interval_ms: int = 2000,
        delivery: m.DeliveryHeartbeat | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.token, self.core_version = host, port, token, core_version
        self.heartbeat_interval_ms, self.tls = heartbeat_interval_ms, tls
        self.delivery = delivery
        """Core's delivery settings, sent in every CoreHello (the latest one Core broadcast)."""
        self.stats: Counter[str] = Counter()
        self.outboxes: dict[str, asyncio.Queue[Any]] = {}
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[str, m.AgentToCore]](4096)
        self._server: Server | None = None

    async def deliver(self, agent_id: str, msg: m.AgentToCore) -> None:
        """From the asyncio side: hand a message to Core (waits when Core's inbox is full)."""
        await _to_trio(self._inbox_send, (agent_id, msg))

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        server = Server([_Service(self)], codec=_CheckedCodec(), config=keepalive(self.heartbeat_interval_ms))
        await aio_as_trio(server.start)(self.host, self.port, ssl=self.tls)
        self._server = server
        log.info("grpc_core_listening", host=self.host, port=self.port, tls=self.tls is not None)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            server.close()
            with trio.CancelScope(shield=True):
                await aio_as_trio(server.wait_closed)()

    async def receive(self) -> tuple[str, m.AgentToCore]:
        return await self._inbox_recv.receive()

    async def receive_many(self, limit: int) -> list[tuple[str, m.AgentToCore]]:
        batch = [await self._inbox_recv.receive()]
        while len(batch) < limit:
            try:
                batch.append(self._inbox_recv.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    def disconnect(self, agent_id: str) -> bool:
        """End an Agent's stream (it reconnects by itself); False when it is not connected."""
        outbox = self.outboxes.get(agent_id)
        if outbox is None:
            return False
        outbox.put_nowait(_CLOSED)
        return True

    async def send(self, agent_id: str, msg: m.CoreToAgent) -> None:
        if isinstance(msg, m.DeliveryHeartbeat):
            self.delivery = msg  # what the next Agent to connect is told in its hello
        outbox = self.outboxes.get(agent_id)
        if outbox is None:
            raise AgentUnavailable(f"agent {agent_id!r} is not connected")
        outbox.put_nowait(conv.core_message(msg))


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
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[m.CoreToAgent](4096)
        self.connected = trio.Event()
        self.failed = trio.Event()
        """Set when a stream attempt failed (``last_error`` says why)."""
        self.last_error = ""
        self.reconnects = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a stream to Core open until cancelled (``connected`` is set while one is up)."""
        task_status.started()
        backoff = 0.2
        while True:
            try:
                await aio_as_trio(self._stream)()
            except Exception as exc:  # the stream broke or Core refused it
                log.warning("grpc_link_down", agent_id=self.agent_id, error=str(exc), retry_s=backoff)
                self.last_error = str(exc)
                self.failed.set()
            self.connected = trio.Event()
            self.reconnects += 1
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _stream(self) -> None:
        channel = Channel(
            self.host,
            self.port,
            ssl=self.tls,
            config=keepalive(self.heartbeat_interval_ms),
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
        self.connected.set()

    async def _send_loop(self, stream: Any) -> None:
        while True:
            item = await self._outbox.get()
            try:
                await stream.send_message(item)
            except Exception:
                self._outbox.put_nowait(item)  # the stream broke: it goes out on the next one
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
