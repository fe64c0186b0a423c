"""The master-intent lifecycle (master -> Core, one per trade_id or close/modify event_id) as one table:
SENT -> ACKED, re-sent with backoff until acknowledged. After ``max_retries`` sends it is PAUSED with an
alert, never dropped: each reconnect sends it once more (PROTOCOL.md X10). Only a REJECTED ack ends it
unacknowledged (DROPPED). Used by the master's queue (the MQL4 EA and the simulated master)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeAlias

from echo.delivery.effects import (
    Alert,
    CancelRetry,
    Done,
    Effect,
    Ignore,
    Invalid,
    Persist,
    RetryAt,
    Send,
    Settings,
    Timeout,
)


class IntentStatus(enum.Enum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    PAUSED = "PAUSED"
    """``max_retries`` sends went unacknowledged: waiting for a reconnect to try again."""
    ACKED = "ACKED"
    DROPPED = "DROPPED"
    """Refused by Core (REJECTED)."""


@dataclass(frozen=True, slots=True)
class Intent:
    status: IntentStatus = IntentStatus.QUEUED
    attempt: int = 0
    next_retry_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    """The master's connection is up (after a handshake): queued or unacknowledged intents go out."""


@dataclass(frozen=True, slots=True)
class Acked:
    """trade_intent_ack for this intent. OK and DUPLICATE end it; RETRY asks for another send after
    ``retry_backoff_ms``; REJECTED ends it as refused."""

    status: str


IntentInput: TypeAlias = Connected | Acked | Timeout
IntentResult: TypeAlias = tuple[Intent, list[Effect]]


def _send_intent(s: Intent, now: int, cfg: Settings, *, reconnected: bool = False) -> IntentResult:
    if s.attempt >= cfg.max_retries and not reconnected:
        return replace(s, status=IntentStatus.PAUSED, next_retry_at_ms=None), [
            Persist(),
            CancelRetry(),
            Alert(f"no ack after {s.attempt} sends; trying again at the next reconnect"),
        ]
    attempt = s.attempt + 1
    at = now + cfg.retry_delay_ms(attempt)
    return replace(s, status=IntentStatus.SENT, attempt=attempt, next_retry_at_ms=at), [
        Persist(),
        Send(attempt),
        RetryAt(at),
    ]


class AckKind(enum.Enum):
    """What a trade_intent_ack said, as the intent machine reads it."""

    OK = "OK"
    DUPLICATE = "DUPLICATE"
    REJECTED = "REJECTED"
    RETRY = "RETRY"
    UNKNOWN = "UNKNOWN"
    """A status this side does not know."""


def _intent_input(event: IntentInput) -> type | AckKind:
    """The second half of an intent rule's key: the input's type, or for an ack what it said."""
    if isinstance(event, Acked):
        try:
            return AckKind(event.status)
        except ValueError:
            return AckKind.UNKNOWN
    return type(event)


_IntentHandler: TypeAlias = Callable[[Intent, IntentInput, int, Settings], IntentResult]


def _intent_reconnected(s: Intent, i: IntentInput, now: int, cfg: Settings) -> IntentResult:
    # QUEUED, SENT or PAUSED: (re)send now; a reconnect means the earlier send may be lost
    return _send_intent(s, now, cfg, reconnected=True)


def _intent_acked(s: Intent, i: IntentInput, now: int, cfg: Settings) -> IntentResult:
    assert isinstance(i, Acked)
    return replace(s, status=IntentStatus.ACKED, next_retry_at_ms=None), [
        Persist(),
        CancelRetry(),
        Done(True, i.status),
    ]


def _intent_rejected(s: Intent, i: IntentInput, now: int, cfg: Settings) -> IntentResult:
    return replace(s, status=IntentStatus.DROPPED, next_retry_at_ms=None), [
        Persist(),
        CancelRetry(),
        Done(False, "rejected"),
    ]


def _intent_retry(s: Intent, i: IntentInput, now: int, cfg: Settings) -> IntentResult:
    # Core asks for the line again later: after retry_backoff_ms (PROTOCOL.md X9)
    at = now + cfg.retry_backoff_ms
    return replace(s, next_retry_at_ms=at), [Persist(), RetryAt(at)]


def _intent_timer(s: Intent, i: IntentInput, now: int, cfg: Settings) -> IntentResult:
    if s.next_retry_at_ms is None or now < s.next_retry_at_ms:
        return s, [Ignore("timer not due")]
    return _send_intent(s, now, cfg)


def _intent_ignore(reason: str) -> _IntentHandler:
    def ignore(s: Intent, i: IntentInput, now: int, cfg: Settings) -> IntentResult:
        return s, [Ignore(reason)]

    return ignore


def _intent_invalid(reason: str, *, name_status: bool = False) -> _IntentHandler:
    def invalid(s: Intent, i: IntentInput, now: int, cfg: Settings) -> IntentResult:
        what = f"Acked({i.status})" if name_status and isinstance(i, Acked) else type(i).__name__
        return s, [Invalid(s.status.value, what, reason)]

    return invalid


def _intent_over(s: Intent, i: IntentInput, now: int, cfg: Settings) -> IntentResult:
    return s, [Ignore(f"{type(i).__name__} after {s.status.value}")]


_INTENT_INPUTS: tuple[type | AckKind, ...] = (Connected, Timeout, *AckKind)
_SENT_OR_PAUSED = (IntentStatus.SENT, IntentStatus.PAUSED)

INTENT_TABLE: dict[tuple[IntentStatus, type | AckKind], _IntentHandler] = {
    # (status, input or what the ack said) -> handler
    **{(st, Connected): _intent_reconnected for st in (IntentStatus.QUEUED, *_SENT_OR_PAUSED)},
    **{
        (IntentStatus.QUEUED, a): _intent_invalid("an ack for an intent that was never sent") for a in AckKind
    },
    **{(st, AckKind.OK): _intent_acked for st in _SENT_OR_PAUSED},
    **{(st, AckKind.DUPLICATE): _intent_acked for st in _SENT_OR_PAUSED},
    **{(st, AckKind.REJECTED): _intent_rejected for st in _SENT_OR_PAUSED},
    **{
        (st, AckKind.UNKNOWN): _intent_invalid("unknown ack status", name_status=True)
        for st in _SENT_OR_PAUSED
    },
    (IntentStatus.SENT, AckKind.RETRY): _intent_retry,
    (IntentStatus.PAUSED, AckKind.RETRY): _intent_ignore("RETRY while paused; waiting for a reconnect"),
    (IntentStatus.SENT, Timeout): _intent_timer,
    (IntentStatus.QUEUED, Timeout): _intent_ignore("timer not due"),
    (IntentStatus.PAUSED, Timeout): _intent_ignore("timer not due"),
    # acknowledged or refused: the lifecycle is over
    **{(st, i): _intent_over for st in (IntentStatus.ACKED, IntentStatus.DROPPED) for i in _INTENT_INPUTS},
}
"""Every (status, input) pair has a rule."""


def intent_transition(state: Intent, event: IntentInput, now_ms: int, settings: Settings) -> IntentResult:
    return INTENT_TABLE[(state.status, _intent_input(event))](state, event, now_ms, settings)
