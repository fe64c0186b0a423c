"""The Transport port over gRPC (split mode): one bidirectional stream per Agent (``AgentService.StreamBidi``
of ``protos/echo/v1/agent.proto``), grpclib on the trio-asyncio loop.

The caller runs everything inside one ``trio_asyncio.open_loop()``. gRPC lives on the asyncio side; each
direction crosses into trio once per message through a channel or queue, not per field (STACK.md), and
each side writes whatever queued meanwhile in one HTTP/2 data send (``send_many``). The
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
``heartbeat_interval_ms`` and drop a connection whose ping goes unanswered for five times that (at least
2 s: a busy link answers late, not never), so a peer that vanished without closing its socket is
noticed. TLS is optional (``ssl.SSLContext``).
"""

from __future__ import annotations

import ssl
import time
from typing import Any, TypeVar

import grpclib
import grpclib.const
import grpclib.exceptions
import grpclib.server
import structlog
import trio
from grpclib.config import Configuration
from grpclib.encoding.proto import ProtoCodec
from trio_asyncio import trio_as_aio

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.grpc_guard import (
    clip,
)
from echo.domain.errors import ConfigError

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


KEEPALIVE_MISSES = 5
"""Heartbeats a keepalive ping may go unanswered before the connection is dropped."""
KEEPALIVE_MIN_TIMEOUT_S = 2.0


def keepalive(heartbeat_interval_ms: int) -> Configuration:
    """HTTP/2 keepalive at the delivery heartbeat: a ping every interval, the connection dropped when one
    goes unanswered for ``KEEPALIVE_MISSES`` intervals (at least 2 s). A ping on a busy link waits behind
    the data queued before it and behind a peer working through a burst, so one or two late answers are
    no sign of a dead peer; a frozen or vanished one is still noticed within seconds. Pings are never
    throttled below the interval on either side, so the server accepts what the client sends."""
    every = heartbeat_interval_ms / 1000.0
    return Configuration(
        _keepalive_time=every,
        _keepalive_timeout=max(KEEPALIVE_MISSES * every, KEEPALIVE_MIN_TIMEOUT_S),
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


WRITE_BATCH = 512
"""Messages at most in one stream write (one HTTP/2 DATA send): a burst goes out in a few writes, not one
task switch and one write per message."""


def framed(messages: list[Any]) -> bytes:
    """gRPC's length-prefixed framing of several messages, concatenated: a peer reads them one by one
    exactly as if each had been written alone (the framing carries no write boundaries)."""
    parts: list[bytes] = []
    for message in messages:
        body = message.SerializeToString()
        parts.append(b"\x00" + len(body).to_bytes(4, "big"))
        parts.append(body)
    return b"".join(parts)


async def send_many(stream: Any, messages: list[Any]) -> None:
    """Write several messages on an open grpclib stream (server or client end, after its first
    ``send_message``, which sent the headers) in one HTTP/2 data send, keeping grpclib's counters."""
    await stream._stream.send_data(framed(messages))
    stream._messages_sent += len(messages)
    connection = stream._stream.connection
    connection.messages_sent += len(messages)
    connection.last_message_sent = time.monotonic()


def take_batch(queue: Any, first: Any, limit: int = WRITE_BATCH) -> list[Any]:
    """``first`` and whatever else waits in an asyncio queue already (up to ``limit``), without waiting."""
    batch = [first]
    while len(batch) < limit and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


T = TypeVar("T")


async def _to_trio(channel: trio.MemorySendChannel[T], item: T) -> None:
    """From asyncio code on the trio-asyncio loop (which runs inside trio's thread) into a trio channel:
    without a task switch when there is room, which keeps a busy stream from paying one per message."""
    try:
        channel.send_nowait(item)
    except trio.WouldBlock:
        await trio_as_aio(channel.send)(item)


from echo.adapters.transport.grpc_agent import GrpcAgentLink  # noqa: E402  (they import the shared parts above)
from echo.adapters.transport.grpc_hub import GrpcCoreHub  # noqa: E402

__all__ = [
    "MIN_STREAM_PROTOCOL_VERSION",
    "STREAM_PROTOCOL_VERSION",
    "GrpcAgentLink",
    "GrpcCoreHub",
    "client_tls",
    "keepalive",
    "server_tls",
]
