"""The Transport port over gRPC (split mode): one bidirectional stream per Agent (``AgentService.StreamBidi``
of ``protos/echo/v1/agent.proto``), grpclib on the trio-asyncio loop.

The caller runs everything inside one ``trio_asyncio.open_loop()``. gRPC lives on the asyncio side; each
direction crosses into trio once per message through a channel or queue, not per field (STACK.md). The
stream opens with AgentHello (agent id, protocol version, token) and CoreHello; an Agent whose token does
not prove its id (``grpc_guard.Credentials``) is refused with PERMISSION_DENIED, a second stream for a
connected id with ALREADY_EXISTS, each with one log line naming the peer. Core serves the raw grpclib
streams itself, so every message's size is checked before it is read, the hello has a deadline, control
traffic is shed by rate before it is parsed, an Agent that stops reading is cut off after the write
deadline or a full send queue (``grpc_guard.Limits``), and the reader task each stream starts ends with it.
When a stream ends Core hears AccountOffline for every account that Agent had announced; the Agent
reconnects with backoff (back to the least after a healthy stream) and announces its connected accounts
again, and what it sent meanwhile waits in its queue.

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
from collections import Counter, deque
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import grpclib
import grpclib.const
import grpclib.exceptions
import grpclib.server
import h2.exceptions
import structlog
import trio
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.encoding.proto import ProtoCodec
from grpclib.server import Server
from trio_asyncio import aio_as_trio, trio_as_aio

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.grpc_guard import (
    ACCOUNT_ONLINE,
    FROM_ACCOUNT,
    QUOTES,
    STATE_SNAPSHOT,
    Bucket,
    Credentials,
    Limits,
    Refused,
    clip,
    peek,
    read_frame,
)
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb
from echo.domain import messages as m
from echo.domain.errors import ConfigError
from echo.ports.transport import AgentUnavailable, LinkClosed

log = structlog.get_logger("echo.transport")
Status = grpclib.const.Status
GRPCError = grpclib.GRPCError
StreamTerminatedError = grpclib.exceptions.StreamTerminatedError

STREAM_PROTOCOL_VERSION = 1
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.2, 5.0
"""An Agent's delay before reconnecting: doubled after each failed attempt, back to the least after a
stream that stayed up ``HEALTHY_S``."""
HEALTHY_S = 1.0
FLOOD_COOLDOWN_S = 5.0
"""How long an Agent cut off for flooding is refused."""
MIN_STREAM_PROTOCOL_VERSION = 1
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.2, 5.0
"""An Agent's delay before reconnecting: doubled after each failed attempt, back to the least after a
stream that stayed up ``HEALTHY_S``."""
HEALTHY_S = 1.0
FLOOD_COOLDOWN_S = 5.0
"""How long an Agent cut off for flooding is refused."""
_CLOSED = object()


class _LoggedHandshake(ssl.SSLObject):
    """Core's end of a TLS connection: a handshake that fails (a client that does not trust Core's
    certificate, plaintext on the TLS port, a scanner) is logged once with why; asyncio drops it silently."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            log.warning("grpc_tls_handshake_failed", reason=clip(exc.reason or str(exc), 120))
            raise


def server_tls(cert: str, key: str = "") -> ssl.SSLContext:
    """TLS for Core's listener from PEM files (HTTP/2 by ALPN)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.sslobject_class = _LoggedHandshake
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
    """Protobuf, with a peer's bytes checked before the (pure-Python) parser reads them: an oversized
    message, groups, thousands of unknown fields or bad lengths end that stream (logged), never stall the
    process."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        problem = conv.wire_problem(data, message_type)
        if problem is not None:
            raise conv.ConvertError(f"{message_type.__name__}: {problem}")
        return super().decode(data, message_type)


def _peer(stream: grpclib.server.Stream[Any, Any]) -> str:
    addr = stream.peer.addr()
    return "?" if not addr else f"{addr[0]}:{addr[1]}"


def _often(n: int) -> bool:
    """The 1st, 2nd, 4th, 8th... of a repeated event: a flood costs a few log lines, not one each."""
    return n & (n - 1) == 0


def _lost(stream: grpclib.server.Stream[Any, Any]) -> bool:
    """grpclib cancelled this call because its connection was lost (``grpclib.utils.Wrapper``)."""
    wrapper = getattr(stream._stream, "wrapper", None)
    return wrapper is not None and getattr(wrapper, "_error", None) is not None


async def _ended_as_grpclib_expects(stream: grpclib.server.Stream[Any, Any], call: Awaitable[None]) -> None:
    """Run a handler. A call whose connection was lost must end in CancelledError whatever the handler was
    doing (grpclib logs a traceback, "Failed to handle cancellation", otherwise); a stream the peer reset
    ends quietly."""
    try:
        await call
    except (StreamTerminatedError, ConnectionError, h2.exceptions.StreamClosedError):
        if not _lost(stream):
            return
        raise asyncio.CancelledError from None
    if _lost(stream):
        raise asyncio.CancelledError


