"""What an EA connection may do: whether its handshake takes its account (version, token, the account's
live connection), and which messages its role may send. Pure decisions; the shell carries them out."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol

from echo.domain import messages as m
from echo.domain.errors import ProtocolError
from echo.domain.types import Role
from echo.pipe.codec import DecodeFailure

MASTER_TYPES = frozenset({"trade_intent", "trade_close", "trade_modify"})
SLAVE_TYPES = frozenset(
    {"execution_result", "close_result", "modify_result", "pipe_delivery_ack", "quotes", "state_snapshot"}
)
DEAD_AFTER_BEATS = 3
"""A connection with no line for this many heartbeat intervals no longer holds its account (PROTOCOL 5.6)."""
EA_HEARTBEAT_MS = 2000
"""The EAs' own heartbeat period (their ``HeartbeatMs`` input): a shorter ``heartbeat_interval_ms`` does
not make a terminal that keeps to it look dead."""


class Peer(Protocol):
    """What the decisions read of a connection."""

    @property
    def account_id(self) -> str | None: ...

    @property
    def terminal_id(self) -> str: ...

    @property
    def last_seen_ms(self) -> int: ...

    @property
    def broken(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Reject:
    """The handshake gets an error reply; the connection stays open."""

    failure: DecodeFailure


@dataclass(frozen=True, slots=True)
class Refuse:
    """The handshake is refused for good: the error line is written, then the connection closes."""

    code: ProtocolError
    why: str
    counter: str
    """The Agent's stat this refusal counts in."""


@dataclass(frozen=True, slots=True)
class Accept:
    replaces: str | None = None
    """Why the account's live connection gives way to this one (None: there is none to replace)."""


Verdict = Reject | Refuse | Accept


def dead(conn: Peer, now_ms: int, heartbeat_interval_ms: int) -> str | None:
    """Why a connection no longer speaks for its terminal, or None while it does."""
    if conn.broken:
        return "broken write"
    silent = now_ms - conn.last_seen_ms
    if silent > DEAD_AFTER_BEATS * max(heartbeat_interval_ms, EA_HEARTBEAT_MS):
        return f"no line for {silent} ms"
    return None


def judge_handshake(
    conn: Peer, hs: m.Handshake, token: str, live: Peer | None, now_ms: int, heartbeat_interval_ms: int
) -> Verdict:
    """The checks in order: the connection's account, the protocol version, the agent's token, then the
    account's live connection (``live``), which gives way only to its own terminal or once it is dead."""
    if conn.account_id is not None and conn.account_id != hs.account_id:
        return Reject(
            DecodeFailure(
                ProtocolError.ERR_PROTOCOL_INVALID_VALUE,
                f"this connection is account {conn.account_id}; a new account needs a new connection",
                "handshake",
            )
        )
    if hs.protocol_version > m.PROTOCOL_VERSION:
        return Reject(
            DecodeFailure(
                ProtocolError.ERR_PROTOCOL_VERSION_UNSUPPORTED,
                f"protocol_version {hs.protocol_version} is newer than this agent's {m.PROTOCOL_VERSION}",
                "handshake",
            )
        )
    if token and not hmac.compare_digest(hs.token.encode(), token.encode()):
        return Refuse(
            ProtocolError.ERR_PROTOCOL_UNAUTHORIZED,
            "the handshake must carry this agent's token (agent.token; EA input AgentToken)"
            if not hs.token
            else "the handshake's token is not this agent's agent.token",
            "handshakes_unauthorized",
        )
    if live is None or live is conn:
        return Accept()
    why_dead = dead(live, now_ms, heartbeat_interval_ms)
    same = bool(hs.terminal_id) and hmac.compare_digest(hs.terminal_id, live.terminal_id)
    if why_dead is None and not same:
        return Refuse(
            ProtocolError.ERR_PROTOCOL_ACCOUNT_IN_USE,
            f"account {hs.account_id} is connected from another terminal; a new connection takes "
            "it over only with that terminal's terminal_id, or once that connection is dead "
            f"(no line for {DEAD_AFTER_BEATS} x heartbeat_interval_ms, at least "
            f"{DEAD_AFTER_BEATS * EA_HEARTBEAT_MS // 1000} s)",
            "handshakes_account_in_use",
        )
    return Accept(why_dead or "same terminal_id")


def gate(account_id: str | None, role: Role | None, message_type: str) -> str | DecodeFailure:
    """The account a message from this connection speaks for, or the error it earns instead of going to
    Core: nothing but a handshake before the handshake, and only its role's messages after it."""
    if account_id is None:
        return DecodeFailure(
            ProtocolError.ERR_PROTOCOL_NOT_HANDSHAKEN, f"{message_type} before handshake", message_type
        )
    allowed = MASTER_TYPES if role is Role.MASTER else SLAVE_TYPES
    if message_type not in allowed:
        return DecodeFailure(
            ProtocolError.ERR_PROTOCOL_UNEXPECTED_MESSAGE,
            f"{message_type} is not accepted from a {role.value if role else '?'} terminal",
            message_type,
        )
    return account_id
