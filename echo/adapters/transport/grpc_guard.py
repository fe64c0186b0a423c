"""What Core's gRPC listener holds every Agent stream to: who may stream as which Agent (credentials), how
big a message may be (smaller before the hello), how fast control traffic may come (token buckets that shed
it), and how a message's kind and account are told from its bytes before the protobuf parser runs.

Pure code (no I/O): the gRPC adapter applies it."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpclib.const

Status = grpclib.const.Status


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one Agent stream at Core."""

    max_message_bytes: int = 1 << 20
    """A message's largest size once the hello is accepted; a larger one ends the stream unread."""
    max_hello_bytes: int = 16 << 10
    """The hello's largest size (the peer is not authenticated yet)."""
    hello_timeout_s: float = 5.0
    """A stream that has not said hello by then is refused."""
    send_queue: int = 10_000
    """Messages queued for one Agent; one more and its stream is closed (its accounts go offline)."""
    write_timeout_s: float = 10.0
    """A message Core cannot write to an Agent within this (the Agent stopped reading) closes its stream."""
    control_per_s: float = 500.0
    """Quotes and state snapshots per stream per second (bursts of twice that); the rest is shed."""
    reports_per_s: float = 50.0
    """Account announcements per stream per second (bursts of ten times that); the rest is shed."""
    pings_per_s: float = 100.0
    """Pings per second over all peers (bursts of twice that); the rest is refused."""
    max_agent_id: int = 64
    """The longest agent id accepted."""


class Refused(Exception):
    """A peer's stream is refused: the gRPC status it is answered with and the reason logged."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def clip(value: object, n: int = 64) -> str:
    """A peer-chosen value as a log field: at most ``n`` characters, control characters escaped."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > n:
        text = f"{text[:n]}...(+{len(text) - n})"
    return (
        text.encode("unicode_escape", "backslashreplace").decode("ascii") if not text.isprintable() else text
    )


class Credentials:
    """Who may stream as which Agent. ``per_agent`` (``split.agent_tokens``) gives each listed Agent its own
    token; ``shared`` (``split.token``) admits any Agent not listed there. Both empty: no token asked."""

    def __init__(self, shared: str = "", per_agent: Mapping[str, str] | None = None) -> None:
        self.shared = shared
        self.per_agent = dict(per_agent or {})

    @property
    def required(self) -> bool:
        return bool(self.shared or self.per_agent)

    def check(self, agent_id: str, token: str) -> str | None:
        """None when ``token`` proves ``agent_id``; otherwise why not."""
        own = self.per_agent.get(agent_id)
        if own is not None:
            return None if hmac.compare_digest(own.encode(), token.encode()) else "invalid agent token"
        if self.shared:
            return (
                None if hmac.compare_digest(self.shared.encode(), token.encode()) else "invalid agent token"
            )
        if self.per_agent:
            return "agent id not in split.agent_tokens"
        return None


class Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` at once."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


HELLO, ACCOUNT_ONLINE, ACCOUNT_OFFLINE, FROM_ACCOUNT, COMMAND_ACK = 1, 2, 3, 4, 5
"""AgentMessage's payload fields (protos/echo/v1/agent.proto)."""
QUOTES, STATE_SNAPSHOT = 16, 17
"""FromAccount's message fields that are control traffic."""


def _varint(data: bytes | memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("bad varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def peek(raw: bytes) -> tuple[int, int, str]:
    """(payload field, FromAccount message field, account id) of an AgentMessage's bytes, read from the
    wire without parsing it (0, 0, "" where it cannot be told: the parser decides then)."""
    try:
        tag, i = _varint(raw, 0)
        payload = tag >> 3
        if payload != FROM_ACCOUNT or tag & 7 != 2:
            return payload, 0, ""
        size, i = _varint(raw, i)
        inner = memoryview(raw)[i : i + size]
        j, account, kind = 0, "", 0
        while j < len(inner):
            tag, j = _varint(inner, j)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, j = _varint(inner, j)
            elif wire == 2:
                n, j = _varint(inner, j)
                if field == 1:
                    account = bytes(inner[j : j + n]).decode("utf-8", "replace")
                elif field >= 10:
                    kind = field
                j += n
            elif wire == 1:
                j += 8
            elif wire == 5:
                j += 4
            else:
                return payload, 0, ""
        return payload, kind, account
    except ValueError:
        return 0, 0, ""


async def read_frame(h2_stream: Any, limit: int) -> bytes | None:
    """One gRPC message's bytes from an HTTP/2 stream (grpclib's ``protocol.Stream``), its length checked
    against ``limit`` before any of it is read; None when the peer ended the stream."""
    try:
        meta = await h2_stream.recv_data(5)
        if not meta:
            return None
        if len(meta) < 5:
            raise Refused(Status.INVALID_ARGUMENT, "truncated message")
        if meta[0]:
            raise Refused(Status.UNIMPLEMENTED, "compressed message (compression is not supported)")
        size = int.from_bytes(meta[1:5], "big")
        if size > limit:
            raise Refused(Status.RESOURCE_EXHAUSTED, f"message of {size} bytes over the limit of {limit}")
        data: bytes = await h2_stream.recv_data(size) if size else b""
    except AssertionError as exc:  # grpclib's buffer: the stream ended inside a message
        raise Refused(Status.INVALID_ARGUMENT, "truncated message") from exc
    if len(data) < size:
        raise Refused(Status.INVALID_ARGUMENT, "truncated message")
    return data
