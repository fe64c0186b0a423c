"""Core's gRPC service (split mode): ``AgentService.StreamBidi`` and ``Ping`` served on grpclib's raw
streams, so every message's size is checked before it is read, the hello has a deadline and proves its
Agent, control traffic is shed by rate before it is parsed, and each stream's reader task ends with it
(``echo.adapters.transport.grpc`` describes the whole transport)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import grpclib
import grpclib.const
import grpclib.exceptions
import grpclib.server
import h2.exceptions

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.grpc import (
    _CLOSED,
    FLOOD_COOLDOWN_S,
    MIN_STREAM_PROTOCOL_VERSION,
    STREAM_PROTOCOL_VERSION,
    GRPCError,
    Status,
    StreamTerminatedError,
    _CheckedCodec,
    log,
    send_many,
    take_batch,
)
from echo.adapters.transport.grpc_guard import (
    ACCOUNT_ONLINE,
    FROM_ACCOUNT,
    QUOTES,
    STATE_SNAPSHOT,
    Bucket,
    Limits,
    Refused,
    clip,
    peek,
    read_frame,
)
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb
from echo.domain import messages as m
from echo.services import instruments

if TYPE_CHECKING:
    from echo.adapters.transport.grpc_hub import GrpcCoreHub


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
        self.queued_at: deque[float] = deque()
        """When each message waiting in ``outbox`` was queued (trio's clock), oldest first."""
        self.writing_since: float | None = None
        """When the oldest message of the write under way was queued (None: no write under way)."""
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

    def oldest(self, now: float) -> float:
        """When the oldest message not yet written to this stream was queued (``now`` when none waits)."""
        oldest = now if self.writing_since is None else self.writing_since
        return min(oldest, self.queued_at[0]) if self.queued_at else oldest

    def taken(self, n: int) -> None:
        """The writer took ``n`` messages from the outbox: they are being written."""
        queued_at = self.queued_at
        self.writing_since = queued_at[0] if queued_at else None
        for _ in range(min(n, len(queued_at))):
            queued_at.popleft()

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
        self.queued_at.clear()
        self.writing_since = None
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
            instruments.COMPAT_MODE.add(1)
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
            await asyncio.wait_for(stream.send_message(item), limits.write_timeout_s)
            while True:
                # whatever queued meanwhile goes out in one write: a fan-out or a burst of answers costs a
                # few writes and task switches, not one of each per message
                batch = take_batch(conn.outbox, await conn.outbox.get())
                if any(item is _CLOSED for item in batch):  # the stream is ending
                    break
                conn.taken(len(batch))
                await asyncio.wait_for(send_many(stream, batch), limits.write_timeout_s)
                conn.writing_since = None
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
        instruments.SHED.add(1, {"reason": reason})
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