class _Conn:
    """One Agent's accepted stream at Core: what waits to be written to it, the accounts it announced and
    the buckets its control traffic is shed by."""

    def __init__(self, agent_id: str, peer: str, transport: Any, limits: Limits, now: float) -> None:
        self.agent_id, self.peer, self.transport = agent_id, peer, transport
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.accounts: set[str] = set()
        self.control = Bucket(limits.control_per_s, 2 * limits.control_per_s, now)
        self.reports = Bucket(limits.reports_per_s, 10 * limits.reports_per_s, now)
        self.shed = 0
        self.window_at, self.window_shed = now, 0
        """The second being counted for flooding, and what was shed in it."""
        self.ended = ""
        """Why the stream is ending ("" while it runs)."""
        self.refusal: Refused | None = None
        self.stalled = self.flooding = False

    @property
    def alive(self) -> bool:
        return not self.ended and not self.transport.is_closing()

    def end(self, reason: str) -> None:
        """Stop the stream: what waits for it is dropped, the writer ends."""
        if self.ended:
            return
        self.ended = reason
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait(_CLOSED)


class _Service:
    """StreamBidi and Ping of ``AgentService``, served on grpclib's raw streams so every message's size is
    checked before it is read and every refusal is answered and logged here (never a traceback)."""

    def __init__(self, hub: GrpcCoreHub) -> None:
        self.hub = hub
        self.codec = _CheckedCodec()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            "/echo.v1.AgentService/StreamBidi": grpclib.const.Handler(
                self.stream_bidi, grpclib.const.Cardinality.STREAM_STREAM, pb.AgentMessage, pb.CoreMessage
            ),
            "/echo.v1.AgentService/Ping": grpclib.const.Handler(
                self.ping, grpclib.const.Cardinality.UNARY_UNARY, pb.PingRequest, pb.PingResponse
            ),
        }

    def _refused(self, peer: str, agent_id: str, refusal: Refused, *, rpc: str = "StreamBidi") -> GRPCError:
        """Log a refusal (once, with the peer and the reason) and the error to end the call with."""
        self.hub.stats["refused"] += 1
        log.warning("grpc_agent_refused", peer=peer, agent_id=clip(agent_id), rpc=rpc, reason=refusal.reason)
        return GRPCError(refusal.status, refusal.reason)

    async def ping(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await _ended_as_grpclib_expects(stream, self._ping(stream))

    async def stream_bidi(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await _ended_as_grpclib_expects(stream, self._stream_bidi(stream))

    async def _ping(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        hub = self.hub
        if not hub.pings.take(asyncio.get_running_loop().time()):
            hub.stats["pings_refused"] += 1
            if _often(hub.stats["pings_refused"]):
                log.warning(
                    "grpc_ping_refused",
                    peer=_peer(stream),
                    reason="over the Ping rate",
                    refused=hub.stats["pings_refused"],
                )
            raise GRPCError(Status.RESOURCE_EXHAUSTED, "too many Pings")
        try:
            raw = await asyncio.wait_for(
                read_frame(stream._stream, 1024), hub.limits.hello_timeout_s
            )  # grpclib's HTTP/2 stream: the size is checked before the message is read
            if raw is None:
                raise Refused(Status.INVALID_ARGUMENT, "Ping without a request")
            self.codec.decode(raw, pb.PingRequest)
        except TimeoutError:
            raise self._refused(
                _peer(stream), "", Refused(Status.DEADLINE_EXCEEDED, "no Ping request in time"), rpc="Ping"
            ) from None
        except Refused as refusal:
            raise self._refused(_peer(stream), "", refusal, rpc="Ping") from None
        except conv.ConvertError as exc:
            raise self._refused(
                _peer(stream), "", Refused(Status.INVALID_ARGUMENT, clip(str(exc), 200)), rpc="Ping"
            ) from None
        await stream.send_message(
            pb.PingResponse(core_version=hub.core_version, protocol_version=STREAM_PROTOCOL_VERSION)
        )

    async def _hello(self, stream: grpclib.server.Stream[Any, Any], peer: str) -> pb.AgentHello | None:
        """The stream's AgentHello, within the hello deadline and size; None when the peer closed first."""
        limits = self.hub.limits
        try:
            raw = await asyncio.wait_for(
                read_frame(stream._stream, limits.max_hello_bytes), limits.hello_timeout_s
            )
        except TimeoutError:
            raise self._refused(
                peer, "", Refused(Status.DEADLINE_EXCEEDED, f"no hello within {limits.hello_timeout_s:g} s")
            ) from None
        except Refused as refusal:
            raise self._refused(peer, "", refusal) from None
        except (StreamTerminatedError, ConnectionError, h2.exceptions.StreamClosedError):
            raw = None
        if raw is None:
            self.hub.stats["refused"] += 1
            log.warning(
                "grpc_agent_refused", peer=peer, agent_id="", reason="stream closed before any message"
            )
            return None
        try:
            first = self.codec.decode(raw, pb.AgentMessage)
        except Exception as exc:  # bytes that do not decode
            raise self._refused(peer, "", Refused(Status.INVALID_ARGUMENT, clip(str(exc), 200))) from None
        hello: pb.AgentHello = first.hello
        if first.WhichOneof("payload") != "hello" or not hello.agent_id:
            raise self._refused(
                peer, "", Refused(Status.INVALID_ARGUMENT, "the stream starts with AgentHello")
            )
        return hello

    def _admit(self, stream: grpclib.server.Stream[Any, Any], hello: pb.AgentHello, peer: str) -> None:
        """Raise the refusal of a hello that does not prove its Agent or cannot be served."""
        hub, agent_id = self.hub, hello.agent_id
        if len(agent_id) > hub.limits.max_agent_id or not agent_id.isprintable():
            raise self._refused(
                peer,
                agent_id,
                Refused(
                    Status.INVALID_ARGUMENT,
                    f"agent id longer than {hub.limits.max_agent_id} characters or not printable",
                ),
            )
        why = hub.credentials.check(agent_id, hello.token)
        if why is not None:
            raise self._refused(peer, agent_id, Refused(Status.PERMISSION_DENIED, why))
        if hello.protocol_version < MIN_STREAM_PROTOCOL_VERSION:
            raise self._refused(
                peer,
                agent_id,
                Refused(
                    Status.FAILED_PRECONDITION,
                    f"stream protocol version {hello.protocol_version} is not supported "
                    f"({MIN_STREAM_PROTOCOL_VERSION}..{STREAM_PROTOCOL_VERSION})",
                ),
            )
        until = hub.cooldown.get(agent_id, 0.0)
        if until > (now := asyncio.get_running_loop().time()):
            hub.stats["cooldown_refused"] += 1
            if _often(hub.stats["cooldown_refused"]):
                log.warning(
                    "grpc_agent_refused", peer=peer, agent_id=clip(agent_id), rpc="StreamBidi",
                    reason="cut off for flooding", back_in_s=round(until - now, 1),
                    refused=hub.stats["cooldown_refused"],
                )  # fmt: skip
            stream._stream._transport.abort()  # what it already sent is never parsed
            raise GRPCError(Status.RESOURCE_EXHAUSTED, "cut off for flooding: reconnect later")
        live = hub.outboxes.get(agent_id)
        if live is not None and live.alive:
            raise self._refused(
                peer,
                agent_id,
                Refused(Status.ALREADY_EXISTS, f"agent {agent_id} is connected (from {live.peer})"),
            )

    async def _stream_bidi(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        hub, limits = self.hub, self.hub.limits
        peer = _peer(stream)
        hello = await self._hello(stream, peer)
        if hello is None:
            return
        self._admit(stream, hello, peer)
        agent_id = hello.agent_id
        version = min(hello.protocol_version, STREAM_PROTOCOL_VERSION)
        compat = not hello.supports_lossless_delivery
        if compat:
            hub.stats["compat_mode"] += 1
            log.warning(
                "grpc_agent_compat_mode",
                agent_id=agent_id,
                reason="no lossless delivery: Core re-sends on its own timers only",
            )
        if version != hello.protocol_version:
            hub.stats["downgraded"] += 1
        loop = asyncio.get_running_loop()
        conn = _Conn(agent_id, peer, stream._stream._transport, limits, loop.time())
        previous = hub.outboxes.get(agent_id)
        if previous is not None:
            previous.end("replaced by a newer stream (the old one was dead)")
        hub.outboxes[agent_id] = conn
        log.info(
            "grpc_agent_connected",
            agent_id=agent_id,
            peer=peer,
            protocol_version=version,
            agent_protocol_version=hello.protocol_version,
            agent_version=clip(hello.agent_version),
            compat_mode=compat,
        )
        reader = loop.create_task(self._read(conn, stream))
        try:
            beat = None if hub.delivery is None else conv.core_message(hub.delivery).delivery_heartbeat
            item: Any = pb.CoreMessage(
                hello=pb.CoreHello(
                    protocol_version=version,
                    compat_mode=compat,
                    core_version=hub.core_version,
                    delivery=None if beat is None else beat.config,
                )
            )
            while item is not _CLOSED:
                await asyncio.wait_for(stream.send_message(item), limits.write_timeout_s)
                item = await conn.outbox.get()
        except TimeoutError:
            conn.stalled = True
            conn.end(f"no write for {limits.write_timeout_s:g} s: the Agent stopped reading")
        except (StreamTerminatedError, ConnectionError, h2.exceptions.StreamClosedError):
            conn.end("the stream broke")
        finally:
            # the reader is this stream's task: it ends here, never left pending
            reader.cancel()
            await asyncio.wait([reader])
            if conn.stalled or conn.flooding:
                # the connection goes: what is buffered for a peer that stopped reading is let go, and
                # what a flooding peer has in flight is never parsed
                conn.transport.abort()
            if hub.outboxes.get(agent_id) is conn:
                del hub.outboxes[agent_id]
            level = log.warning if conn.stalled or conn.refusal else log.info
            level(
                "grpc_agent_disconnected", agent_id=agent_id, peer=peer, accounts=len(conn.accounts),
                reason=conn.ended or "the stream ended",
            )  # fmt: skip
            now = time.time_ns() // 1_000_000
            for account in sorted(conn.accounts):
                await hub.deliver(agent_id, m.AccountOffline(agent_id, account, now))
        if conn.refusal is not None:
            raise GRPCError(conn.refusal.status, conn.refusal.reason)

    def _shed(self, conn: _Conn, reason: str, now: float) -> None:
        """Drop one message (logged with the 1st, 2nd, 4th... of them); a stream that keeps sending many
        times what it may is ended: reading and dropping its messages would still cost Core its CPU."""
        conn.shed += 1
        self.hub.stats["shed"] += 1
        if _often(conn.shed):
            log.warning(
                "grpc_agent_shed", agent_id=conn.agent_id, peer=conn.peer, reason=reason, shed=conn.shed
            )
        if now - conn.window_at >= 1.0:
            conn.window_at, conn.window_shed = now, 0
        conn.window_shed += 1
        if conn.window_shed > self.hub.flood_per_s:
            self.hub.stats["flooding"] += 1
            conn.flooding = True
            self.hub.cooldown[conn.agent_id] = now + FLOOD_COOLDOWN_S
            raise Refused(
                Status.RESOURCE_EXHAUSTED, f"flooding: over {self.hub.flood_per_s} messages shed in 1 s"
            )

    async def _read(self, conn: _Conn, stream: grpclib.server.Stream[Any, Any]) -> None:
        hub, agent_id, limit = self.hub, conn.agent_id, self.hub.limits.max_message_bytes
        loop = asyncio.get_running_loop()
        try:
            while True:
                raw = await read_frame(stream._stream, limit)
                if raw is None:
                    break
                # told from the bytes, before the parser runs: a flood costs little
                payload, kind, account = peek(raw)
                if payload == FROM_ACCOUNT:
                    if account and account not in conn.accounts:
                        self._shed(conn, "a message for an account this stream did not announce", loop.time())
                        continue
                    if kind in (QUOTES, STATE_SNAPSHOT) and not conn.control.take(now := loop.time()):
                        self._shed(conn, "quotes and snapshots over the rate", now)
                        continue
                elif payload == ACCOUNT_ONLINE and not conn.reports.take(now := loop.time()):
                    self._shed(conn, "account announcements over the rate", now)
                    continue
                try:
                    message = self.codec.decode(raw, pb.AgentMessage)
                except Exception as exc:  # bytes that do not decode: this stream ends, the Agent reconnects
                    log.warning(
                        "grpc_bad_agent_stream",
                        agent_id=agent_id,
                        peer=conn.peer,
                        error=clip(f"{type(exc).__name__}: {exc}", 200),
                    )
                    conn.refusal = Refused(Status.INVALID_ARGUMENT, "a message that does not decode")
                    break
                try:
                    msg = conv.agent_message_from_pb(message, agent_id)
                except conv.ConvertError as exc:
                    log.warning("grpc_bad_agent_message", agent_id=agent_id, error=clip(str(exc), 200))
                    continue
                if isinstance(msg, m.AccountOnline):
                    conn.accounts.add(msg.handshake.account_id)
                elif isinstance(msg, m.AccountOffline):
                    conn.accounts.discard(msg.account_id)
                await hub.deliver(agent_id, msg)
        except Refused as refusal:
            conn.refusal = refusal
            log.warning("grpc_bad_agent_stream", agent_id=agent_id, peer=conn.peer, error=refusal.reason)
        except (GRPCError, StreamTerminatedError, ConnectionError, h2.exceptions.StreamClosedError):
            pass  # the stream ended; the writer logs the disconnect
        finally:
            conn.end(conn.refusal.reason if conn.refusal is not None else "the Agent ended the stream")


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
        self._server: Server | None = None

    async def deliver(self, agent_id: str, msg: m.AgentToCore) -> None:
        """From the asyncio side: hand a message to Core (waits when Core's inbox is full)."""
        await _to_trio(self._inbox_send, (agent_id, msg))

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
        self._connected_at = trio.current_time()
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
